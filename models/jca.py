"""Joint cross-attention fusion (Praveen et al., CVPRW 2022), registry name ``jca``.

Notation of the paper, per window of L frames: audio X_a (d_a x L), visual X_v (d_v x L), joint
J = [X_a; X_v] (d x L, d = d_a + d_v).

- correlation of each modality with the joint representation: C_a = tanh(X_a (J W_j)^T / sqrt(d)) (d_a x d),
  W_j (L x L) learnable; likewise C_v (d_v x d);
- attention maps: H_a = ReLU(C_a W_c + X_a W_l) (d_a x k), W_c (d x k), W_l (L x k);
- attended features with residuals: X_att,a = H_a W_h + X_a (d_a x L), W_h (k x L);
- the head regresses [X_att,a; X_att,v] per frame (d inputs; the released code's regressor expects 640,
  a size that no longer matches the fusion output, praveena2j/JointCrossAttentional-AV-Fusion
  models/cam.py:32).

Options: ``encoder: tcn`` (avpipe: a TCN per modality over its concatenated inputs) or ``linear`` (the
original: one Linear per modality, cam.py:16-17,54-55); ``head: original`` (Linear(d, 128), Dropout(0.6),
Linear(128, out), no activation, cam.py:32-34) or ``avpipe`` (a ReLU after the hidden layer, tanh on VA).
W_j, W_l and W_h act along time, so the model is tied to ``train.window`` frames per window (the
original's windows are 8 clips long, cam.py:19-28).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

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
)
from avpipe.pipeline.config.train import Modality
from avpipe.pipeline.errors import ConfigError


class JCAEncoder(StrEnum):
    TCN = "tcn"
    LINEAR = "linear"


class JCAHead(StrEnum):
    ORIGINAL = "original"
    AVPIPE = "avpipe"


@dataclass
class JCAConfig:
    """avpipe's defaults; the original's (presets/jca.yaml, variant paper): 512-d visual (I3D + TCN) and
    audio (ResNet18) features, linear encoders to 128-d, attention size k = 32, windows of 8, the
    original head with dropout 0.6."""

    encoder_dim: int = 128
    encoder_levels: int = 2
    kernel_size: int = 5
    dropout: float = 0.1
    attention_dim: int = 32
    head_hidden: int = 128
    head_dropout: float = 0.6
    causal: bool = False
    encoder: JCAEncoder = JCAEncoder.TCN
    head: JCAHead = JCAHead.AVPIPE
    activation: Activation = Activation.RELU
    dropout_kind: DropoutKind = DropoutKind.ELEMENT
    init: TCNInit = TCNInit.NORMAL

    def __post_init__(self) -> None:
        prefix = "train.model.config"
        for key in ("encoder_dim", "encoder_levels", "kernel_size", "attention_dim", "head_hidden"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{prefix}.{key}", f"must be >= 1, got {getattr(self, key)}")
        check_dropout(f"{prefix}.dropout", self.dropout)
        check_dropout(f"{prefix}.head_dropout", self.head_dropout)


class JointCrossAttention(nn.Module):
    """The JCA block on channel-first tensors: (B, d_a, L), (B, d_v, L) -> (B, d_a + d_v, L)."""

    def __init__(self, audio_dim: int, visual_dim: int, length: int, attention_dim: int) -> None:
        super().__init__()
        joint_dim = audio_dim + visual_dim
        self.length = length
        self.scale = 1.0 / math.sqrt(joint_dim)
        self.joint_a = nn.Linear(length, length, bias=False)
        self.joint_v = nn.Linear(length, length, bias=False)
        self.corr_a = nn.Linear(joint_dim, attention_dim, bias=False)
        self.corr_v = nn.Linear(joint_dim, attention_dim, bias=False)
        self.own_a = nn.Linear(length, attention_dim, bias=False)
        self.own_v = nn.Linear(length, attention_dim, bias=False)
        self.back_a = nn.Linear(attention_dim, length, bias=False)
        self.back_v = nn.Linear(attention_dim, length, bias=False)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        if audio.shape[-1] != self.length or visual.shape[-1] != self.length:
            raise ValueError(
                f"jca is built for windows of {self.length} frames, got {audio.shape[-1]}; "
                "predict with the train.window the model was trained with"
            )
        joint = torch.cat([audio, visual], dim=1)  # (B, d, L)
        attended_a = self._attend(audio, joint, self.joint_a, self.corr_a, self.own_a, self.back_a)
        attended_v = self._attend(visual, joint, self.joint_v, self.corr_v, self.own_v, self.back_v)
        return torch.cat([attended_a, attended_v], dim=1)

    def _attend(
        self,
        x: torch.Tensor,
        joint: torch.Tensor,
        w_joint: nn.Linear,
        w_corr: nn.Linear,
        w_own: nn.Linear,
        w_back: nn.Linear,
    ) -> torch.Tensor:
        correlation = torch.tanh(x @ w_joint(joint).transpose(1, 2) * self.scale)  # (B, d_x, d)
        attention = torch.relu(w_corr(correlation) + w_own(x))  # (B, d_x, k)
        return w_back(attention) + x  # (B, d_x, L)


class JCAModel(SequenceModel):
    name = "jca"
    config_class = JCAConfig
    description = "joint cross-attention audio-visual fusion (Praveen et al., CVPRW 2022)"

    def __init__(self, context: ModelContext, config: JCAConfig) -> None:
        super().__init__(context)
        self.visual_specs = context.require(Modality.VISUAL, self.name)
        self.audio_specs = context.require(Modality.AUDIO, self.name)
        audio_dim = sum(s.dim for s in self.audio_specs)
        visual_dim = sum(s.dim for s in self.visual_specs)
        self.audio_encoder = _encoder(audio_dim, config)
        self.visual_encoder = _encoder(visual_dim, config)
        self.fusion = JointCrossAttention(
            config.encoder_dim, config.encoder_dim, context.window, config.attention_dim
        )
        fused_dim = 2 * config.encoder_dim
        original = config.head is JCAHead.ORIGINAL
        hidden = nn.Linear(fused_dim, config.head_hidden)
        self.hidden = hidden if original else nn.Sequential(hidden, nn.ReLU())
        self.heads = TaskHeads(config.head_hidden, context.tasks, config.head_dropout, va_tanh=not original)

    def forward(
        self, inputs: Mapping[str, torch.Tensor], valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        audio = self.audio_encoder(concat_inputs(inputs, self.audio_specs)).transpose(1, 2)  # (B, d_a, L)
        visual = self.visual_encoder(concat_inputs(inputs, self.visual_specs)).transpose(1, 2)
        fused = self.fusion(audio, visual).transpose(1, 2)  # (B, L, d)
        return self.heads(self.hidden(fused))


def _encoder(in_dim: int, config: JCAConfig) -> nn.Module:
    """(B, T, in_dim) -> (B, T, encoder_dim): a TCN, or the original's per-frame Linear."""
    if config.encoder is JCAEncoder.LINEAR:
        return nn.Linear(in_dim, config.encoder_dim)
    return TemporalConvNet(
        in_dim,
        [config.encoder_dim] * config.encoder_levels,
        kernel_size=config.kernel_size,
        dropout=config.dropout,
        causal=config.causal,
        options=TCNBlockOptions.of(config),
    )
