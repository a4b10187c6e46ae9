"""``avpipe predict``: per-frame predictions of every fold model, merged, one CSV per video.

Columns: ``frame_index, time`` (the feature timeline), then per trained task ``valence, arousal``;
``expression`` (class index), ``expression_name`` and ``p_<class>`` probabilities; ``<AU>`` (0/1 at
probability 0.5) and ``p_<AU>``. A task the dataset declares: a dimension ``<name>``; a categorical task
``<name>`` (class index), ``<name>_name`` and ``p_<name>_<class>``; a multi-label task ``<name>_<class>``
(0/1) and ``p_<name>_<class>``, with the dataset's class names. Valence/arousal of the folds are merged by
CCC centering, every other output is the folds' mean.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from avpipe.models.checkpoint import LoadedModel, load_checkpoint
from avpipe.models.data import load_videos
from avpipe.models.experiment import (
    CHECKPOINT_FILE,
    TASK_CHECKPOINT_PREFIX,
    fold_dir,
    read_summary,
    replace_outputs,
)
from avpipe.models.inference import device_for, predict_videos
from avpipe.models.merge import merge_folds
from avpipe.models.metrics import AU_THRESHOLD
from avpipe.models.table import FrameTable
from avpipe.models.tasks import TaskSpec, as_specs
from avpipe.pipeline import atomic
from avpipe.pipeline.config.train import Task, TrainConfig
from avpipe.pipeline.errors import ConfigError, StoreError
from avpipe.pipeline.labels import VA_NAMES, TaskKind
from avpipe.pipeline.manifest import ManifestRow, Split
from avpipe.pipeline.store import FeatureStore, shard_name

log = logging.getLogger(__name__)


def load_fold_models(output_dir: str | Path, device: torch.device) -> list[LoadedModel]:
    """The checkpoints of the folds of the last training run; they agree on inputs, tasks and windows."""
    summary = read_summary(output_dir)
    paths = [fold_dir(output_dir, int(fold["fold"])) / CHECKPOINT_FILE for fold in summary["folds"]]
    missing = [path for path in paths if not path.is_file()]
    if missing or not paths:
        raise StoreError(
            f"{missing[0] if missing else output_dir}: checkpoint missing; run `avpipe train` again"
        )
    models = [load_checkpoint(path, device) for path in paths]
    for path, loaded in zip(paths, models, strict=True):
        # per-task selection: a criterion's outputs (a task or a VA dimension) come from its own checkpoint
        for task_path in sorted(path.parent.glob(f"{TASK_CHECKPOINT_PREFIX}*.pt")):
            criterion = load_checkpoint(task_path, device)
            task, dim = str(criterion.meta["task"]), criterion.meta.get("dim")
            loaded.task_models.append((task, None if dim is None else int(dim), criterion.model))
    first = models[0]
    for path, other in zip(paths[1:], models[1:], strict=True):
        if (other.inputs, other.tasks, other.window, other.hop) != (
            first.inputs,
            first.tasks,
            first.window,
            first.hop,
        ):
            raise StoreError(f"{path}: trained with other inputs, tasks or windows than {paths[0]}; retrain")
    return models


def select_videos(rows: Sequence[ManifestRow], split: str | None) -> list[str]:
    if split is None:
        return [row.video_id for row in rows]
    try:
        wanted = Split(split)
    except ValueError:
        choices = ", ".join(s.value for s in Split)
        raise ConfigError("--split", f"must be one of {choices}, got {split!r}") from None
    return [row.video_id for row in rows if row.split is wanted]


def run_prediction(
    config: TrainConfig,
    store: FeatureStore,
    rows: Sequence[ManifestRow],
    out_dir: str | Path | None = None,
    split: str | None = None,
) -> list[Path]:
    """Predict every selected manifest video with every fold model; write and return the CSV paths."""
    device = device_for(config.device)
    models = load_fold_models(config.output_dir, device)
    first = models[0]
    out = Path(out_dir) if out_dir is not None else Path(config.predictions_dir)
    videos, skipped = load_videos(
        store,
        first.features,
        select_videos(rows, split),
        with_labels=False,
        mask_audio_by_speech=config.mask_audio_by_speech,
    )
    if not videos:
        raise StoreError(f"{store.root}: none of the selected videos has every feature the models need")
    table = FrameTable(videos, [spec.key for spec in first.inputs])
    video_ids = [video.video_id for video in videos]
    per_fold = [
        _predict_fold(m, table, video_ids, config.batch_size, device)
        for m in tqdm(models, desc="predict", unit="fold", leave=False, disable=None)
    ]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for video in videos:
        merged = merge_folds([fold[video.video_id] for fold in per_fold], config.merge)
        path = out / (shard_name(video.video_id)[: -len(".h5")] + ".csv")
        write_prediction_csv(path, video.frame_index, video.time, merged, first.tasks)
        written.append(path)
    log.info("wrote %d prediction files to %s (%d videos skipped)", len(written), out, len(skipped))
    return written


def _predict_fold(
    loaded: LoadedModel, table: FrameTable, video_ids: list[str], batch_size: int, device: torch.device
) -> dict[str, dict[str, np.ndarray]]:
    inputs = loaded.stats.view(table)  # standardised batch by batch
    predictions = predict_videos(
        loaded.model, inputs, table, video_ids, loaded.window, loaded.hop, batch_size, device
    )
    for task, dim, model in loaded.task_models:
        outputs = predict_videos(
            model, inputs, table, video_ids, loaded.window, loaded.hop, batch_size, device
        )
        for video_id, prediction in predictions.items():
            replace_outputs(prediction, outputs[video_id], task, dim)
    return predictions


def write_prediction_csv(
    path: Path,
    frame_index: np.ndarray,
    time: np.ndarray,
    prediction: Mapping[str, np.ndarray],
    tasks: Sequence[Task] | Sequence[TaskSpec],
) -> None:
    header = ["frame_index", "time"]
    columns: list[list[str]] = [[str(int(i)) for i in frame_index], [f"{t:.4f}" for t in time]]
    for task in as_specs(tasks):
        names, cols = _task_columns(task, prediction[task.key])
        header += names
        columns += cols
    with atomic.replacing(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(zip(*columns, strict=True))


def _task_columns(task: TaskSpec, values: np.ndarray) -> tuple[list[str], list[list[str]]]:
    """The CSV columns of one task's per-frame outputs (module docstring)."""
    if task.kind is TaskKind.CONTINUOUS:
        names = list(VA_NAMES) if task.key == Task.VA.value else [task.name]
        return names, [[f"{v:.4f}" for v in values[:, d]] for d in range(len(names))]
    if task.kind is TaskKind.CATEGORICAL:
        classes = np.argmax(values, axis=1)
        prefix = "expression" if task.key == Task.EXPR.value else task.name
        p_prefix = "p_" if task.key == Task.EXPR.value else f"p_{task.name}_"
        names = [prefix, f"{prefix}_name", *(f"{p_prefix}{label}" for label in task.names)]
        cols = [[str(int(c)) for c in classes], [task.names[c] for c in classes]]
        return names, cols + [[f"{p:.4f}" for p in values[:, c]] for c in range(task.n_outputs)]
    prefix = "" if task.key == Task.AU.value else f"{task.name}_"
    names = [*(f"{prefix}{label}" for label in task.names), *(f"p_{prefix}{label}" for label in task.names)]
    flags = [[str(int(p >= AU_THRESHOLD)) for p in values[:, u]] for u in range(task.n_outputs)]
    return names, flags + [[f"{p:.4f}" for p in values[:, u]] for u in range(task.n_outputs)]
