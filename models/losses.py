"""Masked training losses: CCC (or MSE) for continuous tasks, cross-entropy for categorical tasks, BCE for
multi-label tasks: valence/arousal, expression and action units, and any task a dataset declares
(avpipe.models.tasks). And the loss registry: ``train.loss.va`` (continuous tasks), ``.categorical`` and
``.multilabel`` name a loss among the built-in ``TaskLoss`` classes and the plug-ins of the
``avpipe.losses`` entry-point group (docs/EXTENDING.md).

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

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

from avpipe.models.tasks import VA, TaskSpec, as_specs
from avpipe.pipeline.config.build import build_dataclass
from avpipe.pipeline.config.train import CCCReduction, LossConfig, Moments, MSEReduction, Task, TrainConfig
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.labels import UNLABELED_AU, UNLABELED_EXPRESSION, UNLABELED_VA, TaskKind
from avpipe.pipeline.plugins import BUILTIN_ORIGIN, PluginGroup, PluginRegistry

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


# --------------------------------------------------------------------------- the loss registry


@dataclass
class NoOptions:
    """The config of a loss that takes no options of its own."""


class TaskLoss(ABC):
    """Base class of a task's loss: ``loss(output, target, labelled)`` -> a scalar tensor.

    Subclasses set ``name``, ``targets`` (the ``TaskKind``s they can train), ``description`` and, for
    options of their own, ``config_class`` (a dataclass filled from ``train.loss.options.<name>``).
    ``section`` is the whole ``train.loss`` section (the built-in CCC and MSE losses read their settings
    there). What a loss receives for one task, padded window positions included:

    - ``output``: the model's (B, T, C) outputs for the task (values, or logits);
    - ``target``: continuous tasks (B, T, C) float; categorical (B, T) integer class indices; multi-label
      (B, T, K) 0 / 1 flags. Unlabelled entries hold 0.0 (continuous) or -1 (the others);
    - ``labelled``: bool, ``target``'s shape: True where the entry has a label (each dimension, class
      flag or frame on its own).

    A batch without any labelled entry must give a zero that still has a gradient path
    (``output.sum() * 0.0``), so that a multi-task step never fails on a missing task.
    """

    name: ClassVar[str]
    targets: ClassVar[tuple[TaskKind, ...]]
    config_class: ClassVar[type] = NoOptions
    description: ClassVar[str] = ""

    def __init__(self, config: Any = None, section: LossConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        self.section = section if section is not None else LossConfig()

    @abstractmethod
    def __call__(self, output: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        """The loss of one task's outputs against its targets, over the ``labelled`` entries."""


