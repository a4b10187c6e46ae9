"""Recurrent temporal encoder (ABAW4; Schoneveld et al.'s fused features into an LSTM), registry name ``rnn``.

Every input is concatenated per frame (feature-level fusion), optionally projected, then an LSTM or GRU
(bidirectional by default) runs over the window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn

from avpipe.models.base import ModelContext, SequenceModel, TaskHeads, concat_inputs
from avpipe.models.tcn import check_dropout
from avpipe.pipeline.errors import ConfigError


class Cell(StrEnum):
    LSTM = "lstm"
    GRU = "gru"


@dataclass
class RNNConfig:
    cell: Cell = Cell.LSTM
    hidden: int = 64
    layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.2
    projection: int = 0  # size of a linear projection of the fused inputs; 0 = none
    head_dropout: float = 0.0

    def __post_init__(self) -> None:
        prefix = "train.model.config"
        for key, low in (("hidden", 1), ("layers", 1), ("projection", 0)):
            if getattr(self, key) < low:
                raise ConfigError(f"{prefix}.{key}", f"must be >= {low}, got {getattr(self, key)}")
        check_dropout(f"{prefix}.dropout", self.dropout)
        check_dropout(f"{prefix}.head_dropout", self.head_dropout)


class RNNModel(SequenceModel):
    name = "rnn"
    config_class = RNNConfig
    description = "inputs concatenated per frame, then an LSTM or GRU over the window (ABAW4)"

    def __init__(self, context: ModelContext, config: RNNConfig) -> None:
        super().__init__(context)
        in_dim = sum(spec.dim for spec in context.inputs)
        self.projection = nn.Linear(in_dim, config.projection) if config.projection else nn.Identity()
        rnn_class = nn.LSTM if config.cell is Cell.LSTM else nn.GRU
        self.rnn = rnn_class(
            input_size=config.projection or in_dim,
            hidden_size=config.hidden,
            num_layers=config.layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        out_dim = config.hidden * (2 if config.bidirectional else 1)
        self.heads = TaskHeads(out_dim, context.tasks, config.head_dropout)

    def forward(
        self, inputs: Mapping[str, torch.Tensor], valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        encoded, _ = self.rnn(self.projection(concat_inputs(inputs, self.context.inputs)))
        return self.heads(encoded)
