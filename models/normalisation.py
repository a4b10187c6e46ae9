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

from avpipe.models.stats import (
    MIN_STD,
    FeatureStats,
    StandardisedView,
    cached_stats,
    compute_stats,
    merge_moments,
    read_rows,
    row_blocks,
)
from avpipe.models.table import FrameTable
from avpipe.pipeline.config.train import Normalisation, NormalisationScope, TrainConfig


def scalar_stats(table: FrameTable, video_ids: Sequence[str]) -> FeatureStats:
    """One mean and (n - 1) std per input over every valid value of ``video_ids``, repeated per dimension."""
    rows = table.rows_of(video_ids)
    mean, std = {}, {}
    for key in table.keys:
        dims = table.features[key].shape[1]
        count, centre, m2 = 0, np.zeros(1), np.zeros(1)
        for start, stop in row_blocks(table.n_rows, dims):  # a table on disk is read block by block
            keep = rows[start:stop] & table.valid[key][start:stop]
            if keep.any():
                values = read_rows(table.features[key], start, stop)[keep].astype(np.float64)
                count, centre, m2 = merge_moments(count, centre, m2, values.reshape(-1, 1))
        centre = float(centre[0]) if count else 0.0
        spread = float(np.sqrt(m2[0] / (count - 1))) if count > 1 else 1.0
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
) -> tuple[FeatureStats, dict[str, StandardisedView]]:
    """The training statistics (cached when per dimension) and the table's features standardised on
    read (``view[rows]``; each partition of ``others`` with its own statistics when per_partition)."""
    if config.normalisation_scope is NormalisationScope.FEATURE:
        stats = scalar_stats(table, train_ids)
    else:
        stats = cached_stats(Path(config.output_dir) / "stats", cache_key, table, train_ids)
    standardised = stats.view(table)  # scaled batch by batch: no standardised copy of the table
    if config.normalisation is Normalisation.PER_PARTITION:
        for video_ids in others:
            if not video_ids:
                continue
            own = partition_stats(config, table, video_ids)
            rows = table.rows_of(video_ids)
            for key, view in standardised.items():
                view.override(rows, own.mean[key], own.std[key])
    return stats, standardised
