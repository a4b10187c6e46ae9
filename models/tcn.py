"""Temporal convolutional network (Bai et al. 2018): weight-normalised dilated convolutions with residuals.

Block options (``TCNBlockOptions``; every TCN-based model config has these three fields):

- ``activation``: ``relu`` (Bai et al., avpipe's default) or ``leaky_relu`` (slope 0.01; sucv/ABAW2
  model/temporal_convolutional_model.py:27,33,39);
- ``dropout_kind``: ``element`` (nn.Dropout) or ``channel``: whole channels of a window zeroed, what the
  original's ``nn.Dropout2d`` did on (B, C, T) input in the torch of its time (same file :28,34);
- ``init``: ``normal`` (N(0, 0.01) before weight norm, so it takes effect) or ``abaw2``: the original's
  effective init. Its ``xavier_uniform(conv.weight)`` (:44,46) writes a tensor that weight norm recomputes
  from ``weight_g``/``weight_v`` before every forward, so the convolutions keep torch's default init and
  only the 1x1 downsample gets xavier-uniform with gain sqrt(2) (:48-49).

``TemporalConvNet`` is the building block the fusion models reuse; ``TCNModel`` (registry name ``tcn``)
is early fusion: every input concatenated, one TCN, the task heads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from avpipe.models.base import ModelContext, SequenceModel, TaskHeads, concat_inputs
from avpipe.pipeline.errors import ConfigError


class Activation(StrEnum):
    RELU = "relu"
    LEAKY_RELU = "leaky_relu"


class DropoutKind(StrEnum):
    ELEMENT = "element"
    CHANNEL = "channel"


class TCNInit(StrEnum):
    NORMAL = "normal"
    ABAW2 = "abaw2"


@dataclass(frozen=True)
class TCNBlockOptions:
    activation: Activation = Activation.RELU
    dropout_kind: DropoutKind = DropoutKind.ELEMENT
    init: TCNInit = TCNInit.NORMAL

    @classmethod
    def of(cls, config: object) -> TCNBlockOptions:
        """The block options of a model config that has the three fields."""
        return cls(config.activation, config.dropout_kind, config.init)  # type: ignore[attr-defined]


def check_tcn_settings(prefix: str, channels: list[int], kernel_size: int, dropout: float) -> None:
    if not channels or any(c < 1 for c in channels):
        raise ConfigError(f"{prefix}.channels", f"must be a non-empty list of sizes >= 1, got {channels}")
    if kernel_size < 1:
        raise ConfigError(f"{prefix}.kernel_size", f"must be >= 1, got {kernel_size}")
    check_dropout(f"{prefix}.dropout", dropout)


def check_dropout(key: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(key, f"must be in [0, 1), got {value}")


class TemporalBlock(nn.Module):
    """Two dilated convolutions (weight norm, activation, dropout) and a residual connection:
    ``act(x_res + drop(act(conv2(drop(act(conv1(x)))))))``.

    Causal blocks pad only on the left, so frame t sees frames <= t; non-causal ones pad both sides.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int,
        dropout: float,
        causal: bool,
        options: TCNBlockOptions = TCNBlockOptions(),
    ) -> None:
        super().__init__()
        total = (kernel_size - 1) * dilation
        self.padding = (total, 0) if causal else (total // 2, total - total // 2)
        self.conv1 = _normalised_conv(in_channels, out_channels, kernel_size, dilation, options.init)
        self.conv2 = _normalised_conv(out_channels, out_channels, kernel_size, dilation, options.init)
        self.dropout = (
            nn.Dropout1d(dropout) if options.dropout_kind is DropoutKind.CHANNEL else nn.Dropout(dropout)
        )
        self.activation = nn.LeakyReLU() if options.activation is Activation.LEAKY_RELU else nn.ReLU()
        self.downsample = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else None
        if self.downsample is not None and options.init is TCNInit.ABAW2:
            nn.init.xavier_uniform_(self.downsample.weight, gain=math.sqrt(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T) -> (B, C_out, T)."""
        out = self.dropout(self.activation(self.conv1(F.pad(x, self.padding))))
        out = self.dropout(self.activation(self.conv2(F.pad(out, self.padding))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.activation(out + residual)


def _normalised_conv(
    in_channels: int, out_channels: int, kernel_size: int, dilation: int, init: TCNInit
) -> nn.Module:
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)
    if init is TCNInit.NORMAL:
        nn.init.normal_(conv.weight, 0.0, 0.01)  # Bai et al.'s init, before weight norm splits the weight
    return weight_norm(conv)


class TemporalConvNet(nn.Module):
    """Stack of TemporalBlocks with dilation 2^level; works on (B, T, D) and returns (B, T, channels[-1])."""

    def __init__(
        self,
        in_dim: int,
        channels: list[int],
        kernel_size: int = 5,
        dropout: float = 0.1,
        causal: bool = True,
        options: TCNBlockOptions = TCNBlockOptions(),
    ) -> None:
        super().__init__()
        sizes = [in_dim, *channels]
        self.blocks = nn.Sequential(
            *(
                TemporalBlock(sizes[i], sizes[i + 1], kernel_size, 2**i, dropout, causal, options)
                for i in range(len(channels))
            )
        )
        self.out_dim = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.transpose(1, 2)).transpose(1, 2)


@dataclass
class TCNConfig:
    channels: list[int] = field(default_factory=lambda: [64, 64, 64, 64])
    kernel_size: int = 5
    dropout: float = 0.1
    causal: bool = True
    head_dropout: float = 0.0
    activation: Activation = Activation.RELU
    dropout_kind: DropoutKind = DropoutKind.ELEMENT
    init: TCNInit = TCNInit.NORMAL

    def __post_init__(self) -> None:
        check_tcn_settings("train.model.config", self.channels, self.kernel_size, self.dropout)
        check_dropout("train.model.config.head_dropout", self.head_dropout)


class TCNModel(SequenceModel):
    """Early fusion: all inputs concatenated per frame into one TCN."""

    name = "tcn"
    config_class = TCNConfig
    description = "early fusion: every input concatenated per frame into one TCN (Bai et al. 2018)"

    def __init__(self, context: ModelContext, config: TCNConfig) -> None:
        super().__init__(context)
        in_dim = sum(spec.dim for spec in context.inputs)
        self.tcn = TemporalConvNet(
            in_dim,
            config.channels,
            config.kernel_size,
            config.dropout,
            config.causal,
            TCNBlockOptions.of(config),
        )
        self.heads = TaskHeads(self.tcn.out_dim, context.tasks, config.head_dropout)

    def forward(
        self, inputs: Mapping[str, torch.Tensor], valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return self.heads(self.tcn(concat_inputs(inputs, self.context.inputs)))
