"""The order in which a DataLoader visits the windows of a ``FeatureWindows`` dataset.

``WindowSampler`` yields window indices; it runs in the main process, so a DataLoader with any
``num_workers`` gets the same batches. The order of an epoch depends only on ``seed`` and the epoch
number: each ``iter()`` uses the current epoch and then advances it (``set_epoch`` pins it, as for
torch's DistributedSampler).

- ``balance: none``: every window once per epoch, shuffled when ``shuffle``.
- ``balance: video``: ``num_samples`` windows (default: as many as the dataset has) drawn with
  replacement, a video uniformly at random and then one of its windows, so long videos do not dominate
  (random whatever ``shuffle`` says).

``labeled_only`` leaves out the windows without any label of the dataset's tasks (as the trainers do for
training); how many it left out is in ``left_out``.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

import numpy as np
from torch.utils.data import Sampler

from avpipe.models.dataset import FeatureWindows


class Balance(StrEnum):
    NONE = "none"  # each window once per epoch
    VIDEO = "video"  # each video equally likely, windows drawn with replacement


class WindowSampler(Sampler[int]):
    """Window indices of ``dataset`` for a DataLoader's ``sampler`` (module docstring)."""

    def __init__(
        self,
        dataset: FeatureWindows,
        shuffle: bool = True,
        balance: Balance | str = Balance.NONE,
        num_samples: int | None = None,
        labeled_only: bool = False,
        seed: int = 0,
    ) -> None:
        self.shuffle = shuffle
        self.balance = Balance(balance)
        self.seed = int(seed)
        self.epoch = 0
        keep = dataset.labeled_windows() if labeled_only else np.ones(len(dataset), dtype=bool)
        self.indices = np.flatnonzero(keep)
        self.left_out = int(len(dataset) - self.indices.shape[0])
        if num_samples is not None and self.balance is Balance.NONE:
            raise ValueError(
                "WindowSampler: num_samples needs balance='video' (otherwise each window is taken once)"
            )
        if num_samples is not None and int(num_samples) < 0:
            raise ValueError(f"WindowSampler: num_samples must be >= 0, got {num_samples}")
        self.num_samples = int(num_samples) if num_samples is not None else int(self.indices.shape[0])
        videos = dataset.window_video()[self.indices]
        # windows grouped by video: the windows of the k-th video with any are indices[order][offsets[k]:...]
        self.order = np.argsort(videos, kind="stable")
        _, self.offsets, self.counts = np.unique(videos[self.order], return_index=True, return_counts=True)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        if self.balance is Balance.VIDEO:
            chosen = self._balanced(rng)
        elif self.shuffle:
            chosen = self.indices[rng.permutation(self.indices.shape[0])]
        else:
            chosen = self.indices
        return iter(chosen.tolist())

    def _balanced(self, rng: np.random.Generator) -> np.ndarray:
        if self.counts.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        video = rng.integers(self.counts.shape[0], size=self.num_samples)
        within = np.floor(rng.random(self.num_samples) * self.counts[video]).astype(np.int64)
        return self.indices[self.order[self.offsets[video] + within]]
