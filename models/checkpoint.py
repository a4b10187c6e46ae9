"""Self-contained fold checkpoints: weights plus everything needed to rebuild and feed the model.

A checkpoint holds the model name and config, the inputs (keys, sizes, modalities), the feature specs to
read from the store, the tasks, window and hop, and the standardisation statistics, all as tensors and
plain values, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avpipe.models.base import InputSpec, SequenceModel
from avpipe.models.registry import create_model
from avpipe.models.stats import FeatureStats
from avpipe.models.tasks import TaskSpec, as_specs
from avpipe.pipeline import atomic
from avpipe.pipeline.config.train import FeatureSpec, Modality, TrainConfig
from avpipe.pipeline.errors import StoreError

CHECKPOINT_FORMAT = "avpipe-train-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class LoadedModel:
    model: SequenceModel
    stats: FeatureStats
    features: list[FeatureSpec]
    inputs: list[InputSpec]
    tasks: list[TaskSpec]
    window: int
    hop: int
    fold: int
    meta: dict[str, Any]
    # per-task selection: (task, VA dimension or None, the model whose outputs replace the fold model's)
    task_models: list[tuple[str, int | None, SequenceModel]] = dataclasses.field(default_factory=list)


def save_checkpoint(
    path: Path,
    model: SequenceModel,
    config: TrainConfig,
    inputs: list[InputSpec],
    stats: FeatureStats,
    fold: int,
    meta: dict[str, Any],
) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_name": config.model.name,
        "model_config": dict(config.model.config),
        "separate_va": config.model.separate_va,
        "inputs": [spec.to_dict() for spec in inputs],
        "features": [
            {"extractor": s.extractor, "array": s.array, "modality": s.modality.value}
            for s in config.feature_specs
        ],
        "tasks": [task.key for task in model.context.tasks],
        "task_specs": [task.to_dict() for task in model.context.tasks],  # outputs named by the data
        "window": config.window,
        "hop": config.hop,
        "fold": fold,
        "meta": meta,
        "stats": {name: torch.from_numpy(values) for name, values in stats.to_arrays().items()},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    with atomic.replacing(path) as tmp:  # a unique temp name: two trainers never share one
        torch.save(payload, tmp)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild a fold model from its checkpoint; StoreError naming the file when it is not one."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise StoreError(f"{path}: not a readable checkpoint ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise StoreError(f"{path}: not an avpipe training checkpoint")
    if int(payload.get("version", 0)) > CHECKPOINT_VERSION:
        raise StoreError(f"{path}: checkpoint version {payload['version']} is newer than this avpipe reads")
    inputs = [InputSpec.from_dict(item) for item in payload["inputs"]]
    if "task_specs" in payload:
        tasks = [TaskSpec.from_dict(item) for item in payload["task_specs"]]
    else:  # written before declared tasks: built-in tasks only
        tasks = as_specs(payload["tasks"])
    model = create_model(
        payload["model_name"],
        inputs=inputs,
        tasks=tasks,
        window=int(payload["window"]),
        separate_va=bool(payload.get("separate_va", False)),
        **payload["model_config"],
    )
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    stats = FeatureStats.from_arrays({name: value.numpy() for name, value in payload["stats"].items()})
    features = [
        FeatureSpec(extractor=f["extractor"], array=f["array"], modality=Modality(f["modality"]))
        for f in payload["features"]
    ]
    return LoadedModel(
        model=model,
        stats=stats,
        features=features,
        inputs=inputs,
        tasks=tasks,
        window=int(payload["window"]),
        hop=int(payload["hop"]),
        fold=int(payload["fold"]),
        meta=dict(payload.get("meta", {})),
    )


def config_summary(config: TrainConfig) -> dict[str, Any]:
    """The train config as plain values (for summary.json)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value.value if isinstance(value, enum.Enum) else value

    return plain(config)
