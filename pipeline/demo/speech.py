"""Speech-like audio whose pitch, speaking rate and loudness follow arousal.

Source-filter synthesis: a Rosenberg glottal pulse train (f0 from arousal) is shaped by vowel
formant resonators that switch per syllable; syllables come at an arousal-dependent rate with
short pauses, a consonant-like noise burst at each onset, and a faint noise floor.
Low arousal: slow, quiet, low pitched. High arousal: fast, loud, high pitched, brighter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from avpipe.pipeline.demo.curves import smooth_noise

F0_LOW_HZ = 100.0  # arousal -1
F0_HIGH_HZ = 260.0  # arousal +1
RATE_LOW = 2.0  # syllables per second at arousal -1
RATE_HIGH = 6.0
GAIN_LOW_DB = -28.0
GAIN_HIGH_DB = -7.0
PAUSE_PROB_LOW = 0.3  # chance a syllable is silent, at arousal -1
PAUSE_PROB_HIGH = 0.08
NOISE_FLOOR_DB = -60.0
# Open and closing phases of the Rosenberg pulse, as fractions of the period; a shorter closing
# phase (high arousal) gives a brighter, more pressed voice.
OPEN_QUOTIENT = 0.4
CLOSING_QUOTIENT_LOW = 0.3
CLOSING_QUOTIENT_HIGH = 0.14
# (F1, F2, F3) in Hz of the vowels /a e i o u/, adult-like averages.
VOWEL_FORMANTS = (
    (730.0, 1090.0, 2440.0),
    (530.0, 1840.0, 2480.0),
    (270.0, 2290.0, 3010.0),
    (570.0, 840.0, 2410.0),
    (300.0, 870.0, 2240.0),
)
FORMANT_BANDWIDTHS = (80.0, 100.0, 130.0)
# Where in a syllable (fraction of its duration) the consonant burst and the vowel sit.
CONSONANT_END = 0.08
VOWEL_START = 0.05
VOWEL_END = 0.78
CONSONANT_LEVEL = 0.25
VOWEL_CROSSFADE_SECONDS = 0.01


@dataclass(frozen=True)
class Voice:
    """One speaker's audio and its syllable envelope (0..1, before loudness), both per sample."""

    samples: np.ndarray
    envelope: np.ndarray


def arousal_per_sample(arousal: np.ndarray, fps: float, sample_rate: int, n_samples: int) -> np.ndarray:
    frame_times = np.arange(arousal.shape[0]) / fps
    return np.interp(np.arange(n_samples) / sample_rate, frame_times, arousal)


def synthesize_voice(
    rng: np.random.Generator,
    arousal: np.ndarray,
    fps: float,
    sample_rate: int,
    n_samples: int,
    active: np.ndarray | None = None,
) -> Voice:
    """Speech following the per-frame ``arousal``; ``active`` (per sample, 0..1) gates turns."""
    level = (arousal_per_sample(arousal, fps, sample_rate, n_samples) + 1.0) / 2.0
    times = np.arange(n_samples) / sample_rate
    intonation = 1.0 + 0.03 * smooth_noise(rng, times, 0.4, 1.6)
    f0 = F0_LOW_HZ * (F0_HIGH_HZ / F0_LOW_HZ) ** level * intonation
    source = _glottal_source(rng, f0, level, sample_rate)
    vowels, consonant_env, vowel_env = _syllables(rng, level, sample_rate)
    voiced = _formant_mix(source, vowels, sample_rate)
    burst = np.diff(rng.standard_normal(n_samples + 1)) * 0.5  # differenced noise: hiss-like
    gain = 10.0 ** ((GAIN_LOW_DB + (GAIN_HIGH_DB - GAIN_LOW_DB) * level) / 20.0)
    if active is not None:
        vowel_env = vowel_env * active
        consonant_env = consonant_env * active
    speech = gain * (voiced * vowel_env + CONSONANT_LEVEL * burst * consonant_env)
    floor = 10.0 ** (NOISE_FLOOR_DB / 20.0) * rng.standard_normal(n_samples)
    return Voice(samples=(speech + floor).astype(np.float32), envelope=vowel_env.astype(np.float32))


