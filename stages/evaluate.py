"""DVC stage `evaluate`: metrics of the fold models' held-out predictions and plot data.

Everything goes to ``train.eval_dir`` (``metrics.json`` with per-fold numbers, ``per_video.json``, plot
CSVs of every validation frame). For DVC experiments, small copies go to ``results.dir``:
``metrics/train.json`` (per split: CCC valence/arousal/mean, F1s, MTL score; a declared task's score, and
accuracy for a categorical one), ``plots/learning/`` (one
learning curve per fold) and ``plots/videos/<video>_<dimension>.csv`` (annotated vs predicted, thinned
to ``results.plot_points`` frames; how many curves were thinned is logged and in the stage report).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from avpipe.models.evaluation import LEARNING_DIR, PLOTS_DIR, VIDEOS_DIR, run_evaluation, summary_tasks
from avpipe.models.experiment import read_summary
from avpipe.pipeline.manifest import read_manifest
from avpipe.pipeline.results import (
    TRAIN_METRICS,
    copy_learning_curves,
    headline_train_metrics,
    write_json,
    write_prediction_plots,
    write_stage_metrics,
)
from avpipe.pipeline.store import FeatureStore

if TYPE_CHECKING:
    from avpipe.pipeline.config import Params

log = logging.getLogger(__name__)

REPORT_FILE = "evaluate.json"


def run(params: Params) -> int:
    """The ``avpipe evaluate`` command."""
    metrics = run_evaluation(
        params.train, FeatureStore(params.store.root), read_manifest(params.manifest.path)
    )
    tasks = summary_tasks(read_summary(params.train.output_dir)) or []
    headline = headline_train_metrics(
        metrics, [m for t in tasks if not t.builtin for m in t.headline_metrics]
    )
    for split, values in headline.items():
        log.info("%s: %s", split, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    write_stage_metrics(params.results, TRAIN_METRICS.removesuffix(".json"), headline)
    plots = Path(params.train.eval_dir) / PLOTS_DIR
    curves = copy_learning_curves(plots / LEARNING_DIR, params.results)
    counts = write_prediction_plots(plots / VIDEOS_DIR, params.results)
    log.info(
        "plots: %d learning curves, %d prediction curves (%d thinned to %d points) in %s",
        curves,
        counts["curves"],
        counts["thinned"],
        params.results.plot_points,
        params.results.plots_dir,
    )
    write_json(
        Path(params.runner.reports) / REPORT_FILE,
        {"learning_curves": curves, **{f"prediction_{k}": v for k, v in counts.items()}},
    )
    if not headline:
        log.error("evaluate: no split has a labeled video to score (%s)", params.train.eval_dir)
        return 1
    return 0
