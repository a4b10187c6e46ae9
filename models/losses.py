"""Masked training losses: CCC loss for valence/arousal, cross-entropy for expression, BCE for action units.

Every loss takes the label tensors as stored (unlabeled = -5 for VA, -1 for expression and AUs, which is
also what padded window positions hold) and ignores those entries. A batch without any labeled entry gives
a zero loss that still has a gradient path, so a multi-task step never fails on a missing task.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

from models.config import LossConfig, Task, VALoss
from pipeline.labels import UNLABELED_AU, UNLABELED_EXPRESSION, UNLABELED_VA

EPS = 1e-8


def ccc_torch(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Concordance correlation coefficient of two 1-D tensors (population moments)."""
    mean_p, mean_t = prediction.mean(), target.mean()
    var_p = ((prediction - mean_p) ** 2).mean()
    var_t = ((target - mean_t) ** 2).mean()
    cov = ((prediction - mean_p) * (target - mean_t)).mean()
    return 2.0 * cov / (var_p + var_t + (mean_p - mean_t) ** 2 + EPS)


def ccc_loss(
    prediction: torch.Tensor, target: torch.Tensor, labeled: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over output dimensions of 1 - CCC, computed over all labeled (batch, time) positions.

    ``prediction`` and ``target`` are (..., C); ``labeled`` is a (...) bool mask (default: target != -5
    in every dimension).
    """
    if labeled is None:
        labeled = torch.all(target != UNLABELED_VA, dim=-1)
    if int(labeled.sum()) < 2:
        return prediction.sum() * 0.0
    p = prediction[labeled]
    t = target[labeled]
    losses = [1.0 - ccc_torch(p[:, dim], t[:, dim]) for dim in range(p.shape[-1])]
    return torch.stack(losses).mean()


def masked_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    labeled = torch.all(target != UNLABELED_VA, dim=-1)
    if not bool(labeled.any()):
        return prediction.sum() * 0.0
    return F.mse_loss(prediction[labeled], target[labeled])


def expression_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over frames with an expression label; ``logits`` (..., 8), ``target`` (...) int."""
    target = target.long()
    if not bool((target != UNLABELED_EXPRESSION).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=UNLABELED_EXPRESSION
    )


def action_unit_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the labeled (frame, unit) entries; ``target`` holds 0, 1 or -1."""
    labeled = target != UNLABELED_AU
    if not bool(labeled.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[labeled], target[labeled].float())


class MultiTaskLoss:
    """Weighted sum of the task losses; also returns each task's loss for logging."""

    def __init__(self, tasks: list[Task], config: LossConfig) -> None:
        self.tasks = list(tasks)
        self.config = config

    def __call__(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {task: self._task_loss(task, outputs[task.value], targets[task.value]) for task in self.tasks}
        total = torch.stack([self.config.weight(task) * loss for task, loss in parts.items()]).sum()
        return total, {task.value: float(loss.detach()) for task, loss in parts.items()}

    def _task_loss(self, task: Task, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if task is Task.VA:
            return ccc_loss(output, target) if self.config.va is VALoss.CCC else masked_mse(output, target)
        if task is Task.EXPR:
            return expression_loss(output, target)
        return action_unit_loss(output, target)
