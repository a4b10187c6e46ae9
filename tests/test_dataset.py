"""The torch Dataset over the feature store (avpipe.models.dataset) and its sampler: windows, masks and
labels against the shards read with plain h5py, standardisation against numpy over the training videos
only, DataLoader workers, and the errors a wrong feature, task or timeline gives."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from avpipe.models.dataset import FeatureWindows, LastWindow, WindowConfig
from avpipe.models.sampler import WindowSampler
from avpipe.models.stats import MIN_STD, fit_store_stats
from avpipe.models.windows import padded_window_starts
from avpipe.pipeline.errors import ConfigError, StoreError
from avpipe.pipeline.labels import LABELS_EXTRACTOR, FrameLabels
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.types import FeatureSet, MaskValue, Timeline

# extractor -> values per frame; the faces one has a (T, 2, 3) array (flattened to 6 by the dataset)
SHAPES = {"fer-minixception": (2, 3), "logmel": (4,), "egemaps": (3,)}
FEATURES = ["fer-minixception", "logmel", "egemaps"]
LENGTHS = {"a": 70, "b": 64, "c": 20, "d": 131, "v1": 50, "v2": 33}
TRAIN = ["a", "b", "c", "d"]
VALIDATION = ["v1", "v2"]
EMOTIONS = ["neutral", "happy", "sad"]


def write_video(store: FeatureStore, video_id: str, n: int, seed: int, scale: float = 1.0) -> None:
    """Features every second native frame (``dataset.fps`` half the native rate); labels on every native
    frame (as the manifest stage stores them); faces missing on some frames, a NaN row in egemaps."""
    rng = np.random.default_rng(seed)
    timeline = Timeline(time=np.arange(n) * 0.08 + 0.01, frame_index=np.arange(n, dtype=np.int64) * 2)
    for extractor, shape in SHAPES.items():
        values = (scale * (rng.standard_normal((n, *shape)) * 3 + 5)).astype(np.float32)
        mask = np.full(n, MaskValue.VALID, dtype=np.uint8)
        if extractor == "fer-minixception":
            mask[rng.random(n) < 0.2] = MaskValue.MISSING
            mask[rng.random(n) < 0.1] = MaskValue.TRACKED
        if extractor == "egemaps":
            values[n // 2, 1] = np.nan
        features = FeatureSet(timeline.time, timeline.frame_index, mask, {"features": values})
        store.write(extractor, video_id, features, extractor_version="1", params_hash="p")
    native = Timeline(
        time=np.arange(2 * n + 1) * 0.04 + 0.01, frame_index=np.arange(2 * n + 1, dtype=np.int64)
    )
    labels = FrameLabels.unlabeled(2 * n + 1)
    labels.valence_arousal[:, 0] = rng.uniform(-1, 1, 2 * n + 1)  # valence only: arousal stays unlabeled
    labels.valence_arousal[: 2 * n // 3, 0] = -5.0
    labels.expression[:] = rng.integers(-1, 8, 2 * n + 1)
    labels.action_units[:] = rng.integers(-1, 2, (2 * n + 1, 12))
    labels.categories["emotion"] = rng.integers(-1, 3, 2 * n + 1).astype(np.int16)
    labels.category_names["emotion"] = EMOTIONS
    if video_id != "c":  # one video's labels shard lacks the dimension
        dominance = rng.uniform(-1, 1, 2 * n + 1).astype(np.float32)
        dominance[::5] = np.nan
        labels.dimensions["dominance"] = dominance
    store.write(
        LABELS_EXTRACTOR, video_id, labels.to_feature_set(native), extractor_version="1", params_hash="p"
    )


def build_store(root: Path, scale_validation: float = 1.0) -> FeatureStore:
    store = FeatureStore(root)
    for seed, (video_id, n) in enumerate(LENGTHS.items()):
        write_video(store, video_id, n, seed, scale_validation if video_id in VALIDATION else 1.0)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    return build_store(tmp_path_factory.mktemp("windows"))


def h5_arrays(store: FeatureStore, extractor: str, video_id: str) -> dict[str, np.ndarray]:
    """Every dataset of the video's shard, read with plain h5py (docs/FORMAT.md); without file locking,
    as the store opens it (HDF5 refuses a second open in one process with other locking flags)."""
    with h5py.File(store.shard_path(extractor, video_id), "r", locking=False) as h5:
        (group,) = h5.values()
        return {name: group[name][:] for name in group}


def expected_starts(n: int, window: int, hop: int) -> list[int]:
    starts, start = [], 0
    while n > 0:
        starts.append(start)
        if start + window >= n:
            break
        start += hop
    return starts


@pytest.mark.parametrize(
    ("n", "window", "hop"),
    [(70, 32, 24), (64, 32, 32), (65, 32, 32), (5, 32, 8), (0, 4, 2), (11, 2, 5), (1, 1, 1)],
)
def test_padded_window_starts_follow_the_hop_grid_to_the_last_frame(n, window, hop):
    assert padded_window_starts(n, window, hop).tolist() == expected_starts(n, window, hop)


CONFIG = {
    "features": FEATURES,
    "tasks": ["va", "dimension:valence", "expr", "au", "category:emotion", "dimension:dominance"],
}


@pytest.mark.parametrize("preload", [False, True])
def test_windows_masks_and_labels_are_the_stored_arrays(store, preload):
    config = WindowConfig(**CONFIG, window=32, hop=24)
    data = FeatureWindows(store, config, TRAIN, preload=preload)
    assert [(data.video_ids[v], s) for v, s in data.windows.tolist()] == [
        (video_id, start) for video_id in TRAIN for start in expected_starts(LENGTHS[video_id], 32, 24)
    ]
    assert data.counts["dimension:dominance: videos whose labels shard lacks the task (unlabeled)"] == 1
    for index in range(len(data)):
        item = data[index]
        video_id, start = item["video_id"], item["start"]
        n = LENGTHS[video_id]
        rows = np.arange(start, min(start + 32, n))
        real = np.zeros(32, dtype=bool)
        real[: len(rows)] = True
        np.testing.assert_array_equal(item["frame_mask"].numpy(), real)
        stored = {extractor: h5_arrays(store, extractor, video_id) for extractor in FEATURES}
        time = stored["logmel"]["time"]
        np.testing.assert_array_equal(item["time"].numpy()[real], time[rows])
        assert np.isnan(item["time"].numpy()[~real]).all()
        np.testing.assert_array_equal(item["frame_index"].numpy()[~real], -1)
        for extractor in FEATURES:
            values = stored[extractor]["features"].reshape(n, -1)[rows]
            valid = (stored[extractor]["mask"][rows] != 0) & np.isfinite(values).all(axis=1)
            got, got_mask = item["features"][extractor].numpy(), item["feature_masks"][extractor].numpy()
            assert got.shape == (32, int(np.prod(SHAPES[extractor]))) and got.dtype == np.float32
            np.testing.assert_array_equal(got_mask, np.concatenate([valid, np.zeros(32 - len(rows), bool)]))
            np.testing.assert_array_equal(got[: len(rows)][valid], values[valid])
            assert not got[~got_mask].any()
        check_labels(item, store, video_id, stored["logmel"]["frame_index"][rows], len(rows))


def check_labels(item: dict, store: FeatureStore, video_id: str, frames: np.ndarray, n: int) -> None:
    """Labels looked up by frame index in the labels shard, with the shard's own unlabeled codes."""
    shard = h5_arrays(store, LABELS_EXTRACTOR, video_id)
    row_of = {int(f): i for i, f in enumerate(shard["frame_index"])}
    rows = np.array([row_of[int(f)] for f in frames])
    va = shard["valence_arousal"][rows]
    expected = {
        "va": (va, va != -5),
        "dimension:valence": (va[:, 0], va[:, 0] != -5),
        "expr": (shard["expression"][rows], shard["expression"][rows] != -1),
        "au": (shard["action_units"][rows], shard["action_units"][rows] != -1),
        "category:emotion": (shard["category.emotion"][rows], shard["category.emotion"][rows] != -1),
    }
    if "dimension.dominance" in shard:
        dominance = shard["dimension.dominance"][rows]
        expected["dimension:dominance"] = (dominance, ~np.isnan(dominance))
    else:
        expected["dimension:dominance"] = (np.zeros(n), np.zeros(n, dtype=bool))
    assert not expected["va"][1][:, 1].any()  # arousal unlabeled throughout
    for task, (values, mask) in expected.items():
        got, got_mask = item["labels"][task].numpy(), item["label_masks"][task].numpy()
        assert got.shape[0] == got_mask.shape[0] == 32
        np.testing.assert_array_equal(got_mask[:n], mask)
        assert not got_mask[n:].any()
        np.testing.assert_array_equal(got[:n][mask], values[mask])
        unlabeled = -1 if task in ("expr", "category:emotion") else 0
        assert (got[~got_mask] == unlabeled).all()
    assert item["labels"]["expr"].dtype == torch.int64 and item["labels"]["va"].dtype == torch.float32


