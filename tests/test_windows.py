"""Window cutting, per-frame averaging of overlapping predictions, and the in-memory window table."""

from __future__ import annotations

import numpy as np
import pytest

from avpipe.models.data import VideoData
from avpipe.models.table import PAD_ROW, FrameTable, WindowBatches
from avpipe.models.tasks import as_specs
from avpipe.models.windows import PAD, average_windows, cut_windows, window_rows, window_starts
from avpipe.pipeline.config.train import Task
from avpipe.pipeline.labels import UNLABELED_VA, FrameLabels


@pytest.mark.parametrize(
    ("n_frames", "length", "hop", "expected"),
    [
        (1000, 300, 200, [0, 200, 400, 600, 700]),  # last window aligned to the video end
        (900, 300, 200, [0, 200, 400, 600]),  # already ends at the end: no extra window
        (300, 300, 200, [0]),
        (120, 300, 200, [0]),  # short video: one padded window
        (0, 300, 200, []),
        (10, 4, 4, [0, 4, 6]),
    ],
)
def test_window_starts(n_frames, length, hop, expected):
    assert window_starts(n_frames, length, hop).tolist() == expected


def test_short_video_is_padded_at_its_end():
    rows = window_rows(5, 8, 4)
    assert rows.tolist() == [[0, 1, 2, 3, 4, PAD, PAD, PAD]]
    windows = cut_windows(np.arange(1, 6, dtype=np.float32)[:, None], rows)
    assert windows[0, :, 0].tolist() == [1, 2, 3, 4, 5, 0, 0, 0]


@pytest.mark.parametrize(
    ("n_frames", "length", "hop"), [(1000, 300, 200), (57, 16, 5), (7, 16, 8), (33, 11, 11)]
)
def test_cut_then_average_gives_back_the_sequence(n_frames, length, hop):
    rng = np.random.default_rng(n_frames)
    sequence = rng.standard_normal((n_frames, 3)).astype(np.float32)
    rows = window_rows(n_frames, length, hop)
    windows = cut_windows(sequence, rows, fill=99.0)  # padding must never leak into the average
    restored = average_windows(windows, rows, n_frames)
    np.testing.assert_allclose(restored, sequence, rtol=1e-6)
    assert set(np.flatnonzero(rows.ravel() != PAD)) and np.all(np.isin(np.arange(n_frames), rows))


def test_overlapping_predictions_are_averaged_per_frame():
    rows = window_rows(10, 4, 3)  # starts 0, 3, 6: frames 3 and 6 are in two windows
    assert window_starts(10, 4, 3).tolist() == [0, 3, 6]
    predictions = np.array([[1.0] * 4, [3.0] * 4, [7.0] * 4])[:, :, None]  # one constant per window
    merged = average_windows(predictions, rows, 10)[:, 0]
    assert merged.tolist() == [1, 1, 1, 2, 3, 3, 5, 7, 7, 7]


def _video(video_id: str, n: int, offset: float) -> VideoData:
    labels = FrameLabels.unlabeled(n)
    labels.valence_arousal[: n // 2] = 0.5
    return VideoData(
        video_id=video_id,
        time=np.arange(n) / 25.0,
        frame_index=np.arange(n),
        features={"x": (offset + np.arange(n, dtype=np.float32))[:, None]},
        valid={"x": np.ones(n, dtype=bool)},
        labels=labels,
    )


def test_table_windows_gather_the_same_values_as_cutting_each_video():
    videos = [_video("a", 23, 0.0), _video("b", 5, 1000.0)]
    table = FrameTable(videos, ["x"])
    windows, owners = table.windows(["a", "b"], 8, 6)
    assert owners.tolist() == [0, 0, 0, 0, 1]
    targets = table.task_targets(as_specs([Task.VA]), {video.video_id: video.labels for video in videos})
    batches = WindowBatches(table.features, targets, windows, batch_size=2)
    gathered = np.concatenate([b.inputs["x"].numpy() for b in batches])
    expected_a = cut_windows(videos[0].features["x"], window_rows(23, 8, 6))
    expected_b = cut_windows(videos[1].features["x"], window_rows(5, 8, 6))
    np.testing.assert_array_equal(gathered, np.concatenate([expected_a, expected_b]))
    last = batches.gather(np.array([4]))
    assert last.valid.numpy().tolist() == [[True] * 5 + [False] * 3]
    assert np.all(last.targets["va"].numpy()[0, 5:] == UNLABELED_VA)  # padding is unlabeled
    assert windows[4, 5:].tolist() == [PAD_ROW] * 3


def test_shuffled_batches_cover_every_window_once_per_epoch():
    table = FrameTable([_video("a", 100, 0.0)], ["x"])
    windows, _ = table.windows(["a"], 10, 10)
    batches = WindowBatches(table.features, {}, windows, batch_size=3, shuffle=True, seed=1)
    first = np.concatenate([b.index for b in batches])
    second = np.concatenate([b.index for b in batches])
    assert sorted(first.tolist()) == list(range(10)) == sorted(second.tolist())
    assert first.tolist() != second.tolist()  # reshuffled each epoch


def test_windows_without_labels_are_recognised():
    video = _video("a", 40, 0.0)  # VA labeled on frames 0..19 only
    table = FrameTable([video], ["x"])
    windows, _ = table.windows(["a"], 10, 10)
    va, expr = as_specs([Task.VA, Task.EXPR])
    targets = table.task_targets([va, expr], {"a": video.labels})
    assert table.labeled_windows(windows, [va], targets).tolist() == [True, True, False, False]
    assert not table.labeled_windows(windows, [expr], targets).any()
    assert table.labeled_windows(windows, [va, expr], targets).tolist() == [True, True, False, False]
