"""Cutting sequences into fixed-length windows and averaging overlapping window predictions per frame.

ABAW2 convention (``window_starts``, the trainers'): windows of ``length`` frames every ``hop`` frames, the
last window aligned to the end of the video (so no frame is left out), a video shorter than one window
zero-padded at its end. ``padded_window_starts`` keeps every window on the ``hop`` grid instead: the last
one runs past the end of the video and is padded (``avpipe.models.dataset``'s default).
"""

from __future__ import annotations

import numpy as np

PAD = -1  # row index of a padded position in a window


def window_starts(n_frames: int, length: int, hop: int) -> np.ndarray:
    """Start frames of the windows covering ``n_frames`` frames; the last one ends at the last frame."""
    if length < 1 or hop < 1:
        raise ValueError(f"window length and hop must be >= 1, got {length} and {hop}")
    if n_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    if n_frames <= length:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_frames - length + 1, hop, dtype=np.int64)
    last = n_frames - length
    return starts if starts[-1] == last else np.append(starts, last)


def padded_window_starts(n_frames: int, length: int, hop: int) -> np.ndarray:
    """Start frames ``0, hop, 2 hop, ...`` up to the first window reaching the last frame (which is
    padded when it runs past it); every frame is covered when ``hop <= length``."""
    if length < 1 or hop < 1:
        raise ValueError(f"window length and hop must be >= 1, got {length} and {hop}")
    if n_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    n_windows = 1 + max(0, -(-(n_frames - length) // hop))  # ceil((n - length) / hop) more after 0
    starts = np.arange(n_windows, dtype=np.int64) * hop
    return starts[starts < n_frames]  # hop > length: no window that starts past the end


def window_rows(n_frames: int, length: int, hop: int) -> np.ndarray:
    """(n_windows, length) frame indices of every window; ``PAD`` where a short video is padded."""
    starts = window_starts(n_frames, length, hop)
    rows = starts[:, None] + np.arange(length, dtype=np.int64)[None, :]
    rows[rows >= n_frames] = PAD
    return rows


def cut_windows(values: np.ndarray, rows: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """(n_windows, length, ...) windows of ``values`` (T, ...) at ``rows``; padded positions get ``fill``."""
    padded = rows == PAD
    windows = values[np.where(padded, 0, rows)]  # fancy indexing copies
    windows[padded] = fill
    return windows


def average_windows(window_values: np.ndarray, rows: np.ndarray, n_frames: int) -> np.ndarray:
    """Per-frame mean of overlapping window predictions: (n_windows, length, C) -> (n_frames, C).

    Padded positions are ignored; a frame no window covers (impossible with hop <= length) is NaN.
    """
    flat_rows = rows.reshape(-1)
    values = window_values.reshape(flat_rows.shape[0], -1).astype(np.float64)
    keep = flat_rows != PAD
    sums = np.zeros((n_frames, values.shape[1]), dtype=np.float64)
    np.add.at(sums, flat_rows[keep], values[keep])
    counts = np.bincount(flat_rows[keep], minlength=n_frames).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts[:, None]
    return mean.reshape(n_frames, *window_values.shape[2:])