def test_align_end_windows_end_at_the_last_frame(store):
    config = WindowConfig(features=["logmel"], window=32, hop=24, last_window=LastWindow.ALIGN_END)
    data = FeatureWindows(store, config, ["a", "c"])
    assert data.windows.tolist() == [[0, 0], [0, 24], [0, 38], [1, 0]]  # 70 frames: 38 + 32 = 70
    assert data[2]["frame_mask"].all() and data[3]["frame_mask"].sum() == 20


def numpy_stats(store: FeatureStore, video_ids: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and population std over the valid frames, from the shards' arrays concatenated."""
    out = {}
    for extractor in FEATURES:
        rows = []
        for video_id in video_ids:
            arrays = h5_arrays(store, extractor, video_id)
            values = arrays["features"].reshape(arrays["time"].shape[0], -1).astype(np.float64)
            keep = (arrays["mask"] != 0) & np.isfinite(values).all(axis=1)
            rows.append(values[keep])
        values = np.concatenate(rows)
        mean = values.sum(axis=0) / values.shape[0]
        std = np.sqrt(((values - mean) ** 2).sum(axis=0) / values.shape[0])
        out[extractor] = (mean, np.where(std < MIN_STD, 1.0, std))
    return out


@pytest.mark.parametrize("preload", [False, True])
def test_standardisation_is_fitted_on_the_training_videos_and_applied_to_others(store, preload):
    stats = fit_store_stats(store, WindowConfig(features=FEATURES).feature_specs, TRAIN)
    expected = numpy_stats(store, TRAIN)
    for extractor, (mean, std) in expected.items():
        np.testing.assert_allclose(stats.mean[extractor], mean, rtol=1e-6)
        np.testing.assert_allclose(stats.std[extractor], std, rtol=1e-6)
    config = WindowConfig(features=FEATURES, window=16, hop=16)
    validation = FeatureWindows(store, config, VALIDATION, stats, preload=preload)
    for index in range(len(validation)):
        item = validation[index]
        n = LENGTHS[item["video_id"]]
        rows = np.arange(item["start"], min(item["start"] + 16, n))
        for extractor, (mean, std) in expected.items():
            raw = h5_arrays(store, extractor, item["video_id"])["features"].reshape(n, -1)[rows]
            mask = item["feature_masks"][extractor].numpy()[: len(rows)]
            got = item["features"][extractor].numpy()[: len(rows)]
            np.testing.assert_allclose(got[mask], ((raw - mean) / std)[mask], rtol=1e-5, atol=1e-5)
            assert not got[~mask].any()


def test_statistics_do_not_change_when_the_validation_videos_do(tmp_path, store):
    specs = WindowConfig(features=FEATURES).feature_specs
    before = fit_store_stats(store, specs, TRAIN)
    other = build_store(tmp_path / "other", scale_validation=40.0)  # same training videos, other validation
    write_video(other, "v3", 45, seed=99, scale=-7.0)
    after = fit_store_stats(other, specs, TRAIN)
    with_validation = fit_store_stats(other, specs, TRAIN + VALIDATION)  # what a leak would give
    for key in before.mean:
        np.testing.assert_array_equal(before.mean[key], after.mean[key])
        np.testing.assert_array_equal(before.std[key], after.std[key])
        assert not np.allclose(with_validation.std[key], after.std[key])
    config = WindowConfig(features=FEATURES, window=16, hop=16)
    first = FeatureWindows(store, config, TRAIN, before)[3]["features"]
    second = FeatureWindows(other, config, TRAIN, after)[3]["features"]
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)


