"""Tasks from the data: declared dimensions, categorical and multi-label tasks train, are scored under the
dataset's names and predicted; partially labelled frames count for the dimensions they have; a task the
data lacks is an error naming it and the dataset."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from avpipe.models.checkpoint import load_checkpoint
from avpipe.models.evaluation import run_evaluation
from avpipe.models.experiment import run_training
from avpipe.models.losses import MultiTaskLoss
from avpipe.models.metrics import task_metrics
from avpipe.models.prediction import run_prediction
from avpipe.models.tasks import TaskSpec, data_tasks, resolve_tasks
from avpipe.pipeline.config import build_dataclass
from avpipe.pipeline.config.train import LossConfig, Task, TrainConfig, VALoss
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.labels import LABELS_EXTRACTOR, UNLABELED_VA, FrameLabels, TaskKind
from avpipe.pipeline.manifest import ManifestRow, Split
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.types import FeatureSet, MaskValue, Timeline

RNG = np.random.default_rng(7)
COLOURS = ("red", "green", "blue")
TAGS = ("smile", "frown")
FAST = {"epochs": 3, "min_epochs": 1, "window": 16, "hop": 8, "batch_size": 4, "threads": 1}


def ref_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's CCC written from its definition, population moments."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


# --------------------------------------------------------------------------- partially labelled frames


def test_valence_only_frames_count_for_valence_in_metrics():
    n = 60
    labels = FrameLabels.unlabeled(n)
    labels.valence_arousal[:] = RNG.uniform(-1, 1, (n, 2))
    labels.valence_arousal[:20, 1] = UNLABELED_VA  # valence alone on the first 20 frames
    prediction = np.clip(labels.valence_arousal + RNG.normal(0, 0.3, (n, 2)), -1, 1)
    metrics = task_metrics({"va": prediction}, labels)
    assert metrics["ccc_valence"] == pytest.approx(ref_ccc(prediction[:, 0], labels.valence_arousal[:, 0]))
    assert metrics["ccc_arousal"] == pytest.approx(
        ref_ccc(prediction[20:, 1], labels.valence_arousal[20:, 1])
    )
    assert metrics["n_frames_va"] == n


def test_valence_only_frames_train_valence_and_not_arousal():
    target = torch.tensor(RNG.uniform(-1, 1, (1, 8, 2)), dtype=torch.float64)
    target[0, :3, 1] = UNLABELED_VA  # frames 0-2: valence only
    prediction = torch.tensor(RNG.uniform(-1, 1, (1, 8, 2)), dtype=torch.float64, requires_grad=True)
    loss, _ = MultiTaskLoss([Task.VA], LossConfig())({"va": prediction}, {"va": target})
    loss.backward()
    assert torch.all(prediction.grad[0, :3, 0] != 0)  # valence-only frames train valence
    assert torch.all(prediction.grad[0, :3, 1] == 0)  # and not arousal
    p, t = prediction.detach().numpy()[0], target.numpy()[0]
    expected = 1 - (ref_ccc(p[:, 0], t[:, 0]) + ref_ccc(p[3:, 1], t[3:, 1])) / 2
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-6)
    mse, _ = MultiTaskLoss([Task.VA], LossConfig(va=VALoss.MSE))({"va": prediction}, {"va": target})
    labelled = t != UNLABELED_VA
    assert float(mse.detach()) == pytest.approx(float(np.mean((p[labelled] - t[labelled]) ** 2)))


def test_declared_tasks_losses_ignore_their_unlabelled_entries():
    dominance = TaskSpec("dimension:dominance", TaskKind.CONTINUOUS, ("dominance",))
    colour = TaskSpec("category:colour", TaskKind.CATEGORICAL, COLOURS)
    loss_fn = MultiTaskLoss([dominance, colour], LossConfig(weights={"category:colour": 2.0}))
    value = torch.tensor([[[0.2], [0.5], [float("nan")], [-0.4]]])
    classes = torch.tensor([[0, -1, 2, 1]])
    outputs = {
        "dimension:dominance": torch.randn(1, 4, 1, requires_grad=True),
        "category:colour": torch.randn(1, 4, 3, requires_grad=True),
    }
    total, parts = loss_fn(outputs, {"dimension:dominance": value, "category:colour": classes})
    total.backward()
    assert torch.isfinite(total)
    assert float(outputs["dimension:dominance"].grad[0, 2, 0]) == 0.0  # NaN: unlabelled
    assert torch.all(outputs["category:colour"].grad[0, 1] == 0)  # -1: unlabelled
    p = outputs["dimension:dominance"].detach().numpy()[0, [0, 1, 3], 0]
    assert parts["dimension:dominance"] == pytest.approx(1 - ref_ccc(p, [0.2, 0.5, -0.4]), abs=1e-5)
    assert float(total.detach()) == pytest.approx(
        parts["dimension:dominance"] + 2.0 * parts["category:colour"]
    )


# --------------------------------------------------------------------------- end to end on a small store


def write_clip(store: FeatureStore, video_id: str, n: int, colour: int, rng: np.random.Generator) -> None:
    """A face feature that carries the clip's colour class and a voice feature that carries dominance."""
    timeline = Timeline(time=np.arange(n) / 25.0, frame_index=np.arange(n))
    dominance = np.sin(np.arange(n) / rng.uniform(4, 9) + rng.uniform(0, 6))
    centre = np.eye(len(COLOURS))[colour] * 2.0
    face = (centre + 0.5 * rng.standard_normal((n, len(COLOURS)))).astype(np.float32)
    voice = (dominance[:, None] * [1.0, -0.5] + 0.1 * rng.standard_normal((n, 2))).astype(np.float32)
    for extractor, values in (("fer-minixception", face), ("mfcc", voice)):
        features = FeatureSet(
            timeline.time, timeline.frame_index, np.full(n, MaskValue.VALID, np.uint8), {"features": values}
        )
        store.write(extractor, video_id, features, extractor_version="1", params_hash="p")
    labels = FrameLabels.unlabeled(n)
    labels.dimensions["dominance"] = dominance.astype(np.float32)
    labels.dimensions["dominance"][:4] = np.nan
    labels.categories["colour"] = np.full(n, colour, dtype=np.int16)
    labels.category_names["colour"] = list(COLOURS)
    labels.multilabels["tags"] = np.stack([np.full(n, colour == 0), np.full(n, colour == 2)], 1).astype(
        np.int8
    )
    labels.multilabel_names["tags"] = list(TAGS)
    store.write(
        LABELS_EXTRACTOR, video_id, labels.to_feature_set(timeline), extractor_version="1", params_hash="p"
    )


