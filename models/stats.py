"""Per-feature standardisation with statistics of the training videos only, computed once and cached.

The cache file is ``<output_dir>/stats/<key>.npz``, the key a hash of the training video ids, the inputs
(names and sizes) and each shard's size and modification time, so re-extracted features or another fold
get their own statistics and an unchanged setup reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.base import InputSpec
from models.config import FeatureSpec
from models.table import FrameTable
from pipeline.store import FeatureStore

log = logging.getLogger(__name__)

MIN_STD = 1e-6  # constant dimensions are left unscaled instead of blowing up


@dataclass
class FeatureStats:
    mean: dict[str, np.ndarray]  # key -> (D,) float32
    std: dict[str, np.ndarray]

    def apply(self, table: FrameTable) -> dict[str, np.ndarray]:
        """Standardised copies of the table's features; invalid rows (and the padding row) are 0."""
        out = {}
        for key in table.keys:
            scaled = (table.features[key] - self.mean[key]) / self.std[key]
            out[key] = np.where(table.valid[key][:, None], scaled, 0.0).astype(np.float32)
        return out

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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **self.to_arrays())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> FeatureStats:
        with np.load(path) as data:
            return cls.from_arrays({name: data[name] for name in data.files})


def compute_stats(table: FrameTable, video_ids: Sequence[str]) -> FeatureStats:
    """Mean and std of each input over the valid frames of ``video_ids`` (float64 accumulation)."""
    rows = table.rows_of(video_ids)
    mean, std = {}, {}
    for key in table.keys:
        values = table.features[key][rows & table.valid[key]].astype(np.float64)
        if values.shape[0] == 0:
            log.warning("input %s has no valid frame in the training videos: left unscaled", key)
            mean[key] = np.zeros(table.features[key].shape[1], dtype=np.float32)
            std[key] = np.ones(table.features[key].shape[1], dtype=np.float32)
            continue
        mean[key] = values.mean(axis=0).astype(np.float32)
        deviation = values.std(axis=0)
        std[key] = np.where(deviation < MIN_STD, 1.0, deviation).astype(np.float32)
    return FeatureStats(mean=mean, std=std)


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
