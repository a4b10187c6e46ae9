"""Leader-follower attentive fusion (Zhang et al., ABAW2 / ICCVW 2021), registry name ``lfan``.

The visual stream leads: its features (all visual inputs concatenated) go through a TCN. Each audio input
follows through its own, smaller TCN. At every time step each stream (leader included) gets a query, key
and value; attention across the streams mixes the values, a residual and layer norm keep each stream's
own value; the attended streams, flattened, are concatenated with the leader's TCN output (the skip
connection that keeps the visual evidence in front) and regressed by the heads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from avpipe.models.base import ModelContext, SequenceModel, TaskHeads, concat_inputs
from avpipe.models.tcn import (
    Activation,
    DropoutKind,
    TCNBlockOptions,
    TCNInit,
    TemporalConvNet,
    check_dropout,
    check_tcn_settings,
)
from avpipe.pipeline.config.train import Modality
from avpipe.pipeline.errors import ConfigError


@dataclass
class LFANConfig:
    """avpipe's defaults; the released code's settings are in presets/abaw2-lfan.yaml (variant paper):
    visual TCN [128] * 4 on the 512-d face embedding, aural TCNs [32] * 4, kernel 5, dropout 0.1,
    modal_dim 32, LeakyReLU, channel dropout, a linear regressor (no tanh)."""

    visual_channels: list[int] = field(default_factory=lambda: [512, 256, 256, 128])
    audio_channels: list[int] = field(default_factory=lambda: [32, 32, 32, 32])
    kernel_size: int = 5
    dropout: float = 0.1
    modal_dim: int = 32
    causal: bool = True
    head_dropout: float = 0.0
    activation: Activation = Activation.RELU
    dropout_kind: DropoutKind = DropoutKind.ELEMENT
    init: TCNInit = TCNInit.NORMAL
    va_tanh: bool = True  # squash valence/arousal with tanh; the original regressor is linear

    def __post_init__(self) -> None:
        prefix = "train.model.config"
        check_tcn_settings(prefix, self.visual_channels, self.kernel_size, self.dropout)
        if not self.audio_channels or any(c < 1 for c in self.audio_channels):
            raise ConfigError(
                f"{prefix}.audio_channels",
                f"must be a non-empty list of sizes >= 1, got {self.audio_channels}",
            )
        if self.modal_dim < 1:
            raise ConfigError(f"{prefix}.modal_dim", f"must be >= 1, got {self.modal_dim}")
        check_dropout(f"{prefix}.head_dropout", self.head_dropout)


class ModalityAttention(nn.Module):
    """Per time step attention across M streams: (B, T, D_m) each -> (B, T, M * modal_dim)."""

    def __init__(self, stream_dims: list[int], modal_dim: int) -> None:
        super().__init__()
        self.query = nn.ModuleList(nn.Linear(dim, modal_dim) for dim in stream_dims)
        self.key = nn.ModuleList(nn.Linear(dim, modal_dim) for dim in stream_dims)
        self.value = nn.ModuleList(nn.Linear(dim, modal_dim) for dim in stream_dims)
        self.norm = nn.LayerNorm([len(stream_dims), modal_dim])
        self.scale = 1.0 / math.sqrt(modal_dim)
        self.out_dim = len(stream_dims) * modal_dim

    def forward(self, streams: list[torch.Tensor]) -> torch.Tensor:
        q = torch.stack([layer(s) for layer, s in zip(self.query, streams, strict=True)], dim=-2)
        k = torch.stack([layer(s) for layer, s in zip(self.key, streams, strict=True)], dim=-2)
        v = torch.stack([layer(s) for layer, s in zip(self.value, streams, strict=True)], dim=-2)
        weights = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)  # (B, T, M, M)
        attended = self.norm(weights @ v + v)  # (B, T, M, modal_dim)
        return attended.flatten(start_dim=-2)


class LFANModel(SequenceModel):
    name = "lfan"
    config_class = LFANConfig
    description = "leader-follower attentive fusion: visual TCN leads, audio TCNs follow (ABAW2)"

    def __init__(self, context: ModelContext, config: LFANConfig) -> None:
        super().__init__(context)
        self.visual_specs = context.require(Modality.VISUAL, self.name)
        self.audio_specs = context.of_modality(Modality.AUDIO)
        tcn = {
            "kernel_size": config.kernel_size,
            "dropout": config.dropout,
            "causal": config.causal,
            "options": TCNBlockOptions.of(config),
        }
        self.leader = TemporalConvNet(sum(s.dim for s in self.visual_specs), config.visual_channels, **tcn)
        self.followers = nn.ModuleList(
            TemporalConvNet(spec.dim, config.audio_channels, **tcn) for spec in self.audio_specs
        )
        stream_dims = [self.leader.out_dim] + [f.out_dim for f in self.followers]
        self.attention = ModalityAttention(stream_dims, config.modal_dim)
        self.heads = TaskHeads(
            self.leader.out_dim + self.attention.out_dim, context.tasks, config.head_dropout, config.va_tanh
        )

    def forward(
        self, inputs: Mapping[str, torch.Tensor], valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        leader = self.leader(concat_inputs(inputs, self.visual_specs))
        followers = [
            tcn(inputs[spec.key]) for tcn, spec in zip(self.followers, self.audio_specs, strict=True)
        ]
        fused = self.attention([leader, *followers])
        return self.heads(torch.cat([leader, fused], dim=-1))
