"""The ``logmel`` extractor: log mel filterbank energies at a 10 ms hop, aligned to the video frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from avpipe.pipeline.align import AlignMethod, window_centres
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.extractors.audio import spectral
from avpipe.pipeline.extractors.audio.common import (
    NativeFeatures,
    check_positive,
    check_sample_rate,
    features_on_timeline,
    prepare_track,
)
from avpipe.pipeline.registry import Extractor, InputKind, register_extractor
from avpipe.pipeline.types import AudioTrack, FeatureSet, Timeline, VideoContext


@dataclass(frozen=True)
class MelSettings:
    """Everything that defines a log-mel frontend (shared by ``logmel`` and ``mfcc``)."""

    n_mels: int
    window: float  # seconds
    hop: float  # seconds
    fmin: float
    fmax: float | None  # None: Nyquist
    log_floor: float
    preemphasis: float = 0.0

    def check(self, name: str, sample_rate: int) -> None:
        if self.n_mels < 1:
            raise ConfigError(f"extractors.{name}.n_mels", f"must be >= 1, got {self.n_mels}")
        check_positive(name, "window", self.window)
        check_positive(name, "hop", self.hop)
        check_positive(name, "log_floor", self.log_floor)
        nyquist = sample_rate / 2.0
        top = nyquist if self.fmax is None else self.fmax
        if not 0.0 <= self.fmin < top <= nyquist:
            raise ConfigError(
                f"extractors.{name}.fmax",
                f"need 0 <= fmin < fmax <= {nyquist:g} (Nyquist); got fmin {self.fmin:g}, fmax {top:g}",
            )
        n_bins = spectral.fft_length_for(spectral.samples_for(self.window, sample_rate)) // 2 + 1
        if self.n_mels > n_bins:
            raise ConfigError(
                f"extractors.{name}.n_mels",
                f"{self.n_mels} bands need a longer window: a {self.window:g} s window has {n_bins} FFT bins",
            )
        if not 0.0 <= self.preemphasis < 1.0:
            raise ConfigError(f"extractors.{name}.preemphasis", f"must be in [0, 1), got {self.preemphasis}")


def log_mel_features(track: AudioTrack, mel: MelSettings, power: float = 2.0) -> NativeFeatures:
    """Natural-log mel energies ``log(max(E, floor))`` of ``track``, one row per window, with centre times.

    A track shorter than one window is zero-padded to exactly one window.
    """
    rate = track.sample_rate
    window_length = spectral.samples_for(mel.window, rate)
    hop_length = spectral.samples_for(mel.hop, rate)
    n_fft = spectral.fft_length_for(window_length)
    fmax = rate / 2.0 if mel.fmax is None else mel.fmax
    filterbank = spectral.mel_filterbank(mel.n_mels, n_fft, rate, mel.fmin, fmax)
    samples = spectral.pad_to_window(spectral.preemphasis(track.samples, mel.preemphasis), window_length)
    energies = spectral.mel_spectrogram(samples, window_length, hop_length, filterbank, power=power)
    values = np.log(np.maximum(energies, np.float32(mel.log_floor)))
    times = window_centres(values.shape[0], hop_length / rate, window_length / rate, track.start)
    return NativeFeatures(values=values, times=times)


@dataclass
class LogMelConfig:
    """``extractors.logmel`` in params.yaml."""

    sample_rate: int = 16000
    align: AlignMethod = AlignMethod.NEAREST
    n_mels: int = 64
    window: float = 0.025  # seconds
    hop: float = 0.010  # seconds
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    log_floor: float = 1e-10  # energies below it are clamped before the log (silence stays finite)

    def __post_init__(self) -> None:
        check_sample_rate("logmel", self.sample_rate)
        self.mel_settings.check("logmel", self.sample_rate)

    @property
    def mel_settings(self) -> MelSettings:
        return MelSettings(self.n_mels, self.window, self.hop, self.fmin, self.fmax, self.log_floor)


@register_extractor
class LogMelExtractor(Extractor):
    name = "logmel"
    version = "1"
    input_kind = InputKind.AUDIO
    config_class = LogMelConfig
    description = "log mel filterbank energies (64 bands, 25 ms window, 10 ms hop), on the video frames"

    @property
    def feature_dim(self) -> int:
        return self.config.n_mels

    @property
    def frame_shift(self) -> float | None:
        return self.config.hop

    def extract(self, source: AudioTrack | None, timeline: Timeline, context: VideoContext) -> FeatureSet:
        cfg: LogMelConfig = self.config
        track = prepare_track(source, cfg.sample_rate, context)
        native = None if track is None else log_mel_features(track, cfg.mel_settings)
        return features_on_timeline(native, track, timeline, cfg.align, self.feature_dim, self.attrs())

    def attrs(self) -> dict[str, Any]:
        cfg: LogMelConfig = self.config
        return {"sample_rate": cfg.sample_rate, "native_hop": cfg.hop, "window": cfg.window, "log": "natural"}
