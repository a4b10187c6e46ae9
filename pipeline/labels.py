"""Per-frame labels: valence/arousal, expression, action units and any declared task, on a video's frames.

Adapters read annotation files into ``RawLabels`` (one ``LabelTrack`` per task and file, each row keyed by
a frame index, a time in seconds, or the whole clip). ``align_labels`` puts them on a video's ``Timeline``:

- Frame-keyed rows are looked up by ``frame_index`` (Aff-Wild2: row ``i`` of the file is frame ``i``).
  Rows beyond the video's frames are dropped; frames beyond the rows get the unlabeled code. The
  mismatch is described in the returned note ("va: labels have 1203 rows, video has 1200 frames: 3 extra
  rows dropped"), which the manifest stage logs as a warning and keeps in the manifest row's notes.
- Time-keyed rows are resampled onto the frame times by the task's rule (``dataset.labels.resample``:
  linear within a max gap, hold, nearest, or sparse; pipeline/config/labels.py). Rows more than half a
  frame interval outside the video's first and last frame are noted.
- A clip-keyed row (one label for a whole clip, as CREMA-D's and RAVDESS's file names give) labels
  every frame.
- ``dataset.labels.delay`` shifts every row back in time first (annotation delay compensation).

Tasks the trainers use keep their arrays and Aff-Wild2's unlabeled codes: ``valence_arousal`` (-5),
``expression`` (-1), ``action_units`` (-1). Any other declared task is stored beside them in the labels
shard: ``dimension.<name>`` (T,) float32 NaN-unlabeled, ``category.<name>`` (T,) int16 -1-unlabeled,
``multilabel.<name>`` (T, K) int8 -1-unlabeled, and per-rater ratings ``raters.<dimension>`` (T, R)
float32 NaN-unlabeled (the gold standard is in the dimension's own array).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from avpipe.pipeline.config.labels import (
    AU_CLASS_NAMES,
    EXPRESSION_CLASS_NAMES,
    TRAINER_CATEGORICAL,
    TRAINER_DIMENSIONS,
    TRAINER_MULTILABEL,
    LabelConfig,
    Resample,
)
from avpipe.pipeline.errors import LabelError
from avpipe.pipeline.label_resample import default_max_gap, resample
from avpipe.pipeline.types import FeatureSet, MaskValue, Timeline

# Bump when the alignment rule changes: stored label shards then become stale and are rewritten.
ALIGNMENT_VERSION = "2"

LABELS_EXTRACTOR = "labels"

UNLABELED_VA = -5.0
UNLABELED_EXPRESSION = -1
UNLABELED_AU = -1

VA_NAMES = TRAINER_DIMENSIONS
EXPRESSION_NAMES = EXPRESSION_CLASS_NAMES
AU_NAMES = AU_CLASS_NAMES

DIMENSION_PREFIX = "dimension."
CATEGORY_PREFIX = "category."
MULTILABEL_PREFIX = "multilabel."
RATERS_PREFIX = "raters."


class LabelTask(StrEnum):
    """The annotation tasks of Aff-Wild2 / ABAW."""

    VA = "va"  # valence, arousal in [-1, 1]
    EXPR = "expr"  # one of EXPRESSION_NAMES by index
    AU = "au"  # 12 binary action units


class TaskKind(StrEnum):
    CONTINUOUS = "continuous"
    CATEGORICAL = "categorical"
    MULTILABEL = "multilabel"


_KIND_OF_TASK = {
    LabelTask.VA: TaskKind.CONTINUOUS,
    LabelTask.EXPR: TaskKind.CATEGORICAL,
    LabelTask.AU: TaskKind.MULTILABEL,
}
_UNLABELED_OF_KIND = {
    TaskKind.CONTINUOUS: UNLABELED_VA,
    TaskKind.CATEGORICAL: UNLABELED_EXPRESSION,
    TaskKind.MULTILABEL: UNLABELED_AU,
}


class KeyKind(StrEnum):
    """What identifies the frame of a label row."""

    FRAME = "frame"  # native frame index in presentation order
    TIME = "time"  # seconds on the container clock
    CLIP = "clip"  # one row for every frame of the clip


@dataclass(frozen=True)
class LabelTrack:
    """One task's rows as read from one file, before alignment.

    Aff-Wild2 tasks (``task`` a ``LabelTask``): ``values`` is (N, 2) float32 for VA, (N,) int16 for EXPR,
    (N, 12) int8 for AU, with Aff-Wild2's unlabeled codes. A declared task (``task`` its name, ``kind``
    set): (N,) float for a dimension (NaN unlabeled), (N,) int class index for a categorical task, (N, K)
    0/1 for a multi-label task (-1 unlabeled). ``keys`` (N,) holds each row's frame index (int64) or time
    (float64) according to ``key_kind``. ``raters`` (N, R), NaN unlabeled, keeps every rater of a
    dimension whose ``values`` are their gold standard.
    """

    task: LabelTask | str
    values: np.ndarray
    keys: np.ndarray
    key_kind: KeyKind
    source: str
    kind: TaskKind | None = None
    class_names: tuple[str, ...] = ()
    raters: np.ndarray | None = None
    rater_names: tuple[str, ...] = ()
    gold: str = ""  # how ``values`` were computed from ``raters`` ("" when the file gives them)

    def __post_init__(self) -> None:
        if self.values.shape[0] != self.keys.shape[0]:
            raise ValueError(
                f"{self.source}: {self.values.shape[0]} label rows but {self.keys.shape[0]} keys"
            )
        if self.kind is None:
            if not isinstance(self.task, LabelTask):
                raise ValueError(f"{self.source}: the declared task {self.task!r} needs a kind")
            object.__setattr__(self, "kind", _KIND_OF_TASK[self.task])

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    @property
    def name(self) -> str:
        return task_name(self.task)

    def float_values(self) -> np.ndarray:
        """(N, D) float64, NaN where unlabeled."""
        values = np.asarray(self.values, dtype=np.float64).reshape(len(self), -1)
        if isinstance(self.task, LabelTask) or self.kind is not TaskKind.CONTINUOUS:
            values = np.where(values == _UNLABELED_OF_KIND[self.kind], np.nan, values)
        return values

    def with_keys(self, keys: np.ndarray) -> LabelTrack:
        return replace(self, keys=keys)

    def rater_track(self) -> LabelTrack:
        assert self.raters is not None
        return replace(self, values=self.raters, raters=None, rater_names=())


def task_name(task: LabelTask | str) -> str:
    return task.value if isinstance(task, LabelTask) else task


@dataclass
class RawLabels:
    """Every label track of one annotated video, in file order."""

    tracks: list[LabelTrack] = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        return [track.name for track in self.tracks]


@dataclass
class FrameLabels:
    """Labels of every frame of a timeline (row ``i`` is frame ``timeline.frame_index[i]``)."""

    valence_arousal: np.ndarray  # (T, 2) float32, UNLABELED_VA where unlabeled
    expression: np.ndarray  # (T,) int16, UNLABELED_EXPRESSION where unlabeled
    action_units: np.ndarray  # (T, 12) int8, UNLABELED_AU where unlabeled
    dimensions: dict[str, np.ndarray] = field(default_factory=dict)  # (T,) float32, NaN unlabeled
    categories: dict[str, np.ndarray] = field(default_factory=dict)  # (T,) int16, -1 unlabeled
    multilabels: dict[str, np.ndarray] = field(default_factory=dict)  # (T, K) int8, -1 unlabeled
    raters: dict[str, np.ndarray] = field(default_factory=dict)  # dimension -> (T, R) float32, NaN
    category_names: dict[str, list[str]] = field(default_factory=dict)
    multilabel_names: dict[str, list[str]] = field(default_factory=dict)
    rater_names: dict[str, list[str]] = field(default_factory=dict)
    actions: Counter = field(default_factory=Counter)  # what resampling and repair did, how often

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
        """(T,) bool: frames labeled for any task or dimension (valence alone counts)."""
        mask = np.any(self.valence_arousal != UNLABELED_VA, axis=1)
        mask |= self.task_mask(LabelTask.EXPR) | self.task_mask(LabelTask.AU)
        for values in self.dimensions.values():
            mask |= ~np.isnan(values)
        for values in self.categories.values():
            mask |= values != UNLABELED_EXPRESSION
        for values in self.multilabels.values():
            mask |= np.any(values != UNLABELED_AU, axis=1)
        return mask

    def to_feature_set(self, timeline: Timeline, attrs: dict[str, Any] | None = None) -> FeatureSet:
        """The ``labels`` shard: mask VALID where any task is labeled, MISSING elsewhere."""
        mask = np.where(self.labeled(), MaskValue.VALID, MaskValue.MISSING).astype(np.uint8)
        arrays = {
            "valence_arousal": self.valence_arousal,
            "expression": self.expression,
            "action_units": self.action_units,
        }
        for prefix, group in (
            (DIMENSION_PREFIX, self.dimensions),
            (CATEGORY_PREFIX, self.categories),
            (MULTILABEL_PREFIX, self.multilabels),
            (RATERS_PREFIX, self.raters),
        ):
            arrays.update({prefix + name: values for name, values in group.items()})
        attrs = dict(attrs or {})
        attrs["label_names"] = {
            "category": self.category_names,
            "multilabel": self.multilabel_names,
            "raters": self.rater_names,
        }
        attrs["label_actions"] = dict(sorted(self.actions.items()))
        return FeatureSet(
            time=np.asarray(timeline.time, dtype=np.float64),
            frame_index=np.asarray(timeline.frame_index, dtype=np.int64),
            mask=mask,
            arrays=arrays,
            attrs=attrs,
        )

    @classmethod
    def from_feature_set(cls, features: FeatureSet) -> FrameLabels:
        """Read back a ``labels`` shard (shards written before declared tasks existed have none)."""
        names = dict(features.attrs.get("label_names") or {})
        groups: dict[str, dict[str, np.ndarray]] = {p: {} for p in _PREFIXES}
        for key, values in features.arrays.items():
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    groups[prefix][key[len(prefix) :]] = np.asarray(values)
        return cls(
            valence_arousal=np.asarray(features.arrays["valence_arousal"], dtype=np.float32),
            expression=np.asarray(features.arrays["expression"], dtype=np.int16),
            action_units=np.asarray(features.arrays["action_units"], dtype=np.int8),
            dimensions=groups[DIMENSION_PREFIX],
            categories=groups[CATEGORY_PREFIX],
            multilabels=groups[MULTILABEL_PREFIX],
            raters=groups[RATERS_PREFIX],
            category_names=names.get("category", {}),
            multilabel_names=names.get("multilabel", {}),
            rater_names=names.get("raters", {}),
            actions=Counter(features.attrs.get("label_actions") or {}),
        )


_PREFIXES = (DIMENSION_PREFIX, CATEGORY_PREFIX, MULTILABEL_PREFIX, RATERS_PREFIX)


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


def align_labels(
    raw: RawLabels, timeline: Timeline, config: LabelConfig | None = None
) -> tuple[FrameLabels, str]:
    """Put ``raw`` on ``timeline``; the note (empty when nothing was off) says what the rule changed.

    The timeline is normally the native one (every frame once); the video's frame count is taken as
    ``max(frame_index) + 1`` so that a resampled timeline still looks labels up by source frame.
    Time-keyed rows are resampled by ``config``'s rule for the task (pipeline/config/labels.py); how often
    each rule acted is counted in the result's ``actions``.
    """
    config = config or LabelConfig()
    labels = FrameLabels.unlabeled(len(timeline))
    notes = []
    for track in raw.tracks:
        values, note = _track_on_frames(track, timeline, config, labels.actions)
        _store_track(labels, track, values)
        if track.raters is not None:
            raters, _ = _track_on_frames(track.rater_track(), timeline, config, Counter())
            labels.raters[track.name] = raters.astype(np.float32)
            labels.rater_names[track.name] = list(track.rater_names)
        if track.gold:
            labels.actions[f"{track.name}: samples with a gold standard computed from raters"] += len(track)
            note = "; ".join(filter(None, [f"gold standard {track.gold}", note]))
        if note:
            notes.append(f"{track.name}: {note}")
    labels.actions = Counter({k: v for k, v in labels.actions.items() if v})
    return labels, "; ".join(notes)


def _track_on_frames(
    track: LabelTrack, timeline: Timeline, config: LabelConfig, actions: Counter
) -> tuple[np.ndarray, str]:
    """(T, D) float64 of the track's values on the timeline's frames, NaN where unlabeled."""
    values = track.float_values()
    delay = config.delay_of(track.name)
    if track.key_kind is KeyKind.CLIP:
        out = (
            np.repeat(values[:1], len(timeline), axis=0)
            if len(track)
            else np.full((len(timeline), 1), np.nan)
        )
        actions[f"{track.name}: frames given the clip label"] += len(timeline)
        return out, ""
    if track.key_kind is KeyKind.FRAME:
        shifted = track
        if delay:
            shift = round(delay * _frame_rate(timeline))
            shifted = track.with_keys(track.keys.astype(np.int64) - shift)
            actions[f"{track.name}: rows shifted back {shift} frames (delay)"] += len(track)
        rows, note = _frame_rows(shifted, timeline)
        out = np.full((len(timeline), values.shape[1]), np.nan)
        out[rows >= 0] = values[rows[rows >= 0]]
        return out, note
    times = np.asarray(timeline.time, dtype=np.float64)
    label_times = track.keys.astype(np.float64) - delay
    if delay:
        actions[f"{track.name}: samples shifted back {delay:g}s (delay)"] += len(track)
    rule = config.rule(track.name, track.kind is TaskKind.CONTINUOUS)
    if rule is Resample.LINEAR and track.kind is not TaskKind.CONTINUOUS:
        raise LabelError(track.source, f"{track.name}: linear interpolation of a {track.kind} task")
    max_gap = config.max_gap if config.max_gap is not None else default_max_gap(label_times)
    out, counts = resample(label_times, values, times, rule, max_gap)
    for action, count in counts.items():
        actions[f"{track.name}: {action} ({rule.value})"] += count
    return out, _outside_note(track, label_times, times, rule)


def _frame_rate(timeline: Timeline) -> float:
    times = np.asarray(timeline.time, dtype=np.float64)
    return 1.0 / float(np.median(np.diff(times))) if times.shape[0] > 1 else 1.0


def _store_track(labels: FrameLabels, track: LabelTrack, values: np.ndarray) -> None:
    """Write the non-NaN entries of ``values`` (T, D) into the array the track's task lives in."""
    if len(labels) == 0:
        return
    target, columns = _target(labels, track)
    known = ~np.isnan(values)
    view = target.reshape(len(labels), -1)
    for d, column in enumerate(columns):
        view[known[:, d], column] = values[known[:, d], d]


