"""Evaluation metrics of the ABAW challenges, on numpy arrays (torch-free).

Unlabeled frames (valence/arousal -5, expression -1, action unit -1) are dropped before any metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from avpipe.pipeline.labels import UNLABELED_AU, UNLABELED_EXPRESSION, UNLABELED_VA, VA_NAMES, FrameLabels

AU_THRESHOLD = 0.5  # probability above which an action unit counts as present
# each task's term of the ABAW score, and the count of its labelled frames
TASK_SCORE = {"va": "ccc_mean", "expr": "f1_expr", "au": "f1_au"}
TASK_FRAMES = {"va": "n_frames_va", "expr": "n_frames_expr", "au": "n_frames_au"}


def ccc(prediction: np.ndarray, target: np.ndarray) -> float:
    """Lin's concordance correlation coefficient: 2 cov / (var_p + var_t + (mean_p - mean_t)^2).

    Population (biased) moments, as in the ABAW evaluation scripts. NaN for fewer than 2 values.
    """
    x = np.asarray(prediction, dtype=np.float64).ravel()
    y = np.asarray(target, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"prediction has {x.shape[0]} values, target {y.shape[0]}")
    if x.shape[0] < 2:
        return math.nan
    mx, my = x.mean(), y.mean()
    cov = np.mean((x - mx) * (y - my))
    denominator = x.var() + y.var() + (mx - my) ** 2
    return float(2.0 * cov / denominator) if denominator > 0 else math.nan


def pearson(prediction: np.ndarray, target: np.ndarray) -> float:
    x = np.asarray(prediction, dtype=np.float64).ravel()
    y = np.asarray(target, dtype=np.float64).ravel()
    if x.shape[0] < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.mean((x - x.mean()) * (y - y.mean())) / (x.std() * y.std()))


def rmse(prediction: np.ndarray, target: np.ndarray) -> float:
    x = np.asarray(prediction, dtype=np.float64).ravel()
    y = np.asarray(target, dtype=np.float64).ravel()
    return float(np.sqrt(np.mean((x - y) ** 2))) if x.shape[0] else math.nan


def f1_binary(predicted: np.ndarray, target: np.ndarray) -> float:
    """F1 of the positive class; 0 when there is no true and no predicted positive."""
    predicted = np.asarray(predicted).astype(bool)
    target = np.asarray(target).astype(bool)
    true_positive = np.count_nonzero(predicted & target)
    denominator = np.count_nonzero(predicted) + np.count_nonzero(target)
    return float(2.0 * true_positive / denominator) if denominator else 0.0


def macro_f1(predicted: np.ndarray, target: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in the target or the prediction."""
    predicted = np.asarray(predicted).ravel()
    target = np.asarray(target).ravel()
    if target.shape[0] == 0:
        return math.nan
    classes = np.union1d(np.unique(predicted), np.unique(target))
    return float(np.mean([f1_binary(predicted == c, target == c) for c in classes]))


def au_mean_f1(probabilities: np.ndarray, target: np.ndarray, threshold: float = AU_THRESHOLD) -> float:
    """Mean over action units of the binary F1, each AU on its own labeled frames (target != -1)."""
    scores = []
    for unit in range(target.shape[1]):
        labeled = target[:, unit] != UNLABELED_AU
        if np.any(labeled):
            scores.append(f1_binary(probabilities[labeled, unit] >= threshold, target[labeled, unit] == 1))
    return float(np.mean(scores)) if scores else math.nan


def va_metrics(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """CCC, Pearson and RMSE of valence and arousal over the frames labeled for both."""
    labeled = np.all(target != UNLABELED_VA, axis=1)
    result: dict[str, float] = {"n_frames_va": int(np.count_nonzero(labeled))}
    for dim, name in enumerate(VA_NAMES):
        p, t = prediction[labeled, dim], target[labeled, dim]
        result[f"ccc_{name}"] = ccc(p, t)
        result[f"pearson_{name}"] = pearson(p, t)
        result[f"rmse_{name}"] = rmse(p, t)
    result["ccc_mean"] = (result["ccc_valence"] + result["ccc_arousal"]) / 2.0
    return result


def expr_metrics(probabilities: np.ndarray, target: np.ndarray) -> dict[str, float]:
    labeled = target != UNLABELED_EXPRESSION
    predicted = np.argmax(probabilities[labeled], axis=1)
    truth = target[labeled]
    return {
        "n_frames_expr": int(np.count_nonzero(labeled)),
        "f1_expr": macro_f1(predicted, truth),
        "accuracy_expr": float(np.mean(predicted == truth)) if truth.shape[0] else math.nan,
    }


def au_metrics(probabilities: np.ndarray, target: np.ndarray) -> dict[str, float]:
    labeled = np.any(target != UNLABELED_AU, axis=1)
    return {
        "n_frames_au": int(np.count_nonzero(labeled)),
        "f1_au": au_mean_f1(probabilities[labeled], target[labeled]),
    }


def mtl_score(metrics: Mapping[str, float]) -> float:
    """ABAW multi-task score: (CCC_V + CCC_A) / 2 + F1_expr + F1_AU (terms of missing tasks omitted)."""
    terms = [metrics[key] for key in TASK_SCORE.values() if key in metrics]
    return float(sum(terms)) if terms else math.nan


def task_metrics(predictions: Mapping[str, np.ndarray], labels: FrameLabels) -> dict[str, float]:
    """Every metric of the predicted tasks plus ``score``: the ABAW score of those tasks.

    ``predictions`` maps a task name to per-frame outputs: ``va`` (T, 2) values, ``expr`` (T, 8) and
    ``au`` (T, 12) probabilities. ``score`` is the CCC mean for VA alone and the MTL score otherwise.
    """
    result: dict[str, float] = {}
    if "va" in predictions:
        result.update(va_metrics(predictions["va"], labels.valence_arousal))
    if "expr" in predictions:
        result.update(expr_metrics(predictions["expr"], labels.expression))
    if "au" in predictions:
        result.update(au_metrics(predictions["au"], labels.action_units))
    result["score"] = mtl_score(result)
    if all(task in predictions for task in ("va", "expr", "au")):
        result["mtl_score"] = result["score"]
    return result
