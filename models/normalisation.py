"""How a fold's features are z-scored (``train.normalisation`` and ``train.normalisation_scope``).

- ``normalisation: train`` (default): every video with the fold's training statistics;
  ``per_partition``: the validation and test videos with their own partition's statistics, as ABAW2
  (sucv/ABAW2 calculate_mean_and_std.py:17-50 computes them per fold and partition, base/dataset.py:155-163
  applies each partition's own). Checkpoints keep the training statistics: ``avpipe predict`` uses those.
- ``normalisation_scope: dimension`` (default): a mean and std per feature dimension;
  ``feature``: one mean and std over every value of a feature, as ABAW2 (calculate_mean_and_std.py:29-50
  flattens the feature matrices; its std divides by n - 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.config import Normalisation, NormalisationScope, TrainConfig
from models.stats import MIN_STD, FeatureStats, cached_stats, compute_stats
from models.table import FrameTable


def scalar_stats(table: FrameTable, video_ids: Sequence[str]) -> FeatureStats:
    """One mean and (n - 1) std per input over every valid value of ``video_ids``, repeated per dimension."""
    rows = table.rows_of(video_ids)
    mean, std = {}, {}
    for key in table.keys:
        values = table.features[key][rows & table.valid[key]].astype(np.float64).ravel()
        dims = table.features[key].shape[1]
        centre = values.mean() if values.size else 0.0
        spread = values.std(ddof=1) if values.size > 1 else 1.0
        mean[key] = np.full(dims, centre, dtype=np.float32)
        std[key] = np.full(dims, spread if spread >= MIN_STD else 1.0, dtype=np.float32)
    return FeatureStats(mean=mean, std=std)


def partition_stats(config: TrainConfig, table: FrameTable, video_ids: Sequence[str]) -> FeatureStats:
    if config.normalisation_scope is NormalisationScope.FEATURE:
        return scalar_stats(table, video_ids)
    return compute_stats(table, video_ids)


def standardise(
    config: TrainConfig,
    table: FrameTable,
    train_ids: Sequence[str],
    others: Sequence[Sequence[str]],
    cache_key: str,
) -> tuple[FeatureStats, dict[str, np.ndarray]]:
    """The training statistics (cached when per dimension) and the table's standardised features."""
    if config.normalisation_scope is NormalisationScope.FEATURE:
        stats = scalar_stats(table, train_ids)
    else:
        stats = cached_stats(Path(config.output_dir) / "stats", cache_key, table, train_ids)
    standardised = stats.apply(table)
    if config.normalisation is Normalisation.PER_PARTITION:
        for video_ids in others:
            if not video_ids:
                continue
            own = partition_stats(config, table, video_ids).apply(table)
            rows = table.rows_of(video_ids)
            for key, values in standardised.items():
                values[rows] = own[key][rows]
    return stats, standardised
