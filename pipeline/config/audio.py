"""``audio`` section: which audio extractors the ``audio@<name>`` stages run."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AudioStageConfig:
    extractors: list[str] = field(default_factory=lambda: ["logmel", "mfcc", "egemaps", "vggish"])