def batches(loader: DataLoader) -> list[dict]:
    return list(loader)


@pytest.mark.parametrize("preload", [False, True])
def test_two_workers_give_the_same_batches_as_none(store, preload):
    stats = fit_store_stats(store, WindowConfig(features=FEATURES).feature_specs, TRAIN)
    data = FeatureWindows(store, WindowConfig(**CONFIG, window=16, hop=8), TRAIN, stats, preload=preload)
    last = data[len(data) - 1]  # this process now holds open shards: the forked workers must open their own
    assert bool(data._readers) is not preload
    runs = []
    for workers in (0, 2):
        sampler = WindowSampler(data, shuffle=True, seed=3)
        loader = DataLoader(data, batch_size=5, sampler=sampler, num_workers=workers)
        runs.append(batches(loader))
    assert len(runs[0]) == len(runs[1]) == -(-len(data) // 5)
    for serial, parallel in zip(*runs, strict=True):
        assert serial["video_id"] == parallel["video_id"]
        flat_serial, flat_parallel = flatten(serial), flatten(parallel)
        assert flat_serial.keys() == flat_parallel.keys()
        for key, value in flat_serial.items():
            torch.testing.assert_close(value, flat_parallel[key], rtol=0, atol=0, equal_nan=True)
    assert runs[0][0]["features"]["logmel"].shape == (5, 16, 4)
    again = data[len(data) - 1]  # the parent's shards still read after the workers dropped their copies
    np.testing.assert_array_equal(again["features"]["logmel"], last["features"]["logmel"])
    assert runs[0][0]["labels"]["au"].shape == (5, 16, 12)


def test_open_shards_are_bounded_and_never_pickled(store):
    config = WindowConfig(features=FEATURES, window=16, hop=16)
    bounded = FeatureWindows(store, config, TRAIN, max_open_shards=2)
    unbounded = FeatureWindows(store, config, TRAIN)
    for index in range(len(bounded)):
        item, reference = bounded[index], unbounded[index]
        assert len(bounded._readers) <= 2
        for key in FEATURES:
            torch.testing.assert_close(item["features"][key], reference["features"][key], rtol=0, atol=0)
    assert len(unbounded._readers) == len(FEATURES) * len(TRAIN)
    copy = pickle.loads(pickle.dumps(unbounded))
    assert not copy._readers and copy[0]["video_id"] == "a"
    unbounded.close()
    assert not unbounded._readers


def flatten(batch: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for key, value in batch.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, torch.Tensor):
            out[prefix + key] = value
    return out


def test_sampler_orders_balance_and_labeled_windows(store):
    data = FeatureWindows(store, WindowConfig(**CONFIG, window=8, hop=8), TRAIN)
    sampler = WindowSampler(data, seed=1)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(len(data))) and first != second  # a new epoch
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(WindowSampler(data, shuffle=False)) == list(range(len(data)))
    balanced = WindowSampler(data, balance="video", num_samples=4000, seed=2)
    per_video = np.bincount(data.window_video()[list(balanced)], minlength=len(TRAIN))
    assert len(balanced) == 4000 and per_video.min() > 850 and per_video.max() < 1150  # 1000 each expected
    # a window counts as labeled when any task has a label in it; with only valence, the first two thirds
    # of each video's native frames are unlabeled
    valence = FeatureWindows(
        store, WindowConfig(features=["logmel"], tasks=["dimension:valence"], window=8, hop=8), TRAIN
    )
    labeled = WindowSampler(valence, shuffle=False, labeled_only=True)
    expected = [i for i in range(len(valence)) if valence[i]["label_masks"]["dimension:valence"].any()]
    assert list(labeled) == expected and labeled.left_out == len(valence) - len(expected) > 0


