"""The per-extractor index: a JSON snapshot plus an append-only JSON-lines log (docs/FORMAT.md).

Recording a finished video appends one line to ``index.log`` under ``flock``: O(1) whatever the
number of videos, where rewriting the whole ``index.json`` cost O(n) per video (O(n^2) per stage).
The log is folded into ``index.json`` (atomic temp file + rename) at the end of a stage, and also
whenever it outgrows the snapshot, which keeps the amortised cost O(1) and the log short.

Crash safety comes from the log being idempotent: the state of a video is its last line, so
replaying the log on a snapshot that already contains it (a crash between the snapshot's rename and
the log's truncation) gives the same entries. A torn last line (a writer killed or out of disk
mid-append) is skipped when read and cut off by the next writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INDEX_FORMAT = "avpipe-index"
INDEX_FORMAT_VERSION = 1
INDEX_FILE = "index.json"
INDEX_LOG_FILE = "index.log"
INDEX_LOCK_FILE = ".index.lock"
# A log longer than this and than the snapshot is compacted by the append that finds it so.
COMPACT_MIN_LOG_BYTES = 1 << 20
_TEMP_NAME = re.compile(r"^\.index\.json\.\d+\.[0-9a-f]+\.tmp$")

Entries = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class LogRecord:
    """One line of ``index.log``: ``entry`` is the video's new entry, or None when it was removed."""

    video_id: str
    entry: Mapping[str, Any] | None

    def to_line(self) -> bytes:
        payload = {"video": self.video_id, "entry": dict(self.entry) if self.entry is not None else None}
        # ASCII escapes keep every line valid UTF-8 whatever the id holds (even lone surrogates).
        return (json.dumps(payload, ensure_ascii=True, sort_keys=True) + "\n").encode("ascii")


@dataclass
class LoadedIndex:
    """The entries of snapshot + log, and how much of the log had to be skipped."""

    entries: Entries
    log_lines: int = 0
    bad_lines: int = 0


class ShardIndex:
    """``index.json`` + ``index.log`` of one extractor folder. Holds only its folder, opens files per call."""

    def __init__(self, folder: Path, extractor: str) -> None:
        self.folder = Path(folder)
        self.extractor = extractor

    @property
    def snapshot_path(self) -> Path:
        return self.folder / INDEX_FILE

    @property
    def log_path(self) -> Path:
        return self.folder / INDEX_LOG_FILE

    def exists(self) -> bool:
        return self.snapshot_path.exists() or self.log_path.exists()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive ``flock`` on ``.index.lock``: one writer of the snapshot and log at a time."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / INDEX_LOCK_FILE).open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # ---- reading

    def load(self) -> LoadedIndex | None:
        """Snapshot entries with the log replayed on top; None when neither file can be used."""
        snapshot = self._load_snapshot()
        lines = self._read_log()
        if snapshot is None and lines is None:
            return None
        loaded = LoadedIndex(entries=snapshot or {})
        for line in lines or []:
            record = _parse_line(line)
            if record is None:
                loaded.bad_lines += 1
                continue
            loaded.log_lines += 1
            if record.entry is None:
                loaded.entries.pop(record.video_id, None)
            else:
                loaded.entries[record.video_id] = dict(record.entry)
        if loaded.bad_lines:
            log.warning("%s: skipped %d unreadable line(s) (torn writes)", self.log_path, loaded.bad_lines)
        return loaded

    def _load_snapshot(self) -> Entries | None:
        path = self.snapshot_path
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.warning("%s: unreadable index snapshot, ignoring it: %s", path, err)
            return None
        if not isinstance(payload, dict) or payload.get("format") != INDEX_FORMAT:
            log.warning("%s: not an avpipe index, ignoring it", path)
            return None
        videos = payload.get("videos")
        return dict(videos) if isinstance(videos, dict) else None

    def _read_log(self) -> list[bytes] | None:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("%s: unreadable index log, ignoring it: %s", self.log_path, err)
            return None
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines:
            lines[-1] = b""  # no newline yet: an append that did not finish, never a valid record
        return lines

    # ---- writing

    def append(self, records: list[LogRecord]) -> None:
        """Append ``records`` to the log (under the lock); compacts when the log outgrew the snapshot.

        On a write error (ENOSPC, EIO) the log is cut back to its previous length, so no partial
        line stays, and the error is raised: the snapshot and earlier lines are untouched.
        """
        data = b"".join(record.to_line() for record in records)
        with self.lock():
            fd = os.open(self.log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                end = os.fstat(fd).st_size
                if end and os.pread(fd, 1, end - 1) != b"\n":
                    data = b"\n" + data  # a torn line from a killed writer: close it, never extend it
                try:
                    _write_all(fd, data)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, end)
                    raise
                log_bytes = end + len(data)
            finally:
                os.close(fd)
            if log_bytes > COMPACT_MIN_LOG_BYTES and log_bytes > _size(self.snapshot_path):
                try:
                    self._compact_locked()
                except OSError as err:  # the records are in the log; the next compaction folds them
                    log.warning("%s: could not compact the index log: %s", self.log_path, err)

    def compact(self) -> Entries:
        """Fold the log into the snapshot (atomically) and empty the log; return the entries."""
        with self.lock():
            return self._compact_locked()

    def replace(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Make ``entries`` the whole index (a rebuild): new snapshot, empty log."""
        with self.lock():
            self._replace_locked(entries)

    def _compact_locked(self) -> Entries:
        loaded = self.load()
        entries = loaded.entries if loaded is not None else {}
        self._replace_locked(entries)
        return entries

    def _replace_locked(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        self.remove_temp_files_locked()
        payload = {
            "format": INDEX_FORMAT,
            "format_version": INDEX_FORMAT_VERSION,
            "extractor": self.extractor,
            "videos": dict(entries),
        }
        write_json_atomically(self.snapshot_path, payload)
        # After the rename: a crash before this line only replays (idempotent) lines again.
        if self.log_path.exists():
            with self.log_path.open("r+b") as handle:
                handle.truncate(0)
                os.fsync(handle.fileno())

    def remove_temp_files_locked(self) -> int:
        """Remove ``.index.json.*.tmp`` files. Only lock holders write them, so under the lock every
        one found is the leftover of a killed writer."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.folder):
                if _TEMP_NAME.match(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
        if removed:
            log.info("%s: removed %d leftover index temp file(s)", self.folder, removed)
        return removed


def _parse_line(line: bytes) -> LogRecord | None:
    try:
        payload = json.loads(line)
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("video"), str):
        return None
    entry = payload.get("entry")
    if entry is not None and not isinstance(entry, dict):
        return None
    return LogRecord(payload["video"], entry)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write returned no progress")
        view = view[written:]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomically(path: Path, payload: Any) -> None:
    """``payload`` as JSON at ``path`` via a temp file, fsync and rename; the temp file never stays."""
    data = json.dumps(payload, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
