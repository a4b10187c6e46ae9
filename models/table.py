"""All videos' frames in memory, one array per input; windows are rows of an index matrix.

Row 0 of every array is a padding row (zero features, no labels). A window is ``length`` table rows, with
0 where a short video is padded, so a batch is one fancy-indexing gather per array: no per-window Python,
no decoding, no file access after loading. That is what keeps the loader far ahead of the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.config import Task
from models.data import VideoData
from models.windows import PAD, window_rows
from pipeline.labels import UNLABELED_AU, UNLABELED_EXPRESSION, UNLABELED_VA

PAD_ROW = 0


@dataclass(frozen=True)
class VideoSpan:
    start: int  # table row of the video's first frame
    length: int


class FrameTable:
    """Concatenated per-frame arrays of ``videos`` (features raw, as stored)."""

    def __init__(self, videos: Sequence[VideoData], keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self.spans: dict[str, VideoSpan] = {}
        row = 1
        for video in videos:
            self.spans[video.video_id] = VideoSpan(row, len(video))
            row += len(video)
        self.n_rows = row
        self.features = {key: self._stack(videos, key) for key in self.keys}
        self.valid = {key: self._stack_valid(videos, key) for key in self.keys}
        self.labels = {
            Task.VA: self._stack_labels(videos, "valence_arousal", UNLABELED_VA, np.float32),
            Task.EXPR: self._stack_labels(videos, "expression", UNLABELED_EXPRESSION, np.int64),
            Task.AU: self._stack_labels(videos, "action_units", UNLABELED_AU, np.float32),
        }

    def _stack(self, videos: Sequence[VideoData], key: str) -> np.ndarray:
        dim = videos[0].features[key].shape[1] if videos else 0
        out = np.zeros((self.n_rows, dim), dtype=np.float32)
        for video in videos:
            span = self.spans[video.video_id]
            values = video.features[key]
            if values.shape[1] != dim:
                raise ValueError(
                    f"input {key!r} of video {video.video_id!r} has {values.shape[1]} values, others {dim}"
                )
            out[span.start : span.start + span.length] = values
        return out

    def _stack_valid(self, videos: Sequence[VideoData], key: str) -> np.ndarray:
        out = np.zeros(self.n_rows, dtype=bool)
        for video in videos:
            span = self.spans[video.video_id]
            out[span.start : span.start + span.length] = video.valid[key]
        return out

    def _stack_labels(self, videos: Sequence[VideoData], name: str, fill: float, dtype: type) -> np.ndarray:
        first = getattr(videos[0].labels, name) if videos else np.zeros((0, 2))
        out = np.full((self.n_rows, *first.shape[1:]), fill, dtype=dtype)
        for video in videos:
            span = self.spans[video.video_id]
            out[span.start : span.start + span.length] = getattr(video.labels, name)
        return out

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

    def labeled_windows(self, windows: np.ndarray, tasks: Sequence[Task]) -> np.ndarray:
        """Bool per window: it has at least one frame labeled for one of ``tasks``."""
        labeled = np.zeros(self.n_rows, dtype=bool)
        for task in tasks:
            values = self.labels[task]
            unlabeled = {Task.VA: UNLABELED_VA, Task.EXPR: UNLABELED_EXPRESSION, Task.AU: UNLABELED_AU}[task]
            flags = values != unlabeled
            labeled |= flags if flags.ndim == 1 else np.any(flags, axis=1)
        return np.any(labeled[windows], axis=1)


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # key -> (B, L, D)
    targets: dict[str, torch.Tensor]  # task -> (B, L, C) or (B, L)
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
        targets: Mapping[Task, np.ndarray],
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
            targets={task.value: torch.from_numpy(values[rows]) for task, values in self.targets.items()},
            valid=torch.from_numpy(rows != PAD_ROW),
            index=index,
        )
