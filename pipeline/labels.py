"""Per-frame labels: valence/arousal, expression and action units, aligned to a video's frames.

Adapters read annotation files into ``RawLabels`` (one ``LabelTrack`` per task and file, each row keyed by
a frame index or a time in seconds). ``align_labels`` puts them on a video's ``Timeline``:

- Frame-keyed rows are looked up by ``frame_index`` (Aff-Wild2: row ``i`` of the file is frame ``i``).
  Rows beyond the video's frames are dropped; frames beyond the rows get the unlabeled code. The
  mismatch is described in the returned note ("va: labels have 1203 rows, video has 1200 frames: 3 extra
  rows dropped"), which the manifest stage logs as a warning and keeps in the manifest row's notes.
- Time-keyed rows go to the frame nearest in time; when several rows share a frame the nearest row wins.
  Rows more than half a frame interval outside the video's first and last frame are dropped (noted).

Unlabeled codes follow Aff-Wild2: valence/arousal -5, expression -1, action unit -1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import LabelError
from pipeline.types import FeatureSet, MaskValue, Timeline

# Bump when the alignment rule changes: stored label shards then become stale and are rewritten.
ALIGNMENT_VERSION = "1"

LABELS_EXTRACTOR = "labels"

UNLABELED_VA = -5.0
UNLABELED_EXPRESSION = -1
UNLABELED_AU = -1

VA_NAMES = ("valence", "arousal")
EXPRESSION_NAMES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
AU_NAMES = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")


class LabelTask(StrEnum):
    """The annotation tasks of Aff-Wild2 / ABAW."""

    VA = "va"  # valence, arousal in [-1, 1]
    EXPR = "expr"  # one of EXPRESSION_NAMES by index
    AU = "au"  # 12 binary action units


class KeyKind(StrEnum):
    """What identifies the frame of a label row."""

    FRAME = "frame"  # native frame index in presentation order
    TIME = "time"  # seconds on the container clock


@dataclass(frozen=True)
class LabelTrack:
    """One task's rows as read from one file, before alignment.

    ``values`` is (N, 2) float32 for VA, (N,) int16 for EXPR, (N, 12) int8 for AU; ``keys`` (N,) holds
    each row's frame index (int64) or time (float64) according to ``key_kind``.
    """

    task: LabelTask
    values: np.ndarray
    keys: np.ndarray
    key_kind: KeyKind
    source: str

    def __post_init__(self) -> None:
        if self.values.shape[0] != self.keys.shape[0]:
            raise ValueError(
                f"{self.source}: {self.values.shape[0]} label rows but {self.keys.shape[0]} keys"
            )

    def __len__(self) -> int:
        return int(self.keys.shape[0])


@dataclass
class RawLabels:
    """Every label track of one annotated video, in file order."""

    tracks: list[LabelTrack] = field(default_factory=list)

    @property
    def tasks(self) -> list[LabelTask]:
        return [track.task for track in self.tracks]


@dataclass
class FrameLabels:
    """Labels of every frame of a timeline (row ``i`` is frame ``timeline.frame_index[i]``)."""

    valence_arousal: np.ndarray  # (T, 2) float32, UNLABELED_VA where unlabeled
    expression: np.ndarray  # (T,) int16, UNLABELED_EXPRESSION where unlabeled
    action_units: np.ndarray  # (T, 12) int8, UNLABELED_AU where unlabeled

    @classmethod
    def unlabeled(cls, n_frames: int) -> FrameLabels:
        return cls(
            valence_arousal=np.full((n_frames, 2), UNLABELED_VA, dtype=np.float32),
            expression=np.full(n_frames, UNLABELED_EXPRESSION, dtype=np.int16),
            action_units=np.full((n_frames, len(AU_NAMES)), UNLABELED_AU, dtype=np.int8),
        )

    def __len__(self) -> int:
        return int(self.expression.shape[0])

    def task_mask(self, task: LabelTask) -> np.ndarray:
        """(T,) bool: frames labeled for ``task`` (VA needs both values, AU at least one unit)."""
        if task is LabelTask.VA:
            return np.all(self.valence_arousal != UNLABELED_VA, axis=1)
        if task is LabelTask.EXPR:
            return self.expression != UNLABELED_EXPRESSION
        return np.any(self.action_units != UNLABELED_AU, axis=1)

    def labeled(self) -> np.ndarray:
        """(T,) bool: frames labeled for any task."""
        return self.task_mask(LabelTask.VA) | self.task_mask(LabelTask.EXPR) | self.task_mask(LabelTask.AU)

    def to_feature_set(self, timeline: Timeline, attrs: dict[str, Any] | None = None) -> FeatureSet:
        """The ``labels`` shard: mask VALID where any task is labeled, MISSING elsewhere."""
        mask = np.where(self.labeled(), MaskValue.VALID, MaskValue.MISSING).astype(np.uint8)
        return FeatureSet(
            time=np.asarray(timeline.time, dtype=np.float64),
            frame_index=np.asarray(timeline.frame_index, dtype=np.int64),
            mask=mask,
            arrays={
                "valence_arousal": self.valence_arousal,
                "expression": self.expression,
                "action_units": self.action_units,
            },
            attrs=dict(attrs or {}),
        )

    @classmethod
    def from_feature_set(cls, features: FeatureSet) -> FrameLabels:
        """Read back a ``labels`` shard."""
        return cls(
            valence_arousal=np.asarray(features.arrays["valence_arousal"], dtype=np.float32),
            expression=np.asarray(features.arrays["expression"], dtype=np.int16),
            action_units=np.asarray(features.arrays["action_units"], dtype=np.int8),
        )


# --------------------------------------------------------------------------- value checks shared by adapters


def parse_float(text: str, path: str | Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LabelError(path, f"line {line}: {column} is not a number: {text.strip()!r}") from None
    if not math.isfinite(value):
        raise LabelError(path, f"line {line}: {column} is not finite: {text.strip()!r}")
    return value


def parse_int(text: str, path: str | Path, line: int, column: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise LabelError(path, f"line {line}: {column} is not an integer: {text.strip()!r}") from None


def check_va(value: float, path: str | Path, line: int, column: str) -> float:
    if value != UNLABELED_VA and not -1.0 <= value <= 1.0:
        raise LabelError(
            path, f"line {line}: {column} {value:g} is outside [-1, 1] (and is not -5, unlabeled)"
        )
    return value


def check_expression(value: int, path: str | Path, line: int, column: str = "expression") -> int:
    if not UNLABELED_EXPRESSION <= value < len(EXPRESSION_NAMES):
        raise LabelError(
            path, f"line {line}: {column} {value} is outside -1..{len(EXPRESSION_NAMES) - 1} (-1 = unlabeled)"
        )
    return value


def check_au(value: int, path: str | Path, line: int, column: str) -> int:
    if value not in (UNLABELED_AU, 0, 1):
        raise LabelError(path, f"line {line}: {column} {value} is not one of -1 (unlabeled), 0, 1")
    return value


# --------------------------------------------------------------------------- alignment


def align_labels(raw: RawLabels, timeline: Timeline) -> tuple[FrameLabels, str]:
    """Put ``raw`` on ``timeline``; the note (empty when nothing was off) says what the rule changed.

    The timeline is normally the native one (every frame once); the video's frame count is taken as
    ``max(frame_index) + 1`` so that a resampled timeline still looks labels up by source frame.
    """
    labels = FrameLabels.unlabeled(len(timeline))
    notes = []
    for track in raw.tracks:
        if track.key_kind is KeyKind.FRAME:
            rows, note = _frame_rows(track, timeline)
        else:
            rows, note = _time_rows(track, timeline)
        _assign(labels, track, rows)
        if note:
            notes.append(f"{track.task.value}: {note}")
    return labels, "; ".join(notes)


def _assign(labels: FrameLabels, track: LabelTrack, rows: np.ndarray) -> None:
    """Copy ``track.values[rows[i]]`` to frame ``i`` wherever ``rows[i] >= 0``."""
    has_row = rows >= 0
    target = {
        LabelTask.VA: labels.valence_arousal,
        LabelTask.EXPR: labels.expression,
        LabelTask.AU: labels.action_units,
    }[track.task]
    target[has_row] = track.values[rows[has_row]]


def _frame_rows(track: LabelTrack, timeline: Timeline) -> tuple[np.ndarray, str]:
    """For each timeline frame, the index of the track row keyed by its frame_index (or -1)."""
    n_video = int(timeline.frame_index.max()) + 1 if len(timeline) else 0
    keys = track.keys.astype(np.int64)
    inside = (keys >= 0) & (keys < n_video)
    by_frame = np.full(n_video, -1, dtype=np.int64)
    by_frame[keys[inside]] = np.flatnonzero(inside)
    rows = by_frame[timeline.frame_index] if n_video else np.zeros(0, dtype=np.int64)
    return rows, _frame_note(track, keys, inside, n_video)


def _frame_note(track: LabelTrack, keys: np.ndarray, inside: np.ndarray, n_video: int) -> str:
    n_rows = len(track)
    dropped = int(n_rows - np.count_nonzero(inside))
    covered = np.unique(keys[inside]).shape[0]
    unlabeled = n_video - covered
    if dropped == 0 and unlabeled == 0:
        return ""
    head = f"labels have {n_rows} rows, video has {n_video} frames"
    parts = []
    if dropped:
        parts.append(f"{dropped} extra rows dropped")
    if unlabeled:
        parts.append(f"{unlabeled} frames without a row left unlabeled")
    return f"{head}: {', '.join(parts)}"


def _time_rows(track: LabelTrack, timeline: Timeline) -> tuple[np.ndarray, str]:
    """For each timeline frame, the index of the nearest-in-time track row mapped to it (or -1)."""
    times = np.asarray(timeline.time, dtype=np.float64)
    rows = np.full(len(timeline), -1, dtype=np.int64)
    if len(timeline) == 0:
        return rows, f"video has no frames: {len(track)} rows dropped" if len(track) else ""
    label_times = track.keys.astype(np.float64)
    nearest = _nearest_index(times, label_times)
    distance = np.abs(times[nearest] - label_times)
    half_interval = _half_frame_interval(times)
    inside = (label_times >= times[0] - half_interval) & (label_times <= times[-1] + half_interval)
    # Assign the farthest rows first so that, on a shared frame, the nearest row is written last and wins.
    order = np.argsort(-distance[inside], kind="stable")
    kept = np.flatnonzero(inside)[order]
    rows[nearest[kept]] = kept
    dropped = len(track) - kept.shape[0]
    note = ""
    if dropped:
        note = (
            f"{dropped} of {len(track)} timed rows lie outside the video's frames "
            f"({times[0]:.3f}s..{times[-1]:.3f}s) and were dropped"
        )
    return rows, note


def _nearest_index(sorted_times: np.ndarray, queries: np.ndarray) -> np.ndarray:
    right = np.clip(np.searchsorted(sorted_times, queries), 1, max(len(sorted_times) - 1, 1))
    left = right - 1
    if len(sorted_times) == 1:
        return np.zeros(queries.shape[0], dtype=np.int64)
    pick_left = np.abs(queries - sorted_times[left]) <= np.abs(sorted_times[right] - queries)
    return np.where(pick_left, left, right).astype(np.int64)


def _half_frame_interval(times: np.ndarray) -> float:
    if times.shape[0] < 2:
        return 0.5  # one frame: accept rows within half a second of it
    return float(np.median(np.diff(times))) / 2.0


def label_arrays(task: LabelTask, rows: Sequence[Sequence[float]]) -> np.ndarray:
    """Rows of parsed numbers -> the task's array with its dtype and shape."""
    if task is LabelTask.VA:
        return np.asarray(rows, dtype=np.float32).reshape(-1, 2)
    if task is LabelTask.EXPR:
        return np.asarray(rows, dtype=np.int16).reshape(-1)
    return np.asarray(rows, dtype=np.int8).reshape(-1, len(AU_NAMES))
