"""Temporal convolutional network (Bai et al. 2018): weight-normalised dilated convolutions with residuals.

``TemporalConvNet`` is the building block the fusion models reuse; ``TCNModel`` (registry name ``tcn``)
is early fusion: every input concatenated, one TCN, the task heads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from models.base import ModelContext, SequenceModel, TaskHeads, concat_inputs
from pipeline.errors import ConfigError


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
    """Two dilated convolutions (weight norm, ReLU, dropout) and a residual connection.

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
    ) -> None:
        super().__init__()
        total = (kernel_size - 1) * dilation
        self.padding = (total, 0) if causal else (total // 2, total - total // 2)
        self.conv1 = _normalised_conv(in_channels, out_channels, kernel_size, dilation)
        self.conv2 = _normalised_conv(out_channels, out_channels, kernel_size, dilation)
        self.dropout = nn.Dropout(dropout)
        self.downsample = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T) -> (B, C_out, T)."""
        out = self.dropout(F.relu(self.conv1(F.pad(x, self.padding))))
        out = self.dropout(F.relu(self.conv2(F.pad(out, self.padding))))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


def _normalised_conv(in_channels: int, out_channels: int, kernel_size: int, dilation: int) -> nn.Module:
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)
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
    ) -> None:
        super().__init__()
        sizes = [in_dim, *channels]
        self.blocks = nn.Sequential(
            *(
                TemporalBlock(sizes[i], sizes[i + 1], kernel_size, 2**i, dropout, causal)
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

    def __post_init__(self) -> None:
        check_tcn_settings("train.model.config", self.channels, self.kernel_size, self.dropout)
        check_dropout("train.model.config.head_dropout", self.head_dropout)


class TCNModel(SequenceModel):
    """Early fusion: all inputs concatenated per frame into one TCN."""

    name = "tcn"
    config_class = TCNConfig

    def __init__(self, context: ModelContext, config: TCNConfig) -> None:
        super().__init__(context)
        in_dim = sum(spec.dim for spec in context.inputs)
        self.tcn = TemporalConvNet(in_dim, config.channels, config.kernel_size, config.dropout, config.causal)
        self.heads = TaskHeads(self.tcn.out_dim, context.tasks, config.head_dropout)

    def forward(
        self, inputs: Mapping[str, torch.Tensor], valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return self.heads(self.tcn(concat_inputs(inputs, self.context.inputs)))