def test_a_wrong_feature_or_task_is_a_clear_error(store):
    with pytest.raises(StoreError, match=r"no feature 'logmell' in this store \(features there: .*logmel"):
        FeatureWindows(store, WindowConfig(features=["logmell"]), TRAIN)
    with pytest.raises(StoreError, match=r"logmel.*no array 'nope' in this shard \(arrays: features\)"):
        FeatureWindows(store, WindowConfig(features=["logmel:nope"]), TRAIN)
    with pytest.raises(
        ConfigError, match=r"WindowConfig.tasks\[0\]'?: unknown task 'valence'; tasks: va, expr"
    ):
        WindowConfig(features=["logmel"], tasks=["valence"])  # train.tasks's names: dimension:valence
    with pytest.raises(
        StoreError,
        match=r"task\(s\) \['dimension:valance'\] \(tasks there: va, expr, au, dimension:valence, "
        r"dimension:arousal, dimension:dominance, category:emotion\)",
    ):
        FeatureWindows(store, WindowConfig(features=["logmel"], tasks=["dimension:valance"]), TRAIN)
    with pytest.raises(StoreError, match=r"video 'zz' of extractor 'logmel'"):
        FeatureWindows(store, WindowConfig(features=["logmel"]), ["a", "zz"])


def test_a_feature_on_another_timeline_names_the_video_and_the_feature(tmp_path):
    store = build_store(tmp_path)
    n = LENGTHS["b"]
    shifted = FeatureSet(
        time=np.arange(n) * 0.08 + 0.03,
        frame_index=np.arange(n, dtype=np.int64) * 2,
        mask=np.ones(n, dtype=np.uint8),
        arrays={"features": np.zeros((n, 3), dtype=np.float32)},
    )
    store.write("egemaps", "b", shifted, extractor_version="1", params_hash="p")
    with pytest.raises(
        StoreError, match=r"video 'b': feature 'egemaps' is not on the frame timeline of 'logmel'"
    ):
        FeatureWindows(store, WindowConfig(features=["logmel", "egemaps"]), TRAIN)
    FeatureWindows(store, WindowConfig(features=["logmel", "fer-minixception"]), TRAIN)  # the others line up


