"""``embed`` section: which face backbones the ``embed@<name>`` stages run."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EmbedStageConfig:
    backbones: list[str] = field(default_factory=lambda: ["fer-minixception"])
