"""avpipe.pipeline.align: native-rate features onto video frame times (nearest, mean, coverage mask)."""

from __future__ import annotations

import numpy as np
import pytest

from avpipe.pipeline.align import (
    AlignMethod,
    Coverage,
    align_to_frames,
    frame_cells,
    nearest_rows,
    window_centres,
)


def brute_nearest(value_times: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
    distance = np.abs(frame_times[:, None] - value_times[None, :])
    return np.argmin(distance, axis=1)  # first minimum: ties go to the earlier row


def brute_mean(values: np.ndarray, value_times: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
    lower, upper = frame_cells(frame_times)
    out = np.empty((frame_times.size, values.shape[1]))
    for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
        inside = (value_times >= lo) & (value_times < hi)
        if inside.any():
            out[i] = np.nanmean(values[inside], axis=0)
        else:
            out[i] = values[brute_nearest(value_times, frame_times[i : i + 1])[0]]
    return out


@pytest.fixture
def irregular_frames() -> np.ndarray:
    # 25 fps with jitter, like a variable-frame-rate phone video.
    rng = np.random.default_rng(3)
    return np.cumsum(rng.uniform(0.03, 0.05, size=120)) + 0.2


def test_window_centres_are_mid_window() -> None:
    centres = window_centres(4, hop=0.01, window=0.025, start=0.5)
    assert np.allclose(centres, [0.5125, 0.5225, 0.5325, 0.5425])


def test_frame_cells_are_midpoints_and_cover_the_timeline(irregular_frames: np.ndarray) -> None:
    lower, upper = frame_cells(irregular_frames)
    assert np.allclose(upper[:-1], lower[1:])
    assert np.all(lower < irregular_frames) and np.all(irregular_frames < upper)
    assert np.allclose(upper[:-1], (irregular_frames[1:] + irregular_frames[:-1]) / 2)


def test_nearest_matches_brute_force(irregular_frames: np.ndarray) -> None:
    value_times = window_centres(700, 0.01, 0.025, start=0.1)
    assert np.array_equal(
        nearest_rows(value_times, irregular_frames), brute_nearest(value_times, irregular_frames)
    )


def test_nearest_alignment_takes_the_row_nearest_each_frame(irregular_frames: np.ndarray) -> None:
    value_times = window_centres(700, 0.01, 0.025, start=0.1)
    values = np.stack([value_times, -value_times], axis=1)
    aligned = align_to_frames(
        values, value_times, irregular_frames, AlignMethod.NEAREST, Coverage(0.0, 100.0)
    )
    expected = values[brute_nearest(value_times, irregular_frames)]
    assert aligned.values.dtype == np.float32
    assert np.allclose(aligned.values, expected, atol=1e-6)
    assert np.all(aligned.mask == 1)


def test_mean_alignment_averages_the_rows_in_each_cell(irregular_frames: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    value_times = window_centres(700, 0.01, 0.025, start=0.1)
    values = rng.normal(size=(700, 3))
    aligned = align_to_frames(values, value_times, irregular_frames, "mean", Coverage(0.0, 100.0))
    assert np.allclose(aligned.values, brute_mean(values, value_times, irregular_frames), atol=1e-5)


def test_mean_falls_back_to_nearest_when_native_hop_is_longer_than_a_frame() -> None:
    frames = np.arange(0, 4, 0.04)
    value_times = np.arange(0.25, 4, 0.5)  # a row every 0.5 s: most cells are empty
    values = value_times[:, None]
    aligned = align_to_frames(values, value_times, frames, AlignMethod.MEAN, Coverage(0.0, 4.0))
    assert np.allclose(aligned.values[:, 0], value_times[brute_nearest(value_times, frames)])


def test_mean_skips_non_finite_values_column_by_column() -> None:
    frames = np.array([0.0, 0.04, 0.08])
    value_times = np.array([-0.01, 0.0, 0.01, 0.03, 0.05])
    values = np.array([[1.0, 1.0], [np.nan, 2.0], [3.0, 3.0], [5.0, np.nan], [7.0, 7.0]])
    aligned = align_to_frames(values, value_times, frames, AlignMethod.MEAN, Coverage(-1.0, 1.0))
    # Frame 0's cell is [-0.02, 0.02): rows 0..2; frame 1's is [0.02, 0.06): rows 3..4.
    assert np.allclose(aligned.values[0], [2.0, 2.0])
    assert np.allclose(aligned.values[1], [6.0, 7.0])


def test_frames_outside_the_audio_are_zero_with_mask_0() -> None:
    frames = np.arange(0, 3, 0.04)
    start, end = 0.5, 2.0  # audio starts 0.5 s after the video and stops before it
    value_times = window_centres(148, 0.01, 0.025, start=start)
    values = np.ones((148, 2))
    aligned = align_to_frames(values, value_times, frames, AlignMethod.NEAREST, Coverage(start, end))
    inside = (frames >= start) & (frames < end)
    assert np.array_equal(aligned.mask.astype(bool), inside)
    assert np.all(aligned.values[inside] == 1.0)
    assert np.all(aligned.values[~inside] == 0.0)


@pytest.mark.parametrize("method", list(AlignMethod))
def test_no_audio_gives_zeros_and_mask_0(method: AlignMethod) -> None:
    frames = np.arange(0, 1, 0.04)
    aligned = align_to_frames(np.zeros((0, 5)), np.zeros(0), frames, method, None)
    assert aligned.values.shape == (25, 5)
    assert not aligned.values.any() and not aligned.mask.any()


def test_silence_is_valid_audio() -> None:
    frames = np.arange(0, 1, 0.04)
    value_times = window_centres(98, 0.01, 0.025)
    silent = np.full((98, 4), -23.0)  # log of the floor
    aligned = align_to_frames(silent, value_times, frames, AlignMethod.MEAN, Coverage(0.0, 1.0))
    assert np.all(aligned.mask == 1)
    assert np.allclose(aligned.values, -23.0)


def test_unsorted_value_times_are_refused() -> None:
    with pytest.raises(ValueError, match="sorted"):
        align_to_frames(
            np.zeros((3, 1)), np.array([0.0, 0.2, 0.1]), np.array([0.0]), "nearest", Coverage(0, 1)
        )


def test_empty_timeline() -> None:
    aligned = align_to_frames(np.ones((5, 2)), np.arange(5.0), np.zeros(0), AlignMethod.MEAN, Coverage(0, 5))
    assert aligned.values.shape == (0, 2) and aligned.mask.shape == (0,)