@pytest.fixture(scope="module")
def declared(tmp_path_factory):
    root = tmp_path_factory.mktemp("declared")
    store = FeatureStore(root / "store")
    rng = np.random.default_rng(3)
    rows = []
    splits = [Split.TRAIN] * 6 + [Split.VALIDATION] * 3 + [Split.TEST]
    for i, split in enumerate(splits):
        video_id = f"clip{i}"
        write_clip(store, video_id, 48, i % 3, rng)
        rows.append(ManifestRow(video_id=video_id, media_path=f"/d/{video_id}.mp4", split=split, n_frames=48))
    return store, rows


def config(tmp_path, **overrides) -> TrainConfig:
    section = {
        "features": ["fer-minixception", "mfcc"],
        "model": {"name": "rnn", "config": {"hidden": 8}},
        "folds": {"k": 1},
        "optimizer": {"lr": 0.01},
        "output_dir": str(tmp_path / "train"),
        "eval_dir": str(tmp_path / "evaluate"),
        **FAST,
        **overrides,
    }
    return build_dataclass(TrainConfig, section, "train")


def test_null_tasks_train_every_declared_task_named_by_the_data(declared, tmp_path):
    store, rows = declared
    cfg = config(tmp_path)
    assert cfg.tasks is None
    summary = run_training(cfg, store, rows)
    tasks = {task["key"]: task for task in summary["tasks"]}
    assert set(tasks) == {"dimension:dominance", "category:colour", "multilabel:tags"}
    assert tasks["category:colour"]["names"] == list(COLOURS)
    assert tasks["dimension:dominance"]["labelled_frames"] == 9 * 44  # 4 NaN frames per clip
    metrics = run_evaluation(cfg, store, rows)["validation"]
    assert {
        "ccc_dominance",
        "f1_colour",
        "accuracy_colour",
        "f1_colour_red",
        "f1_colour_blue",
        "f1_tags",
        "f1_tags_smile",
        "n_frames_colour",
    } <= set(metrics)
    assert metrics["n_frames_colour"] == 3 * 48
    log = list(csv.DictReader((tmp_path / "train" / "fold_0" / "log.csv").open()))
    assert {"val_f1_colour", "val_accuracy_colour", "val_ccc_dominance"} <= set(log[0])
    loaded = load_checkpoint(tmp_path / "train" / "fold_0" / "model.pt")
    assert [t.key for t in loaded.tasks] == [t for t in tasks]
    assert loaded.tasks[[t.key for t in loaded.tasks].index("category:colour")].names == COLOURS
    written = run_prediction(cfg, store, rows, out_dir=tmp_path / "predictions", split="test")
    header = written[0].read_text().splitlines()[0].split(",")
    assert {"dominance", "colour", "colour_name", "p_colour_green", "tags_smile", "p_tags_frown"} <= set(
        header
    )
    names = {row["colour_name"] for row in csv.DictReader(written[0].open())}
    assert names <= set(COLOURS)
    saved = json.loads((tmp_path / "train" / "summary.json").read_text())
    assert [t["key"] for t in saved["tasks"]] == list(tasks)


