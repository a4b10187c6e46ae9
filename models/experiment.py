"""The train stage's work: k-fold training on cached features; a checkpoint, log and predictions per fold.

Output layout (``train.output_dir``)::

    folds.json                  the fold plan (video ids per fold, test videos)
    stats/<hash>.npz            standardisation statistics per training set (cache)
    fold_<i>/model.pt           best checkpoint of fold i (self-contained, see avpipe.models.checkpoint)
    fold_<i>/model_<name>.pt    with ``train.selection.mode: per_task``: each criterion's best checkpoint
                                (a task, or valence / arousal with model.separate_va); the fold's
                                predictions of that task (or dimension) come from it
    fold_<i>/log.csv            per-epoch losses, learning rate and validation metrics
    fold_<i>/predictions.npz    per-frame predictions of fold i's validation videos and of the test videos
    summary.json                config, inputs, tasks (key, kind, the data's dimension or class names,
                                labelled frames), per-fold best epoch and score, skipped videos, timings
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avpipe.models.base import InputSpec
from avpipe.models.checkpoint import config_summary, save_checkpoint
from avpipe.models.data import VideoData, iter_videos, resolve_inputs, without_features
from avpipe.models.folds import FoldPlan, make_folds
from avpipe.models.inference import device_for, save_predictions
from avpipe.models.losses import validate_losses
from avpipe.models.normalisation import standardise
from avpipe.models.registry import validate_model_config
from avpipe.models.selection import selection_criteria
from avpipe.models.stats import stats_key
from avpipe.models.table import FrameTable
from avpipe.models.tasks import data_tasks, resolve_tasks
from avpipe.models.trainer import FoldTrainer
from avpipe.models.unlabeled import delete_unlabelled
from avpipe.pipeline.config.train import TrainConfig, UnlabeledFrames
from avpipe.pipeline.errors import AvpipeError, StoreError
from avpipe.pipeline.labels import LABELS_EXTRACTOR, FrameLabels
from avpipe.pipeline.manifest import ManifestRow
from avpipe.pipeline.store import FeatureStore

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
FOLDS_FILE = "folds.json"
CHECKPOINT_FILE = "model.pt"
LOG_FILE = "log.csv"
PREDICTIONS_FILE = "predictions.npz"
TASK_CHECKPOINT_PREFIX = "model_"


def fold_dir(output_dir: str | Path, fold: int) -> Path:
    return Path(output_dir) / f"fold_{fold}"


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, allow_nan=False, default=str) + "\n", encoding="utf-8")


def read_summary(output_dir: str | Path) -> dict[str, Any]:
    path = Path(output_dir) / SUMMARY_FILE
    if not path.is_file():
        raise StoreError(f"{path}: no training summary; run `avpipe train` first")
    return json.loads(path.read_text(encoding="utf-8"))


def run_training(
    config: TrainConfig, store: FeatureStore, rows: Sequence[ManifestRow], dataset: str | None = None
) -> dict[str, Any]:
    """Train every fold of ``config.folds.folds_to_run()``; return (and write) the summary.

    The tasks are ``train.tasks`` resolved against the labels of the train/validation videos (null: every
    task they carry); ``dataset`` names the data in the error for a task they lack.
    """
    started = time.perf_counter()
    validate_model_config(config.model.name, config.model.config)  # fail before loading any data
    validate_losses(config)
    out = Path(config.output_dir)
    plan = make_folds(list(rows), config.folds)
    catalogue = data_tasks(_pool_labels(store, plan.pool))
    tasks = resolve_tasks(config.tasks, catalogue, dataset or f"the store {store.root}")
    log.info(
        "training tasks: %s",
        ", ".join(
            f"{t.key} ({catalogue.frames[t.key]} labelled frames, {catalogue.partial[t.key]} partially)"
            for t in tasks
        ),
    )
    _remove_previous_run(out)
    write_json(out / FOLDS_FILE, plan.to_dict())
    specs = config.feature_specs
    skipped: dict[str, str] = {}
    videos: list[VideoData] = []  # timelines and labels only: the features go into the table
    deleted = [0]
    pool_stream = iter_videos(
        store, specs, plan.pool, mask_audio_by_speech=config.mask_audio_by_speech, skipped=skipped
    )
    if config.unlabeled is UnlabeledFrames.DELETE:
        pool_stream = _delete_unlabelled(pool_stream, [t.key for t in tasks], skipped, deleted)
    test_stream = iter_videos(
        store,
        specs,
        plan.test,
        require_labels=False,
        mask_audio_by_speech=config.mask_audio_by_speech,
        skipped=skipped,
    )
    table = FrameTable(
        (_kept(video, videos) for video in chain(pool_stream, test_stream)),
        [spec.key for spec in specs],
        dtype=np.dtype(config.table_dtype),
        cache_dir=_table_cache(config),
    )
    deleted = deleted[0]
    pool_ids = set(plan.pool)
    pool = [video for video in videos if video.video_id in pool_ids]
    if not pool:
        raise StoreError(
            f"{store.root}: no train/validation video has every feature of {[s.key for s in specs]}"
        )
    inputs = resolve_inputs(store, specs, pool[0].video_id)
    labels = {video.video_id: video.labels for video in videos}
    timelines = {video.video_id: (video.frame_index, video.time) for video in videos}
    if config.threads:
        torch.set_num_threads(config.threads)
    device = device_for(config.device)
    trainer = FoldTrainer(config, inputs, table, labels, device, tasks)
    test_ids = [v for v in plan.test if v in labels]
    load_seconds = time.perf_counter() - started
    log.info(
        "loaded %d videos (%d skipped) in %.1fs; training on %s",
        len(videos),
        len(skipped),
        load_seconds,
        device,
    )
    folds = [
        _train_one(trainer, store, config, plan, fold, inputs, test_ids, timelines)
        for fold in config.folds.folds_to_run()
    ]
    summary = {
        "config": config_summary(config),
        "inputs": [spec.to_dict() for spec in inputs],
        # the trained tasks as the data declares them, with their labelled train/validation frames and
        # those labelled for some of the task's dimensions or classes only
        "tasks": [
            {
                **t.to_dict(),
                "labelled_frames": catalogue.frames[t.key],
                "partially_labelled_frames": catalogue.partial[t.key],
            }
            for t in tasks
        ],
        "device": str(device),
        "folds": folds,
        "test": test_ids,
        "moved_to_validation": {"count": len(plan.moved), "videos": list(plan.moved)},
        "unlabelled_frames_deleted": deleted,
        "skipped": skipped,
        "load_seconds": round(load_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(out / SUMMARY_FILE, summary)
    return summary


def _kept(video: VideoData, kept: list[VideoData]) -> VideoData:
    kept.append(without_features(video))
    return video


def _table_cache(config: TrainConfig) -> Path | None:
    """Where the on-disk table goes (``train.table_cache``), or None to keep it in memory."""
    return Path(config.table_cache) if config.table_cache else None


def _pool_labels(store: FeatureStore, video_ids: Sequence[str]) -> Iterator[tuple[str, FrameLabels]]:
    """The stored labels of the train/validation videos that have a labels shard (what tasks they carry)."""
    for video_id in video_ids:
        if store.shard_path(LABELS_EXTRACTOR, video_id).exists():
            try:
                yield video_id, FrameLabels.from_feature_set(store.read(LABELS_EXTRACTOR, video_id))
            except (AvpipeError, KeyError) as err:  # the feature loading skips and reports the video
                log.warning("labels of %s unreadable: %s", video_id, err)


def _delete_unlabelled(
    pool: Iterator[VideoData], tasks: list[str], skipped: dict[str, str], deleted: list[int]
) -> Iterator[VideoData]:
    """``train.unlabeled: delete``: the pool without unlabelled frames; videos left empty are skipped."""
    n_videos = 0
    for video in pool:
        cut, removed = delete_unlabelled(video, tasks)
        deleted[0] += removed
        n_videos += 1
        if len(cut):
            yield cut
        else:
            skipped[video.video_id] = f"no frame labelled for {tasks}"
    log.info("train.unlabeled = delete: removed %d unlabelled frames from %d videos", deleted[0], n_videos)


def _remove_previous_run(out: Path) -> None:
    """Folds of an earlier run must not be mixed into this one's evaluation or predictions."""
    (out / SUMMARY_FILE).unlink(missing_ok=True)
    for folder in out.glob("fold_*"):
        if folder.is_dir():
            shutil.rmtree(folder)


