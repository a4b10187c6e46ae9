"""The mean colour of every video frame: a complete avpipe extractor."""

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.registry import Extractor, InputKind
from avpipe.pipeline.types import FeatureSet, MaskValue

LUMA = np.array([0.299, 0.587, 0.114])


class ColourSpace(StrEnum):
    RGB = "rgb"
    GREY = "grey"


@dataclass
class FrameColourConfig:  # filled from `extractors.frame-colour` in params.yaml
    space: ColourSpace = ColourSpace.RGB
    border: int = 0  # pixels ignored on every edge (letterbox bars)

    def __post_init__(self) -> None:
        if self.border < 0:
            raise ConfigError("extractors.frame-colour.border", f"must be >= 0, got {self.border}")


class FrameColourExtractor(Extractor):
    name = "frame-colour"
    version = "1"  # bump it when the output changes: stored results are then recomputed
    input_kind = InputKind.FRAMES
    config_class = FrameColourConfig
    description = "mean colour of each frame in [0, 1] (example plug-in)"

    @property
    def feature_dim(self) -> int:
        return 3 if self.config.space is ColourSpace.RGB else 1

    def extract(self, source, timeline, context) -> FeatureSet:
        values = np.zeros((len(timeline), self.feature_dim), np.float32)
        b = self.config.border
        for row, frame in enumerate(source):  # exactly the frames of `timeline`, in order
            h, w = frame.image.shape[:2]
            rgb = frame.image[b : h - b, b : w - b].mean(axis=(0, 1)) / 255.0
            values[row] = rgb if self.config.space is ColourSpace.RGB else rgb @ LUMA
        mask = np.full(len(timeline), MaskValue.VALID, np.uint8)
        return FeatureSet(timeline.time, timeline.frame_index, mask, {"features": values})
