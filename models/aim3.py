"""AIM3-RUC's ABAW4 multi-task transformer (structure ``share_bottom``, strategy ``feature_feedback``),
registry name ``aim3``; code: github.com/AIM3-RUC/ABAW4 models/mtl_transformer_model.py.

- inputs concatenated, a Linear to ``hidden`` (the encoder's ``affine``), sinusoidal positions added
  (networks/transformer.py:18-37,132-141: position 0 gets a zero vector), ``shared_layers`` transformer
  layers (post-norm, ReLU; :116-117);
- one branch per output: ``v``, ``a`` (valence, arousal), ``expr``, ``au`` (and one per task a dataset
  declares, avpipe.models.tasks). A branch adds the positions
  again, runs ``task_layers`` transformer layers of its own width with ``width // 64`` heads
  (mtl_transformer_model.py:127-139), then an FC head: Dropout, [Linear, ReLU, Dropout] per
  ``head_layers`` size, Linear to the output (networks/regressor.py:5-33, classifier.py:70-99);
- feature feedback: a target branch (``a``) reads the shared features concatenated with the last FC
  hidden features of the source branches (``v``, ``au``), detached (mtl_transformer_model.py:117-120,
  262-276).

The original's pooled ``tanh(linear(maxpool(.)))`` output of each encoder (transformer.py:148-150) is
computed but never used for a prediction, so it gets no gradient; it is left out here, and the frozen
position tables are buffers, not parameters. Padded frames are masked out of attention (the original
attends to them). Valence and arousal come out linear unless ``va_tanh``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from avpipe.models.base import ModelContext, SequenceModel, concat_inputs
from avpipe.models.tcn import check_dropout
from avpipe.pipeline.config.train import Task
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.labels import AU_NAMES, EXPRESSION_NAMES

BRANCH_OUTPUTS = {"v": 1, "a": 1, "expr": len(EXPRESSION_NAMES), "au": len(AU_NAMES)}
MAX_POSITIONS = 512  # networks/transformer.py:91


@dataclass
class AIM3Config:
    """avpipe's CPU-sized defaults; presets/abaw4-mtl.yaml (variant paper) has the released sizes."""

    hidden: int = 64
    shared_layers: int = 1
    task_layers: int = 3
    heads: int = 4
    task_head_dim: int = 16  # a branch of width w has w // task_head_dim heads (the original: 64)
    feedforward: int = 128
    dropout: float = 0.3
    head_layers: list[int] = field(default_factory=lambda: [32, 16])
    feedback_sources: list[str] = field(default_factory=list)  # the original: [v, au]
    feedback_targets: list[str] = field(default_factory=list)  # the original: [a]
    positions: bool = True
    va_tanh: bool = False

    def __post_init__(self) -> None:
        prefix = "train.model.config"
        for key in ("hidden", "shared_layers", "task_layers", "heads", "task_head_dim", "feedforward"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{prefix}.{key}", f"must be >= 1, got {getattr(self, key)}")
        if self.hidden % self.heads:
            raise ConfigError(f"{prefix}.heads", f"must divide hidden ({self.hidden}), got {self.heads}")
        if not self.head_layers or any(size < 1 for size in self.head_layers):
            raise ConfigError(f"{prefix}.head_layers", f"must be sizes >= 1, got {self.head_layers}")
        for key in ("feedback_sources", "feedback_targets"):
            unknown = [b for b in getattr(self, key) if b not in BRANCH_OUTPUTS]
            if unknown:
                raise ConfigError(
                    f"{prefix}.{key}", f"unknown branch {unknown[0]!r}; branches: v, a, expr, au"
                )
        if set(self.feedback_sources) & set(self.feedback_targets):
            raise ConfigError(f"{prefix}.feedback_targets", "a branch cannot feed itself")
        check_dropout(f"{prefix}.dropout", self.dropout)


def position_table(length: int, dim: int) -> torch.Tensor:
    """(length, dim): angle pos / 10000^(2 (i // 2) / dim), sine on even i, cosine on odd; row 0 zero."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    rates = torch.pow(10000.0, 2 * (torch.arange(dim) // 2) / dim)[None, :]
    angles = position / rates
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angles), torch.cos(angles))
    table[0] = 0.0  # padding_idx=0
    return table.float()


def encoder(width: int, heads: int, feedforward: int, dropout: float, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, heads, feedforward, dropout, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)


class FCHead(nn.Module):
    """Dropout, then Linear, ReLU, Dropout per hidden size, then the output Linear; returns both."""

    def __init__(self, in_dim: int, sizes: list[int], out_dim: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        for size in sizes:
            layers += [nn.Linear(in_dim, size), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = size
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.hidden(x)
        return self.out(features), features


class Branch(nn.Module):
    def __init__(self, width: int, out_dim: int, config: AIM3Config) -> None:
        super().__init__()
        if width % config.task_head_dim:
            raise ConfigError(
                "train.model.config.task_head_dim",
                f"must divide every branch width; a branch is {width} wide",
            )
        heads = width // config.task_head_dim
        self.encoder = encoder(width, heads, config.feedforward, config.dropout, config.task_layers)
        self.head = FCHead(width, config.head_layers, out_dim, config.dropout)
        self.register_buffer("positions", position_table(MAX_POSITIONS, width), persistent=False)
        self.use_positions = config.positions

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.use_positions:
            x = x + self.positions[: x.shape[1]]
        return self.head(self.encoder(x, src_key_padding_mask=padding))


class AIM3Model(SequenceModel):
    name = "aim3"
    config_class = AIM3Config
    description = "AIM3-RUC's ABAW4 multi-task transformer with feature feedback"

    def __init__(self, context: ModelContext, config: AIM3Config) -> None:
        super().__init__(context)
        if context.window > MAX_POSITIONS:
            raise ConfigError("train.window", f"aim3 has {MAX_POSITIONS} positions, got {context.window}")
        names = [
            b for task in context.tasks for b in (("v", "a") if task.key == Task.VA.value else (task.key,))
        ]
        outputs = {task.key: task.n_outputs for task in context.tasks} | {"v": 1, "a": 1}
        missing = [b for b in config.feedback_sources + config.feedback_targets if b not in names]
        if missing:
            raise ConfigError(
                "train.model.config.feedback_sources",
                f"branch {missing[0]!r} is not trained (tasks {[t.value for t in context.tasks]}); "
                "set feedback_sources and feedback_targets to [] or train its task",
            )
        self.config = config
        self.affine = nn.Linear(sum(spec.dim for spec in context.inputs), config.hidden)
        self.register_buffer("positions", position_table(MAX_POSITIONS, config.hidden), persistent=False)
        self.shared = encoder(
            config.hidden, config.heads, config.feedforward, config.dropout, config.shared_layers
        )
        feedback = len(config.feedback_sources) * config.head_layers[-1]
        self.order = [b for b in names if b not in config.feedback_targets] + [
            b for b in names if b in config.feedback_targets
        ]
        self.branches = nn.ModuleDict(
            {
                b: Branch(
                    config.hidden + (feedback if b in config.feedback_targets else 0),
                    outputs[b],
                    config,
                )
                for b in names
            }
        )

    def forward(
        self, inputs: Mapping[str, torch.Tensor], valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        padding = None if valid is None else ~valid
        x = self.affine(concat_inputs(inputs, self.context.inputs))
        if self.config.positions:
            x = x + self.positions[: x.shape[1]]
        shared = self.shared(x, src_key_padding_mask=padding)
        outputs: dict[str, torch.Tensor] = {}
        features: dict[str, torch.Tensor] = {}
        for b in self.order:
            source = shared
            if b in self.config.feedback_targets:
                source = torch.cat(
                    [shared, *(features[s].detach() for s in self.config.feedback_sources)], -1
                )
            outputs[b], features[b] = self.branches[b](source, padding)
        result = {name: values for name, values in outputs.items() if name not in ("v", "a")}
        if "v" in outputs:
            va = torch.cat([outputs["v"], outputs["a"]], dim=-1)
            result[Task.VA.value] = torch.tanh(va) if self.config.va_tanh else va
        return result
