"""Multi-video shards (``store.videos_per_shard``, docs/FORMAT.md): many short clips in one HDF5 file.

A corpus of 100,000 clips in one shard per clip is 100,000 files per feature, which network and
parallel file systems (Lustre, GPFS, NFS) handle badly, and two fsyncs per clip. A pack holds the
groups of several videos, each exactly as its own shard would (same datasets, same attributes, plus
``written_ns``), in ``<extractor>/packs/<name>.h5``. It is written like a shard: a hidden temp file
in the same folder, fsynced, renamed into place only when every video in it is complete, so a writer
killed mid-pack leaves the earlier packs and shards as they were and nothing half-written visible.

Which pack holds a video is the index's business (``shard`` = ``packs/<name>.h5``); a video's own
shard file, when there is one, comes first. A video rewritten later lands in a newer pack or shard;
its superseded group stays in the old pack (never read again: the newest copy wins when the index is
rebuilt) until ``remove`` or a rebuild of that pack.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

import h5py

from avpipe.pipeline.diskguard import GuardedFile
from avpipe.pipeline.errors import StoreError
from avpipe.pipeline.types import FeatureSet

if TYPE_CHECKING:
    from avpipe.pipeline.store import FeatureStore, ShardMeta

log = logging.getLogger(__name__)

PACKS_FOLDER = "packs"
WRITTEN_ATTR = "written_ns"


def pack_name() -> str:
    """A fresh pack file name: time-ordered, unique across processes and hosts."""
    return f"p{time.time_ns():x}-{os.getpid()}-{secrets.token_hex(4)}.h5"


class PackWriter:
    """Writes several videos into one new pack; nothing is visible before ``commit``.

    ``add`` writes one video's group from its blocks (a video whose blocks raise leaves no group);
    ``commit`` makes the pack visible atomically and returns each video's index entry; ``abort``
    (or leaving the ``with`` block by an exception) removes the temp file.
    """

    def __init__(self, store: FeatureStore, extractor: str) -> None:
        from avpipe.pipeline import store as store_module

        self._store = store
        self._module = store_module
        self.extractor = extractor
        self.folder = store.folder(extractor) / PACKS_FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = pack_name()
        self.final = self.folder / self.name
        self.tmp = self.folder / store_module._temp_name(self.name[: -len(store_module.SHARD_SUFFIX)])
        # Through a GuardedFile, as single-video shards: a full disk never breaks HDF5's state here.
        self._sink = GuardedFile(self.tmp)
        self._h5: h5py.File | None = h5py.File(self._sink, "w", libver=store_module.LIBVER, locking=False)
        self._h5.attrs.update(
            {
                "format": store_module.FORMAT_NAME,
                "format_version": store_module.FORMAT_VERSION,
                "extractor": extractor,
            }
        )
        self._videos: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if self._h5 is not None:
            self.abort()

    def __len__(self) -> int:
        return len(self._videos)

    def add(
        self,
        video_id: str,
        blocks: Iterable[FeatureSet],
        n_frames: int,
        **meta: Unpack[ShardMeta],
    ) -> None:
        """Write one video into the pack (``FeatureStore.write_blocks``'s arguments)."""
        if self._h5 is None:
            raise StoreError(f"{self.tmp}: pack already committed or aborted")
        if video_id in self._videos:
            raise StoreError(f"{self.tmp}: video {video_id!r} is already in this pack")
        self._module._check_video_id(video_id)
        self._module.check_shard_meta(meta)
        written_ns = time.time_ns()
        try:
            self._store._write_group(
                self.final,
                self._h5,
                self.extractor,
                video_id,
                blocks,
                n_frames,
                meta,
                extra_attrs={WRITTEN_ATTR: written_ns},
                check_disk=self._sink.raise_if_failed,
            )
        except BaseException:
            with contextlib.suppress(KeyError, ValueError):
                del self._h5[self._module.group_name(video_id)]
            raise
        self._videos[video_id] = {
            "params_hash": meta["params_hash"],
            "media_fingerprint": meta.get("media_fingerprint", ""),
            "n_frames": n_frames,
            "extractor_version": meta["extractor_version"],
            WRITTEN_ATTR: written_ns,
        }

    def commit(self) -> dict[str, dict[str, Any]]:
        """Make the pack visible (fsync + rename + fsync of the folder); each video's index entry.
        A video's own older shard file is removed, so it cannot shadow the packed copy."""
        if self._h5 is None:
            raise StoreError(f"{self.tmp}: pack already committed or aborted")
        if not self._videos:
            self.abort()
            return {}
        stat = self._commit_file()
        entries = {}
        for video_id, meta in self._videos.items():
            entry = self._module._entry(
                f"{PACKS_FOLDER}/{self.name}",
                meta["params_hash"],
                meta["media_fingerprint"],
                meta["n_frames"],
                meta["extractor_version"],
                stat,
            )
            entries[video_id] = {**entry, WRITTEN_ATTR: meta[WRITTEN_ATTR]}
            _remove_older_shard(self._store.shard_path(self.extractor, video_id), meta[WRITTEN_ATTR])
        log.debug("wrote pack %s (%d videos)", self.final, len(entries))
        return entries

    def _commit_file(self) -> os.stat_result:
        """Close, fsync, rename into place, fsync the folder; the stat of the pack file."""
        h5, self._h5 = self._h5, None
        assert h5 is not None
        try:
            h5.flush()
            h5.close()
            self._sink.close()  # fsyncs
            self._sink.raise_if_failed()
            stat = os.stat(self.tmp)
            os.replace(self.tmp, self.final)
        except OSError as err:
            self.tmp.unlink(missing_ok=True)
            if err.errno not in self._module.STORAGE_ERRNOS:
                raise
            raise StoreError(
                f"{self.final}: cannot write the pack: {err.strerror} (nothing was stored)"
            ) from err
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        self._module._fsync_path(self.folder)
        return stat

    def abort(self) -> None:
        """Drop the pack: close and remove the temp file."""
        h5, self._h5 = self._h5, None
        if h5 is not None:
            with contextlib.suppress(Exception):
                h5.close()
        self._sink.close()
        self.tmp.unlink(missing_ok=True)


def _remove_older_shard(path: Path, written_ns: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_mtime_ns < written_ns:
            path.unlink()
