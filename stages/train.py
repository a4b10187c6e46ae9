"""DVC stage `train`: k-fold training of the configured model (``train`` params, with its preset) on the
cached features; checkpoints, per-fold logs and held-out predictions under ``train.output_dir``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from avpipe.models.experiment import run_training
from avpipe.pipeline.manifest import read_manifest
from avpipe.pipeline.store import FeatureStore

if TYPE_CHECKING:
    from avpipe.pipeline.config import Params

log = logging.getLogger(__name__)


def run(params: Params) -> int:
    """The ``avpipe train`` command."""
    store = FeatureStore(params.store.root)
    dataset = f"dataset {params.dataset.adapter!r} at {params.dataset.root}"
    summary = run_training(params.train, store, read_manifest(params.manifest.path), dataset)
    moved = summary["moved_to_validation"]
    if moved["count"]:
        log.warning(
            "%d training videos validated in fold 0 with their subject (summary.json)", moved["count"]
        )
    log.info("tasks: %s", ", ".join(task["key"] for task in summary["tasks"]))
    for fold in summary["folds"]:
        if not fold["beat_untrained"]:
            log.warning("fold %d: no trained epoch beat the untrained model (summary.json)", fold["fold"])
        log.info(
            "fold %d: best score %s at epoch %d of %d (%.1fs)",
            fold["fold"],
            "n/a" if fold["best_score"] is None else f"{fold['best_score']:.4f}",
            fold["best_epoch"],
            fold["epochs_run"],
            fold["seconds"],
        )
    return 0
