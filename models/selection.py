"""Choosing the best epoch of a fold on its validation videos, without ever keeping an untrained model.

Each trained task contributes one score (valence/arousal: the CCC mean, expression: macro F1, action
units: mean F1; a declared dimension its CCC, a declared categorical task its macro F1, a multi-label
task its mean F1: ``TaskSpec.score_metric``). A task whose score is missing or NaN (no labelled
validation frame) is an error naming the task and the fold; with ``train.selection.missing_score:
drop`` it is dropped from selection with a warning instead. Selection ``sum`` keeps the epoch with the
best sum of the scores (the ABAW MTL score); ``per_task`` also keeps each criterion's own best epoch
(AIM3-RUC ABAW4). The criteria are the tasks, but with ``model.separate_va`` valence and arousal are two
(their CCCs), as the ABAW2 and JCA code select each emotion's model on its own. Only trained epochs
(>= 1) are candidates: the untrained model's score (epoch 0) is the baseline the result is compared with.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from avpipe.models.tasks import VA, TaskSpec, as_specs
from avpipe.pipeline.config.train import MissingScore, Task
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.labels import VA_NAMES

log = logging.getLogger(__name__)

MIN_IMPROVEMENT = 1e-4  # a validation score must beat the best by this much to count as better


@dataclass
class Best:
    """The best epoch so far of one criterion (the sum, or one task) and its weights."""

    epoch: int = 0
    score: float = -math.inf
    state: dict[str, Any] | None = None

    def offer(self, epoch: int, score: float, state: Mapping[str, Any]) -> bool:
        if score > self.score + MIN_IMPROVEMENT:
            self.epoch, self.score, self.state = epoch, score, copy.deepcopy(dict(state))
            return True
        return False


@dataclass(frozen=True)
class Criterion:
    """One quantity a best epoch is chosen on: a task's score, or one VA dimension's CCC."""

    name: str  # also the name of its checkpoint with per-task selection: model_<name>.pt
    task: TaskSpec
    metric: str
    dim: int | None = None  # the VA dimension it selects (separate_va), None for the whole task


def selection_criteria(tasks: list[Task] | list[TaskSpec], separate_va: bool = False) -> list[Criterion]:
    criteria = []
    for task in as_specs(tasks):
        if task.key == VA and separate_va:
            criteria += [Criterion(name, task, f"ccc_{name}", d) for d, name in enumerate(VA_NAMES)]
        else:
            criteria.append(
                Criterion(task.name if task.builtin else task.key.replace(":", "-"), task, task.score_metric)
            )
    return criteria


@dataclass
class TaskScorer:
    """Validation scores of one fold's selection criteria, checked for NaN / missing values."""

    fold: int
    tasks: list[Task] | list[TaskSpec]
    missing: MissingScore
    separate_va: bool = False
    dropped: list[TaskSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tasks = as_specs(self.tasks)

    def scores(self, metrics: Mapping[str, float], epoch: int) -> dict[str, float]:
        """``{criterion: score}`` of the tasks still selected on; ConfigError (or a drop) for a NaN."""
        result = {}
        for criterion in selection_criteria(self.tasks, self.separate_va):
            if criterion.task in self.dropped:
                continue
            value = metrics.get(criterion.metric)
            if value is not None and math.isfinite(value):
                result[criterion.name] = float(value)
                continue
            self._missing(criterion.task, metrics, epoch)
        if not result:
            raise ConfigError(
                "train.tasks",
                f"fold {self.fold}: no trained task has a validation score "
                f"({', '.join(t.value for t in self.dropped)} dropped); nothing to select a model on",
            )
        return result

    def _missing(self, task: TaskSpec, metrics: Mapping[str, float], epoch: int) -> None:
        frames = metrics.get(task.frames_metric)
        why = (
            f"fold {self.fold}: task {task.value!r} has no validation score at epoch {epoch} "
            f"({task.score_metric} is {metrics.get(task.score_metric, 'missing')}; "
            f"{frames if frames is not None else 'no'} labelled validation frames)"
        )
        if self.missing is MissingScore.ERROR:
            raise ConfigError(
                "train.selection.missing_score",
                f"{why}: a model selected without it would be kept untrained for that task. Label the "
                "validation videos, remove the task from train.tasks, or set "
                "train.selection.missing_score: drop to select on the other tasks",
            )
        log.warning("%s: dropped from model selection (train.selection.missing_score = drop)", why)
        if task not in self.dropped:
            self.dropped.append(task)


def restore_state(best: Best, criteria: Mapping[str, Best], dims: Mapping[str, int | None]) -> dict[str, Any]:
    """The weights ``restore_best`` continues from: the best epoch's; with per-emotion models selected per
    emotion (avpipe.models.separate), each emotion's model from its own best epoch, as two separate ABAW2
    runs."""
    assert best.state is not None
    state = dict(best.state)
    for name, dim in dims.items():
        chosen = criteria.get(name)
        if dim is None or chosen is None or chosen.state is None:
            continue
        prefix = f"per_dimension.{dim}."
        state.update({key: value for key, value in chosen.state.items() if key.startswith(prefix)})
    return state


def warn_if_untrained(fold: int, best: Best, baseline: float) -> bool:
    """Loud warning when no trained epoch beat the untrained model; True when that happened."""
    if best.epoch == 0 or best.state is None:
        raise RuntimeError(f"fold {fold}: no trained epoch was selected; refusing to save an untrained model")
    if math.isfinite(baseline) and best.score <= baseline + MIN_IMPROVEMENT:
        log.warning(
            "fold %d: NO EPOCH BEAT THE UNTRAINED MODEL (best score %.4f at epoch %d, untrained %.4f): "
            "the saved model did not learn; check the labels, the learning rate and the features",
            fold,
            best.score,
            best.epoch,
            baseline,
        )
        return True
    return False