def _glottal_source(
    rng: np.random.Generator, f0: np.ndarray, level: np.ndarray, sample_rate: int
) -> np.ndarray:
    """Derivative of a Rosenberg glottal flow (lip radiation), with a little aspiration noise."""
    phase = np.cumsum(f0 / sample_rate) % 1.0
    closing = CLOSING_QUOTIENT_LOW + (CLOSING_QUOTIENT_HIGH - CLOSING_QUOTIENT_LOW) * level
    flow = np.zeros_like(phase)
    rising = phase < OPEN_QUOTIENT
    flow[rising] = 0.5 * (1.0 - np.cos(np.pi * phase[rising] / OPEN_QUOTIENT))
    falling = ~rising & (phase < OPEN_QUOTIENT + closing)
    flow[falling] = np.cos(np.pi * (phase[falling] - OPEN_QUOTIENT) / (2.0 * closing[falling]))
    flow += 0.04 * flow * rng.standard_normal(flow.shape[0])
    return np.diff(flow, prepend=flow[0])


def _syllables(
    rng: np.random.Generator, level: np.ndarray, sample_rate: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: vowel id, consonant envelope and vowel envelope of the current syllable."""
    rate = RATE_LOW + (RATE_HIGH - RATE_LOW) * level
    progress = np.cumsum(rate / sample_rate)
    index = progress.astype(np.int64)
    position = progress - index
    n_syllables = int(index[-1]) + 1
    starts = np.searchsorted(progress, np.arange(n_syllables), side="left").clip(max=level.shape[0] - 1)
    pause_prob = PAUSE_PROB_LOW + (PAUSE_PROB_HIGH - PAUSE_PROB_LOW) * level[starts]
    spoken = (rng.random(n_syllables) >= pause_prob) * rng.uniform(0.75, 1.0, n_syllables)
    vowel_ids = rng.integers(0, len(VOWEL_FORMANTS), n_syllables)
    consonant = np.clip(1.0 - position / CONSONANT_END, 0.0, 1.0) ** 2
    ramp = np.minimum((position - VOWEL_START) / 0.12, (VOWEL_END - position) / 0.2)
    vowel = 0.5 - 0.5 * np.cos(np.pi * np.clip(ramp, 0.0, 1.0))
    return vowel_ids[index], consonant * spoken[index], vowel * spoken[index]


def _formant_mix(source: np.ndarray, vowel_per_sample: np.ndarray, sample_rate: int) -> np.ndarray:
    """Filter the source through every vowel's resonators and cross-fade between them per syllable.

    Filtering the whole signal once per vowel keeps each filter's state continuous, which a
    per-syllable coefficient switch would not.
    """
    fade = max(1, int(VOWEL_CROSSFADE_SECONDS * sample_rate))
    kernel = np.ones(fade) / fade
    mixed = np.zeros_like(source)
    for vowel_id, formants in enumerate(VOWEL_FORMANTS):
        weight = np.convolve((vowel_per_sample == vowel_id).astype(np.float64), kernel, mode="same")
        if not weight.any():
            continue
        filtered = source
        for frequency, bandwidth in zip(formants, FORMANT_BANDWIDTHS, strict=True):
            if frequency < 0.45 * sample_rate:
                filtered = _resonate(filtered, frequency, bandwidth, sample_rate)
        mixed += weight * filtered / max(float(np.abs(filtered).max()), 1e-9)
    return mixed


def _resonate(signal: np.ndarray, frequency: float, bandwidth: float, sample_rate: int) -> np.ndarray:
    """Two-pole resonator with unit gain at its centre frequency."""
    radius = np.exp(-np.pi * bandwidth / sample_rate)
    theta = 2.0 * np.pi * frequency / sample_rate
    denominator = [1.0, -2.0 * radius * np.cos(theta), radius * radius]
    peak_gain = abs(np.polyval(denominator[::-1], np.exp(-1j * theta)))
    return lfilter([peak_gain], denominator, signal)


def turn_taking(rng: np.random.Generator, n_samples: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Two complementary per-sample activity masks (0..1): speakers alternate turns of 1.5 to 3.5 s."""
    owner = np.zeros(n_samples)
    start, speaker = 0, int(rng.integers(0, 2))
    while start < n_samples:
        length = int(rng.uniform(1.5, 3.5) * sample_rate)
        owner[start : start + length] = speaker
        start, speaker = start + length, 1 - speaker
    fade = max(1, int(0.15 * sample_rate))
    right = np.convolve(owner, np.ones(fade) / fade, mode="same")
    return 1.0 - right, right


def per_frame_mean(values: np.ndarray, fps: float, sample_rate: int, n_frames: int) -> np.ndarray:
    """Mean of a per-sample signal over each video frame's span of samples."""
    bounds = np.round(np.arange(n_frames) * sample_rate / fps).astype(np.int64)
    bounds = bounds.clip(max=values.shape[0] - 1)
    sums = np.add.reduceat(values.astype(np.float64), bounds)
    counts = np.diff(np.append(bounds, values.shape[0])).clip(min=1)
    return sums / counts
