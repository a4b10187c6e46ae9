"""The loudness of the soundtrack on every video frame: a complete avpipe AUDIO extractor."""

from dataclasses import dataclass

import numpy as np

from avpipe.pipeline.align import AlignMethod, Coverage, align_to_frames, window_centres
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.registry import Extractor, InputKind
from avpipe.pipeline.types import FeatureSet

FLOOR_DB = -100.0  # the level of digital silence


@dataclass
class RmsEnergyConfig:  # filled from `extractors.rms-energy` in params.yaml
    sample_rate: int = 16000  # the runner decodes the audio at this rate
    window: float = 0.025  # seconds
    hop: float = 0.010  # seconds
    align: AlignMethod = AlignMethod.MEAN  # how the 10 ms rows become one row per video frame

    def __post_init__(self) -> None:
        if not 0 < self.hop <= self.window:
            raise ConfigError("extractors.rms-energy.hop", f"must be in (0, window], got {self.hop}")


class RmsEnergyExtractor(Extractor):
    name = "rms-energy"
    version = "1"
    input_kind = InputKind.AUDIO
    config_class = RmsEnergyConfig
    description = "RMS level in dBFS of 25 ms windows every 10 ms, on the video frames (example plug-in)"

    @property
    def feature_dim(self) -> int:
        return 1

    @property
    def frame_shift(self) -> float | None:
        return self.config.hop

    def extract(self, source, timeline, context) -> FeatureSet:
        levels, centres, coverage = np.zeros((0, 1)), np.zeros(0), None  # no audio: masked zero rows
        if source is not None and source.samples.size:
            rate = source.sample_rate  # the config's sample_rate: the runner decoded at it
            window, hop = round(self.config.window * rate), round(self.config.hop * rate)
            levels = rms_levels(source.samples, window, hop)[:, None]
            # window k covers [start + k * hop, start + k * hop + window): its centre on the video clock
            centres = window_centres(len(levels), hop / rate, window / rate, source.start)
            coverage = Coverage(source.start, source.end)
        aligned = align_to_frames(levels, centres, timeline.time, self.config.align, coverage)
        return FeatureSet(timeline.time, timeline.frame_index, aligned.mask, {"features": aligned.values})


def rms_levels(samples: np.ndarray, window: int, hop: int, block: int = 4096) -> np.ndarray:
    """20 log10 of the RMS of every whole window, in blocks of windows (memory stays small)."""
    if samples.size < window:
        return np.zeros(0)
    starts = np.arange(0, samples.size - window + 1, hop)
    windows = np.lib.stride_tricks.sliding_window_view(samples, window)  # a view, no copy
    blocks = [windows[starts[i : i + block]] for i in range(0, starts.size, block)]
    power = np.concatenate([np.mean(np.square(b, dtype=np.float64), axis=1) for b in blocks])
    return np.maximum(10 * np.log10(np.maximum(power, 1e-20)), FLOOR_DB)
