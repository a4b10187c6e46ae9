"""Gold standards from several raters of one continuous dimension (``dataset.labels.gold_standard``).

``mean``: the per-sample mean of the raters who rated that sample.

``ewe``: the evaluator weighted estimator of Grimm & Kroschel (2005, "Evaluation of natural emotions
using self assessment manikins", ASRU): ``x_ewe[n] = sum_k r_k x_k[n] / sum_k r_k``, where ``r_k`` is the
Pearson correlation of rater ``k``'s ratings with the mean of all raters (``reference="all"``, the
original) or with the mean of the other raters (``reference="others"``, the leave-one-out variant some
AVEC baselines use). Correlations are taken over the samples every rater rated; a sample some raters
left empty is the weighted mean of those who rated it. A rater with constant ratings has no correlation
and gets weight 0; when the weights sum to <= 0 the mean is used instead (both counted).

``avec2016``: the AVEC 2016 (RECOLA) gold standard as the organisers' reproduction script computes it
("CCC centring"): ``a_r`` = the mean concordance correlation coefficient of rater ``r`` with each other
rater; every rater's ratings are shifted by ``-mean_n x_r[n] + sum_r(mean(x_r) a_r) / sum_r a_r``
(their own mean level replaced by the agreement-weighted mean level) and the gold standard is the
per-sample mean of the shifted ratings. It needs every rater on every sample (RECOLA's ratings are
complete); samples some rater left empty fall back to the mean and are counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from avpipe.pipeline.config.labels import EweReference, GoldStandard


@dataclass
class GoldResult:
    values: np.ndarray  # (N,) float64, NaN where no rater rated the sample
    weights: np.ndarray  # (R,) the weight of each rater (1/R each for the mean)
    actions: Counter = field(default_factory=Counter)


def gold_standard(
    ratings: np.ndarray, method: str | GoldStandard, reference: str | EweReference = EweReference.ALL
) -> GoldResult:
    """``ratings`` (N samples, R raters), NaN where a rater did not rate a sample."""
    ratings = np.asarray(ratings, dtype=np.float64)
    n_raters = ratings.shape[1]
    actions: Counter = Counter()
    if GoldStandard(method) is GoldStandard.MEAN or n_raters < 2:
        return GoldResult(_weighted(ratings, np.ones(n_raters)), np.full(n_raters, 1.0 / n_raters), actions)
    if GoldStandard(method) is GoldStandard.AVEC2016:
        return avec2016_gold(ratings, actions)
    weights = ewe_weights(ratings, EweReference(reference), actions)
    if weights.sum() <= 0:
        actions["ewe_fell_back_to_mean"] += 1
        return GoldResult(_weighted(ratings, np.ones(n_raters)), np.full(n_raters, 1.0 / n_raters), actions)
    return GoldResult(_weighted(ratings, weights), weights / weights.sum(), actions)


def ewe_weights(ratings: np.ndarray, reference: EweReference, actions: Counter) -> np.ndarray:
    complete = ratings[~np.isnan(ratings).any(axis=1)]
    n_raters = ratings.shape[1]
    weights = np.zeros(n_raters)
    if complete.shape[0] < 2:
        actions["ewe_too_few_complete_samples"] += 1
        return weights
    for k in range(n_raters):
        others = np.delete(complete, k, axis=1) if reference is EweReference.OTHERS else complete
        r = _pearson(complete[:, k], others.mean(axis=1))
        if np.isnan(r):
            actions["ewe_constant_rater_weight_0"] += 1
            continue
        weights[k] = r
    return weights


def avec2016_gold(ratings: np.ndarray, actions: Counter) -> GoldResult:
    n_raters = ratings.shape[1]
    equal = np.full(n_raters, 1.0 / n_raters)
    complete = ~np.isnan(ratings).any(axis=1)
    if complete.sum() < 2:
        actions["avec2016_too_few_complete_samples_mean_used"] += 1
        return GoldResult(_weighted(ratings, np.ones(n_raters)), equal, actions)
    full = ratings[complete]
    agreement = np.array(
        [np.mean([_ccc(full[:, r], full[:, q]) for q in range(n_raters) if q != r]) for r in range(n_raters)]
    )
    means = full.mean(axis=0)
    level = float((means * agreement).sum() / agreement.sum())
    gold = _weighted(ratings, np.ones(n_raters))
    gold[complete] = (full - means[None, :] + level).mean(axis=1)
    if (~complete).any():
        actions["avec2016_incomplete_samples_mean_used"] += int((~complete & ~np.isnan(gold)).sum())
    return GoldResult(gold, equal, actions)


def _ccc(a: np.ndarray, b: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (population moments)."""
    covariance = ((a - a.mean()) * (b - b.mean())).mean()
    return float(2 * covariance / (a.var() + b.var() + (a.mean() - b.mean()) ** 2))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def _weighted(ratings: np.ndarray, weights: np.ndarray) -> np.ndarray:
    present = ~np.isnan(ratings)
    w = np.where(present, weights[None, :], 0.0)
    total = w.sum(axis=1)
    summed = np.where(present, ratings, 0.0) @ weights
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present.any(axis=1) & (total != 0), summed / np.where(total == 0, 1, total), np.nan)
