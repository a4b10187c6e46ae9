"""Evaluation metrics of the ABAW challenges and of every task a dataset declares, on numpy arrays
(torch-free).

Unlabeled entries (valence/arousal -5, a declared dimension NaN, a class -1, an action unit or multi-label
flag -1) are dropped before any metric, each dimension on its own: ``ccc_valence`` is computed on the
frames labelled for valence, also those without arousal. Names: ``va``: ``ccc_valence``,
``ccc_arousal``, ``ccc_mean`` (+ pearson, rmse); ``expr`` and ``au``: ``f1_expr``, ``accuracy_expr``,
``f1_au``; a declared dimension ``dominance``: ``ccc_dominance`` (+ pearson, rmse); a categorical task
``emotion``: ``f1_emotion`` (macro), ``accuracy_emotion`` and ``f1_emotion_<class>`` per class; a
multi-label task: ``f1_<name>`` (mean over classes) and ``f1_<name>_<class>``. Each task also reports
``n_frames_<name>``, its labelled frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from avpipe.models.tasks import BUILTIN, TaskSpec, as_specs, task_targets
from avpipe.pipeline.labels import (
    UNLABELED_AU,
    UNLABELED_EXPRESSION,
    UNLABELED_VA,
    VA_NAMES,
    FrameLabels,
    TaskKind,
)

AU_THRESHOLD = 0.5  # probability above which an action unit counts as present
# each built-in task's term of the ABAW score, and the count of its labelled frames (TaskSpec has any task's)
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
    """CCC, Pearson and RMSE of valence and arousal, each over the frames labeled for it."""
    entries = target != UNLABELED_VA
    result: dict[str, float] = {"n_frames_va": int(np.count_nonzero(np.any(entries, axis=1)))}
    for dim, name in enumerate(VA_NAMES):
        result.update(dimension_metrics(prediction[:, dim], target[:, dim], entries[:, dim], name))
        del result[f"n_frames_{name}"]
    result["ccc_mean"] = (result["ccc_valence"] + result["ccc_arousal"]) / 2.0
    return result


def dimension_metrics(prediction: np.ndarray, target: np.ndarray, labeled: np.ndarray, name: str) -> dict:
    """CCC, Pearson and RMSE of one continuous dimension over its labelled frames."""
    p, t = prediction[labeled], target[labeled]
    return {
        f"n_frames_{name}": int(np.count_nonzero(labeled)),
        f"ccc_{name}": ccc(p, t),
        f"pearson_{name}": pearson(p, t),
        f"rmse_{name}": rmse(p, t),
    }


def class_f1(predicted: np.ndarray, target: np.ndarray, n_classes: int) -> list[float]:
    """Per class F1; NaN for a class neither in the target nor predicted."""
    scores = []
    for c in range(n_classes):
        absent = not np.any(target == c) and not np.any(predicted == c)
        scores.append(math.nan if absent else f1_binary(predicted == c, target == c))
    return scores


def categorical_metrics(probabilities: np.ndarray, target: np.ndarray, spec: TaskSpec) -> dict[str, float]:
    """Macro F1, accuracy and per-class F1 (named by the dataset's classes) of a categorical task."""
    labeled = target != UNLABELED_EXPRESSION
    predicted = np.argmax(probabilities[labeled], axis=1)
    truth = target[labeled]
    name = spec.name
    result = {
        f"n_frames_{name}": int(np.count_nonzero(labeled)),
        f"f1_{name}": macro_f1(predicted, truth),
        f"accuracy_{name}": float(np.mean(predicted == truth)) if truth.shape[0] else math.nan,
    }
    for label, score in zip(spec.names, class_f1(predicted, truth, spec.n_outputs), strict=True):
        result[f"f1_{name}_{label}"] = score
    return result


def multilabel_metrics(probabilities: np.ndarray, target: np.ndarray, spec: TaskSpec) -> dict[str, float]:
    """Mean F1 and per-class F1 of a multi-label task, each class on its own labelled frames."""
    name = spec.name
    result = {
        f"n_frames_{name}": int(np.count_nonzero(np.any(target != UNLABELED_AU, axis=1))),
        f"f1_{name}": au_mean_f1(probabilities, target),
    }
    for unit, label in enumerate(spec.names):
        keep = target[:, unit] != UNLABELED_AU
        score = f1_binary(probabilities[keep, unit] >= AU_THRESHOLD, target[keep, unit] == 1)
        result[f"f1_{name}_{label}"] = score if np.any(keep) else math.nan
    return result


def spec_metrics(spec: TaskSpec, prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Every metric of one task (module docstring); ``prediction``: values or probabilities."""
    if spec.key == "va":
        return va_metrics(prediction, target)
    if spec.key == "expr":
        return expr_metrics(prediction, target)
    if spec.key == "au":
        return au_metrics(prediction, target)
    if spec.kind is TaskKind.CONTINUOUS:
        return dimension_metrics(prediction[:, 0], target[:, 0], ~np.isnan(target[:, 0]), spec.name)
    if spec.kind is TaskKind.CATEGORICAL:
        return categorical_metrics(prediction, target, spec)
    return multilabel_metrics(prediction, target, spec)


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


def task_metrics(
    predictions: Mapping[str, np.ndarray], labels: FrameLabels, tasks: Sequence[TaskSpec] | None = None
) -> dict[str, float]:
    """Every metric of the predicted tasks plus ``score``: the sum of the tasks' scores.

    ``predictions`` maps a task key to per-frame outputs: ``va`` (T, 2) values, ``expr`` (T, 8) and
    ``au`` (T, 12) probabilities, a declared task's values or probabilities. ``tasks`` (default: the
    built-in tasks among the keys) say the declared tasks' class names. ``score`` is the CCC mean for VA
    alone and the ABAW MTL score for va, expr and au.
    """
    specs = list(tasks) if tasks is not None else as_specs(k for k in predictions if k in BUILTIN)
    targets = {spec.key: task_targets(spec, labels) for spec in specs}
    return metrics_of_targets(predictions, targets, specs)


def metrics_of_targets(
    predictions: Mapping[str, np.ndarray], targets: Mapping[str, np.ndarray], tasks: Sequence[TaskSpec]
) -> dict[str, float]:
    """``task_metrics`` on targets already taken from the labels (avpipe.models.tasks.task_targets)."""
    result: dict[str, float] = {}
    for spec in tasks:
        result.update(spec_metrics(spec, predictions[spec.key], targets[spec.key]))
    terms = [result[spec.score_metric] for spec in tasks]
    result["score"] = float(sum(terms)) if terms else math.nan
    if {spec.key for spec in tasks} >= {"va", "expr", "au"}:
        result["mtl_score"] = mtl_score(result)
    return result
