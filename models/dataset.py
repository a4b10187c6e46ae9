"""A torch ``Dataset`` of fixed-length windows over the feature store: features, masks and labels.

For one's own models on cached features (docs/TRAINING.md, "Your own model on cached features"):

    stats = fit_store_stats(store, config.feature_specs, train_ids)   # training videos only
    train = FeatureWindows(store, config, train_ids, stats)
    loader = DataLoader(train, batch_size=8, sampler=WindowSampler(train), num_workers=2)

Each video's rows are cut into windows of ``config.window`` rows every ``config.hop`` rows. With
``last_window: pad`` (default) every window starts on the hop grid and the last one, where it runs past
the end of the video, is padded: its padded positions have ``frame_mask`` False, every feature and label
mask False, features 0, times NaN and frame indices -1. ``last_window: align_end`` is the trainers'
(ABAW2) rule instead: the last window ends at the last frame, only a video shorter than a window is padded.

Every feature must lie on the same frame timeline (identical ``time`` and ``frame_index`` arrays, as
features extracted with one ``dataset.fps`` are, docs/FORMAT.md); a video where one does not is an error
naming the video and the feature. Labels are read once at construction and joined on ``frame_index`` (the
manifest stage stores them on the native timeline).

Features are read window by window when an item is asked for, through shards that the process asking
opens lazily and keeps open (``FeatureStore.open_reader``; at most ``max_open_shards``, the least recently
used closed first). Building the dataset leaves no file open, a pickled dataset carries no handle and a
forked process drops its parent's, so DataLoader workers (``num_workers > 0``) each open their own.
``preload=True`` reads every video's features into memory when the dataset is built instead: much faster
windows, memory as large as the features.

An item is a dict:

- ``video_id`` (str), ``start`` (int: the window's first row in the video's timeline);
- ``time`` (W,) float64 seconds, ``frame_index`` (W,) int64, ``frame_mask`` (W,) bool (False: padding);
- ``features``: input key -> (W, D) float32, standardised with ``stats`` when given, 0 where invalid;
- ``feature_masks``: input key -> (W,) bool, True where the frame's mask is not MISSING and its values
  are finite (the trainers' rule, models/data.py);
- ``labels``: task key -> (W,) or (W, K): where ``label_masks`` is True, the targets the trainers train
  that task on (``avpipe.models.tasks.task_targets``: float32, int64 class indices for a categorical
  task; a ``dimension:<name>`` is (W,), the trainers' (T, 1) without its last axis). Unlabeled entries
  hold -1 in a categorical task (the trainers' code, ``ignore_index=-1``) and 0 in the others (so a
  loss times the mask stays finite);
- ``label_masks``: task key -> bool of the same shape, ``avpipe.models.tasks.labeled_entries`` of those
  targets (per value: a valence-only frame is labeled in ``va``'s first column only).

The tasks are named as ``train.tasks`` names them and resolved by the same module
(``avpipe.models.tasks``): ``va``, ``expr``, ``au``, ``dimension:<name>``, ``category:<name>``,
``multilabel:<name>``. The labels are read by the trainers' own reader (``avpipe.models.data``).

torch's default collate turns a list of items into a batch of the same layout with a leading batch axis
(``video_id`` becomes a list of str).
"""

from __future__ import annotations

