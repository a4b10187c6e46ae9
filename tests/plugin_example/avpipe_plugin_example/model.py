"""Late fusion of recurrent streams: a complete avpipe model."""

from dataclasses import dataclass

import torch
from torch import nn

from avpipe.models.base import ModelContext, SequenceModel, TaskHeads, concat_inputs
from avpipe.pipeline.config.train import Modality
from avpipe.pipeline.errors import ConfigError


@dataclass
class LateGRUConfig:  # filled from `train.model.config` in params.yaml
    hidden: int = 16  # GRU width of each modality's stream
    dropout: float = 0.0  # before the task heads

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise ConfigError("train.model.config.hidden", f"must be >= 1, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("train.model.config.dropout", f"must be in [0, 1), got {self.dropout}")


class LateGRUModel(SequenceModel):
    name = "late-gru"
    config_class = LateGRUConfig
    description = "one GRU per modality, outputs concatenated per frame, a head per task (example plug-in)"

    def __init__(self, context: ModelContext, config: LateGRUConfig) -> None:
        super().__init__(context)
        # the inputs of each modality present (sizes come from the store), in a fixed order
        present = [m for m in (Modality.VISUAL, Modality.AUDIO) if context.of_modality(m)]
        self.streams = {m: context.of_modality(m) for m in present}
        self.grus = nn.ModuleDict(
            {
                m.value: nn.GRU(sum(s.dim for s in specs), config.hidden, batch_first=True)
                for m, specs in self.streams.items()
            }
        )
        self.heads = TaskHeads(config.hidden * len(self.streams), context.tasks, config.dropout)

    def forward(
        self, inputs: dict[str, torch.Tensor], valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        outputs = [self.grus[m.value](concat_inputs(inputs, specs))[0] for m, specs in self.streams.items()]
        return self.heads(torch.cat(outputs, dim=-1))  # {task: (B, T, C)}
