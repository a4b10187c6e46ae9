"""Per-feature standardisation with statistics of the training videos only, computed once and cached.

The cache file is ``<output_dir>/stats/<key>.npz``, the key a hash of the training video ids, the inputs
(names and sizes) and each shard's size and modification time, so re-extracted features or another fold
get their own statistics and an unchanged setup reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avpipe.models.base import InputSpec
from avpipe.models.table import FrameTable
from avpipe.pipeline import atomic
from avpipe.pipeline.config.train import FeatureSpec
from avpipe.pipeline.errors import StoreError
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.types import MaskValue

log = logging.getLogger(__name__)

MIN_STD = 1e-6  # constant dimensions are left unscaled instead of blowing up
STATS_BLOCK_VALUES = 1 << 21  # values per block: 16 MB of float64 whatever the width


class StandardisedView:
    """``(values[rows] - mean) / std`` in float32 with invalid rows zeroed, computed at each read."""

    def __init__(self, values: Any, valid: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
        self.values = values  # (n_rows, D) array or RowFile, any float dtype
        self.valid = valid
        self.mean = np.asarray(mean, np.float32)
        self.scale = _inverse(std)
        self.group: np.ndarray | None = None  # row -> statistics index, once ``override`` is used
        self.means: list[np.ndarray] = [self.mean]
        self.scales: list[np.ndarray] = [self.scale]

    def override(self, rows: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardise the rows selected by the bool mask ``rows`` with their own statistics."""
        if self.group is None:
            self.group = np.zeros(self.valid.shape[0], dtype=np.int16)
        self.means.append(np.asarray(mean, np.float32))
        self.scales.append(_inverse(std))
        self.group[rows] = len(self.means) - 1

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        raw = self.values[rows]
        if self.group is None:
            out = np.subtract(raw, self.mean, dtype=np.float32)  # converts and centres in one pass
            out *= self.scale
        else:
            group = self.group[rows]
            out = np.subtract(raw, np.stack(self.means)[group], dtype=np.float32)
            out *= np.stack(self.scales)[group]
        invalid = ~self.valid[rows]
        if invalid.any():
            out[invalid] = 0.0
        return out


def _inverse(std: np.ndarray) -> np.ndarray:
    return (1.0 / np.asarray(std, np.float64)).astype(np.float32)