import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from avpipe.models.data import read_labels_found
from avpipe.models.stats import FeatureStats, StandardisedView, valid_frames
from avpipe.models.tasks import TaskSpec, held_tasks, labeled_entries, stored_tasks, task_targets
from avpipe.models.windows import padded_window_starts, window_starts
from avpipe.pipeline.config.train import FeatureSpec, check_task_key
from avpipe.pipeline.errors import StoreError
from avpipe.pipeline.labels import LABELS_EXTRACTOR, UNLABELED_EXPRESSION, FrameLabels, TaskKind
from avpipe.pipeline.store import FeatureStore, ShardReader
from avpipe.pipeline.types import Timeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskLabels:
    """One task's labels on a video's frames: the trainers' targets where ``mask``, ``fill`` elsewhere."""

    values: np.ndarray  # (T,) or (T, K): float32, int64 for a categorical task
    mask: np.ndarray  # bool, the shape of values
    fill: int | float  # the value of an unlabeled entry: -1 for class indices, 0 for values and flags

    @classmethod
    def of(cls, spec: TaskSpec, labels: FrameLabels) -> TaskLabels:
        """``spec``'s targets on the frames of ``labels`` (avpipe.models.tasks.task_targets)."""
        targets = task_targets(spec, labels)
        mask = labeled_entries(spec, targets)
        if not spec.builtin and spec.kind is TaskKind.CONTINUOUS:  # one dimension: (T,), not (T, 1)
            targets, mask = targets[:, 0], mask[:, 0]
        fill = UNLABELED_EXPRESSION if spec.kind is TaskKind.CATEGORICAL else 0.0
        return cls(np.where(mask, targets, fill).astype(targets.dtype), mask, fill)


class LastWindow(StrEnum):
    """Where the last window of a video lies."""

    PAD = "pad"  # on the hop grid, running past the end of the video: padded (frame_mask False)
    ALIGN_END = "align_end"  # ends at the last frame (ABAW2, the trainers): only short videos are padded


@dataclass
class WindowConfig:
    """What a ``FeatureWindows`` dataset reads. ``features`` takes ``FeatureSpec``s or their short forms
    (``"logmel"``, ``"fer-minixception:logits"``); ``tasks`` names label tasks as ``train.tasks`` does
    (``va``, ``expr``, ``au``, ``dimension:<name>``, ``category:<name>``, ``multilabel:<name>``;
    avpipe.models.tasks), none for unlabeled data. Without ``require_labels`` a video lacking a labels
    shard is unlabeled."""

    features: Sequence[FeatureSpec | str]
    tasks: Sequence[str] = ()
    window: int = 64
    hop: int = 32
    last_window: LastWindow = LastWindow.PAD
    require_labels: bool = True
    feature_specs: list[FeatureSpec] = field(init=False)

    def __post_init__(self) -> None:
        self.feature_specs = [FeatureSpec.parse(f) if isinstance(f, str) else f for f in self.features]
        if not self.feature_specs:
            raise ValueError("WindowConfig.features: name at least one feature")
        keys = [spec.key for spec in self.feature_specs]
        for name, items in (("features", keys), ("tasks", list(self.tasks))):
            repeated = sorted(k for k, n in Counter(items).items() if n > 1)
            if repeated:
                raise ValueError(f"WindowConfig.{name}: {repeated} given more than once")
        if int(self.window) < 1 or int(self.hop) < 1:
            raise ValueError(f"WindowConfig: window and hop must be >= 1, got {self.window} and {self.hop}")
        self.last_window = LastWindow(self.last_window)
        self.tasks = [check_task_key(task, f"WindowConfig.tasks[{i}]") for i, task in enumerate(self.tasks)]

    def starts(self, n_frames: int) -> np.ndarray:
        """The first rows of the windows of a video of ``n_frames`` rows."""
        if self.last_window is LastWindow.PAD:
            return padded_window_starts(n_frames, self.window, self.hop)
        return window_starts(n_frames, self.window, self.hop)


