"""Model selection never keeps an untrained model: a task without a validation score is an error naming the
task and the fold (or is dropped, by option, with a warning); a fold whose trained epochs never beat the
untrained model warns loudly; per-task selection keeps one checkpoint per task."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import torch

from avpipe.models.checkpoint import load_checkpoint
from avpipe.models.experiment import fold_dir, run_training, task_checkpoint
from avpipe.models.inference import load_predictions
from avpipe.models.prediction import run_prediction
from avpipe.models.selection import Best, TaskScorer, restore_state, warn_if_untrained
from avpipe.models.trainer import FoldTrainer
from avpipe.pipeline.config.train import MissingScore, Task
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.labels import LABELS_EXTRACTOR, FrameLabels
from avpipe.pipeline.manifest import Split
from avpipe.pipeline.types import Timeline
from tests.test_train import build_dataset, config_for

MTL = {"tasks": ["va", "expr"], "epochs": 3}


@pytest.fixture(scope="module")
def no_expr_on_validation(tmp_path_factory):
    """A dataset whose validation videos carry VA labels but no expression label."""
    root = tmp_path_factory.mktemp("noexpr")
    store, rows = build_dataset(root, n_train=3, n_validation=1, n_test=0, frames=(50, 70), seed=4)
    for row in rows:
        if row.split is Split.VALIDATION:
            features = store.read(LABELS_EXTRACTOR, row.video_id)
            labels = FrameLabels.from_feature_set(features)
            labels.expression[:] = -1
            store.write(
                LABELS_EXTRACTOR,
                row.video_id,
                labels.to_feature_set(Timeline(features.time, features.frame_index)),
                extractor_version="1",
                params_hash="p",
            )
    return store, rows


def test_a_task_without_validation_labels_is_an_error_naming_task_and_fold(no_expr_on_validation, tmp_path):
    store, rows = no_expr_on_validation
    config = config_for("abaw4-mtl", tmp_path, **MTL)
    with pytest.raises(ConfigError, match=r"fold 0: task 'expr' has no validation score.*0 labelled"):
        run_training(config, store, rows)
    assert not (fold_dir(config.output_dir, 0) / "model.pt").exists()  # nothing untrained was saved


def test_dropping_the_task_warns_and_selects_a_trained_epoch(no_expr_on_validation, tmp_path, caplog):
    store, rows = no_expr_on_validation
    config = config_for("abaw4-mtl", tmp_path, selection={"missing_score": "drop"}, **MTL)
    with caplog.at_level(logging.WARNING):
        summary = run_training(config, store, rows)
    fold = summary["folds"][0]
    assert fold["dropped_tasks"] == ["expr"]
    assert fold["best_epoch"] >= 1 and np.isfinite(fold["best_score"])
    assert any("'expr'" in r.message and "dropped from model selection" in r.message for r in caplog.records)
    with (fold_dir(config.output_dir, 0) / "log.csv").open() as handle:
        log_rows = list(csv.DictReader(handle))
    assert log_rows[0]["epoch"] == "0"  # the untrained model is the logged baseline
    selection = [float(r["val_selection_score"]) for r in log_rows[1:]]
    best = 1 + int(np.argmax(selection))
    assert fold["best_epoch"] == best  # selected on the VA score alone
    assert selection[best - 1] == pytest.approx(float(log_rows[best]["val_ccc_mean"]), abs=1e-5)


def test_scorer_reports_nan_and_missing_scores():
    scorer = TaskScorer(3, [Task.VA, Task.AU], MissingScore.ERROR)
    assert scorer.scores({"ccc_mean": 0.5, "f1_au": 0.25}, epoch=1) == {"va": 0.5, "au": 0.25}
    per_emotion = TaskScorer(3, [Task.VA], MissingScore.ERROR, separate_va=True)
    scores = per_emotion.scores({"ccc_valence": 0.5, "ccc_arousal": 0.25, "ccc_mean": 0.375}, epoch=1)
    assert scores == {"valence": 0.5, "arousal": 0.25}
    with pytest.raises(ConfigError, match=r"fold 3: task 'au' has no validation score at epoch 2"):
        scorer.scores({"ccc_mean": 0.5, "f1_au": float("nan"), "n_frames_au": 0}, epoch=2)
    with pytest.raises(ConfigError, match=r"fold 3: task 'va'"):
        scorer.scores({"f1_au": 0.5}, epoch=1)
    dropping = TaskScorer(1, [Task.VA], MissingScore.DROP)
    with pytest.raises(ConfigError, match="no trained task has a validation score"):
        dropping.scores({"ccc_mean": float("nan")}, epoch=1)


def test_an_unimproved_run_warns_loudly_and_epoch_zero_is_never_kept(caplog):
    best = Best()
    with pytest.raises(RuntimeError, match="refusing to save an untrained model"):
        warn_if_untrained(0, best, baseline=0.1)
    best.offer(1, 0.05, {"w": np.zeros(1)})
    with caplog.at_level(logging.WARNING):
        assert warn_if_untrained(2, best, baseline=0.1)
    assert "fold 2: NO EPOCH BEAT THE UNTRAINED MODEL" in caplog.text
    assert not warn_if_untrained(2, best, baseline=0.01)


def test_per_task_selection_saves_one_checkpoint_per_task(tmp_path):
    store, rows = build_dataset(tmp_path, n_train=3, n_validation=1, n_test=1, frames=(50, 70), seed=5)
    config = config_for(
        "abaw4-mtl", tmp_path, tasks=["va", "expr", "au"], epochs=3, selection={"mode": "per_task"}
    )
    summary = run_training(config, store, rows)
    fold = summary["folds"][0]
    directory = fold_dir(config.output_dir, 0)
    with (directory / "log.csv").open() as handle:
        log_rows = list(csv.DictReader(handle))[1:]
    for task, column in (("va", "val_ccc_mean"), ("expr", "val_f1_expr"), ("au", "val_f1_au")):
        loaded = load_checkpoint(task_checkpoint(directory, task))
        scores = [float(r[column]) for r in log_rows]
        assert loaded.meta["task"] == task
        assert scores[loaded.meta["best_epoch"] - 1] == pytest.approx(max(scores), abs=2e-4)
        assert fold["task_best_epochs"][task] == loaded.meta["best_epoch"]
    written = run_prediction(config, store, rows, out_dir=tmp_path / "pred")
    assert written


def test_unlabelled_frames_are_deleted_and_partitions_standardised_on_their_own(tmp_path):
    store, rows = build_dataset(tmp_path, n_train=3, n_validation=1, n_test=1, frames=(50, 70), seed=6)
    config = config_for("lstm-fusion", tmp_path, epochs=1, unlabeled="delete", normalisation="per_partition")
    summary = run_training(config, store, rows)
    # write_video leaves the first 3 frames of each video without VA labels: 4 train/validation videos
    assert summary["unlabelled_frames_deleted"] == 3 * 4
    predictions = load_predictions(fold_dir(config.output_dir, 0) / "predictions.npz")
    validation = next(r.video_id for r in rows if r.split is Split.VALIDATION)
    test = next(r.video_id for r in rows if r.split is Split.TEST)
    assert predictions[validation]["frame_index"][0] == 3  # cut
    assert predictions[test]["frame_index"][0] == 0  # test videos stay whole


@pytest.mark.parametrize("scope", ["dimension", "feature"])
def test_per_partition_standardises_each_partition_with_its_own_statistics(tmp_path, scope):
    from avpipe.models.data import load_video
    from avpipe.models.normalisation import standardise
    from avpipe.models.table import FrameTable

    store, rows = build_dataset(tmp_path, n_train=2, n_validation=1, n_test=1, frames=(40, 50), seed=8)
    config = config_for("lstm-fusion", tmp_path, normalisation="per_partition", normalisation_scope=scope)
    videos = [load_video(store, config.feature_specs, r.video_id, require_labels=False) for r in rows]
    table = FrameTable(videos, [spec.key for spec in config.feature_specs])
    ids = {split: [r.video_id for r in rows if r.split is split] for split in Split}
    table.features["mfcc"][table.rows_of(ids[Split.VALIDATION])] += 50.0  # a shifted partition
    partitions = [ids[Split.VALIDATION], ids[Split.TEST]]
    stats, standardised = standardise(config, table, ids[Split.TRAIN], partitions, "key")
    for split in Split:
        own = table.rows_of(ids[split]) & table.valid["mfcc"]
        values = standardised["mfcc"][own]
        if scope == "dimension":
            np.testing.assert_allclose(values.mean(axis=0), 0.0, atol=1e-4)
            np.testing.assert_allclose(values.std(axis=0), 1.0, atol=1e-3)
        else:  # one mean and std over all values of the feature: per dimension they differ
            assert values.mean() == pytest.approx(0.0, abs=1e-4)
            assert values.std(ddof=1) == pytest.approx(1.0, abs=1e-3)
            assert np.ptp(stats.mean["mfcc"]) == 0 and np.abs(values.mean(axis=0)).max() > 0.1


def test_restore_best_continues_from_the_best_weights(tmp_path, monkeypatch):
    store, rows = build_dataset(tmp_path, n_train=2, n_validation=1, n_test=0, frames=(50, 60), seed=9)
    scores = iter([0.0, 0.1, 0.3, 0.2, 0.25, 0.4, 0.1])  # the untrained model, then epochs 1-6
    monkeypatch.setattr(FoldTrainer, "validate", lambda self, *args: {"ccc_mean": next(scores)})
    loads = []
    original = torch.nn.Module.load_state_dict
    monkeypatch.setattr(
        torch.nn.Module,
        "load_state_dict",
        lambda self, state, *a, **k: loads.append(1) or original(self, state, *a, **k),
    )
    for restore, expected in ((True, 3 + 1), (False, 1)):  # epochs 3, 4 and 6 did not improve; the end
        scores = iter([0.0, 0.1, 0.3, 0.2, 0.25, 0.4, 0.1])
        loads.clear()
        config = config_for("lstm-fusion", tmp_path, epochs=6, min_epochs=6, restore_best=restore)
        fold = run_training(config, store, rows)["folds"][0]
        assert (fold["best_epoch"], len(loads)) == (5, expected)


def test_separate_va_models_are_selected_per_emotion(tmp_path):
    store, rows = build_dataset(tmp_path, n_train=3, n_validation=1, n_test=1, frames=(50, 70), seed=11)
    config = config_for(
        "lstm-fusion", tmp_path, epochs=4, model={"separate_va": True}, selection={"mode": "per_task"}
    )
    fold = run_training(config, store, rows)["folds"][0]
    directory = fold_dir(config.output_dir, 0)
    with (directory / "log.csv").open() as handle:
        log_rows = list(csv.DictReader(handle))[1:]
    for dim, name in enumerate(("valence", "arousal")):
        loaded = load_checkpoint(task_checkpoint(directory, name))
        scores = [float(r[f"val_ccc_{name}"]) for r in log_rows]
        assert (loaded.meta["criterion"], loaded.meta["dim"]) == (name, dim)
        assert scores[loaded.meta["best_epoch"] - 1] == pytest.approx(max(scores), abs=2e-4)
        assert fold["task_best_epochs"][name] == loaded.meta["best_epoch"]
    assert run_prediction(config, store, rows, out_dir=tmp_path / "pred")


def test_restore_state_takes_each_emotions_model_from_its_own_best_epoch():
    keys = ["per_dimension.0.w", "per_dimension.1.w"]
    best = Best(3, 0.5, dict.fromkeys(keys, "sum-best"))
    valence, arousal = Best(2, 0.6, dict.fromkeys(keys, "valence-best")), Best(0)
    state = restore_state(best, {"valence": valence, "arousal": arousal}, {"valence": 0, "arousal": 1})
    assert state == {"per_dimension.0.w": "valence-best", "per_dimension.1.w": "sum-best"}
    assert restore_state(best, {"va": valence}, {"va": None}) == best.state  # whole-task criteria


def test_linear_warmup_follows_the_aim3_schedule_stepped_per_epoch(tmp_path):
    store, rows = build_dataset(tmp_path, n_train=2, n_validation=1, n_test=0, frames=(50, 60), seed=12)
    config = config_for(
        "abaw4-mtl",
        tmp_path,
        epochs=5,
        min_epochs=5,
        scheduler="linear_warmup",
        warmup_epochs=2,
        optimizer={"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.5, 0.999]},
    )
    run_training(config, store, rows)
    with (fold_dir(config.output_dir, 0) / "log.csv").open() as handle:
        log_rows = list(csv.DictReader(handle))
    # transformers' get_linear_schedule_with_warmup(warmup 2, total 5), one step per epoch: the lr an
    # epoch leaves for the next is lr * [1/2, 2/2, 2/3, 1/3, 0]; the first epoch runs at lr 0
    expected = [1e-3 * f for f in (0.5, 1.0, 2 / 3, 1 / 3, 0.0)]
    np.testing.assert_allclose([float(r["lr"]) for r in log_rows[1:]], expected, rtol=1e-5, atol=1e-12)
    assert log_rows[1]["val_score"] == log_rows[0]["val_score"]  # lr 0: the weights did not move


@pytest.mark.parametrize(("shuffle", "same"), [("once", True), ("every_epoch", False)])
def test_window_order_is_shuffled_once_or_every_epoch(tmp_path, monkeypatch, shuffle, same):
    from avpipe.models.table import WindowBatches

    store, rows = build_dataset(tmp_path, n_train=3, n_validation=1, n_test=0, frames=(80, 90), seed=13)
    seen: list[int] = []
    original = WindowBatches.gather

    def gather(self, index):
        if self.targets:  # training batches (prediction batches have no targets)
            seen.extend(self.windows[index][:, 0].tolist())
        return original(self, index)

    monkeypatch.setattr(WindowBatches, "gather", gather)
    config = config_for("lstm-fusion", tmp_path, epochs=2, min_epochs=2, shuffle=shuffle, window=16, hop=8)
    run_training(config, store, rows)
    first, second = seen[: len(seen) // 2], seen[len(seen) // 2 :]
    assert sorted(first) == sorted(second) and len(first) > 4
    assert (first == second) is same
    assert first != sorted(first)  # shuffled either way
