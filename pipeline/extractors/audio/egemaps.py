"""The ``egemaps`` extractor: openSMILE eGeMAPSv02 LLDs (25 at 10 ms) and optional windowed functionals.

``features`` holds the 25 low-level descriptors aligned to the video frames. With ``functionals: true``
the FeatureSet also holds ``functionals`` (T, 88): the eGeMAPSv02 functionals over a window of
``functionals_window`` seconds centred on each video frame (or, with ``functionals_hop``, on a coarser
grid then taken at the nearest window), truncated at the ends of the audio track.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from avpipe.pipeline.align import AlignMethod
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.extractors.audio import smile
from avpipe.pipeline.extractors.audio.common import (
    NativeFeatures,
    check_sample_rate,
    features_on_timeline,
    prepare_track,
)
from avpipe.pipeline.registry import Extractor, InputKind, register_extractor
from avpipe.pipeline.types import AudioTrack, FeatureSet, Timeline, VideoContext

N_LLD = 25
N_FUNCTIONALS = 88
# Tracks shorter than this are zero-padded so openSMILE emits enough LLD rows for one window.
MIN_SECONDS = 0.1


@dataclass
class EgemapsConfig:
    """``extractors.egemaps`` in params.yaml."""

    sample_rate: int = 16000
    align: AlignMethod = AlignMethod.NEAREST
    functionals: bool = False
    functionals_window: float = 4.0  # seconds, centred on each frame
    functionals_hop: float | None = None  # None: one window per video frame

    def __post_init__(self) -> None:
        check_sample_rate("egemaps", self.sample_rate)
        if not self.functionals_window >= 3 * smile.LLD_HOP:
            raise ConfigError(
                "extractors.egemaps.functionals_window",
                f"must be >= {3 * smile.LLD_HOP:g} s (three LLD frames), got {self.functionals_window}",
            )
        if self.functionals_hop is not None and not self.functionals_hop >= smile.LLD_HOP:
            raise ConfigError(
                "extractors.egemaps.functionals_hop",
                f"must be null or >= {smile.LLD_HOP:g} s, got {self.functionals_hop}",
            )


def functional_windows(centres: np.ndarray, window: float, n_lld: int) -> np.ndarray:
    """(W, 2) inclusive LLD-row ranges whose row centres lie in ``[c - window/2, c + window/2)``.

    ``centres`` are seconds from the track's first sample, non-decreasing. Ranges are clipped to the
    rows that exist and widened to the 3 rows openSMILE needs.
    """
    # LLD row k is centred at (k + 1) * hop: a 20 ms frame starting at k * hop.
    first = np.ceil((centres - window / 2.0) / smile.LLD_HOP - 1.0 - 1e-6).astype(np.int64)
    last = np.ceil((centres + window / 2.0) / smile.LLD_HOP - 1.0 - 1e-6).astype(np.int64) - 1
    last = np.clip(last, smile.MIN_LLD_PER_WINDOW - 1, n_lld - 1)
    first = np.clip(first, 0, last - (smile.MIN_LLD_PER_WINDOW - 1))
    return np.stack([first, last], axis=1)


@register_extractor
class EgemapsExtractor(Extractor):
    name = "egemaps"
    version = "1"
    input_kind = InputKind.AUDIO
    config_class = EgemapsConfig
    description = "openSMILE eGeMAPSv02 LLDs (25 at 10 ms), optional 88 functionals per frame window"

    @property
    def feature_dim(self) -> int:
        return N_LLD

    @property
    def frame_shift(self) -> float | None:
        return smile.LLD_HOP

    def extract(self, source: AudioTrack | None, timeline: Timeline, context: VideoContext) -> FeatureSet:
        cfg: EgemapsConfig = self.config
        track = prepare_track(source, cfg.sample_rate, context)
        if track is None:
            return self._no_audio(timeline)
        samples = track.samples
        min_samples = round(MIN_SECONDS * track.sample_rate)
        if samples.shape[0] < min_samples:
            samples = np.pad(samples, (0, min_samples - samples.shape[0]))
        centres = self._window_centres(track, timeline) if cfg.functionals else None
        windows = None
        if centres is not None and centres.size:
            # One row less than openSMILE's count, so no window waits for a row that never comes.
            n_lld = smile.expected_lld_count(samples.shape[0], track.sample_rate) - 1
            windows = functional_windows(centres - track.start, cfg.functionals_window, n_lld)
        result = smile.run_egemaps(samples, track.sample_rate, windows)
        lld = NativeFeatures(values=result.lld, times=result.lld_times + track.start)
        extra = {}
        if cfg.functionals:
            extra["functionals"] = (self._functionals(result, centres), AlignMethod.NEAREST)
        attrs = {**self.attrs(), "feature_names": result.lld_names}
        if result.functional_names is not None:
            attrs["functional_names"] = result.functional_names
        return features_on_timeline(lld, track, timeline, cfg.align, N_LLD, attrs, extra)

    def _window_centres(self, track: AudioTrack, timeline: Timeline) -> np.ndarray:
        """Container-clock centres of the functional windows: the frames inside the track, or a hop grid."""
        cfg: EgemapsConfig = self.config
        if cfg.functionals_hop is None:
            times = np.asarray(timeline.time, dtype=np.float64)
            return times[(times >= track.start) & (times < track.end)]
        return track.start + np.arange(0.0, track.duration, cfg.functionals_hop)

    @staticmethod
    def _functionals(result: smile.SmileResult, centres: np.ndarray | None) -> NativeFeatures:
        if centres is None or centres.size == 0 or result.functionals is None:
            return NativeFeatures(values=np.zeros((0, N_FUNCTIONALS), np.float32), times=np.zeros(0))
        return NativeFeatures(values=result.functionals, times=centres)

    def _no_audio(self, timeline: Timeline) -> FeatureSet:
        cfg: EgemapsConfig = self.config
        # Column names come from openSMILE: a run on 0.1 s of silence gives them, so every shard has them.
        rate = cfg.sample_rate
        windows = np.array([[0, smile.MIN_LLD_PER_WINDOW - 1]]) if cfg.functionals else None
        names = smile.run_egemaps(np.zeros(round(MIN_SECONDS * rate), np.float32), rate, windows)
        attrs = {**self.attrs(), "feature_names": names.lld_names}
        extra = {}
        if cfg.functionals:
            attrs["functional_names"] = names.functional_names
            empty = NativeFeatures(values=np.zeros((0, N_FUNCTIONALS), np.float32), times=np.zeros(0))
            extra["functionals"] = (empty, AlignMethod.NEAREST)
        return features_on_timeline(None, None, timeline, cfg.align, N_LLD, attrs, extra)

    def attrs(self) -> dict[str, Any]:
        cfg: EgemapsConfig = self.config
        attrs: dict[str, Any] = {
            "sample_rate": cfg.sample_rate,
            "native_hop": smile.LLD_HOP,
            "feature_set": "eGeMAPSv02",
        }
        if cfg.functionals:
            attrs["functionals_window"] = cfg.functionals_window
            attrs["functionals_hop"] = cfg.functionals_hop if cfg.functionals_hop is not None else "frame"
        return attrs
