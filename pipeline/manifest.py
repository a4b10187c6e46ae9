"""The manifest: one row per annotated subject-video, with its probe results; plus the failures report.

``media_path`` and the ``labels`` paths are stored **absolute** (resolved when the manifest is built), so
every later stage opens them directly whatever its working directory. The CSV has one column per
``ManifestRow`` field, in field order; dict columns hold JSON, ``None`` is an empty cell, booleans are
``true``/``false``. Both CSV files are written atomically (temporary file, then rename). A media
path keeps the exact bytes of its file name (non-UTF-8 bytes written as they are, PEP 383); the failures
report shows such bytes as ``\\xNN``.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import json
import logging
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avpipe.pipeline import atomic
from avpipe.pipeline.errors import AvpipeError
from avpipe.pipeline.types import MediaInfo

log = logging.getLogger(__name__)

CSV_ERRORS = "surrogateescape"


class ManifestError(AvpipeError):
    """A manifest or failures CSV that is missing or cannot be read."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class Split(enum.StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


class SubjectPosition(enum.StrEnum):
    """Which face a row is about when two annotated people share one video."""

    LEFT = "left"
    RIGHT = "right"


class FailureStage(enum.StrEnum):
    """Where a video dropped out of the manifest."""

    DISCOVER = "discover"  # the dataset layout: annotation without video, ambiguous names
    LABELS = "labels"  # an annotation file that cannot be parsed
    PROBE = "probe"  # the media file cannot be probed or has no video stream
    TIMELINE = "timeline"  # the frames cannot be listed
    STORE = "store"  # the labels shard cannot be written


# --------------------------------------------------------------------------- rows


@dataclass
class ManifestRow:
    """One annotated subject-video: identity, split, label files, probe results, notes."""

    video_id: str  # unique; Aff-Wild2: the annotation name (video5, 10-60-1280x720_left)
    media_path: str  # absolute
    subject: str = ""  # Aff-Wild2: the video name, shared by its _left and _right rows; default video_id
    subject_position: SubjectPosition | None = None
    split: Split = Split.TRAIN
    labels: dict[str, str] = field(default_factory=dict)  # LabelTask value -> absolute annotation path
    container: str = ""
    size_bytes: int = 0
    duration: float = 0.0
    video_codec: str = ""
    width: int = 0  # display size, rotation applied
    height: int = 0
    rotation: int = 0
    avg_fps: float = 0.0
    is_vfr: bool = False
    n_frames: int = 0  # frames of the native timeline (what labels are aligned to)
    video_start: float = 0.0
    has_audio: bool = False
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_start: float | None = None
    label_rows: dict[str, int] = field(default_factory=dict)  # task -> rows in its annotation file
    labeled_frames: int = 0  # frames with a label for any task
    notes: str = ""  # "; "-joined: label length mismatch, split disagreement, ...

    def __post_init__(self) -> None:
        if not self.video_id:
            raise ValueError("video_id must not be empty")
        self.split = Split(self.split)
        if self.subject_position is not None:
            self.subject_position = SubjectPosition(self.subject_position)
        self.subject = self.subject or self.video_id
        for task in self.labels:
            if not isinstance(task, str) or not task:
                raise ValueError(f"label task names must be non-empty strings, got {task!r}")

    def with_probe(self, info: MediaInfo, n_frames: int, audio_fps: float | None = None) -> ManifestRow:
        """A copy carrying ``info`` flattened (``n_frames`` from the native timeline). A file without
        video needs ``audio_fps``, its timeline's rate: it gets ``avg_fps`` = that rate,
        ``video_start`` = the audio start, and an empty ``video_codec``."""
        if info.video is None:
            if audio_fps is None or info.audio is None:
                raise ValueError(f"{info.path} has no video stream")
            return self._with_audio_only(info, n_frames, audio_fps)
        video, audio = info.video, info.audio
        return dataclasses.replace(
            self,
            container=info.container,
            size_bytes=info.size_bytes,
            duration=info.duration,
            video_codec=video.codec,
            width=video.width,
            height=video.height,
            rotation=video.rotation,
            avg_fps=video.avg_fps,
            is_vfr=video.is_vfr,
            n_frames=n_frames,
            video_start=video.start_time,
            has_audio=audio is not None,
            audio_codec=audio.codec if audio else None,
            audio_sample_rate=audio.sample_rate if audio else None,
            audio_channels=audio.channels if audio else None,
            audio_start=audio.start_time if audio else None,
        )

    def _with_audio_only(self, info: MediaInfo, n_frames: int, audio_fps: float) -> ManifestRow:
        audio = info.audio
        assert audio is not None
        return dataclasses.replace(
            self,
            container=info.container,
            size_bytes=info.size_bytes,
            duration=info.duration,
            avg_fps=audio_fps,
            n_frames=n_frames,
            video_start=audio.start_time,
            has_audio=True,
            audio_codec=audio.codec,
            audio_sample_rate=audio.sample_rate,
            audio_channels=audio.channels,
            audio_start=audio.start_time,
        )


