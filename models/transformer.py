"""Transformer temporal encoder (ABAW4 multi-task systems), registry name ``transformer``.

Inputs concatenated per frame, projected to ``d_model``, sinusoidal positions added, a stack of
self-attention layers over the window (padded positions masked out), the task heads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from avpipe.models.base import ModelContext, SequenceModel, TaskHeads, concat_inputs
from avpipe.models.tcn import check_dropout
from avpipe.pipeline.errors import ConfigError


@dataclass
class TransformerConfig:
    d_model: int = 64
    heads: int = 4
    layers: int = 2
    feedforward: int = 128
    dropout: float = 0.1
    causal: bool = False
    head_dropout: float = 0.0

    def __post_init__(self) -> None:
        prefix = "train.model.config"
        for key in ("d_model", "heads", "layers", "feedforward"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{prefix}.{key}", f"must be >= 1, got {getattr(self, key)}")
        if self.d_model % self.heads:
            raise ConfigError(f"{prefix}.heads", f"must divide d_model ({self.d_model}), got {self.heads}")
        check_dropout(f"{prefix}.dropout", self.dropout)
        check_dropout(f"{prefix}.head_dropout", self.head_dropout)


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """(length, dim) fixed sine/cosine position codes (Vaswani et al.)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rates = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    codes = torch.zeros(length, dim, device=device)
    codes[:, 0::2] = torch.sin(position * rates)
    codes[:, 1::2] = torch.cos(position * rates[: dim // 2])
    return codes


class TransformerModel(SequenceModel):
    name = "transformer"
    config_class = TransformerConfig
    description = "inputs concatenated, projected, self-attention layers over the window"

    def __init__(self, context: ModelContext, config: TransformerConfig) -> None:
        super().__init__(context)
        self.causal = config.causal
        self.projection = nn.Linear(sum(spec.dim for spec in context.inputs), config.d_model)
        layer = nn.TransformerEncoderLayer(
            d_model=config.d_model,
            nhead=config.heads,
            dim_feedforward=config.feedforward,
            dropout=config.dropout,
            batch_first=True,
        )
        # nested-tensor fast path would return zeros at padded positions and warn; plain path keeps shapes
        self.encoder = nn.TransformerEncoder(layer, num_layers=config.layers, enable_nested_tensor=False)
        self.heads = TaskHeads(config.d_model, context.tasks, config.head_dropout)

    def forward(
        self, inputs: Mapping[str, torch.Tensor], valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        x = self.projection(concat_inputs(inputs, self.context.inputs))
        length = x.shape[1]
        x = x + sinusoidal_positions(length, x.shape[-1], x.device)
        mask = None
        if self.causal:  # boolean like the padding mask: True = may not attend
            mask = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(diagonal=1)
        padding = None if valid is None else ~valid
        return self.heads(self.encoder(x, mask=mask, src_key_padding_mask=padding, is_causal=self.causal))
