"""All videos' frames in one table, one array per input; windows are rows of an index matrix.

Row 0 of every array is a padding row (zero features, no labels). A window is ``length`` table rows, with
0 where a short video is padded, so a batch is one fancy-indexing gather per array: no per-window Python,
no decoding, no file access after loading. That is what keeps the loader far ahead of the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avpipe.models.data import VideoData
from avpipe.models.rowfile import RowFile
from avpipe.models.tasks import (
    TaskSpec,
    labeled_frames,
    target_dtype,
    target_shape,
    task_targets,
    unlabeled_fill,
)
from avpipe.models.windows import PAD, window_rows
from avpipe.pipeline.config.train import Task
from avpipe.pipeline.labels import FrameLabels

PAD_ROW = 0


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


@dataclass(frozen=True)
class VideoSpan:
    start: int  # table row of the video's first frame
    length: int


class FrameTable:
    """Concatenated per-frame arrays of ``videos`` (features as stored, in ``dtype``).

    ``videos`` is consumed once, video by video, so it may be a generator reading the store: only one
    video's features are held besides the table. ``dtype`` float16 halves the table (the values are
    standardised per batch in float32, models/stats.py). With ``cache_dir`` every input's rows go to a
    file there instead of memory (models/rowfile.py): memory then holds the masks and one batch.
    """

    def __init__(
        self,
        videos: Iterable[VideoData],
        keys: Sequence[str],
        dtype: np.dtype | type = np.float32,
        cache_dir: Path | None = None,
    ) -> None:
        self.keys = list(keys)
        self.dtype = np.dtype(dtype)
        self.spans: dict[str, VideoSpan] = {}
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        parts: dict[str, list] = {key: [] for key in [*self.keys, *(f"valid/{k}" for k in self.keys)]}
        writers: dict[str, RowFile] = {}
        row = 1
        for video in videos:
            self.spans[video.video_id] = VideoSpan(row, len(video))
            row += len(video)
            for key in self.keys:
                values = video.features[key]
                if key not in writers and not parts[key]:
                    self._start(key, values.shape[1], parts, writers)
                self._append(key, values, video.video_id, parts, writers)
                parts[f"valid/{key}"].append(np.asarray(video.valid[key], dtype=bool))
        self.n_rows = row
        self.features = {key: self._finish(key, parts, writers) for key in self.keys}
        self.valid = {key: np.concatenate([[False], *parts[f"valid/{key}"]]) for key in self.keys}

    def _start(self, key: str, dim: int, parts: dict[str, list], writers: dict[str, RowFile]) -> None:
        padding = np.zeros((1, dim), self.dtype)  # row 0: the padding row
        if self.cache_dir is None:
            parts[key].append(padding)
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        writers[key] = RowFile(self.cache_dir / f"{_safe(key)}.rows", dim, self.dtype)
        writers[key].append(padding)

    def _append(
        self, key: str, values: np.ndarray, video_id: str, parts: dict[str, list], writers: dict[str, RowFile]
    ) -> None:
        dim = writers[key].dim if key in writers else parts[key][0].shape[1]
        if values.shape[1] != dim:
            raise ValueError(
                f"input {key!r} of video {video_id!r} has {values.shape[1]} values, others {dim}"
            )
        if key in writers:
            writers[key].append(values)
        else:
            parts[key].append(np.asarray(values, dtype=self.dtype))

    def _finish(self, key: str, parts: dict[str, list], writers: dict[str, RowFile]) -> np.ndarray | RowFile:
        if key in writers:
            return writers[key].finish()
        if not parts[key]:
            return np.zeros((self.n_rows, 0), dtype=self.dtype)
        table = np.concatenate(parts[key])
        parts[key].clear()
        return table

    def rows_of(self, video_ids: Sequence[str]) -> np.ndarray:
        """Table rows of the frames of ``video_ids`` (bool mask over the table)."""
        selected = np.zeros(self.n_rows, dtype=bool)
        for video_id in video_ids:
            span = self.spans[video_id]
            selected[span.start : span.start + span.length] = True
        return selected

    def windows(self, video_ids: Sequence[str], length: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
        """(n_windows, length) table rows of the windows of ``video_ids`` and each window's video position."""
        blocks, owners = [], []
        for position, video_id in enumerate(video_ids):
            span = self.spans[video_id]
            local = window_rows(span.length, length, hop)
            blocks.append(np.where(local == PAD, PAD_ROW, local + span.start))
            owners.append(np.full(local.shape[0], position, dtype=np.int64))
        if not blocks:
            return np.zeros((0, length), dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(blocks), np.concatenate(owners)

    def task_targets(
        self, tasks: Sequence[TaskSpec], labels: Mapping[str, FrameLabels]
    ) -> dict[str, np.ndarray]:
        """Each task's targets on every table row (avpipe.models.tasks.task_targets; the padding row and
        a video without labels are unlabelled), keyed by task key."""
        result = {}
        for spec in tasks:
            values = np.full(
                (self.n_rows, *target_shape(spec)), unlabeled_fill(spec), dtype=target_dtype(spec)
            )
            for video_id, span in self.spans.items():
                if video_id in labels:
                    values[span.start : span.start + span.length] = task_targets(spec, labels[video_id])
            result[spec.key] = values
        return result

    def labeled_windows(
        self, windows: np.ndarray, tasks: Sequence[TaskSpec], targets: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """Bool per window: at least one of its frames is labelled for one of ``tasks`` (``targets`` as
        :meth:`task_targets` gives them). The trainers train on these windows only."""
        labeled = np.zeros(self.n_rows, dtype=bool)
        for spec in tasks:
            labeled |= labeled_frames(spec, targets[spec.key])
        return np.any(labeled[windows], axis=1)


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # key -> (B, L, D)
    targets: dict[str, torch.Tensor]  # task key -> (B, L, C) or (B, L)
    valid: torch.Tensor  # (B, L) bool, False at padded positions
    index: np.ndarray  # positions of these windows in the iterated window matrix

    def to(self, device: torch.device) -> Batch:
        return Batch(
            inputs={k: v.to(device, non_blocking=True) for k, v in self.inputs.items()},
            targets={k: v.to(device, non_blocking=True) for k, v in self.targets.items()},
            valid=self.valid.to(device, non_blocking=True),
            index=self.index,
        )


class WindowBatches:
    """Batches of windows gathered from standardised arrays; reshuffled each iteration when ``shuffle``."""

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        targets: Mapping[Task, np.ndarray] | Mapping[str, np.ndarray],
        windows: np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        self.inputs = dict(inputs)
        self.targets = dict(targets)
        self.windows = windows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return -(-self.windows.shape[0] // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = self.windows.shape[0]
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for first in range(0, n, self.batch_size):
            index = order[first : first + self.batch_size]
            yield self.gather(index)

    def gather(self, index: np.ndarray) -> Batch:
        rows = self.windows[index]
        return Batch(
            inputs={key: torch.from_numpy(values[rows]) for key, values in self.inputs.items()},
            targets={
                str(getattr(task, "value", task)): torch.from_numpy(values[rows])
                for task, values in self.targets.items()
            },
            valid=torch.from_numpy(rows != PAD_ROW),
            index=index,
        )
