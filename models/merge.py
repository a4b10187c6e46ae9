"""Merging the predictions of the k fold models for one video.

Valence/arousal use CCC centering (Zhang et al., ABAW2), per video and per dimension:

1. agreement of fold f = mean CCC of its prediction with every other fold's prediction;
2. centre = agreement-weighted mean of the folds' prediction means (negative agreements count as 0;
   uniform weights when no fold agrees with any other);
3. every fold's prediction is shifted so that its mean is that centre, then the folds are averaged.

Expression and AU probabilities are averaged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from models.metrics import ccc


def fold_agreement(predictions: np.ndarray) -> np.ndarray:
    """(K,) mean CCC of each fold's prediction (row of (K, T)) with the other folds' predictions."""
    k = predictions.shape[0]
    if k < 2:
        return np.ones(k)
    pairwise = np.array(
        [[ccc(predictions[i], predictions[j]) if i != j else 0.0 for j in range(k)] for i in range(k)]
    )
    return np.nan_to_num(pairwise, nan=0.0).sum(axis=1) / (k - 1)


def ccc_centering(predictions: np.ndarray) -> np.ndarray:
    """Merge (K, T) fold predictions of one dimension into (T,) by CCC centering."""
    predictions = np.asarray(predictions, dtype=np.float64)
    if predictions.shape[0] == 1:
        return predictions[0].copy()
    weights = np.clip(fold_agreement(predictions), 0.0, None)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    means = predictions.mean(axis=1)
    centre = float(np.sum(weights * means) / weights.sum())
    recentred = predictions - means[:, None] + centre
    return recentred.mean(axis=0)


def merge_folds(fold_predictions: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One video's per-fold outputs ``{task: (T, C)}`` -> merged ``{task: (T, C)}``."""
    tasks = fold_predictions[0].keys()
    merged = {}
    for task in tasks:
        stacked = np.stack([np.asarray(p[task], dtype=np.float64) for p in fold_predictions])  # (K, T, C)
        if task == "va":
            merged[task] = np.stack(
                [ccc_centering(stacked[:, :, d]) for d in range(stacked.shape[2])], axis=1
            )
        else:
            merged[task] = stacked.mean(axis=0)
    return merged
