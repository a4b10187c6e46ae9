"""DVC stage `evaluate`: metrics of the fold models' held-out predictions (``metrics.json``) and plot data
(learning curves, predicted vs annotated valence/arousal per validation video) under ``train.eval_dir``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from models.evaluation import run_evaluation
from pipeline.manifest import read_manifest
from pipeline.store import FeatureStore

if TYPE_CHECKING:
    from pipeline.params import Params

log = logging.getLogger(__name__)

HEADLINE = ("ccc_valence", "ccc_arousal", "f1_expr", "f1_au", "mtl_score")


def run(params: Params) -> int:
    """The ``avpipe evaluate`` command."""
    metrics = run_evaluation(
        params.train, FeatureStore(params.store.root), read_manifest(params.manifest.path)
    )
    for split in ("validation", "cross_validation", "test"):
        if split in metrics:
            shown = ", ".join(
                f"{k} {metrics[split][k]:.4f}" for k in HEADLINE if metrics[split].get(k) is not None
            )
            log.info("%s: %s", split, shown)
    return 0
