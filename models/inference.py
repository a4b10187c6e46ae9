"""Running a model over whole videos: windows, batched forward passes, per-frame averaging; and the
on-disk format of per-video predictions (``predictions.npz``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from avpipe.models.base import SequenceModel
from avpipe.models.table import PAD_ROW, FrameTable, WindowBatches
from avpipe.models.tasks import BUILTIN, TaskSpec
from avpipe.models.windows import PAD, average_windows
from avpipe.pipeline import atomic
from avpipe.pipeline.labels import TaskKind

# task key -> per-frame outputs: va values (T, 2), expr probabilities (T, 8), au probabilities (T, 12),
# a declared dimension (T, 1), a declared categorical or multi-label task (T, n_classes) probabilities
VideoPrediction = dict[str, np.ndarray]


def device_for(name: str) -> torch.device:
    """``auto`` -> the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_probabilities(
    outputs: Mapping[str, torch.Tensor], tasks: Sequence[TaskSpec] | None = None
) -> dict[str, torch.Tensor]:
    """Model outputs as reported: continuous values as they are, categorical tasks (expression) softmax,
    multi-label tasks (AUs) sigmoid. ``tasks`` give the kinds (default: the built-in tasks')."""
    kinds = {task.key: task.kind for task in (tasks if tasks is not None else BUILTIN.values())}
    converted = {}
    for task, values in outputs.items():
        kind = kinds.get(task, TaskKind.CONTINUOUS)
        if kind is TaskKind.CATEGORICAL:
            converted[task] = torch.softmax(values, dim=-1)
        elif kind is TaskKind.MULTILABEL:
            converted[task] = torch.sigmoid(values)
        else:
            converted[task] = values
    return converted


@torch.no_grad()
def predict_videos(
    model: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    table: FrameTable,
    video_ids: Sequence[str],
    window: int,
    hop: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, VideoPrediction]:
    """Per-frame predictions of each video in ``video_ids``; ``inputs``: the table's standardised arrays."""
    windows, owners = table.windows(video_ids, window, hop)
    if windows.shape[0] == 0:
        return {}
    was_training = model.training
    model.eval()
    outputs: dict[str, list[np.ndarray]] = {}
    for batch in WindowBatches(inputs, {}, windows, batch_size):
        batch = batch.to(device)
        tasks = model.context.tasks if isinstance(model, SequenceModel) else None
        for task, values in to_probabilities(model(batch.inputs, batch.valid), tasks).items():
            outputs.setdefault(task, []).append(values.float().cpu().numpy())
    model.train(was_training)
    stacked = {task: np.concatenate(parts) for task, parts in outputs.items()}
    result = {}
    for position, video_id in enumerate(video_ids):
        mine = owners == position
        span = table.spans[video_id]
        local = np.where(windows[mine] == PAD_ROW, PAD, windows[mine] - span.start)
        result[video_id] = {
            task: average_windows(values[mine], local, span.length).astype(np.float32)
            for task, values in stacked.items()
        }
    return result


# --------------------------------------------------------------------------- predictions.npz


def save_predictions(
    path: Path,
    predictions: Mapping[str, VideoPrediction],
    timelines: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    """Write per-video predictions with each video's ``frame_index`` and ``time`` (from ``timelines``)."""
    arrays: dict[str, np.ndarray] = {"video_ids": np.array(list(predictions), dtype=str)}
    for position, (video_id, prediction) in enumerate(predictions.items()):
        frame_index, time = timelines[video_id]
        arrays[f"{position}/frame_index"] = np.asarray(frame_index, dtype=np.int64)
        arrays[f"{position}/time"] = np.asarray(time, dtype=np.float64)
        for task, values in prediction.items():
            arrays[f"{position}/{task}"] = values
    with atomic.replacing(path) as tmp, tmp.open("wb") as handle:  # a handle: numpy adds no ".npz"
        np.savez_compressed(handle, **arrays)


def load_predictions(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{video id: {"frame_index", "time", task...: array}}`` as written by ``save_predictions``."""
    result: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as data:
        video_ids = [str(v) for v in data["video_ids"]]
        for name in data.files:
            if name == "video_ids":
                continue
            position, _, field = name.partition("/")
            result.setdefault(video_ids[int(position)], {})[field] = data[name]
    return result
