"""One model per valence/arousal dimension (``train.model.separate_va``), as the ABAW2 and JCA code train
one model per emotion (sucv/ABAW2 main.py:50-52 and experiment_regular.py:180-183 build a one-output
regressor for the chosen emotion; praveena2j/JointCrossAttentional-AV-Fusion models/cam.py:34).

Two copies of the registered model, each with a one-output VA regressor, run side by side; their outputs
form the (B, T, 2) valence/arousal prediction. They share the optimiser and the schedule, where the
original code runs two separate trainings; with ``selection.mode: per_task`` each is kept at its own
emotion's best epoch (avpipe.models.selection).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from avpipe.models.base import ModelContext, SequenceModel
from avpipe.pipeline.config.train import Task
from avpipe.pipeline.labels import VA_NAMES


class PerDimensionVA(SequenceModel):
    name = "per-dimension-va"
    config_class = object

    def __init__(self, context: ModelContext, build: Callable[[], SequenceModel]) -> None:
        super().__init__(context)
        self.per_dimension = nn.ModuleList()
        for _ in VA_NAMES:
            model = build()
            heads = model.heads.heads  # every registered model regresses through TaskHeads
            heads[Task.VA.value] = nn.Linear(heads[Task.VA.value].in_features, 1)
            self.per_dimension.append(model)

    def forward(
        self, inputs: Mapping[str, torch.Tensor], valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        outputs = [model(inputs, valid)[Task.VA.value] for model in self.per_dimension]
        return {Task.VA.value: torch.cat(outputs, dim=-1)}
