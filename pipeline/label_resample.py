"""Time-keyed label samples onto frame times by a named rule (pipeline/config/labels.py documents them).

Values are float arrays (N, D) with NaN where a sample is unlabeled for a column; each column is
resampled from its own labeled samples. The returned counts say how often the rule acted (frames
interpolated, held, taken from a sample at another time, left unlabeled in a gap, edge frames).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from avpipe.pipeline.config.labels import Resample


def default_max_gap(label_times: np.ndarray) -> float:
    """Twice the median interval between the track's samples (bridges one missing sample)."""
    unique = np.unique(label_times)
    return 2.0 * float(np.median(np.diff(unique))) if unique.shape[0] > 1 else 0.0


def resample(
    label_times: np.ndarray,
    values: np.ndarray,
    frame_times: np.ndarray,
    rule: Resample,
    max_gap: float,
) -> tuple[np.ndarray, Counter]:
    """(T, D) float64 values of the frames, NaN where the rule leaves a frame unlabeled."""
    values = np.asarray(values, dtype=np.float64).reshape(label_times.shape[0], -1)
    frame_times = np.asarray(frame_times, dtype=np.float64)
    out = np.full((frame_times.shape[0], values.shape[1]), np.nan)
    counts: Counter = Counter()
    for d in range(values.shape[1]):
        labeled = ~np.isnan(values[:, d])
        order = np.argsort(label_times[labeled], kind="stable")
        times, column = label_times[labeled][order], values[labeled, d][order]
        if times.shape[0] == 0 or frame_times.shape[0] == 0:
            continue
        function = _RULES[rule]
        out[:, d] = function(times, column, frame_times, max_gap, counts)
    return out, counts


def _linear(times: np.ndarray, v: np.ndarray, f: np.ndarray, max_gap: float, counts: Counter) -> np.ndarray:
    out = np.full(f.shape[0], np.nan)
    left = np.searchsorted(times, f, side="right") - 1
    on_sample = (left >= 0) & (times[np.clip(left, 0, None)] == f)
    out[on_sample] = v[left[on_sample]]
    between = (left >= 0) & (left < times.shape[0] - 1) & ~on_sample
    k = left[between]
    span = times[k + 1] - times[k]
    bridged = span <= max_gap
    weight = (f[between] - times[k]) / span
    out_between = np.where(bridged, v[k] + weight * (v[k + 1] - v[k]), np.nan)
    out[between] = out_between
    counts["interpolated_linear"] += int(bridged.sum())
    counts["unlabeled_in_gap"] += int((~bridged).sum())
    half = _half_interval(times, max_gap)
    before = (f < times[0]) & (times[0] - f <= half)
    after = (f > times[-1]) & (f - times[-1] <= half)
    out[before], out[after] = v[0], v[-1]
    counts["edge_frames_held"] += int(before.sum() + after.sum())
    return out


def _hold(times: np.ndarray, v: np.ndarray, f: np.ndarray, max_gap: float, counts: Counter) -> np.ndarray:
    out = np.full(f.shape[0], np.nan)
    left = np.searchsorted(times, f, side="right") - 1
    has = left >= 0
    age = np.where(has, f - times[np.clip(left, 0, None)], np.inf)
    keep = has & (age <= max_gap)
    out[keep] = v[left[keep]]
    counts["held"] += int((keep & (age > 0)).sum())
    counts["unlabeled_in_gap"] += int((has & ~keep & (left < times.shape[0] - 1)).sum())
    return out


def _nearest(times: np.ndarray, v: np.ndarray, f: np.ndarray, max_gap: float, counts: Counter) -> np.ndarray:
    out = np.full(f.shape[0], np.nan)
    j = nearest_index(times, f)
    distance = np.abs(times[j] - f)
    keep = distance <= max_gap / 2.0
    out[keep] = v[j[keep]]
    counts["nearest_sample"] += int((keep & (distance > 0)).sum())
    inside = (f > times[0]) & (f < times[-1])
    counts["unlabeled_in_gap"] += int((~keep & inside).sum())
    return out


def _sparse(times: np.ndarray, v: np.ndarray, f: np.ndarray, max_gap: float, counts: Counter) -> np.ndarray:
    """Each sample to its nearest frame; on a shared frame the nearest sample wins."""
    out = np.full(f.shape[0], np.nan)
    frame = nearest_index(f, times)
    distance = np.abs(f[frame] - times)
    half_frame = float(np.median(np.diff(f))) / 2.0 if f.shape[0] > 1 else 0.5
    inside = (times >= f[0] - half_frame) & (times <= f[-1] + half_frame)
    kept = np.flatnonzero(inside)[np.argsort(-distance[inside], kind="stable")]
    out[frame[kept]] = v[kept]
    counts["samples_overwritten_on_shared_frame"] += int(kept.shape[0] - np.unique(frame[kept]).shape[0])
    return out


def _half_interval(times: np.ndarray, max_gap: float) -> float:
    if times.shape[0] < 2:
        return max_gap / 2.0
    return float(np.median(np.diff(times))) / 2.0


def nearest_index(sorted_times: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of the element of ``sorted_times`` nearest each query (ties go to the earlier one)."""
    if sorted_times.shape[0] == 1:
        return np.zeros(queries.shape[0], dtype=np.int64)
    right = np.clip(np.searchsorted(sorted_times, queries), 1, sorted_times.shape[0] - 1)
    left = right - 1
    pick_left = np.abs(queries - sorted_times[left]) <= np.abs(sorted_times[right] - queries)
    return np.where(pick_left, left, right).astype(np.int64)


_RULES = {
    Resample.LINEAR: _linear,
    Resample.HOLD: _hold,
    Resample.NEAREST: _nearest,
    Resample.SPARSE: _sparse,
}
