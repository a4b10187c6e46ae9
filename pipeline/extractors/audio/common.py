"""What every audio extractor shares: the common config fields, input checks and the final alignment.

An audio extractor computes its features at a native hop on the decoded track, with the centre time of
each analysis window on the container clock (``track.start`` + offset in the track), then
:func:`features_on_timeline` resamples them onto the video frames (avpipe.pipeline.align) and builds the
FeatureSet. A video without an audio stream (``source`` None) gives all-zero rows with mask 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from math import gcd
from typing import Any

import numpy as np

from avpipe.pipeline.align import AlignMethod, Coverage, align_to_frames
from avpipe.pipeline.errors import ConfigError, MediaError
from avpipe.pipeline.types import AudioTrack, FeatureSet, Timeline, VideoContext

log = logging.getLogger(__name__)

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000


@dataclass(frozen=True)
class NativeFeatures:
    """Features at their own hop: ``values`` (N, D) and the centre time of each row on the container clock."""

    values: np.ndarray
    times: np.ndarray


def check_sample_rate(name: str, sample_rate: int) -> None:
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ConfigError(
            f"extractors.{name}.sample_rate",
            f"must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, got {sample_rate}",
        )


def check_positive(name: str, field: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"extractors.{name}.{field}", f"must be > 0, got {value}")


def prepare_track(track: AudioTrack | None, sample_rate: int, context: VideoContext) -> AudioTrack | None:
    """The track as mono float32 at ``sample_rate``; None when there is no audio at all.

    The runner already decodes at the config's rate; a track at another rate (a direct caller) is
    resampled here rather than refused. An empty track (0 samples) counts as no audio.
    """
    if track is None:
        return None
    samples = np.asarray(track.samples)
    if samples.ndim != 1:
        raise MediaError(
            context.media_path, f"decoded audio has shape {samples.shape}, expected mono samples"
        )
    if samples.size == 0:
        log.info("%s: the audio stream decodes to 0 samples; treated as no audio", context.media_path)
        return None
    samples = samples.astype(np.float32, copy=False)
    if not np.all(np.isfinite(samples)):
        raise MediaError(context.media_path, "decoded audio contains NaN or infinite samples")
    if track.sample_rate != sample_rate:
        samples = resample(samples, track.sample_rate, sample_rate)
    return AudioTrack(samples=samples, sample_rate=sample_rate, start=float(track.start))


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling between integer rates (scipy's Kaiser-windowed FIR)."""
    from scipy.signal import resample_poly

    common = gcd(int(from_rate), int(to_rate))
    return resample_poly(samples, to_rate // common, from_rate // common).astype(np.float32)


def features_on_timeline(
    native: NativeFeatures | None,
    track: AudioTrack | None,
    timeline: Timeline,
    method: AlignMethod,
    feature_dim: int,
    attrs: dict[str, Any],
    extra: dict[str, tuple[NativeFeatures, AlignMethod]] | None = None,
) -> FeatureSet:
    """Align ``native`` and the ``extra`` arrays (each by its own method) onto ``timeline``.

    ``native`` None (or ``track`` None) means no audio: ``features`` is (T, feature_dim) zeros, mask 0.
    """
    coverage = None if track is None or native is None else Coverage(track.start, track.end)
    empty = NativeFeatures(values=np.zeros((0, feature_dim), np.float32), times=np.zeros(0))
    main = align_to_frames(*_pair(native or empty), timeline.time, method, coverage)
    arrays = {"features": main.values}
    for name, (feats, extra_method) in (extra or {}).items():
        arrays[name] = align_to_frames(
            feats.values, feats.times, timeline.time, extra_method, coverage
        ).values
    attrs = {
        **attrs,
        "align": AlignMethod(method).value,
        "audio_start": float(track.start) if track is not None else float("nan"),
        "audio_duration": float(track.duration) if track is not None else 0.0,
    }
    return FeatureSet(
        time=np.asarray(timeline.time, dtype=np.float64),
        frame_index=np.asarray(timeline.frame_index, dtype=np.int64),
        mask=main.mask,
        arrays=arrays,
        attrs=attrs,
    )


def _pair(native: NativeFeatures) -> tuple[np.ndarray, np.ndarray]:
    return native.values, native.times