def _train_one(
    trainer: FoldTrainer,
    store: FeatureStore,
    config: TrainConfig,
    plan: FoldPlan,
    fold: int,
    inputs: list[InputSpec],
    test_ids: list[str],
    timelines: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, Any]:
    """Train fold ``fold``; write its checkpoint, log and predictions; return its summary entry."""
    loaded = trainer.labels
    train_ids = [v for v in plan.train_videos(fold) if v in loaded]
    val_ids = [v for v in plan.folds[fold] if v in loaded]
    if not train_ids or not val_ids:
        raise StoreError(f"fold {fold}: no readable {'training' if not train_ids else 'validation'} video")
    key = stats_key(store, config.feature_specs, inputs, train_ids)
    if config.unlabeled is UnlabeledFrames.DELETE:  # other frames, other statistics
        key += "-delete-" + "-".join(task.key.replace(":", "_") for task in trainer.tasks)
    stats, standardised = standardise(config, trainer.table, train_ids, [val_ids, test_ids], key)
    directory = fold_dir(config.output_dir, fold)
    result = trainer.train_fold(fold, standardised, train_ids, val_ids, log_path=directory / LOG_FILE)
    predictions = trainer.predict(result.model, standardised, val_ids + test_ids)
    meta = {"best_epoch": result.best_epoch, "best_score": result.best_score, "train_videos": train_ids}
    save_checkpoint(directory / CHECKPOINT_FILE, result.model, config, inputs, stats, fold, meta)
    task_epochs = {}
    criteria = {c.name: c for c in selection_criteria(trainer.tasks, config.model.separate_va)}
    for name, (epoch, score, state) in result.task_best.items():
        criterion = criteria[name]
        model = trainer.build_model().to(trainer.device)
        model.load_state_dict(state)
        outputs = trainer.predict(model, standardised, val_ids + test_ids)
        for video_id, prediction in predictions.items():
            replace_outputs(prediction, outputs[video_id], criterion.task.value, criterion.dim)
        task_meta = {**meta, "criterion": name, "task": criterion.task.value, "dim": criterion.dim}
        task_meta.update(best_epoch=epoch, best_score=score)
        save_checkpoint(task_checkpoint(directory, name), model, config, inputs, stats, fold, task_meta)
        task_epochs[name] = epoch
    save_predictions(directory / PREDICTIONS_FILE, predictions, timelines)
    return {
        "fold": fold,
        "train_videos": train_ids,
        "validation_videos": val_ids,
        "best_epoch": result.best_epoch,
        "best_score": result.best_score,
        "task_best_epochs": task_epochs,  # per_task selection: the epoch each task's checkpoint holds
        "untrained_score": result.baseline_score,
        "beat_untrained": result.beat_untrained,
        "dropped_tasks": result.dropped_tasks,
        "epochs_run": result.epochs_run,
        "seconds": round(result.seconds, 3),
    }


def task_checkpoint(directory: Path, criterion: str) -> Path:
    """Where per-task selection keeps a criterion's best model of a fold (avpipe.models.selection)."""
    return directory / f"{TASK_CHECKPOINT_PREFIX}{criterion}.pt"


def replace_outputs(
    prediction: dict[str, np.ndarray], outputs: Mapping[str, np.ndarray], task: str, dim: int | None
) -> None:
    """A criterion's outputs over the fold model's: the whole task, or one VA dimension."""
    if dim is None:
        prediction[task] = outputs[task]
    else:
        prediction[task] = prediction[task].copy()
        prediction[task][:, dim] = outputs[task][:, dim]
