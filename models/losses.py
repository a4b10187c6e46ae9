"""Masked training losses: CCC loss for valence/arousal, cross-entropy for expression, BCE for action units.

The CCC loss follows ``train.loss``: ``ccc: pooled`` computes one CCC per dimension over every labelled
frame of the batch (JCA), ``per_window`` one per window and dimension, averaged (ABAW2); ``variance`` and
``covariance`` choose the divisor n or n - 1 (ABAW2: sample variances, population covariance).

Every loss takes the label tensors as stored (unlabeled = -5 for VA, -1 for expression and AUs, which is
also what padded window positions hold) and ignores those entries. A batch without any labeled entry gives
a zero loss that still has a gradient path, so a multi-task step never fails on a missing task.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

from avpipe.pipeline.config.train import CCCReduction, LossConfig, Moments, MSEReduction, Task, VALoss
from avpipe.pipeline.labels import UNLABELED_AU, UNLABELED_EXPRESSION, UNLABELED_VA

EPS = 1e-8


def ccc_torch(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Concordance correlation coefficient of two 1-D tensors (population moments)."""
    mean_p, mean_t = prediction.mean(), target.mean()
    var_p = ((prediction - mean_p) ** 2).mean()
    var_t = ((target - mean_t) ** 2).mean()
    cov = ((prediction - mean_p) * (target - mean_t)).mean()
    return 2.0 * cov / (var_p + var_t + (mean_p - mean_t) ** 2 + EPS)


def masked_ccc(
    prediction: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    variance: Moments = Moments.POPULATION,
    covariance: Moments = Moments.POPULATION,
) -> torch.Tensor:
    """CCC along dim -2 of (..., T, C) tensors over the frames where ``weights`` (..., T, 1) is 1."""
    n = weights.sum(dim=-2, keepdim=True)
    mean_p = (prediction * weights).sum(dim=-2, keepdim=True) / n
    mean_t = (target * weights).sum(dim=-2, keepdim=True) / n
    dp, dt = (prediction - mean_p) * weights, (target - mean_t) * weights
    var_divisor = n - 1 if variance is Moments.SAMPLE else n
    cov_divisor = n - 1 if covariance is Moments.SAMPLE else n
    var_p = (dp**2).sum(dim=-2, keepdim=True) / var_divisor
    var_t = (dt**2).sum(dim=-2, keepdim=True) / var_divisor
    cov = (dp * dt).sum(dim=-2, keepdim=True) / cov_divisor
    return (2.0 * cov / (var_p + var_t + (mean_p - mean_t) ** 2 + EPS)).squeeze(-2)


def ccc_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    labeled: torch.Tensor | None = None,
    reduction: CCCReduction = CCCReduction.POOLED,
    variance: Moments = Moments.POPULATION,
    covariance: Moments = Moments.POPULATION,
) -> torch.Tensor:
    """Mean of 1 - CCC over output dimensions (and windows, ``per_window``), on labelled frames only.

    ``prediction`` and ``target`` are (B, T, C); ``labeled`` is a (B, T) bool mask (default: target
    != -5 in every dimension). ``pooled``: one CCC per dimension over all labelled (batch, time)
    positions; ``per_window``: one per window and dimension, averaged over the windows with at least two
    labelled frames.
    """
    if labeled is None:
        labeled = torch.all(target != UNLABELED_VA, dim=-1)
    if reduction is CCCReduction.POOLED:
        if int(labeled.sum()) < 2:
            return prediction.sum() * 0.0
        weights = torch.ones_like(prediction[labeled][:, :1])
        ccc = masked_ccc(prediction[labeled], target[labeled], weights, variance, covariance)
        return (1.0 - ccc).mean()
    usable = labeled.sum(dim=-1) >= 2  # (B,)
    if not bool(usable.any()):
        return prediction.sum() * 0.0
    weights = labeled[usable].unsqueeze(-1).to(prediction.dtype)
    target = torch.where(labeled[usable].unsqueeze(-1), target[usable], 0.0)  # no -5 in any sum
    ccc = masked_ccc(prediction[usable], target, weights, variance, covariance)  # (B', C)
    return (1.0 - ccc).mean()


def masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, reduction: MSEReduction = MSEReduction.LABELLED
) -> torch.Tensor:
    """MSE over the labelled frames; ``all_positions`` divides by every position of the batch instead,
    as AIM3-RUC's ``mse(inputs * mask, target * mask)`` (models/loss.py:9-11)."""
    labeled = torch.all(target != UNLABELED_VA, dim=-1)
    if not bool(labeled.any()):
        return prediction.sum() * 0.0
    loss = F.mse_loss(prediction[labeled], target[labeled])
    if reduction is MSEReduction.ALL_POSITIONS:
        loss = loss * labeled.sum() / labeled.numel()
    return loss


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
            if self.config.va is VALoss.MSE:
                return masked_mse(output, target, self.config.mse)
            cfg = self.config
            return ccc_loss(output, target, None, cfg.ccc, cfg.variance, cfg.covariance)
        if task is Task.EXPR:
            return expression_loss(output, target)
        return action_unit_loss(output, target)