@dataclass
class FeatureStats:
    mean: dict[str, np.ndarray]  # key -> (D,) float32
    std: dict[str, np.ndarray]

    def apply(self, table: FrameTable) -> dict[str, np.ndarray]:
        """Standardised float32 copies of the whole table (small tables; see ``view`` for large ones)."""
        every_row = np.arange(table.n_rows)
        return {key: view[every_row] for key, view in self.view(table).items()}

    def view(self, table: FrameTable) -> dict[str, StandardisedView]:
        """Per input, the table standardised on read: ``view[rows]`` is float32, invalid rows 0.

        No standardised copy of the table is made: each batch is scaled as it is gathered.
        """
        return {
            key: StandardisedView(table.features[key], table.valid[key], self.mean[key], self.std[key])
            for key in table.keys
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            **{f"mean/{k}": v for k, v in self.mean.items()},
            **{f"std/{k}": v for k, v in self.std.items()},
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> FeatureStats:
        mean = {
            name[5:]: np.asarray(v, dtype=np.float32)
            for name, v in arrays.items()
            if name.startswith("mean/")
        }
        std = {
            name[4:]: np.asarray(v, dtype=np.float32) for name, v in arrays.items() if name.startswith("std/")
        }
        return cls(mean=mean, std=std)

    def save(self, path: Path) -> None:
        with atomic.replacing(path) as tmp, tmp.open("wb") as handle:  # a handle: numpy adds no ".npz"
            np.savez(handle, **self.to_arrays())

    @classmethod
    def load(cls, path: Path) -> FeatureStats:
        with np.load(path) as data:
            return cls.from_arrays({name: data[name] for name in data.files})


def compute_stats(table: FrameTable, video_ids: Sequence[str]) -> FeatureStats:
    """Mean and std of each input over the valid frames of ``video_ids`` (float64 accumulation).

    Read in blocks of rows so that a table larger than memory (fp16, on disk) never becomes one float64
    array; blocks are merged with Chan et al.'s pairwise update, exact up to rounding.
    """
    rows = table.rows_of(video_ids)
    mean, std = {}, {}
    for key in table.keys:
        dim = table.features[key].shape[1]
        count, block_mean, m2 = 0, np.zeros(dim), np.zeros(dim)
        for start, stop in row_blocks(table.n_rows, dim):
            keep = rows[start:stop] & table.valid[key][start:stop]
            if not keep.any():
                continue
            values = read_rows(table.features[key], start, stop)[keep].astype(np.float64)
            count, block_mean, m2 = merge_moments(count, block_mean, m2, values)
        if count == 0:
            log.warning("input %s has no valid frame in the training videos: left unscaled", key)
            mean[key] = np.zeros(dim, dtype=np.float32)
            std[key] = np.ones(dim, dtype=np.float32)
            continue
        mean[key] = block_mean.astype(np.float32)
        deviation = np.sqrt(m2 / count)
        std[key] = np.where(deviation < MIN_STD, 1.0, deviation).astype(np.float32)
    return FeatureStats(mean=mean, std=std)


def fit_store_stats(
    store: FeatureStore, specs: Sequence[FeatureSpec], video_ids: Sequence[str]
) -> FeatureStats:
    """Mean and (population) std of each feature column over the valid frames of ``video_ids``, read from
    the store one video at a time: the statistics of ``compute_stats`` without a table in memory.

    A frame is valid for a feature when its mask is not MISSING and all its values are finite
    (``valid_frames``). Give the training videos only: the result standardises every other video too.
    """
    moments: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
    for video_id in video_ids:
        for spec in specs:
            stored = store.read(spec.extractor, video_id, [spec.array])
            values = np.asarray(stored.arrays[spec.array]).reshape(len(stored), -1)
            keep = valid_frames(stored.mask, values)
            count, mean, m2 = moments.get(spec.key, (0, np.zeros(values.shape[1]), np.zeros(values.shape[1])))
            if mean.shape[0] != values.shape[1]:
                raise StoreError(
                    f"{store.shard_path(spec.extractor, video_id)}: {spec.key!r} has {values.shape[1]} "
                    f"values per frame, the videos before it {mean.shape[0]}"
                )
            if keep.any():
                count, mean, m2 = merge_moments(count, mean, m2, values[keep].astype(np.float64))
            moments[spec.key] = (count, mean, m2)
    mean_of, std_of = {}, {}
    for spec in specs:
        count, mean, m2 = moments.get(spec.key, (0, np.zeros(0), np.zeros(0)))
        if count == 0:
            log.warning(
                "feature %s has no valid frame in the %d videos: left unscaled", spec.key, len(video_ids)
            )
            mean_of[spec.key] = np.zeros_like(mean, dtype=np.float32)
            std_of[spec.key] = np.ones_like(mean, dtype=np.float32)
            continue
        deviation = np.sqrt(m2 / count)
        mean_of[spec.key] = mean.astype(np.float32)
        std_of[spec.key] = np.where(deviation < MIN_STD, 1.0, deviation).astype(np.float32)
    return FeatureStats(mean=mean_of, std=std_of)


def valid_frames(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(T,) bool: the frames whose mask is not MISSING and whose values (T, D) are all finite."""
    return (np.asarray(mask) != MaskValue.MISSING) & np.all(np.isfinite(values), axis=1)


def row_blocks(n_rows: int, dim: int) -> list[tuple[int, int]]:
    """``[start, stop)`` blocks of rows holding about STATS_BLOCK_VALUES values each."""
    block = max(1, STATS_BLOCK_VALUES // max(dim, 1))
    return [(start, min(start + block, n_rows)) for start in range(0, n_rows, block)]


def read_rows(values: Any, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of an in-memory array or a RowFile."""
    return values.read_range(start, stop) if hasattr(values, "read_range") else values[start:stop]


def merge_moments(
    count: int, mean: np.ndarray, m2: np.ndarray, values: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
    """Running (count, mean, sum of squared deviations) updated with a block of rows."""
    n = values.shape[0]
    block_mean = values.mean(axis=0)
    block_m2 = ((values - block_mean) ** 2).sum(axis=0)
    total = count + n
    delta = block_mean - mean
    return total, mean + delta * (n / total), m2 + block_m2 + delta**2 * (count * n / total)


def stats_key(
    store: FeatureStore, specs: Sequence[FeatureSpec], inputs: Sequence[InputSpec], video_ids: Sequence[str]
) -> str:
    """Hash of what the statistics depend on: training ids, inputs, and the shards' identity on disk."""
    shards = []
    for video_id in sorted(video_ids):
        for spec in specs:
            path = store.shard_path(spec.extractor, video_id)
            info = path.stat() if path.exists() else None
            shards.append(
                [spec.extractor, video_id, info.st_size if info else -1, info.st_mtime_ns if info else -1]
            )
    payload = {"videos": sorted(video_ids), "inputs": [s.to_dict() for s in inputs], "shards": shards}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:20]


def cached_stats(cache_dir: Path, key: str, table: FrameTable, video_ids: Sequence[str]) -> FeatureStats:
    """The statistics stored under ``key``, computing and storing them when absent."""
    path = Path(cache_dir) / f"{key}.npz"
    if path.exists():
        stats = FeatureStats.load(path)
        if set(stats.mean) == set(table.keys):
            log.debug("standardisation statistics from %s", path)
            return stats
    stats = compute_stats(table, video_ids)
    stats.save(path)
    return stats
