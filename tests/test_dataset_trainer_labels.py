"""The torch Dataset's window labels are the trainers' targets: for every task kind (the built-in va /
expr / au and a declared dimension, categorical and multi-label task), the labels and masks of each
``FeatureWindows`` window equal what ``avpipe train`` trains on for the same frames, read through the
trainer's own path (experiment's pooled labels -> data_tasks / resolve_tasks, models.data.load_videos ->
FrameTable.task_targets, the trainers' window rows and labelled-window rule)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avpipe.models.data import load_videos
from avpipe.models.dataset import FeatureWindows, LastWindow, WindowConfig
from avpipe.models.experiment import _pool_labels
from avpipe.models.sampler import WindowSampler
from avpipe.models.table import PAD_ROW, FrameTable
from avpipe.models.tasks import data_tasks, labeled_entries, labeled_frames, resolve_tasks
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.labels import LABELS_EXTRACTOR, FrameLabels, TaskKind
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.types import FeatureSet, MaskValue, Timeline

LENGTHS = {"full": 57, "partial": 40, "lacking": 23, "empty": 12}  # feature rows per video
EMOTIONS = ["neutral", "happy", "sad", "angry"]
CUES = ["laugh", "sigh", "frown"]
WINDOW, HOP = 16, 8
# va and dimension:valence both report ccc_valence, so the trainers take them in separate runs
TASK_SETS = [
    ["va", "expr", "au", "dimension:dominance", "category:emotion", "multilabel:cues"],
    ["dimension:valence", "dimension:arousal"],
]


def labels_of(video_id: str, n_native: int, rng: np.random.Generator) -> FrameLabels:
    """Every kind of partial labelling: valence-only and arousal-only frames, units and cues marked
    unlabelled one by one, frames without expression, emotion or dominance; ``lacking`` has no declared
    dimension or multi-label task at all, ``empty`` only a few emotion frames."""
    labels = FrameLabels.unlabeled(n_native)
    labels.categories["emotion"] = np.full(n_native, -1, dtype=np.int16)
    labels.category_names["emotion"] = EMOTIONS
    if video_id == "empty":
        labels.categories["emotion"][3:7] = 2
        return labels
    va = rng.uniform(-1, 1, (n_native, 2)).astype(np.float32)
    blank = rng.random((n_native, 2)) < 0.3  # each dimension on its own: valence-only, arousal-only frames
    labels.valence_arousal[:] = np.where(blank, -5.0, va)
    labels.expression[:] = rng.integers(-1, 8, n_native)
    labels.action_units[:] = rng.integers(-1, 2, (n_native, 12))
    labels.categories["emotion"][:] = rng.integers(-1, len(EMOTIONS), n_native)
    if video_id != "lacking":
        dominance = rng.uniform(-1, 1, n_native).astype(np.float32)
        dominance[rng.random(n_native) < 0.25] = np.nan
        labels.dimensions["dominance"] = dominance
        labels.multilabels["cues"] = rng.integers(-1, 2, (n_native, len(CUES))).astype(np.int8)
        labels.multilabel_names["cues"] = CUES
    return labels


def build_store(root: Path) -> FeatureStore:
    """Features on every second native frame; the labels shard on native frames, its last rows missing
    in ``partial`` (those frames have no labels row: unlabelled)."""
    store = FeatureStore(root)
    rng = np.random.default_rng(7)
    for video_id, n in LENGTHS.items():
        timeline = Timeline(time=np.arange(n) * 0.08, frame_index=np.arange(n, dtype=np.int64) * 2)
        features = FeatureSet(
            timeline.time,
            timeline.frame_index,
            np.full(n, MaskValue.VALID, dtype=np.uint8),
            {"features": rng.standard_normal((n, 3)).astype(np.float32)},
        )
        store.write("logmel", video_id, features, extractor_version="1", params_hash="p")
        n_native = 2 * n - 10 if video_id == "partial" else 2 * n
        native = Timeline(time=np.arange(n_native) * 0.04, frame_index=np.arange(n_native, dtype=np.int64))
        labels = labels_of(video_id, n_native, rng)
        store.write(
            LABELS_EXTRACTOR, video_id, labels.to_feature_set(native), extractor_version="1", params_hash="p"
        )
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    return build_store(tmp_path_factory.mktemp("trainer_labels"))


@pytest.mark.parametrize("keys", TASK_SETS, ids=["built-in-and-declared", "dimensions-alone"])
def test_window_labels_are_the_trainers_targets_for_every_task_kind(store, keys):
    ids = list(LENGTHS)
    # the trainer's path (models/experiment.py run_training)
    catalogue = data_tasks(_pool_labels(store, ids))
    specs = resolve_tasks(keys, catalogue, "the test store")
    videos, skipped = load_videos(store, WindowConfig(features=["logmel"]).feature_specs, ids)
    assert not skipped
    table = FrameTable(videos, ["logmel"])
    targets = table.task_targets(specs, {video.video_id: video.labels for video in videos})
    windows, _ = table.windows(ids, WINDOW, HOP)
    # the data exercises the partial-label rule of every multi-entry task
    for key in ("va", "au", "multilabel:cues"):
        if key in keys:
            assert catalogue.partial[key] > 0, key
    if "va" in keys:  # every kind, built in and declared
        kinds = {(spec.builtin, spec.kind) for spec in specs}
        assert kinds == {(builtin, kind) for builtin in (True, False) for kind in TaskKind}

    config = WindowConfig(
        features=["logmel"], tasks=keys, window=WINDOW, hop=HOP, last_window=LastWindow.ALIGN_END
    )
    data = FeatureWindows(store, config, ids)
    assert data.counts["frames without a row in their labels shard (unlabeled)"] == 5
    if "multilabel:cues" in keys:
        assert data.counts["multilabel:cues: videos whose labels shard lacks the task (unlabeled)"] == 2
    assert len(data) == windows.shape[0]
    checked = {spec.key: 0 for spec in specs}
    for index in range(len(data)):
        item = data[index]
        rows = windows[index]
        real = rows != PAD_ROW
        np.testing.assert_array_equal(item["frame_mask"].numpy(), real)
        for spec in specs:
            trainer = targets[spec.key][rows]  # padded positions: the table's padding row, unlabelled
            entries = labeled_entries(spec, trainer)
            values = item["labels"][spec.key].numpy().reshape(trainer.shape)
            mask = item["label_masks"][spec.key].numpy().reshape(trainer.shape)
            assert values.dtype == trainer.dtype, spec.key
            np.testing.assert_array_equal(mask, entries, err_msg=spec.key)
            np.testing.assert_array_equal(values[mask], trainer[mask], err_msg=spec.key)
            fill = -1 if spec.kind is TaskKind.CATEGORICAL else 0
            assert (values[~mask] == fill).all(), spec.key
            checked[spec.key] += int(np.count_nonzero(mask))
    assert all(checked.values()), checked  # every task has labelled entries in some window

    # the windows the trainers train on (models/trainer.py train_fold): any frame with a label of a task
    labelled = np.zeros(table.n_rows, dtype=bool)
    for spec in specs:
        labelled |= labeled_frames(spec, targets[spec.key])
    trained = np.flatnonzero(np.any(labelled[windows], axis=1))
    sampler = WindowSampler(data, shuffle=False, labeled_only=True)
    assert list(sampler) == trained.tolist() and sampler.left_out == len(data) - trained.shape[0]


def test_a_valence_only_frame_is_labelled_for_valence_alone(store):
    """The partial-label rule on one frame: valence without arousal is a label of va's first column
    (and of dimension:valence), none of its second (nor of dimension:arousal)."""
    config = WindowConfig(
        features=["logmel"], tasks=["va", "dimension:valence", "dimension:arousal"], window=WINDOW, hop=HOP
    )
    data = FeatureWindows(store, config, ["full"])
    labels = FrameLabels.from_feature_set(store.read(LABELS_EXTRACTOR, "full"))
    va = labels.valence_arousal[::2]  # the features' frames: every second native frame
    frame = int(np.flatnonzero((va[:, 0] != -5) & (va[:, 1] == -5))[0])
    item = data[min(frame // HOP, len(data) - 1)]  # a window holding the frame
    at = frame - item["start"]
    assert item["label_masks"]["va"][at].tolist() == [True, False]
    assert item["labels"]["va"][at].tolist() == [pytest.approx(float(va[frame, 0])), 0.0]
    assert item["label_masks"]["dimension:valence"][at] and not item["label_masks"]["dimension:arousal"][at]
    assert item["labels"]["dimension:valence"][at] == pytest.approx(float(va[frame, 0]))


def test_class_names_that_differ_between_videos_are_an_error_naming_both(tmp_path):
    """As for the trainers (data_tasks): one class list per categorical task, else the videos are named."""
    store = build_store(tmp_path)
    labels = FrameLabels.from_feature_set(store.read(LABELS_EXTRACTOR, "empty"))
    labels.category_names["emotion"] = [*EMOTIONS[:3], "surprised"]
    native = store.read(LABELS_EXTRACTOR, "empty")
    timeline = Timeline(time=native.time, frame_index=native.frame_index)
    store.write(
        LABELS_EXTRACTOR, "empty", labels.to_feature_set(timeline), extractor_version="1", params_hash="p"
    )
    config = WindowConfig(features=["logmel"], tasks=["category:emotion"])
    with pytest.raises(ConfigError, match=r"'category:emotion' has classes .* video 'full' but .* 'empty'"):
        FeatureWindows(store, config, list(LENGTHS))
    FeatureWindows(store, WindowConfig(features=["logmel"], tasks=["va"]), list(LENGTHS))  # not asked: fine
