"""The ``mfcc`` extractor: 13 cepstral coefficients with deltas and delta-deltas (39-d, as ABAW2 used).

Pipeline: pre-emphasis, 25 ms Hann windows every 10 ms, power spectrum, HTK-mel filterbank, natural log
with a floor, orthonormal DCT-II (c0 kept), HTK sinusoidal lifter, then regression deltas computed at
the native 10 ms hop before the alignment to video frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from avpipe.pipeline.align import AlignMethod
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.extractors.audio import spectral
from avpipe.pipeline.extractors.audio.common import (
    NativeFeatures,
    check_sample_rate,
    features_on_timeline,
    prepare_track,
)
from avpipe.pipeline.extractors.audio.logmel import MelSettings, log_mel_features
from avpipe.pipeline.registry import Extractor, InputKind, register_extractor
from avpipe.pipeline.types import AudioTrack, FeatureSet, Timeline, VideoContext


@dataclass
class MfccConfig:
    """``extractors.mfcc`` in params.yaml."""

    sample_rate: int = 16000
    align: AlignMethod = AlignMethod.NEAREST
    n_mfcc: int = 13
    n_mels: int = 40
    window: float = 0.025  # seconds
    hop: float = 0.010  # seconds
    fmin: float = 20.0
    fmax: float | None = None  # None: sample_rate / 2
    preemphasis: float = 0.97
    lifter: int = 22  # 0 disables liftering
    delta_width: int = 2  # regression over +-2 frames (HTK/Kaldi default)
    log_floor: float = 1e-10

    def __post_init__(self) -> None:
        check_sample_rate("mfcc", self.sample_rate)
        self.mel_settings.check("mfcc", self.sample_rate)
        if not 1 <= self.n_mfcc <= self.n_mels:
            raise ConfigError(
                "extractors.mfcc.n_mfcc", f"must be between 1 and n_mels={self.n_mels}, got {self.n_mfcc}"
            )
        if self.lifter < 0:
            raise ConfigError("extractors.mfcc.lifter", f"must be >= 0, got {self.lifter}")
        if self.delta_width < 1:
            raise ConfigError("extractors.mfcc.delta_width", f"must be >= 1, got {self.delta_width}")

    @property
    def mel_settings(self) -> MelSettings:
        return MelSettings(
            self.n_mels, self.window, self.hop, self.fmin, self.fmax, self.log_floor, self.preemphasis
        )


def mfcc_features(track: AudioTrack, cfg: MfccConfig) -> NativeFeatures:
    """(N, 3 * n_mfcc) rows ``[c, delta c, delta-delta c]`` at the native hop, with centre times."""
    log_mel = log_mel_features(track, cfg.mel_settings)
    basis = spectral.dct_matrix(cfg.n_mfcc, cfg.n_mels) * spectral.lifter_weights(cfg.n_mfcc, cfg.lifter)
    cepstra = spectral.stable_matmul(log_mel.values, basis)
    delta = spectral.deltas(cepstra, cfg.delta_width)
    delta2 = spectral.deltas(delta, cfg.delta_width)
    return NativeFeatures(values=np.concatenate([cepstra, delta, delta2], axis=1), times=log_mel.times)


@register_extractor
class MfccExtractor(Extractor):
    name = "mfcc"
    version = "1"
    input_kind = InputKind.AUDIO
    config_class = MfccConfig
    description = "MFCC 13 + deltas + delta-deltas (39-d) at a 10 ms hop, on the video frames"

    @property
    def feature_dim(self) -> int:
        return 3 * self.config.n_mfcc

    @property
    def frame_shift(self) -> float | None:
        return self.config.hop

    def extract(self, source: AudioTrack | None, timeline: Timeline, context: VideoContext) -> FeatureSet:
        cfg: MfccConfig = self.config
        track = prepare_track(source, cfg.sample_rate, context)
        native = None if track is None else mfcc_features(track, cfg)
        return features_on_timeline(native, track, timeline, cfg.align, self.feature_dim, self.attrs())

    def attrs(self) -> dict[str, Any]:
        cfg: MfccConfig = self.config
        names = [f"{prefix}c{i}" for prefix in ("", "d_", "dd_") for i in range(cfg.n_mfcc)]
        return {"sample_rate": cfg.sample_rate, "native_hop": cfg.hop, "feature_names": names}
