"""What every sequence model shares: its inputs' description, the task heads, the forward contract.

A model maps a batch of windows ``{input key: (B, T, D)}`` (plus ``valid`` (B, T): False at padded
positions) to ``{task key: (B, T, C)}``: ``va`` values in [-1, 1] (tanh), ``expr`` logits over 8 classes,
``au`` logits of 12 units; a declared task (avpipe.models.tasks) one linear value per dimension, or
logits over its classes. Input sizes come from the store and the tasks' output sizes from the labels,
through ``ModelContext``, never from code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from avpipe.models.tasks import TaskSpec, as_specs
from avpipe.pipeline.config.train import Modality, Task
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.labels import AU_NAMES, EXPRESSION_NAMES, VA_NAMES

TASK_OUTPUTS = {Task.VA: len(VA_NAMES), Task.EXPR: len(EXPRESSION_NAMES), Task.AU: len(AU_NAMES)}  # built-in


@dataclass(frozen=True)
class InputSpec:
    """One input stream: its batch key, its feature size (read from the store) and its modality."""

    key: str
    dim: int
    modality: Modality  # VISUAL or AUDIO, never AUTO here

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "dim": self.dim, "modality": self.modality.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        return cls(key=str(data["key"]), dim=int(data["dim"]), modality=Modality(data["modality"]))


@dataclass(frozen=True)
class ModelContext:
    """What a model is built for: its inputs, the tasks it predicts, the window length it sees."""

    inputs: tuple[InputSpec, ...]
    tasks: tuple[TaskSpec, ...]
    window: int

    def task_keys(self) -> tuple[str, ...]:
        return tuple(task.key for task in self.tasks)

    def of_modality(self, modality: Modality) -> list[InputSpec]:
        return [spec for spec in self.inputs if spec.modality is modality]

    def require(self, modality: Modality, model: str) -> list[InputSpec]:
        found = self.of_modality(modality)
        if not found:
            raise ConfigError(
                "train.features",
                f"model {model!r} needs at least one {modality.value} feature, got "
                f"{', '.join(f'{s.key} ({s.modality.value})' for s in self.inputs)}",
            )
        return found


class SequenceModel(nn.Module):
    """Base class of the registered models (``name``, ``config_class``, built from a ModelContext).

    Subclasses define ``forward(inputs, valid=None) -> {task: (B, T, C)}`` (module docstring) and take
    ``(context, config)`` in their constructor, ``config`` an instance of ``config_class`` filled from
    ``train.model.config``. ``description`` is the line ``avpipe models list`` shows.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    description: ClassVar[str] = ""

    def __init__(self, context: ModelContext) -> None:
        super().__init__()
        self.context = context


def concat_inputs(inputs: Mapping[str, torch.Tensor], specs: Sequence[InputSpec]) -> torch.Tensor:
    """(B, T, sum of dims) concatenation of the named inputs, in ``specs`` order."""
    return torch.cat([inputs[spec.key] for spec in specs], dim=-1)


class TaskHeads(nn.Module):
    """One linear head per task on per-frame features (B, T, D); VA squashed by tanh unless ``va_tanh``
    is False (the ABAW2 and JCA regressors are linear: the merge clips to [-1, 1] afterwards)."""

    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task] | Sequence[TaskSpec],
        dropout: float = 0.0,
        va_tanh: bool = True,
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.va_tanh = va_tanh
        self.heads = nn.ModuleDict({task.key: nn.Linear(in_dim, task.n_outputs) for task in as_specs(tasks)})

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.dropout(features)
        outputs = {name: head(features) for name, head in self.heads.items()}
        if self.va_tanh and Task.VA.value in outputs:
            outputs[Task.VA.value] = torch.tanh(outputs[Task.VA.value])
        return outputs