def test_unlabeled_videos_need_require_labels_off(tmp_path):
    store = build_store(tmp_path)
    store.remove(LABELS_EXTRACTOR, "c")
    config = {"features": ["logmel"], "tasks": ["va"]}
    with pytest.raises(StoreError, match=r"video 'c' has no labels shard"):
        FeatureWindows(store, WindowConfig(**config), TRAIN)
    data = FeatureWindows(store, WindowConfig(**config, require_labels=False), TRAIN)
    assert data.counts["videos without a labels shard (unlabeled)"] == 1
    c_windows = np.flatnonzero(data.window_video() == TRAIN.index("c"))
    assert not any(data[int(i)]["label_masks"]["va"].any() for i in c_windows)
    with pytest.raises(StoreError, match=r"none of these 1 videos has a labels shard.*tasks=\[\]"):
        FeatureWindows(store, WindowConfig(**config, require_labels=False), ["c"])
    assert not FeatureWindows(store, WindowConfig(features=["logmel"]), ["c"])[0]["labels"]


def test_shard_reader_reads_rows_and_names_the_file_at_fault(tmp_path):
    store = build_store(tmp_path)
    arrays = h5_arrays(store, "logmel", "a")
    with store.open_reader("logmel", "a") as reader:
        np.testing.assert_array_equal(reader.read_rows("features", 10, 42), arrays["features"][10:42])
        part = reader.read_range(["features"], 60)
        np.testing.assert_array_equal(part.time, arrays["time"][60:])
        with pytest.raises(StoreError, match=r"a\.h5: rows 60:71 are outside 0:70"):
            reader.read_rows("mask", 60, 71)
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(reader)
    store.shard_path("egemaps", "b").write_bytes(b"not hdf5")
    with pytest.raises(StoreError, match=r"b\.h5: corrupt shard: cannot be opened as HDF5"):
        store.open_reader("egemaps", "b")