MANIFEST_COLUMNS = tuple(f.name for f in dataclasses.fields(ManifestRow))


@dataclass(frozen=True)
class Failure:
    """One row of the manifest failures report: the file, the step that rejected it, and why."""

    path: str
    stage: str
    reason: str


FAILURE_COLUMNS = tuple(f.name for f in dataclasses.fields(Failure))


# --------------------------------------------------------------------------- CSV read / write


def write_manifest(rows: Iterable[ManifestRow], path: str | Path) -> Path:
    """Write ``rows`` as CSV atomically; refuses duplicate video ids."""
    rows = list(rows)
    seen: set[str] = set()
    for row in rows:
        if row.video_id in seen:
            raise ManifestError(path, f"duplicate video_id {row.video_id!r}")
        seen.add(row.video_id)
    return _write_csv(
        path, MANIFEST_COLUMNS, ([_encode(getattr(r, c)) for c in MANIFEST_COLUMNS] for r in rows)
    )


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Read a manifest written by ``write_manifest``; any problem names the file, line and column."""
    hints = typing.get_type_hints(ManifestRow)
    rows = []
    for line, record in _read_csv(path, MANIFEST_COLUMNS, "run `avpipe manifest` first"):
        values = {}
        for column in MANIFEST_COLUMNS:
            try:
                values[column] = _decode(hints[column], record[column])
            except ValueError as err:
                raise ManifestError(path, f"line {line}, column {column}: {err}") from None
        try:
            rows.append(ManifestRow(**values))
        except ValueError as err:
            raise ManifestError(path, f"line {line}: {err}") from None
    return rows


def write_failures(failures: Iterable[Failure], path: str | Path) -> Path:
    """Write the failures report (path, stage, reason) atomically; a header only when nothing failed.

    The report is for people: bytes of a file name that are not UTF-8 appear as ``\\xNN``.
    """
    rows = ([printable(f.path), f.stage, printable(f.reason)] for f in failures)
    return _write_csv(path, FAILURE_COLUMNS, rows)


def printable(text: str) -> str:
    """``text`` as valid UTF-8: the bytes of a file name that are not UTF-8 (which Python holds as
    surrogate escapes, PEP 383) become ``\\xNN``; valid text is returned unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def read_failures(path: str | Path) -> list[Failure]:
    return [
        Failure(**{c: record[c] for c in FAILURE_COLUMNS}) for _, record in _read_csv(path, FAILURE_COLUMNS)
    ]


def _write_csv(path: str | Path, columns: tuple[str, ...], rows: Iterable[list[str]]) -> Path:
    # surrogateescape: a media path keeps the exact bytes of its file name, even those that are not
    # UTF-8, and reads back to the same path (the manifest is the only file that needs this).
    with (
        atomic.replacing(path) as tmp,
        tmp.open("w", newline="", encoding="utf-8", errors=CSV_ERRORS) as handle,
    ):
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    return Path(path)


def _read_csv(
    path: str | Path, columns: tuple[str, ...], missing_hint: str = ""
) -> list[tuple[int, dict[str, str]]]:
    path = Path(path)
    if not path.is_file():
        hint = f"; {missing_hint}" if missing_hint else ""
        raise ManifestError(path, f"does not exist{hint}")
    with path.open(newline="", encoding="utf-8", errors=CSV_ERRORS) as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        unknown = [c for c in header if c not in columns]
        if missing or unknown:
            raise ManifestError(
                path,
                f"unexpected columns (missing: {', '.join(missing) or 'none'}; "
                f"unknown: {', '.join(unknown) or 'none'}); written by another version of avpipe? rebuild it",
            )
        records = list(reader)
    # line 1 is the header; csv keeps quoted newlines inside a record, which our values never contain
    return [(i + 2, record) for i, record in enumerate(records)]


def _encode(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _decode(hint: Any, text: str) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if text == "":
            return None
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint is str:
        return text
    if hint is bool:
        if text not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text == "true"
    if hint is int:
        return int(text)
    if hint is float:
        return float(text)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(text)
    if typing.get_origin(hint) is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"not valid JSON: {err}") from None
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {text!r}")
        return value
    raise TypeError(f"no CSV decoding for {hint!r}")
