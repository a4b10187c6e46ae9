"""Masked training losses: CCC (or MSE) for continuous tasks, cross-entropy for categorical tasks, BCE for
multi-label tasks: valence/arousal, expression and action units, and any task a dataset declares
(avpipe.models.tasks).

The CCC loss follows ``train.loss``: ``ccc: pooled`` computes one CCC per dimension over every labelled
frame of the batch (JCA), ``per_window`` one per window and dimension, averaged (ABAW2); ``variance`` and
``covariance`` choose the divisor n or n - 1 (ABAW2: sample variances, population covariance).

Every loss takes the label tensors as stored (unlabeled = -5 for VA, NaN for a declared dimension, -1 for
classes and multi-label flags, which is also what padded window positions hold) and ignores those
entries. Each dimension has its own mask: a frame labelled for valence only trains valence. When every
labelled frame has all dimensions (Aff-Wild2), the loss is exactly the frame-masked one of the presets;
otherwise it is the mean over the dimensions of each dimension's loss on its own labelled frames. A batch
without any labeled entry gives a zero loss that still has a gradient path, so a multi-task step never
fails on a missing task.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

from avpipe.models.tasks import VA, TaskSpec, as_specs
from avpipe.pipeline.config.train import CCCReduction, LossConfig, Moments, MSEReduction, Task, VALoss
from avpipe.pipeline.labels import UNLABELED_AU, UNLABELED_EXPRESSION, UNLABELED_VA, TaskKind

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

    ``prediction`` and ``target`` are (B, T, C); ``labeled`` is a (B, T) frame mask or a (B, T, C)
    mask per dimension (default: target != -5, per dimension). ``pooled``: one CCC per dimension over all
    labelled (batch, time) positions; ``per_window``: one per window and dimension, averaged over the
    windows with at least two labelled frames. Dimensions labelled on different frames: the mean over
    the dimensions (with enough labelled frames) of each one's loss on its own frames.
    """
    if labeled is None:
        labeled = target != UNLABELED_VA
    if labeled.dim() == prediction.dim():
        if bool(torch.all(labeled == labeled[..., :1])):
            labeled = labeled[..., 0]
        else:
            return _per_dimension(
                lambda d: ccc_loss(
                    prediction[..., d : d + 1],
                    target[..., d : d + 1],
                    labeled[..., d],
                    reduction,
                    variance,
                    covariance,
                ),
                labeled,
                reduction,
            )
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


def _per_dimension(loss_of, labeled: torch.Tensor, reduction: CCCReduction) -> torch.Tensor:
    """Mean of ``loss_of(d)`` over the dimensions d with enough labelled frames for a CCC."""
    per_window = reduction is CCCReduction.PER_WINDOW
    counts = labeled.sum(dim=-2)  # (B, C) labelled frames per window and dimension
    usable = (counts >= 2).any(dim=0) if per_window else labeled.flatten(0, -2).sum(dim=0) >= 2
    losses = [loss_of(d) for d in range(labeled.shape[-1]) if bool(usable[d])]
    if not losses:
        return loss_of(0)  # zero, with a gradient path
    return torch.stack(losses).mean()


def masked_mse(
    prediction: torch.Tensor,
    target: torch.Tensor,
    reduction: MSEReduction = MSEReduction.LABELLED,
    labeled: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE over the labelled entries (default: target != -5, per dimension); ``all_positions`` divides by
    every position of the batch instead, as AIM3-RUC's ``mse(inputs * mask, target * mask)``
    (models/loss.py:9-11)."""
    entries = target != UNLABELED_VA if labeled is None else labeled
    if entries.dim() < prediction.dim():
        entries = entries.unsqueeze(-1).expand_as(prediction)
    if not bool(entries.any()):
        return prediction.sum() * 0.0
    if bool(torch.all(entries == entries[..., :1])):  # whole frames: the presets' computation
        frames = entries[..., 0]
        loss = F.mse_loss(prediction[frames], target[frames])
        if reduction is MSEReduction.ALL_POSITIONS:
            loss = loss * frames.sum() / frames.numel()
        return loss
    squared = torch.where(entries, prediction - torch.where(entries, target, 0.0), 0.0) ** 2
    divisor = entries.numel() if reduction is MSEReduction.ALL_POSITIONS else entries.sum()
    return squared.sum() / divisor


def expression_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over frames with a class label (expression, or any categorical task); ``logits``
    (..., n_classes), ``target`` (...) int, -1 unlabelled."""
    target = target.long()
    if not bool((target != UNLABELED_EXPRESSION).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=UNLABELED_EXPRESSION
    )


def action_unit_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the labeled (frame, unit or class) entries; ``target`` holds 0, 1 or -1."""
    labeled = target != UNLABELED_AU
    if not bool(labeled.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[labeled], target[labeled].float())


def continuous_loss(output: torch.Tensor, target: torch.Tensor, config: LossConfig, va: bool) -> torch.Tensor:
    """``train.loss.va`` (CCC or MSE) of a continuous task; a declared dimension's NaN are unlabelled."""
    labeled = None
    if not va:
        labeled = ~torch.isnan(target)
        target = torch.where(labeled, target, 0.0)
    if config.va is VALoss.MSE:
        return masked_mse(output, target, config.mse, labeled)
    return ccc_loss(output, target, labeled, config.ccc, config.variance, config.covariance)


class MultiTaskLoss:
    """Weighted sum of the task losses; also returns each task's loss for logging.

    ``tasks``: Task members (the built-in tasks) or TaskSpecs (avpipe.models.tasks); a categorical task's
    targets are class indices, a multi-label task's 0/1 flags (-1 unlabelled).
    """

    def __init__(self, tasks: list[Task] | list[TaskSpec], config: LossConfig) -> None:
        self.tasks = as_specs(tasks)
        self.config = config

    def __call__(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {task.key: self._task_loss(task, outputs[task.key], targets[task.key]) for task in self.tasks}
        total = torch.stack([self.config.weight(key) * loss for key, loss in parts.items()]).sum()
        return total, {key: float(loss.detach()) for key, loss in parts.items()}

    def _task_loss(self, task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if task.kind is TaskKind.CONTINUOUS:
            return continuous_loss(output, target, self.config, va=task.key == VA)
        if task.kind is TaskKind.CATEGORICAL:
            return expression_loss(output, target)
        return action_unit_loss(output, target)