def test_a_named_declared_task_trains_alone_and_learns(declared, tmp_path):
    store, rows = declared
    cfg = config(tmp_path, tasks=["category:colour"], epochs=12)
    summary = run_training(cfg, store, rows)
    assert [t["key"] for t in summary["tasks"]] == ["category:colour"]
    metrics = run_evaluation(cfg, store, rows)["validation"]
    assert set(k for k in metrics if k.startswith("ccc_")) == set()
    assert metrics["accuracy_colour"] > 0.8, metrics  # chance: 1/3; the face feature carries the class


def test_a_task_the_data_lacks_is_an_error_naming_task_and_dataset(declared, tmp_path):
    store, rows = declared
    with pytest.raises(ConfigError) as info:
        run_training(config(tmp_path, tasks=["va"]), store, rows, dataset="dataset 'crema_d' at /data/cremad")
    assert info.value.key == "train.tasks"
    assert "'va'" in info.value.problem and "crema_d" in info.value.problem
    assert "category:colour" in info.value.problem  # what the labels do carry
    with pytest.raises(ConfigError, match="category:mood"):
        run_training(config(tmp_path, tasks=["category:mood"]), store, rows)


def test_valence_only_data_offers_the_valence_dimension():
    labels = FrameLabels.unlabeled(10)
    labels.valence_arousal[:, 0] = 0.5
    catalogue = data_tasks([("v", labels)])
    assert catalogue.keys() == ["dimension:valence"]
    both = FrameLabels.unlabeled(10)
    both.valence_arousal[:] = 0.5
    both.valence_arousal[:4, 1] = UNLABELED_VA
    mixed = data_tasks([("v", labels), ("w", both)])
    assert (mixed.frames["va"], mixed.partial["va"]) == (10, 4)  # counted where the partial rule acts
    assert (mixed.frames["dimension:valence"], mixed.partial["dimension:valence"]) == (20, 0)
    with pytest.raises(ConfigError, match="dimension:valence"):
        resolve_tasks(["va"], catalogue, "dataset 'folder' at x")
    assert [t.key for t in resolve_tasks(None, catalogue, "x")] == ["dimension:valence"]


@pytest.mark.parametrize(
    ("tasks", "ok"),
    [
        (["category:emotion"], True),
        (["dimension:dominance", "va"], True),
        (["emotion"], False),
        (["category:"], False),
        (["genre:x"], False),
    ],
)
def test_task_keys_in_the_config(tasks, ok):
    if ok:
        assert build_dataclass(TrainConfig, {"tasks": tasks}, "train").tasks == tasks
    else:
        with pytest.raises(ConfigError, match=r"unknown task"):
            build_dataclass(TrainConfig, {"tasks": tasks}, "train")


@pytest.mark.parametrize("name", ["tcn", "lfan", "jca", "rnn", "transformer", "aim3"])
def test_every_model_has_a_head_per_declared_task_sized_by_the_data(name):
    from avpipe.models.registry import create_model
    from tests.test_models import INPUTS, SMALL, WINDOW, batch

    tasks = [
        TaskSpec("dimension:dominance", TaskKind.CONTINUOUS, ("dominance",)),
        TaskSpec("category:colour", TaskKind.CATEGORICAL, COLOURS),
        TaskSpec("multilabel:tags", TaskKind.MULTILABEL, TAGS),
        Task.VA,
    ]
    model = create_model(name, inputs=INPUTS, tasks=tasks, window=WINDOW, **SMALL[name])
    outputs = model(batch())
    assert {key: tuple(value.shape) for key, value in outputs.items()} == {
        "dimension:dominance": (3, WINDOW, 1),
        "category:colour": (3, WINDOW, 3),
        "multilabel:tags": (3, WINDOW, 2),
        "va": (3, WINDOW, 2),
    }


def test_per_task_selection_keeps_a_checkpoint_per_declared_task(declared, tmp_path):
    store, rows = declared
    cfg = config(tmp_path, tasks=["category:colour", "dimension:dominance"], selection={"mode": "per_task"})
    summary = run_training(cfg, store, rows)
    assert set(summary["folds"][0]["task_best_epochs"]) == {"category-colour", "dimension-dominance"}
    checkpoint = load_checkpoint(tmp_path / "train" / "fold_0" / "model_category-colour.pt")
    assert checkpoint.meta["task"] == "category:colour"
    written = run_prediction(cfg, store, rows, out_dir=tmp_path / "predictions", split="test")
    assert {"colour_name", "dominance"} <= set(written[0].read_text().splitlines()[0].split(","))
