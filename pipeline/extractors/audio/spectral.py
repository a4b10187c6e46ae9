"""Short-time spectra, mel filterbanks, cepstra and deltas in vectorised numpy/scipy.

Shared by the log-mel, MFCC and VGGish frontends. Framing follows the convention of VGGish and
openSMILE: window ``k`` covers samples ``[k * hop, k * hop + window)``, no centring pad, only complete
windows; callers pad a track shorter than one window (docs/AUDIO.md).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

# Frames per STFT block: bounds the complex spectrum held at once (4096 x 257 complex64 = 8 MiB).
STFT_BLOCK_FRAMES = 4096


def stable_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 ``a @ b`` that does not depend on how many threads BLAS runs.

    OpenBLAS's float32 GEMM rounds differently with 1 thread (a Dask worker, whose nanny sets
    OPENBLAS_NUM_THREADS=1) and with several (a notebook or the tests), so the same video would get
    features that differ in the last bits depending on where it ran. Summing in float64 and rounding
    once to float32 makes both give the same bits.
    """
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)


def samples_for(seconds: float, sample_rate: int) -> int:
    """A duration in whole samples (at least 1)."""
    return max(1, round(seconds * sample_rate))


def fft_length_for(window_length: int) -> int:
    """The smallest power of two holding one window."""
    return 1 << int(np.ceil(np.log2(window_length)))


def periodic_hann(length: int) -> np.ndarray:
    """Hann window of period ``length`` (the DFT-even window VGGish and most STFT code use)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float32)


def frame_count(n_samples: int, window_length: int, hop_length: int) -> int:
    """Number of complete windows in ``n_samples`` samples."""
    if n_samples < window_length:
        return 0
    return 1 + (n_samples - window_length) // hop_length


def pad_to_window(samples: np.ndarray, window_length: int) -> np.ndarray:
    """Zero-pad a signal shorter than one window so that it yields exactly one window."""
    if samples.shape[0] >= window_length:
        return samples
    return np.pad(samples, (0, window_length - samples.shape[0]))


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular HTK-mel weights, linear in mel, DC bin excluded.

    Band ``i`` rises from edge ``i`` to edge ``i + 1`` and falls to edge ``i + 2`` of ``n_mels + 2``
    edges equally spaced in mel between ``fmin`` and ``fmax`` (the construction VGGish specifies).
    """
    nyquist = sample_rate / 2.0
    if not 0.0 <= fmin < fmax <= nyquist:
        raise ValueError(f"mel band edges must satisfy 0 <= fmin < fmax <= {nyquist}, got {fmin}, {fmax}")
    bin_mels = hz_to_mel(np.linspace(0.0, nyquist, n_fft // 2 + 1))[:, None]
    edges = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mels - lower) / (centre - lower)
    falling = (upper - bin_mels) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights.astype(np.float32)


def mel_spectrogram(
    samples: np.ndarray,
    window_length: int,
    hop_length: int,
    filterbank: np.ndarray,
    power: float = 2.0,
) -> np.ndarray:
    """(n_frames, n_mels) float32 mel energies of ``|STFT| ** power`` (power 1: magnitude)."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    n_fft = (filterbank.shape[0] - 1) * 2
    n_frames = frame_count(samples.shape[0], window_length, hop_length)
    out = np.empty((n_frames, filterbank.shape[1]), dtype=np.float32)
    if n_frames == 0:
        return out
    frames = np.lib.stride_tricks.sliding_window_view(samples, window_length)[::hop_length]
    window = periodic_hann(window_length)
    for first in range(0, n_frames, STFT_BLOCK_FRAMES):
        block = frames[first : first + STFT_BLOCK_FRAMES] * window
        spectrum = scipy.fft.rfft(block, n=n_fft, axis=1)
        # |X|^2 without the square root of abs() for the common power spectrum.
        energy = spectrum.real**2 + spectrum.imag**2 if power == 2.0 else np.abs(spectrum) ** power
        out[first : first + block.shape[0]] = stable_matmul(energy, filterbank)
    return out


def preemphasis(samples: np.ndarray, coefficient: float) -> np.ndarray:
    """``y[n] = x[n] - a * x[n - 1]`` (``y[0] = x[0]``); a = 0 returns the input."""
    if coefficient == 0.0:
        return samples
    out = np.empty_like(samples, dtype=np.float32)
    out[:1] = samples[:1]
    out[1:] = samples[1:] - coefficient * samples[:-1]
    return out


def dct_matrix(n_coefficients: int, n_inputs: int) -> np.ndarray:
    """(n_inputs, n_coefficients) orthonormal DCT-II basis, to right-multiply log-mel rows."""
    n = np.arange(n_inputs)[:, None]
    k = np.arange(n_coefficients)[None, :]
    basis = np.sqrt(2.0 / n_inputs) * np.cos(np.pi * k * (2 * n + 1) / (2.0 * n_inputs))
    basis[:, 0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def lifter_weights(n_coefficients: int, lifter: int) -> np.ndarray:
    """HTK sinusoidal cepstral lifter ``1 + L/2 sin(pi n / L)``; L = 0 gives ones."""
    if lifter <= 0:
        return np.ones(n_coefficients, dtype=np.float32)
    n = np.arange(n_coefficients)
    return (1.0 + lifter / 2.0 * np.sin(np.pi * n / lifter)).astype(np.float32)


def deltas(features: np.ndarray, width: int = 2) -> np.ndarray:
    """HTK regression deltas over ``+-width`` rows, edges repeated: sum n (c[t+n] - c[t-n]) / 2 sum n^2."""
    if features.shape[0] == 0:
        return features.copy()
    padded = np.pad(features, ((width, width), (0, 0)), mode="edge")
    n_rows = features.shape[0]
    out = np.zeros(features.shape, dtype=np.float64)
    for n in range(1, width + 1):
        out += n * (padded[width + n : width + n + n_rows] - padded[width - n : width - n + n_rows])
    return (out / (2.0 * sum(n * n for n in range(1, width + 1)))).astype(np.float32)