class CCCLoss(TaskLoss):
    name = "ccc"
    targets = (TaskKind.CONTINUOUS,)
    description = "1 - CCC per dimension over labelled frames (train.loss.ccc, variance, covariance)"

    def __call__(self, output: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        cfg = self.section
        return ccc_loss(output, target, labelled, cfg.ccc, cfg.variance, cfg.covariance)


class MSELoss(TaskLoss):
    name = "mse"
    targets = (TaskKind.CONTINUOUS,)
    description = "mean squared error over labelled frames (train.loss.mse: labelled | all_positions)"

    def __call__(self, output: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        return masked_mse(output, target, self.section.mse, labelled)


class CrossEntropyLoss(TaskLoss):
    name = "cross_entropy"
    targets = (TaskKind.CATEGORICAL,)
    description = "cross-entropy over the frames with a class label"

    def __call__(self, output: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        return expression_loss(output, target)  # unlabelled frames hold -1: ignored


class BCELoss(TaskLoss):
    name = "bce"
    targets = (TaskKind.MULTILABEL,)
    description = "binary cross-entropy over the labelled (frame, label) entries"

    def __call__(self, output: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        return action_unit_loss(output, target)  # unlabelled entries hold -1: ignored


BUILTIN_LOSSES: tuple[type[TaskLoss], ...] = (CCCLoss, MSELoss, CrossEntropyLoss, BCELoss)


def check_loss_class(cls: Any) -> None:
    """Raise TypeError when ``cls`` cannot be a registered loss."""
    if not (isinstance(cls, type) and issubclass(cls, TaskLoss)):
        raise TypeError(f"{cls!r} is not a subclass of avpipe.models.losses.TaskLoss")
    if not getattr(cls, "name", ""):
        raise TypeError(f"loss class {cls.__qualname__} must set the class attribute 'name'")
    targets = getattr(cls, "targets", ())
    if not targets or not all(isinstance(t, TaskKind) for t in targets):
        raise TypeError(f"loss {cls.name!r}: targets must be a non-empty tuple of TaskKind values")
    if not dataclasses.is_dataclass(cls.config_class):
        raise TypeError(f"loss {cls.name!r}: config_class must be a dataclass")


def _loss_error(problem: str) -> ConfigError:
    return ConfigError("train.loss", problem)


def loss_registry() -> PluginRegistry[type[TaskLoss]]:
    """The built-in losses and the ``avpipe.losses`` plug-ins (refused ones listed with their problem)."""
    registry: PluginRegistry[type[TaskLoss]] = PluginRegistry(
        "loss", PluginGroup.LOSSES.value, check_loss_class, _loss_error
    )
    for cls in BUILTIN_LOSSES:
        registry.add(cls, BUILTIN_ORIGIN)
    registry.load()
    return registry


def build_kind_losses(
    section: LossConfig,
    kinds: Iterable[TaskKind] = tuple(TaskKind),
    registry: PluginRegistry[type[TaskLoss]] | None = None,
) -> dict[TaskKind, TaskLoss]:
    """The loss of each kind of task: the one ``train.loss`` names for it (``va`` for continuous tasks,
    ``categorical``, ``multilabel``), with its ``train.loss.options``.

    ConfigError naming the key (and, for a plug-in, its distribution) when a name is unknown or refused,
    a loss cannot train that kind of task, or its options are wrong.
    """
    registry = registry or loss_registry()
    for name in section.options:
        if name not in registry.names():
            raise ConfigError(
                f"train.loss.options.{name}", f"no such loss; losses: {', '.join(registry.names())}"
            )
    return {TaskKind(kind): _build_loss(registry, section, TaskKind(kind)) for kind in kinds}


def _build_loss(registry: PluginRegistry[type[TaskLoss]], section: LossConfig, kind: TaskKind) -> TaskLoss:
    key, name = f"train.loss.{section.loss_key(kind)}", section.loss_name(kind)
    try:
        cls = registry.get(name)
    except ConfigError as err:
        raise ConfigError(key, err.problem) from None
    where = f"loss {name!r} from {registry.origins[name]}" if registry.is_plugin(name) else f"loss {name!r}"
    if kind not in cls.targets:
        trains = ", ".join(t.value for t in cls.targets)
        raise ConfigError(key, f"{where} trains {trains} tasks, not {kind.value} ones")
    try:
        config = build_dataclass(
            cls.config_class, section.options.get(name), prefix=f"train.loss.options.{name}"
        )
        return cls(config, section)
    except ConfigError as err:
        if not registry.is_plugin(name):
            raise
        raise ConfigError(err.key, f"{err.problem} ({where})") from err
    except Exception as err:
        raise ConfigError(key, f"{where} failed to build: {type(err).__name__}: {err}") from err


def validate_losses(config: TrainConfig) -> None:
    """Fail before any data is loaded when a loss ``train.loss`` names is unknown, refused, cannot train
    its kind of task, or has bad options (all three kinds: the tasks may come from the data)."""
    build_kind_losses(config.loss)


def labelled_entries(task: TaskSpec, target: torch.Tensor) -> torch.Tensor:
    """Bool, ``target``'s shape: the entries with a label (``va`` -5, a declared dimension NaN, classes
    and multi-label flags -1 where unlabelled)."""
    if task.kind is TaskKind.CONTINUOUS:
        return target != UNLABELED_VA if task.key == VA else ~torch.isnan(target)
    return target != (UNLABELED_EXPRESSION if task.kind is TaskKind.CATEGORICAL else UNLABELED_AU)


class MultiTaskLoss:
    """Weighted sum of the task losses; also returns each task's loss for logging.

    ``tasks``: Task members (the built-in tasks) or TaskSpecs (avpipe.models.tasks); each task's loss is
    the one ``train.loss`` names for its kind (``TaskLoss`` says what it receives).
    """

    def __init__(
        self,
        tasks: list[Task] | list[TaskSpec],
        config: LossConfig,
        registry: PluginRegistry[type[TaskLoss]] | None = None,
    ) -> None:
        self.tasks = as_specs(tasks)
        self.config = config
        self.functions = build_kind_losses(config, {task.kind for task in self.tasks}, registry)

    def __call__(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {task.key: self._task_loss(task, outputs[task.key], targets[task.key]) for task in self.tasks}
        total = torch.stack([self.config.weight(key) * loss for key, loss in parts.items()]).sum()
        return total, {key: float(loss.detach()) for key, loss in parts.items()}

    def _task_loss(self, task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = labelled_entries(task, target)
        if task.kind is TaskKind.CONTINUOUS:
            target = torch.where(labelled, target, 0.0)  # no -5 or NaN reaches a loss
        function = self.functions[task.kind]
        loss = function(output, target, labelled)
        if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
            raise TypeError(
                f"loss {function.name!r} of task {task.key} returned {type(loss).__name__}, not a scalar"
            )
        return loss
