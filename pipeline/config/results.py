"""``results`` section: small git-tracked files that DVC experiments compare."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avpipe.pipeline.errors import ConfigError


@dataclass
class ResultsConfig:
    """Small files for git and DVC experiments: headline metrics, plot data, the resolved train params."""

    dir: str = "results"
    plot_points: int = 500  # per video and dimension in the prediction plots (evenly spaced frames)
    train_inputs: str = "data/train_inputs.json"

    def __post_init__(self) -> None:
        if self.plot_points < 2:
            raise ConfigError("results.plot_points", f"must be >= 2, got {self.plot_points}")
        for key in ("dir", "train_inputs"):
            if not getattr(self, key):
                raise ConfigError(f"results.{key}", "must be a non-empty path")

    @property
    def train_params(self) -> Path:
        return Path(self.dir) / "train_params.yaml"

    @property
    def metrics_dir(self) -> Path:
        return Path(self.dir) / "metrics"

    @property
    def plots_dir(self) -> Path:
        return Path(self.dir) / "plots"
