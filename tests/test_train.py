"""Training end to end on tiny synthetic feature stores: config and presets, folds, feature/label joins,
standardisation, every preset through train -> evaluate -> predict, and learning on held-out clips."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from avpipe.cli import main as cli_main
from avpipe.models.checkpoint import load_checkpoint
from avpipe.models.data import load_video, resolve_inputs
from avpipe.models.evaluation import run_evaluation
from avpipe.models.experiment import run_training
from avpipe.models.folds import make_folds
from avpipe.models.prediction import run_prediction
from avpipe.models.stats import cached_stats, compute_stats, stats_key
from avpipe.models.table import FrameTable
from avpipe.pipeline.config import build_dataclass, load_params
from avpipe.pipeline.config.train import FoldConfig, TrainConfig, list_presets, resolve_train_section
from avpipe.pipeline.errors import ConfigError, StoreError
from avpipe.pipeline.labels import AU_NAMES, LABELS_EXTRACTOR, UNLABELED_VA, FrameLabels
from avpipe.pipeline.manifest import ManifestRow, Split, write_manifest
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.types import FeatureSet, MaskValue, Timeline

REPO = Path(__file__).resolve().parents[1]
# the real extractors' names (modality "auto" asks the registry) with small sizes: sizes come from the store
ARRAYS = {
    "fer-minixception": {"features": 6, "logits": 7},
    "mfcc": {"features": 4},
    "vggish": {"features": 5},
    "egemaps": {"features": 3},
    "logmel": {"features": 4},
}
VISUAL = ("fer-minixception",)
FAST = {"epochs": 2, "min_epochs": 1, "window": 32, "hop": 16, "batch_size": 4, "threads": 1}


def smooth_curve(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n)
    periods = rng.uniform(20, 60, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    curve = np.sin(2 * np.pi * t[:, None] / periods + phases).sum(axis=1)
    return 0.9 * curve / np.abs(curve).max()


def write_video(store: FeatureStore, video_id: str, n: int, rng: np.random.Generator) -> FrameLabels:
    """Features that encode the labels: faces carry valence, voices carry arousal (plus noise)."""
    timeline = Timeline(time=np.arange(n) / 25.0 + 0.02, frame_index=np.arange(n))
    valence, arousal = smooth_curve(rng, n), smooth_curve(rng, n)
    for extractor, arrays in ARRAYS.items():
        source = valence if extractor in VISUAL else arousal
        values = {}
        for name, dim in arrays.items():
            direction = np.random.default_rng(dim * 7 + len(extractor)).standard_normal(
                dim
            )  # same for all videos
            values[name] = (source[:, None] * direction + 0.2 * rng.standard_normal((n, dim))).astype(
                np.float32
            )
        mask = np.full(n, MaskValue.VALID, dtype=np.uint8)
        if extractor in VISUAL:
            mask[rng.random(n) < 0.05] = MaskValue.MISSING  # frames without a face
        features = FeatureSet(timeline.time, timeline.frame_index, mask, values)
        store.write(extractor, video_id, features, extractor_version="1", params_hash="p")
    labels = FrameLabels.unlabeled(n)
    labels.valence_arousal[:] = np.stack([valence, arousal], axis=1)
    labels.valence_arousal[:3] = UNLABELED_VA
    labels.expression[:] = np.where(valence > 0.3, 4, np.where(valence < -0.3, 5, 0))
    labels.expression[-4:] = -1
    labels.action_units[:] = (arousal[:, None] > np.linspace(-0.5, 0.5, len(AU_NAMES))).astype(np.int8)
    store.write(
        LABELS_EXTRACTOR, video_id, labels.to_feature_set(timeline), extractor_version="1", params_hash="p"
    )
    return labels


def build_dataset(
    root: Path, n_train: int, n_validation: int, n_test: int, frames: tuple[int, int], seed: int
):
    rng = np.random.default_rng(seed)
    store = FeatureStore(root / "store")
    rows = []
    splits = [Split.TRAIN] * n_train + [Split.VALIDATION] * n_validation + [Split.TEST] * n_test
    for i, split in enumerate(splits):
        video_id = f"clip{i:02d}"
        n = int(rng.integers(*frames))
        write_video(store, video_id, n, rng)
        rows.append(
            ManifestRow(video_id=video_id, media_path=f"/data/{video_id}.mp4", split=split, n_frames=n)
        )
    write_manifest(rows, root / "manifest.csv")
    return store, rows


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    store, rows = build_dataset(root, n_train=6, n_validation=2, n_test=1, frames=(40, 90), seed=0)
    return root, store, rows


def config_for(preset: str, out: Path, **overrides) -> TrainConfig:
    section = resolve_train_section({"preset": preset, **FAST, **overrides}, REPO)
    section.update(output_dir=str(out / "train"), eval_dir=str(out / "evaluate"))
    return build_dataclass(TrainConfig, section, "train")


# --------------------------------------------------------------------------- config and presets


def test_presets_are_the_four_of_the_issue():
    assert list_presets(REPO) == ["abaw2-lfan", "abaw4-mtl", "jca", "lstm-fusion", "wavlm-jca"]


def test_explicit_train_keys_override_the_preset():
    merged = resolve_train_section(
        {"preset": "jca", "epochs": 3, "model": {"config": {"encoder_dim": 8}}}, REPO
    )
    preset = yaml.safe_load((REPO / "presets" / "jca.yaml").read_text())
    assert merged["epochs"] == 3
    assert merged["model"]["name"] == "jca"
    assert merged["model"]["config"] == {**preset["model"]["config"], "encoder_dim": 8}
    assert merged["features"] == preset["features"]
    switched = resolve_train_section({"preset": "jca", "model": {"name": "tcn"}}, REPO)
    assert switched["model"] == {"name": "tcn"}  # jca's settings do not fit a tcn


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError) as info:
        resolve_train_section({"preset": "lfan2"}, REPO)
    assert info.value.key == "train.preset"
    assert "abaw2-lfan, abaw4-mtl, jca, lstm-fusion" in info.value.problem


def test_load_params_applies_the_preset_named_by_an_override(tmp_path):
    shutil.copytree(REPO / "presets", tmp_path / "presets")
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump({"train": {"preset": "abaw2-lfan", "epochs": 3}}))
    params = load_params(params_path)
    assert (params.train.model.name, params.train.epochs) == ("lfan", 3)
    switched = load_params(params_path, ["train.preset=jca"])  # what `dvc exp run -S train.preset=jca` does
    assert (switched.train.preset, switched.train.model.name, switched.train.epochs) == ("jca", "jca", 3)
    jca = yaml.safe_load((REPO / "presets" / "jca.yaml").read_text())
    assert [spec.key for spec in switched.train.feature_specs] == jca["features"]
    with pytest.raises(ConfigError, match=r"train\.window"):
        load_params(params_path, ["train.window=0"])


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"hop": 400}, "train.hop"),
        ({"tasks": ["va", "emotion"]}, "train.tasks[1]"),
        ({"tasks": []}, "train.tasks"),
        ({"features": []}, "train.features"),
        ({"features": ["mfcc", "mfcc:features"]}, "train.features"),
        ({"loss": {"weights": {"valence": 1.0}}}, "train.loss.weights.valence"),
        ({"folds": {"k": 3, "run": [3]}}, "train.folds.run"),
        ({"device": "gpu"}, "train.device"),
        ({"optimizer": {"lr": 0}}, "train.optimizer.lr"),
        ({"bogus": 1}, "train.bogus"),
    ],
)
def test_bad_train_settings_name_the_key(section, key):
    with pytest.raises(ConfigError) as info:
        build_dataclass(TrainConfig, section, "train")
    assert info.value.key == key


def test_feature_short_forms():
    config = build_dataclass(TrainConfig, {"features": ["mfcc", "fer-minixception:logits"]}, "train")
    assert [(s.extractor, s.array, s.key) for s in config.feature_specs] == [
        ("mfcc", "features", "mfcc"),
        ("fer-minixception", "logits", "fer-minixception:logits"),
    ]


# --------------------------------------------------------------------------- folds, data, statistics


def rows_for(subjects: dict[str, Split], frames: int = 100) -> list[ManifestRow]:
    rows = []
    for video_id, split in subjects.items():
        subject = video_id.split("_")[0]
        rows.append(
            ManifestRow(video_id=video_id, media_path="/x.mp4", subject=subject, split=split, n_frames=frames)
        )
    return rows


def test_folds_keep_subjects_together_and_validation_as_fold_zero():
    subjects = {f"s{i}_left": Split.TRAIN for i in range(8)} | {f"s{i}_right": Split.TRAIN for i in range(8)}
    subjects |= {"v1": Split.VALIDATION, "v2": Split.VALIDATION, "t1": Split.TEST}
    plan = make_folds(rows_for(subjects), FoldConfig(k=5, seed=3))
    assert plan.folds[0] == ("v1", "v2")
    assert plan.test == ("t1",)
    assert sorted(plan.pool) == sorted(v for v, s in subjects.items() if s is not Split.TEST)
    fold_of = plan.fold_of()
    for i in range(8):
        assert fold_of[f"s{i}_left"] == fold_of[f"s{i}_right"] != 0
    assert [len(f) for f in plan.folds[1:]] == [4, 4, 4, 4]  # 8 subjects of 2 videos over 4 folds, balanced
    assert make_folds(rows_for(subjects), FoldConfig(k=5, seed=3)) == plan  # deterministic
    mixed = make_folds(rows_for(subjects), FoldConfig(k=3, validation_as_fold=False))
    assert ("v1", "v2") not in mixed.folds and len(mixed.pool) == 18
    with pytest.raises(ConfigError, match=r"lower k"):
        make_folds(rows_for(subjects), FoldConfig(k=10))
    official = make_folds(rows_for(subjects), FoldConfig(k=1))  # train on train, select on validation
    assert official.folds == (("v1", "v2"),)
    assert official.train_videos(0) == sorted(v for v, s in subjects.items() if s is Split.TRAIN)


def test_features_and_labels_join_on_frame_index(tmp_path):
    store = FeatureStore(tmp_path)
    native = Timeline(time=np.arange(10) / 30.0, frame_index=np.arange(10))
    labels = FrameLabels.unlabeled(10)
    labels.valence_arousal[:, 0] = np.arange(10) / 10.0
    labels.valence_arousal[:, 1] = 0.0
    store.write(LABELS_EXTRACTOR, "v", labels.to_feature_set(native), extractor_version="1", params_hash="p")
    # a 15 fps timeline: every other native frame; one frame without a face, one with NaNs
    kept = np.arange(0, 10, 2)
    faces = np.arange(5, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    faces[3] = np.nan
    mask = np.array([1, 0, 1, 1, 1], dtype=np.uint8)
    store.write(
        "face",
        "v",
        FeatureSet(kept / 30.0, kept, mask, {"features": faces}),
        extractor_version="1",
        params_hash="p",
    )
    # the audio feature lacks the last frame of that timeline
    voice = np.arange(4, dtype=np.float32)[:, None] + 100
    store.write(
        "voice",
        "v",
        FeatureSet(kept[:4] / 30.0, kept[:4], np.ones(4, np.uint8), {"features": voice}),
        extractor_version="1",
        params_hash="p",
    )
    config = build_dataclass(TrainConfig, {"features": ["face", "voice"]}, "train")
    video = load_video(store, config.feature_specs, "v")
    assert video.frame_index.tolist() == [0, 2, 4, 6, 8]
    assert video.valid["face"].tolist() == [True, False, True, False, True]
    assert video.features["face"][:, 0].tolist() == [0, 0, 2, 0, 4]
    assert video.valid["voice"].tolist() == [True, True, True, True, False]
    assert video.features["voice"][:, 0].tolist() == [100, 101, 102, 103, 0]
    np.testing.assert_allclose(video.labels.valence_arousal[:, 0], [0.0, 0.2, 0.4, 0.6, 0.8])
    with pytest.raises(StoreError, match="no shard"):
        load_video(
            store, build_dataclass(TrainConfig, {"features": ["face", "mfcc"]}, "train").feature_specs, "v"
        )


def test_standardisation_uses_training_videos_only_and_is_cached(tiny, tmp_path):
    _, store, rows = tiny
    config = build_dataclass(TrainConfig, {"features": [{"extractor": "mfcc", "modality": "audio"}]}, "train")
    videos = [load_video(store, config.feature_specs, r.video_id) for r in rows]
    table = FrameTable(videos, ["mfcc"])
    table.features["mfcc"][table.rows_of(["clip07"])] += 1000.0  # a validation video far off
    train_ids = [r.video_id for r in rows if r.split is Split.TRAIN]
    stats = compute_stats(table, train_ids)
    train_values = np.concatenate(
        [v.features["mfcc"][v.valid["mfcc"]] for v in videos if v.video_id in train_ids]
    )
    np.testing.assert_allclose(stats.mean["mfcc"], train_values.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats.std["mfcc"], train_values.std(axis=0), rtol=1e-4)
    inputs = resolve_inputs(store, config.feature_specs, "clip00")
    key = stats_key(store, config.feature_specs, inputs, train_ids)
    assert key != stats_key(store, config.feature_specs, inputs, train_ids[:-1])
    first = cached_stats(tmp_path, key, table, train_ids)
    standardised = first.apply(table)["mfcc"]
    assert np.all(standardised[0] == 0)  # the padding row
    train_rows = standardised[table.rows_of(train_ids) & table.valid["mfcc"]]
    np.testing.assert_allclose(train_rows.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(train_rows.std(axis=0), 1.0, atol=1e-3)
    cached = tmp_path / f"{key}.npz"
    stamp = cached.stat().st_mtime_ns
    table.features["mfcc"] += 5.0  # would change the statistics if they were computed again
    again = cached_stats(tmp_path, key, table, train_ids)
    assert cached.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.mean["mfcc"], first.mean["mfcc"])


# --------------------------------------------------------------------------- every preset, end to end


@pytest.mark.parametrize("preset", ["abaw2-lfan", "jca", "abaw4-mtl", "lstm-fusion"])
def test_every_preset_trains_evaluates_and_predicts(tiny, tmp_path, preset):
    _, store, rows = tiny
    folds = {"folds": {"k": 3}} if preset == "abaw2-lfan" else {}
    config = config_for(preset, tmp_path, **folds)
    summary = run_training(config, store, rows)
    n_folds = config.folds.k
    assert [f["fold"] for f in summary["folds"]] == list(range(n_folds))
    assert summary["skipped"] == {}
    sizes = {spec["key"]: spec["dim"] for spec in summary["inputs"]}
    assert sizes.get("fer-minixception") == 6  # read from the store
    metrics = run_evaluation(config, store, rows)
    saved = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert saved["validation"]["n_videos"] == 2
    assert set(saved["folds"]) == {str(i) for i in range(n_folds)}
    assert saved["cross_validation"]["n_videos"] == (8 if n_folds > 1 else 2)  # k = 1: the validation set
    if "va" in config.tasks:
        assert -1.0 <= metrics["validation"]["ccc_valence"] <= 1.0
    if preset == "abaw4-mtl":
        assert {"f1_expr", "f1_au", "mtl_score"} <= set(saved["validation"])
    learning = sorted(p.name for p in (tmp_path / "evaluate" / "plots" / "learning").iterdir())
    assert learning == [f"fold_{i}.csv" for i in range(n_folds)]
    curves = list(csv.DictReader((tmp_path / "evaluate" / "plots" / "learning" / "fold_0.csv").open()))
    assert [row["epoch"] for row in curves] == ["0", "1", "2"] and "val_score" in curves[0]  # 0: untrained
    videos = sorted(p.name for p in (tmp_path / "evaluate" / "plots" / "videos").iterdir())
    assert videos == ["clip06.csv", "clip07.csv"]
    loaded = load_checkpoint(tmp_path / "train" / "fold_0" / "model.pt")
    assert loaded.window == 32 and [s.key for s in loaded.inputs] == [s.key for s in config.feature_specs]
    written = run_prediction(config, store, rows, out_dir=tmp_path / "predictions", split="test")
    assert [p.name for p in written] == ["clip08.csv"]
    table = list(csv.DictReader(written[0].open()))
    assert len(table) == rows[8].n_frames
    assert [int(r["frame_index"]) for r in table] == list(range(rows[8].n_frames))
    if preset == "abaw4-mtl":
        assert {"valence", "expression_name", "p_Happiness", "AU12", "p_AU12"} <= set(table[0])


def test_cli_train_evaluate_predict(tiny, tmp_path):
    root, store, _ = tiny
    shutil.copytree(REPO / "presets", tmp_path / "presets")
    params = {
        "store": {"root": str(store.root)},
        "manifest": {"path": str(root / "manifest.csv"), "failures": str(tmp_path / "failures.csv")},
        "train": {
            "preset": "lstm-fusion",
            **FAST,
            "output_dir": str(tmp_path / "t"),
            "eval_dir": str(tmp_path / "e"),
        },
        "results": {"dir": str(tmp_path / "r"), "train_inputs": str(tmp_path / "inputs.json")},
        "runner": {"reports": str(tmp_path / "reports")},
    }
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    assert (
        cli_main(["-p", str(params_path), "evaluate"]) == 2
    )  # nothing trained yet: a clear error, no traceback
    assert cli_main(["-p", str(params_path), "train"]) == 0
    assert cli_main(["-p", str(params_path), "evaluate"]) == 0
    assert (tmp_path / "e" / "metrics.json").is_file()
    headline = json.loads((tmp_path / "r" / "metrics" / "train.json").read_text())
    assert set(headline["val"]) >= {"ccc_v", "ccc_a", "ccc"}
    assert sorted(p.name for p in (tmp_path / "r" / "plots" / "learning").iterdir())
    assert list((tmp_path / "r" / "plots" / "videos").glob("*_valence.csv"))
    assert (
        cli_main(["-p", str(params_path), "predict", "--split", "validation", "--out", str(tmp_path / "p")])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["clip06.csv", "clip07.csv"]
    assert cli_main(["-p", str(params_path), "predict", "--split", "holdout"]) == 2


def test_videos_missing_a_feature_are_skipped_and_reported(tiny, tmp_path):
    _, store, rows = tiny
    partial = FeatureStore(tmp_path / "store")
    shutil.copytree(store.root, partial.root)
    partial.remove("logmel", "clip03")
    config = config_for("lstm-fusion", tmp_path, epochs=1)
    summary = run_training(config, partial, rows)
    assert list(summary["skipped"]) == ["clip03"]
    assert "clip03" not in summary["folds"][0]["train_videos"]
    with pytest.raises(StoreError, match="no train/validation video"):
        run_training(config_for("lstm-fusion", tmp_path, features=["vggish:missing"]), partial, rows)


def test_lfan_learns_valence_and_arousal_of_held_out_clips(tmp_path):
    """The demo target in miniature: labels learnable from the features, CCC >= 0.5 on unseen clips."""
    store, rows = build_dataset(tmp_path, n_train=8, n_validation=3, n_test=0, frames=(150, 250), seed=1)
    config = config_for(
        "abaw2-lfan",
        tmp_path,
        epochs=25,
        window=64,
        hop=32,
        batch_size=8,
        folds={"k": 1},
        model={"config": {"visual_channels": [16, 16], "audio_channels": [8, 8], "modal_dim": 8}},
    )
    run_training(config, store, rows)
    metrics = run_evaluation(config, store, rows)["validation"]
    assert metrics["ccc_valence"] >= 0.5 and metrics["ccc_arousal"] >= 0.5, metrics