class FeatureWindows(Dataset):
    """The windows of ``video_ids`` (module docstring); ``stats`` standardises the features (fit them on
    the training videos with ``fit_store_stats`` and give the same ``stats`` to every split)."""

    def __init__(
        self,
        store: FeatureStore,
        config: WindowConfig,
        video_ids: Sequence[str],
        stats: FeatureStats | None = None,
        max_open_shards: int = 128,
        preload: bool = False,
    ) -> None:
        if int(max_open_shards) < 1:
            raise ValueError(f"max_open_shards must be >= 1, got {max_open_shards}")
        self.max_open_shards = int(max_open_shards)
        self._readers: OrderedDict[tuple[str, str], ShardReader] = OrderedDict()
        self._readers_pid = os.getpid()
        self.store = store
        self.config = config
        self.video_ids = list(video_ids)
        repeated = sorted(v for v, n in Counter(self.video_ids).items() if n > 1)
        if repeated:
            raise ValueError(f"video ids given more than once: {repeated[:5]}")
        self.specs = config.feature_specs
        check_features_stored(store, self.specs)
        self.counts: Counter = Counter()  # what joining the labels did, how often (logged)
        self.timelines = [self._timeline(video_id) for video_id in self.video_ids]
        self.dims = self._dims()
        self.stats = stats
        if stats is not None:
            check_stats(stats, self.dims)
        self.preloaded = [self._read_video(video_id) for video_id in self.video_ids] if preload else None
        self.labels = self._labels()
        self.windows = self._windows()  # (n_windows, 2): video position, first row
        if self.counts:
            log.info(
                "feature windows of %d videos: %s", len(self.video_ids), dict(sorted(self.counts.items()))
            )

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        position, start = (int(v) for v in self.windows[index])
        video_id, timeline = self.video_ids[position], self.timelines[position]
        stop = min(start + self.config.window, len(timeline))
        width, n = self.config.window, stop - start
        frame_mask = np.zeros(width, dtype=bool)
        frame_mask[:n] = True
        features, masks = {}, {}
        for spec in self.specs:
            values, valid = self._read_feature(spec, position, start, stop)
            features[spec.key] = torch.from_numpy(_pad(values, width, 0.0))
            masks[spec.key] = torch.from_numpy(_pad(valid, width, False))
        labels, label_masks = {}, {}
        for task, video_labels in self.labels[position].items():
            labels[task] = torch.from_numpy(_pad(video_labels.values[start:stop], width, video_labels.fill))
            label_masks[task] = torch.from_numpy(_pad(video_labels.mask[start:stop], width, False))
        return {
            "video_id": video_id,
            "start": start,
            "time": torch.from_numpy(_pad(timeline.time[start:stop], width, np.nan)),
            "frame_index": torch.from_numpy(_pad(timeline.frame_index[start:stop], width, -1)),
            "frame_mask": torch.from_numpy(frame_mask),
            "features": features,
            "feature_masks": masks,
            "labels": labels,
            "label_masks": label_masks,
        }

    def window_video(self) -> np.ndarray:
        """(n_windows,) int: the position in ``video_ids`` of each window's video."""
        return self.windows[:, 0]

    def labeled_windows(self) -> np.ndarray:
        """(n_windows,) bool: the window has at least one label of one task."""
        labeled = np.zeros(len(self), dtype=bool)
        first = np.searchsorted(self.windows[:, 0], np.arange(len(self.video_ids) + 1))  # windows by video
        for position, tasks in enumerate(self.labels):
            if not tasks:
                continue
            frames = np.zeros(len(self.timelines[position]), dtype=bool)
            for video_labels in tasks.values():
                mask = video_labels.mask
                frames |= mask if mask.ndim == 1 else np.any(mask, axis=1)
            cumulative = np.concatenate([[0], np.cumsum(frames)])
            mine = slice(first[position], first[position + 1])
            starts = self.windows[mine, 1]
            stops = np.minimum(starts + self.config.window, len(frames))
            labeled[mine] = cumulative[stops] > cumulative[starts]
        return labeled

    # ---- reading

    def _reader(self, extractor: str, video_id: str) -> ShardReader:
        """The open shard of this process (never one inherited from another: a fork copies the dict)."""
        if self._readers_pid != os.getpid():
            self._readers = OrderedDict()  # the parent's handles: not ours to read or close
            self._readers_pid = os.getpid()
        key = (extractor, video_id)
        reader = self._readers.get(key)
        if reader is None:
            reader = self._readers[key] = self.store.open_reader(extractor, video_id)
            while len(self._readers) > self.max_open_shards:
                self._readers.popitem(last=False)[1].close()
        else:
            self._readers.move_to_end(key)
        return reader

    def close(self) -> None:
        """Close the shards this process opened (reading again reopens them)."""
        if self._readers_pid == os.getpid():
            for reader in self._readers.values():
                reader.close()
        self._readers = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_readers": OrderedDict()}  # handles never travel to a worker

    def _check_width(self, spec: FeatureSpec, video_id: str, values: np.ndarray) -> None:
        if values.shape[1] != self.dims[spec.key]:
            raise StoreError(
                f"{self.store.shard_path(spec.extractor, video_id)}: {spec.key!r} has {values.shape[1]} "
                f"values per frame, the first video {self.dims[spec.key]}"
            )

    def _read_video(self, video_id: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every feature of the video as stored, and its mask (``preload``)."""
        out = {}
        for spec in self.specs:
            stored = self.store.read(spec.extractor, video_id, [spec.array])
            values = stored.arrays[spec.array].reshape(len(stored), -1)
            self._check_width(spec, video_id, values)
            out[spec.key] = (values, stored.mask)
        return out

    def _read_feature(
        self, spec: FeatureSpec, position: int, start: int, stop: int
    ) -> tuple[np.ndarray, ...]:
        video_id = self.video_ids[position]
        if self.preloaded is not None:
            values, mask = (array[start:stop] for array in self.preloaded[position][spec.key])
        else:
            reader = self._reader(spec.extractor, video_id)
            values = reader.read_rows(spec.array, start, stop).reshape(stop - start, -1)
            mask = reader.read_rows("mask", start, stop)
            self._check_width(spec, video_id, values)
        valid = valid_frames(mask, values)
        if self.stats is None:
            out = np.where(valid[:, None], values, 0.0).astype(np.float32)
        else:
            view = StandardisedView(values, valid, self.stats.mean[spec.key], self.stats.std[spec.key])
            out = view[np.arange(values.shape[0])]
        return out, valid

    def _timeline(self, video_id: str) -> Timeline:
        """The video's frame timeline; StoreError when a feature is on another one."""
        first = None
        for spec in self.specs:
            stored = self.store.read_range(spec.extractor, video_id)
            timeline = Timeline(time=stored.time, frame_index=stored.frame_index)
            if first is None:
                first = (spec, timeline)
                continue
            if not (
                np.array_equal(timeline.time, first[1].time)
                and np.array_equal(timeline.frame_index, first[1].frame_index)
            ):
                raise StoreError(
                    f"video {video_id!r}: feature {spec.key!r} is not on the frame timeline of "
                    f"{first[0].key!r} ({describe(timeline)} against {describe(first[1])}); every feature "
                    "must have the same time and frame_index arrays: extract them all with one dataset.fps"
                )
        assert first is not None
        return first[1]

    def _dims(self) -> dict[str, int]:
        dims = {}
        for spec in self.specs:
            for video_id in self.video_ids[:1]:
                part = self.store.read_range(spec.extractor, video_id, [spec.array], 0, 0)
                dims[spec.key] = int(np.prod(part.arrays[spec.array].shape[1:], dtype=np.int64))
        return dims

    def _labels(self) -> list[dict[str, TaskLabels]]:
        """Per video, each task's labels on the video's timeline (the trainers' targets of the task)."""
        tasks = self.config.tasks
        if not tasks or not self.video_ids:
            return [{} for _ in self.video_ids]
        stored = set(self.store.videos(LABELS_EXTRACTOR))
        read: list[FrameLabels | None] = []
        for video_id, timeline in zip(self.video_ids, self.timelines, strict=True):
            if video_id not in stored:
                if self.config.require_labels:
                    raise StoreError(
                        f"{self.store.shard_path(LABELS_EXTRACTOR, video_id)}: video {video_id!r} has no "
                        "labels shard (run the manifest stage; require_labels=False reads it as unlabeled)"
                    )
                self.counts["videos without a labels shard (unlabeled)"] += 1
                read.append(None)
                continue
            labels, found = read_labels_found(self.store, video_id, timeline.frame_index)
            missing = int(np.count_nonzero(~found))
            self.counts["frames without a row in their labels shard (unlabeled)"] += missing
            read.append(labels)
        specs = self._task_specs(read, tasks)
        out = []
        for labels, timeline in zip(read, self.timelines, strict=True):
            if labels is None:
                labels = FrameLabels.unlabeled(len(timeline))
            else:
                held = {spec.key for spec in held_tasks(labels)}
                for key in (task for task in tasks if task not in held):
                    self.counts[f"{key}: videos whose labels shard lacks the task (unlabeled)"] += 1
            out.append({spec.key: TaskLabels.of(spec, labels) for spec in specs})
        return out

    def _task_specs(self, read: list[FrameLabels | None], tasks: Sequence[str]) -> list[TaskSpec]:
        """The specs of ``tasks`` from the labels shards that hold them; a task none holds is an error
        listing the tasks they do hold."""
        labelled = [(v, labels) for v, labels in zip(self.video_ids, read, strict=True) if labels is not None]
        if not labelled:
            raise StoreError(
                f"{self.store.root}: none of these {len(self.video_ids)} videos has a labels shard, so the "
                f"tasks {list(tasks)} cannot be read; give tasks=[] for unlabeled videos"
            )
        held = stored_tasks(labelled, tasks)
        unknown = [task for task in tasks if task not in held]
        if unknown:
            there = dict.fromkeys(spec.key for _, labels in labelled for spec in held_tasks(labels))
            raise StoreError(
                f"{self.store.root}: no labels shard of these {len(self.video_ids)} videos has the task(s) "
                f"{unknown} (tasks there: {', '.join(there)})"
            )
        return [held[task] for task in tasks]

    def _windows(self) -> np.ndarray:
        blocks = []
        for position, timeline in enumerate(self.timelines):
            starts = self.config.starts(len(timeline))
            blocks.append(np.stack([np.full(starts.shape[0], position, dtype=np.int64), starts], axis=1))
        return np.concatenate(blocks) if blocks else np.zeros((0, 2), dtype=np.int64)


def check_features_stored(store: FeatureStore, specs: Sequence[FeatureSpec]) -> None:
    """A StoreError naming the store and the features it has when one of ``specs`` has no folder there."""
    present = store.extractors()
    for spec in specs:
        if spec.extractor not in present:
            raise StoreError(
                f"{store.root}: no feature {spec.extractor!r} in this store "
                f"(features there: {', '.join(present) or 'none'})"
            )


def check_stats(stats: FeatureStats, dims: dict[str, int]) -> None:
    for key, dim in dims.items():
        if key not in stats.mean or key not in stats.std:
            raise ValueError(
                f"the standardisation statistics lack feature {key!r} (they have {sorted(stats.mean)})"
            )
        if stats.mean[key].shape != (dim,) or stats.std[key].shape != (dim,):
            raise ValueError(
                f"the standardisation statistics of {key!r} have {stats.mean[key].shape[0]} values, "
                f"the feature {dim}"
            )


def describe(timeline: Timeline) -> str:
    if len(timeline) == 0:
        return "0 rows"
    return f"{len(timeline)} rows, {timeline.time[0]:.3f}-{timeline.time[-1]:.3f} s"


def _pad(values: np.ndarray, width: int, fill: float | int | bool) -> np.ndarray:
    """``values`` (n, ...) extended to (width, ...) with ``fill``."""
    if values.shape[0] == width:
        return np.ascontiguousarray(values)
    out = np.full((width, *values.shape[1:]), fill, dtype=values.dtype)
    out[: values.shape[0]] = values
    return out
