"""The evaluate stage's work: metrics of the fold models' held-out predictions, and plot data.

Every train/validation video is predicted by the one fold model that did not train on it (out-of-fold).
Metrics are computed over all frames of a split (``validation``: the official validation videos;
``cross_validation``: every out-of-fold video; one entry per fold) and per video. Test videos are
predicted by every fold model; their predictions are merged (CCC centering) and scored when labeled.

Output layout (``train.eval_dir``)::

    metrics.json                    aggregate metrics (dvc metrics)
    per_video.json                  metrics of every evaluated video
    plots/learning/fold_<i>.csv     learning curves: epoch, lr, train losses, validation metrics
    plots/videos/<video>.csv        per validation video: time, annotated and predicted valence/arousal
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avpipe.models.data import read_labels
from avpipe.models.experiment import LOG_FILE, PREDICTIONS_FILE, fold_dir, read_summary, write_json
from avpipe.models.inference import load_predictions
from avpipe.models.merge import merge_folds
from avpipe.models.metrics import task_metrics
from avpipe.models.tasks import TaskSpec
from avpipe.models.trainer import split_metrics
from avpipe.pipeline.config.train import MergeMethod, TrainConfig
from avpipe.pipeline.errors import StoreError
from avpipe.pipeline.labels import LABELS_EXTRACTOR, UNLABELED_VA, FrameLabels
from avpipe.pipeline.manifest import ManifestRow, Split
from avpipe.pipeline.store import FeatureStore, shard_name

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PER_VIDEO_FILE = "per_video.json"
PLOTS_DIR = "plots"
LEARNING_DIR = "learning"
VIDEOS_DIR = "videos"
OUTPUT_FIELDS = ("frame_index", "time")


def run_evaluation(config: TrainConfig, store: FeatureStore, rows: Sequence[ManifestRow]) -> dict[str, Any]:
    """Compute and write metrics.json, per_video.json and the plot CSVs; return the metrics."""
    summary = read_summary(config.output_dir)
    split_of = {row.video_id: row.split for row in rows}
    out = Path(config.eval_dir)
    oof: dict[str, dict[str, np.ndarray]] = {}
    test_parts: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
    fold_videos: dict[int, list[str]] = {}
    for fold_info in summary["folds"]:
        fold = int(fold_info["fold"])
        predictions = _fold_predictions(config, fold)
        fold_videos[fold] = list(fold_info["validation_videos"])
        for video_id in fold_videos[fold]:
            oof[video_id] = predictions[video_id]
        for video_id in summary.get("test", []):
            test_parts[video_id].append(predictions[video_id])
    test = {video_id: _merged(parts, config.merge) for video_id, parts in test_parts.items()}
    labels = {
        v: read_labels(store, v, p["frame_index"])
        for v, p in {**oof, **test}.items()
        if _has_labels(store, v)
    }
    outputs = {v: _task_outputs(p) for v, p in {**oof, **test}.items()}
    tasks = summary_tasks(summary)
    metrics = _aggregate(outputs, labels, fold_videos, split_of, list(test), tasks)
    per_video = {v: _clean(task_metrics(outputs[v], labels[v], tasks)) for v in outputs if v in labels}
    write_json(out / METRICS_FILE, _clean(metrics))
    write_json(out / PER_VIDEO_FILE, per_video)
    _write_learning_curves(config, out / PLOTS_DIR / LEARNING_DIR, sorted(fold_videos))
    plotted = _plot_videos(oof, labels, fold_videos, split_of)
    _write_video_plots(out / PLOTS_DIR / VIDEOS_DIR, {v: oof[v] for v in plotted}, labels)
    return metrics


def summary_tasks(summary: Mapping[str, Any]) -> list[TaskSpec] | None:
    """The trained tasks as summary.json records them (None for a summary written before it did)."""
    return [TaskSpec.from_dict(item) for item in summary["tasks"]] if "tasks" in summary else None


def _fold_predictions(config: TrainConfig, fold: int) -> dict[str, dict[str, np.ndarray]]:
    path = fold_dir(config.output_dir, fold) / PREDICTIONS_FILE
    if not path.is_file():
        raise StoreError(f"{path}: fold {fold} has no predictions; run `avpipe train` again")
    return load_predictions(path)


def _merged(parts: list[dict[str, np.ndarray]], method: MergeMethod) -> dict[str, np.ndarray]:
    merged = merge_folds([_task_outputs(p) for p in parts], method)
    return {**{name: parts[0][name] for name in OUTPUT_FIELDS}, **merged}


def _task_outputs(prediction: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in prediction.items() if k not in OUTPUT_FIELDS}


def _has_labels(store: FeatureStore, video_id: str) -> bool:
    return store.shard_path(LABELS_EXTRACTOR, video_id).exists()


def _aggregate(
    outputs: Mapping[str, dict[str, np.ndarray]],
    labels: Mapping[str, FrameLabels],
    fold_videos: Mapping[int, list[str]],
    split_of: Mapping[str, Split],
    test_ids: list[str],
    tasks: list[TaskSpec] | None = None,
) -> dict[str, Any]:
    def over(video_ids: list[str]) -> dict[str, float] | None:
        labeled = [v for v in video_ids if v in labels]
        if not labeled:
            return None
        return {**split_metrics(outputs, labels, labeled, tasks), "n_videos": len(labeled)}

    everything = [v for videos in fold_videos.values() for v in videos]
    result: dict[str, Any] = {
        "validation": over([v for v in everything if split_of.get(v) is Split.VALIDATION]),
        "cross_validation": over(everything),
        "folds": {str(fold): over(videos) for fold, videos in sorted(fold_videos.items())},
        "test": over(test_ids),
    }
    return {key: value for key, value in result.items() if value is not None}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_learning_curves(config: TrainConfig, folder: Path, folds: list[int]) -> None:
    """Each fold's per-epoch log, copied where ``dvc plots`` looks (one file per fold)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for fold in folds:
        source = fold_dir(config.output_dir, fold) / LOG_FILE
        if source.is_file():
            shutil.copyfile(source, folder / f"fold_{fold}.csv")


def _plot_videos(
    oof: Mapping[str, Any],
    labels: Mapping[str, FrameLabels],
    fold_videos: Mapping[int, list[str]],
    split_of: Mapping[str, Split],
) -> list[str]:
    """The official validation videos; without any, the first fold's videos."""
    chosen = [v for v in oof if split_of.get(v) is Split.VALIDATION and v in labels]
    if not chosen and fold_videos:
        chosen = [v for v in fold_videos[min(fold_videos)] if v in labels]
    return sorted(chosen)


def _write_video_plots(
    folder: Path, predictions: Mapping[str, Mapping[str, np.ndarray]], labels: Mapping[str, FrameLabels]
) -> None:
    """Per video: time, annotated and predicted valence and arousal, at the frames labeled for VA."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for video_id, prediction in predictions.items():
        if "va" not in prediction:
            continue
        annotated = labels[video_id].valence_arousal
        labeled = np.all(annotated != UNLABELED_VA, axis=1)
        path = folder / (shard_name(video_id)[: -len(".h5")] + ".csv")
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["frame_index", "time", "valence", "valence_pred", "arousal", "arousal_pred"])
            for row in np.flatnonzero(labeled):
                va, pred = annotated[row], prediction["va"][row]
                writer.writerow(
                    [
                        int(prediction["frame_index"][row]),
                        f"{prediction['time'][row]:.4f}",
                        f"{va[0]:.4f}",
                        f"{pred[0]:.4f}",
                        f"{va[1]:.4f}",
                        f"{pred[1]:.4f}",
                    ]
                )
