"""Merging the predictions of the k fold models for one video.

Valence/arousal use CCC centering (Zhang et al., ABAW2; sucv/ABAW2 base/logger.py:109-233 and
script/generate_test_result.py:48-86), per video and per dimension:

1. agreement of fold f = mean CCC of its prediction with every other fold's prediction;
2. centre = agreement-weighted mean of the folds' prediction means;
3. every fold's prediction is shifted so that its mean is that centre, then the folds are averaged;
4. the result is clipped to [-1, 1], the range of the labels.

``train.merge`` picks how step 1-2 treat disagreement:

- ``abaw2``, the original: pairwise CCC with population covariance and sample variances
  (``calculate_ccc``), negative agreements kept as weights (a centre can then leave the range of the
  means; an exactly zero sum of agreements, a division by zero there, falls back to uniform weights here);
- ``clipped`` (avpipe's default): population CCC, negative agreements count as 0 (uniform weights when no
  fold agrees with any other), so the centre stays within the folds' means.

Expression and AU probabilities are averaged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from avpipe.models.metrics import ccc
from avpipe.pipeline.config.train import MergeMethod

log = logging.getLogger(__name__)

VA_RANGE = (-1.0, 1.0)


def abaw2_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """The original's pairwise CCC: population covariance, sample (n - 1) variances."""
    mx, my = x.mean(), y.mean()
    covariance = np.mean((x - mx) * (y - my))
    denominator = x.var(ddof=1) + y.var(ddof=1) + (mx - my) ** 2 + 1e-100
    return float(2.0 * covariance / denominator)


def fold_agreement(predictions: np.ndarray, method: MergeMethod = MergeMethod.CLIPPED) -> np.ndarray:
    """(K,) mean CCC of each fold's prediction (row of (K, T)) with the other folds' predictions."""
    k = predictions.shape[0]
    if k < 2:
        return np.ones(k)
    pair_ccc = abaw2_ccc if method is MergeMethod.ABAW2 else ccc
    pairwise = np.array(
        [[pair_ccc(predictions[i], predictions[j]) if i != j else 0.0 for j in range(k)] for i in range(k)]
    )
    return np.nan_to_num(pairwise, nan=0.0).sum(axis=1) / (k - 1)


def ccc_centering(predictions: np.ndarray, method: MergeMethod = MergeMethod.CLIPPED) -> np.ndarray:
    """Merge (K, T) fold predictions of one dimension into (T,) by CCC centering (not clipped)."""
    predictions = np.asarray(predictions, dtype=np.float64)
    if predictions.shape[0] == 1:
        return predictions[0].copy()
    weights = fold_agreement(predictions, method)
    if method is MergeMethod.CLIPPED:
        weights = np.clip(weights, 0.0, None)
    if weights.sum() == 0:
        log.warning("CCC centering: the fold agreements sum to 0; centring on the unweighted mean")
        weights = np.ones_like(weights)
    means = predictions.mean(axis=1)
    centre = float(np.sum(weights * means) / weights.sum())
    recentred = predictions - means[:, None] + centre
    return recentred.mean(axis=0)


def merge_folds(
    fold_predictions: Sequence[Mapping[str, np.ndarray]], method: MergeMethod = MergeMethod.CLIPPED
) -> dict[str, np.ndarray]:
    """One video's per-fold outputs ``{task: (T, C)}`` -> merged ``{task: (T, C)}``."""
    tasks = fold_predictions[0].keys()
    merged = {}
    for task in tasks:
        stacked = np.stack([np.asarray(p[task], dtype=np.float64) for p in fold_predictions])  # (K, T, C)
        if task == "va":
            centred = [ccc_centering(stacked[:, :, d], method) for d in range(stacked.shape[2])]
            merged[task] = np.clip(np.stack(centred, axis=1), *VA_RANGE)
        else:
            merged[task] = stacked.mean(axis=0)
    return merged
