"""A label task by name, as a model consumes it: values and a mask of the same shape, per frame.

The names are those of the labels shard (pipeline/labels.py, docs/DATASETS.md):

- ``va``: (T, 2) float32, valence and arousal; ``valence``, ``arousal``: (T,) float32, one column of it
  (a valence-only dataset labels ``va``'s first column only: the mask says so per column);
- ``expression`` (also ``expr``): (T,) int64 class index;
- ``au``: (T, 12) float32, 0/1 per action unit;
- any declared task: a dimension (T,) float32, a categorical task (T,) int64, a multi-label task (T, K)
  float32 0/1.

``mask`` is True where the value is a label. Unlabeled entries hold 0, except categorical ones, which hold
-1 (so ``cross_entropy(..., ignore_index=-1)`` skips them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avpipe.pipeline.config.labels import TRAINER_CATEGORICAL
from avpipe.pipeline.labels import (
    UNLABELED_AU,
    UNLABELED_EXPRESSION,
    UNLABELED_VA,
    VA_NAMES,
    FrameLabels,
    TaskKind,
)

UNLABELED_CLASS = -1  # categorical value of an unlabeled or padded frame
VA_TASK = "va"
AU_TASK = "au"
EXPRESSION_ALIAS = "expr"  # the trainers' name (avpipe.pipeline.config.train.Task.EXPR)


@dataclass(frozen=True)
class TaskLabels:
    """One task's labels on a video's frames."""

    kind: TaskKind
    values: np.ndarray  # (T,) or (T, K): float32, int64 when categorical
    mask: np.ndarray  # bool, same shape as values

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def take(self, rows: np.ndarray, found: np.ndarray) -> TaskLabels:
        """The labels at ``rows`` (unlabeled where ``found`` is False)."""
        found = found.reshape(-1, *([1] * (self.values.ndim - 1)))
        mask = self.mask[rows] & found
        return TaskLabels(self.kind, np.where(mask, self.values[rows], self.fill), mask)

    @property
    def fill(self) -> int | float:
        """The value of an unlabeled entry."""
        return UNLABELED_CLASS if self.kind is TaskKind.CATEGORICAL else 0.0

    def unlabeled(self, n_frames: int) -> TaskLabels:
        """``n_frames`` unlabeled frames of this task's shape and dtype."""
        shape = (n_frames, *self.values.shape[1:])
        return TaskLabels(
            self.kind, np.full(shape, self.fill, dtype=self.values.dtype), np.zeros(shape, dtype=bool)
        )


def task_names(labels: FrameLabels) -> list[str]:
    """Every task name ``labels`` can give."""
    return [
        VA_TASK,
        *VA_NAMES,
        TRAINER_CATEGORICAL,
        EXPRESSION_ALIAS,
        AU_TASK,
        *labels.dimensions,
        *labels.categories,
        *labels.multilabels,
    ]


def task_labels(labels: FrameLabels, task: str) -> TaskLabels | None:
    """The labels of ``task``, or None when ``labels`` has no such task."""
    if task == VA_TASK:
        return _continuous(labels.valence_arousal, labels.valence_arousal != UNLABELED_VA)
    if task in VA_NAMES:
        column = labels.valence_arousal[:, VA_NAMES.index(task)]
        return _continuous(column, column != UNLABELED_VA)
    if task in (TRAINER_CATEGORICAL, EXPRESSION_ALIAS):
        return _categorical(labels.expression, labels.expression != UNLABELED_EXPRESSION)
    if task == AU_TASK:
        return _multilabel(labels.action_units)
    if task in labels.dimensions:
        values = labels.dimensions[task]
        return _continuous(values, ~np.isnan(values))
    if task in labels.categories:
        values = labels.categories[task]
        return _categorical(values, values != UNLABELED_EXPRESSION)
    if task in labels.multilabels:
        return _multilabel(labels.multilabels[task])
    return None


def _continuous(values: np.ndarray, mask: np.ndarray) -> TaskLabels:
    return TaskLabels(TaskKind.CONTINUOUS, np.where(mask, values, 0.0).astype(np.float32), mask)


def _categorical(values: np.ndarray, mask: np.ndarray) -> TaskLabels:
    return TaskLabels(TaskKind.CATEGORICAL, np.where(mask, values, UNLABELED_CLASS).astype(np.int64), mask)


def _multilabel(values: np.ndarray) -> TaskLabels:
    mask = values != UNLABELED_AU
    return TaskLabels(TaskKind.MULTILABEL, np.where(mask, values, 0).astype(np.float32), mask)
