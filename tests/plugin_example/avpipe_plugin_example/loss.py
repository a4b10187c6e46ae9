"""The Huber loss on valence/arousal: a complete avpipe loss."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

from avpipe.models.losses import TaskLoss
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.labels import TaskKind


@dataclass
class HuberConfig:  # filled from `train.loss.options.huber` in params.yaml
    delta: float = 1.0  # quadratic below |error| = delta, linear above

    def __post_init__(self) -> None:
        if not self.delta > 0:
            raise ConfigError("train.loss.options.huber.delta", f"must be > 0, got {self.delta}")


class HuberLoss(TaskLoss):
    name = "huber"
    targets = (TaskKind.CONTINUOUS,)  # it trains continuous tasks (va, declared dimensions)
    config_class = HuberConfig
    description = "Huber loss over the labelled values (example plug-in)"

    def __call__(self, output: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        # output, target (B, T, C); labelled (B, T, C) bool: False where unlabelled and at padding
        if not bool(labelled.any()):
            return output.sum() * 0.0  # no label in the batch: zero, with a gradient path
        return F.huber_loss(output[labelled], target[labelled], delta=self.config.delta)
