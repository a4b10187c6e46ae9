"""Joint cross-attention fusion (Praveen et al., CVPRW 2022), registry name ``jca``.

Notation of the paper, per window of L frames: audio X_a (d_a x L), visual X_v (d_v x L), joint
J = [X_a; X_v] (d x L, d = d_a + d_v).

- correlation of each modality with the joint representation: C_a = tanh(X_a (J W_j)^T / sqrt(d)) (d_a x d),
  W_j (L x L) learnable; likewise C_v (d_v x d);
- attention maps: H_a = ReLU(C_a W_c + X_a W_l) (d_a x k), W_c (d x k), W_l (L x k);
- attended features with residuals: X_att,a = H_a W_h + X_a (d_a x L), W_h (k x L);
- the head regresses [X_att,a; X_att,v] per frame (d inputs; the original code fed its head a size that
  no longer matched the fusion output).

Each modality is first encoded to ``encoder_dim`` channels by a TCN over its concatenated inputs.
W_j, W_l and W_h act along time, so the model is tied to ``train.window`` frames per window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from models.base import ModelContext, SequenceModel, TaskHeads, concat_inputs
from models.config import Modality
from models.tcn import TemporalConvNet, check_dropout
from pipeline.errors import ConfigError


@dataclass
class JCAConfig:
    """Paper settings: 512-d visual (I3D + TCN) and audio (ResNet18 + TCN) features encoded to 128-d,
    attention size k = 32, dropout 0.6 before the regressor."""

    encoder_dim: int = 128
    encoder_levels: int = 2
    kernel_size: int = 5
    dropout: float = 0.1
    attention_dim: int = 32
    head_hidden: int = 128
    head_dropout: float = 0.6
    causal: bool = False

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

    def __init__(self, context: ModelContext, config: JCAConfig) -> None:
        super().__init__(context)
        self.visual_specs = context.require(Modality.VISUAL, self.name)
        self.audio_specs = context.require(Modality.AUDIO, self.name)
        channels = [config.encoder_dim] * config.encoder_levels
        tcn = {"kernel_size": config.kernel_size, "dropout": config.dropout, "causal": config.causal}
        self.audio_encoder = TemporalConvNet(sum(s.dim for s in self.audio_specs), channels, **tcn)
        self.visual_encoder = TemporalConvNet(sum(s.dim for s in self.visual_specs), channels, **tcn)
        self.fusion = JointCrossAttention(
            config.encoder_dim, config.encoder_dim, context.window, config.attention_dim
        )
        fused_dim = 2 * config.encoder_dim
        self.hidden = nn.Sequential(nn.Linear(fused_dim, config.head_hidden), nn.ReLU())
        self.heads = TaskHeads(config.head_hidden, context.tasks, config.head_dropout)

    def forward(
        self, inputs: Mapping[str, torch.Tensor], valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        audio = self.audio_encoder(concat_inputs(inputs, self.audio_specs)).transpose(1, 2)
        visual = self.visual_encoder(concat_inputs(inputs, self.visual_specs)).transpose(1, 2)
        fused = self.fusion(audio, visual).transpose(1, 2)  # (B, L, d)
        return self.heads(self.hidden(fused))