def _target(labels: FrameLabels, track: LabelTrack) -> tuple[np.ndarray, list[int]]:
    name = track.name
    if track.task is LabelTask.VA:
        return labels.valence_arousal, [0, 1]
    if track.task is LabelTask.EXPR or (name == TRAINER_CATEGORICAL and track.kind is TaskKind.CATEGORICAL):
        return labels.expression, [0]
    if track.task is LabelTask.AU or (name == TRAINER_MULTILABEL and track.kind is TaskKind.MULTILABEL):
        return labels.action_units, list(range(len(AU_NAMES)))
    if name in VA_NAMES and track.kind is TaskKind.CONTINUOUS:
        return labels.valence_arousal, [VA_NAMES.index(name)]
    n = len(labels)
    if track.kind is TaskKind.CONTINUOUS:
        array = labels.dimensions.setdefault(name, np.full(n, np.nan, dtype=np.float32))
        return array, [0]
    if track.kind is TaskKind.CATEGORICAL:
        labels.category_names[name] = list(track.class_names)
        array = labels.categories.setdefault(name, np.full(n, UNLABELED_EXPRESSION, dtype=np.int16))
        return array, [0]
    labels.multilabel_names[name] = list(track.class_names)
    width = len(track.class_names)
    array = labels.multilabels.setdefault(name, np.full((n, width), UNLABELED_AU, dtype=np.int8))
    return array, list(range(width))


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


def _outside_note(track: LabelTrack, label_times: np.ndarray, times: np.ndarray, rule: Resample) -> str:
    if times.shape[0] == 0:
        return f"video has no frames: {len(track)} rows dropped" if len(track) else ""
    half_interval = _half_frame_interval(times)
    inside = (label_times >= times[0] - half_interval) & (label_times <= times[-1] + half_interval)
    dropped = int(len(track) - np.count_nonzero(inside))
    if not dropped:
        return ""
    # only the sparse rule drops them; the others still interpolate or hold towards them
    fate = "were dropped" if rule is Resample.SPARSE else "label no frame of their own"
    return (
        f"{dropped} of {len(track)} timed rows lie outside the video's frames "
        f"({times[0]:.3f}s..{times[-1]:.3f}s) and {fate}"
    )


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
