"""Resample a feature sequence computed at its own rate onto the video's frame times.

Audio features come out at a native hop (10 ms for log-mel, MFCC and eGeMAPS, a patch hop for VGGish),
each row describing an analysis window whose centre lies at a known time on the container clock.
Trainers need one row per video frame, with the same ``time`` array as the face crops, so every audio
extractor ends with :func:`align_to_frames`.

Rules (docs/AUDIO.md):

- ``nearest``: row ``i`` takes the native row whose window centre is nearest to ``frame_times[i]``
  (ties go to the earlier row).
- ``mean``: row ``i`` averages the native rows whose centres fall in the frame's cell, the half-open
  interval between the midpoints to its neighbouring frame times; a cell with no native row (native
  hop longer than the frame period) falls back to ``nearest``. Non-finite values are left out of the
  mean, column by column.
- ``mask`` is 1 where the frame time lies in the audio coverage ``[start, end)`` and there is at least
  one native row, 0 elsewhere; masked rows are all zeros. Silence is audio, so it is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from avpipe.pipeline.types import MaskValue


class AlignMethod(StrEnum):
    """How a native-rate feature sequence becomes one row per video frame."""

    NEAREST = "nearest"
    MEAN = "mean"


@dataclass(frozen=True)
class Coverage:
    """The span of the container clock that has audio samples: ``[start, end)`` in seconds."""

    start: float
    end: float

    def contains(self, times: np.ndarray) -> np.ndarray:
        return (times >= self.start) & (times < self.end)


@dataclass(frozen=True)
class Aligned:
    """Features on the frame timeline: ``values`` (T, D) float32 and ``mask`` (T,) uint8."""

    values: np.ndarray
    mask: np.ndarray


def window_centres(n_windows: int, hop: float, window: float, start: float = 0.0) -> np.ndarray:
    """Centre times of ``n_windows`` analysis windows of length ``window`` every ``hop`` seconds.

    Window ``k`` covers ``[start + k * hop, start + k * hop + window)``.
    """
    return start + np.arange(n_windows, dtype=np.float64) * hop + window / 2.0


def frame_cells(frame_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of each frame's cell: the midpoints to its neighbours.

    The first and last cells are made symmetric around their frame; a one-frame timeline gets an
    empty cell (its mean falls back to nearest).
    """
    times = np.asarray(frame_times, dtype=np.float64)
    if times.size < 2:
        return times.copy(), times.copy()
    mids = (times[1:] + times[:-1]) / 2.0
    lower = np.concatenate([[times[0] - (mids[0] - times[0])], mids])
    upper = np.concatenate([mids, [times[-1] + (times[-1] - mids[-1])]])
    return lower, upper


def nearest_rows(value_times: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
    """Index of the native row nearest to each frame time (``value_times`` sorted, non-empty)."""
    right = np.searchsorted(value_times, frame_times, side="left")
    right = np.clip(right, 0, value_times.size - 1)
    left = np.clip(right - 1, 0, value_times.size - 1)
    take_left = np.abs(frame_times - value_times[left]) <= np.abs(value_times[right] - frame_times)
    return np.where(take_left, left, right)


def align_to_frames(
    values: np.ndarray,
    value_times: np.ndarray,
    frame_times: np.ndarray,
    method: AlignMethod,
    coverage: Coverage | None,
) -> Aligned:
    """Resample ``values`` (N, D) at ``value_times`` (N,) onto ``frame_times`` (T,).

    ``coverage`` None means the video has no audio: every row is zero with mask 0.
    """
    values = np.asarray(values)
    value_times = np.asarray(value_times, dtype=np.float64)
    frame_times = np.asarray(frame_times, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != value_times.shape[0]:
        raise ValueError(f"values {values.shape} and value_times {value_times.shape} do not match")
    if value_times.size > 1 and np.any(np.diff(value_times) < 0):
        raise ValueError("value_times must be sorted in increasing order")
    n_frames, dim = frame_times.shape[0], values.shape[1]
    out = np.zeros((n_frames, dim), dtype=np.float32)
    mask = np.zeros(n_frames, dtype=np.uint8)
    if coverage is None or value_times.size == 0 or n_frames == 0:
        return Aligned(values=out, mask=mask)
    valid = coverage.contains(frame_times)
    if not valid.any():
        return Aligned(values=out, mask=mask)
    method = AlignMethod(method)
    if method is AlignMethod.NEAREST:
        rows = values[nearest_rows(value_times, frame_times[valid])]
    else:
        rows = _cell_means(values, value_times, frame_times)[valid]
    out[valid] = rows
    mask[valid] = MaskValue.VALID
    return Aligned(values=out, mask=mask)


def _cell_means(values: np.ndarray, value_times: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
    """Mean of the native rows in each frame's cell, through cumulative sums (one pass, any length)."""
    lower, upper = frame_cells(frame_times)
    first = np.searchsorted(value_times, lower, side="left")
    stop = np.searchsorted(value_times, upper, side="left")
    finite = np.isfinite(values)
    sums = np.zeros((values.shape[0] + 1, values.shape[1]), dtype=np.float64)
    counts = np.zeros(sums.shape, dtype=np.int64)
    np.cumsum(np.where(finite, values, 0.0), axis=0, out=sums[1:])
    np.cumsum(finite, axis=0, out=counts[1:])
    cell_sums = sums[stop] - sums[first]
    cell_counts = counts[stop] - counts[first]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = cell_sums / cell_counts
    nearest = values[nearest_rows(value_times, frame_times)].astype(np.float64)
    empty_cell = (stop - first) == 0
    means[empty_cell] = nearest[empty_cell]
    # A cell whose rows are all non-finite in a column keeps the nearest row's value (NaN stays NaN).
    no_finite = (cell_counts == 0) & ~empty_cell[:, None]
    means[no_finite] = nearest[no_finite]
    return means
