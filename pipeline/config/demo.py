"""Configuration of the synthetic demo dataset (``demo`` section of params.yaml)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from avpipe.pipeline.errors import ConfigError

MIN_FRAME_SIDE = 64  # smaller frames cannot hold a face MTCNN detects reliably
MAX_FPS = 120.0
MIN_SAMPLE_RATE = 8000  # the vowel formants need up to ~3 kHz of bandwidth
MAX_SAMPLE_RATE = 96000


class Split(StrEnum):
    """Aff-Wild2 / ABAW annotation subsets."""

    TRAIN = "Train_Set"
    VALIDATION = "Validation_Set"


@dataclass
class DemoConfig:
    """What to generate: how many clips, how long, frame size and rate, audio rate, split."""

    root: str = "data/demo"
    seed: int = 0
    n_clips: int = 10
    min_seconds: float = 10.0
    max_seconds: float = 16.0
    fps: float = 25.0
    width: int = 480
    height: int = 360
    sample_rate: int = 16000
    validation_clips: int = 3

    def __post_init__(self) -> None:
        self._check_ints()
        self._check_durations()
        if not (math.isfinite(self.fps) and 0 < self.fps <= MAX_FPS):
            raise ConfigError("demo.fps", f"must be > 0 and <= {MAX_FPS:g}, got {self.fps}")
        for key in ("width", "height"):
            side = getattr(self, key)
            if side < MIN_FRAME_SIDE or side % 2:
                # yuv420p needs even sides
                raise ConfigError(f"demo.{key}", f"must be an even number >= {MIN_FRAME_SIDE}, got {side}")
        if not MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE:
            raise ConfigError(
                "demo.sample_rate",
                f"must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE}, got {self.sample_rate}",
            )
        if not self.root:
            raise ConfigError("demo.root", "must be a non-empty path")

    def _check_ints(self) -> None:
        for key in ("seed", "n_clips", "width", "height", "sample_rate", "validation_clips"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"demo.{key}", f"must be an integer, got {value!r}")
        if self.seed < 0:
            raise ConfigError("demo.seed", f"must be >= 0, got {self.seed}")
        if self.n_clips < 1:
            raise ConfigError("demo.n_clips", f"must be >= 1, got {self.n_clips}")
        if not 0 <= self.validation_clips < self.n_clips:
            raise ConfigError(
                "demo.validation_clips",
                f"must be >= 0 and < n_clips ({self.n_clips}) so that a training clip remains, "
                f"got {self.validation_clips}",
            )

    def _check_durations(self) -> None:
        if not (math.isfinite(self.min_seconds) and self.min_seconds >= 1.0):
            raise ConfigError("demo.min_seconds", f"must be >= 1.0, got {self.min_seconds}")
        if not (math.isfinite(self.max_seconds) and self.max_seconds >= self.min_seconds):
            raise ConfigError(
                "demo.max_seconds", f"must be >= min_seconds ({self.min_seconds}), got {self.max_seconds}"
            )
