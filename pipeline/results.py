"""Small, git-tracked result files for DVC experiments (``results.dir``, docs/TRAINING.md).

``dvc exp show``, ``dvc metrics diff`` and ``dvc plots diff`` read files committed with an experiment, so
what they compare lives outside the git-ignored ``data/``: headline metrics (a few numbers per stage and
split), the resolved train params, and plot data thinned to ``results.plot_points`` points per curve. Run
metadata (cluster addresses, timestamps, per-worker counts, per-video numbers) stays in ``runner.reports``
and ``train.eval_dir``, which are not metrics.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from avpipe.pipeline.config import ResultsConfig
from avpipe.pipeline.runner import RunReport

# Short names: `dvc exp show --only-changed` must fit 160 columns (docs/TRAINING.md has the mapping).
SPLITS = {"validation": "val", "cross_validation": "cv", "test": "test"}
# Per split: the ABAW measures. Pearson, RMSE and frame counts stay in train.eval_dir/metrics.json.
HEADLINE_METRICS = {
    "ccc_valence": "ccc_v",
    "ccc_arousal": "ccc_a",
    "ccc_mean": "ccc",
    "f1_expr": "f1_expr",
    "f1_au": "f1_au",
    "mtl_score": "mtl",
}
TRAIN_METRICS = "train.json"
DIMENSIONS = ("valence", "arousal")


def write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, payload: Any) -> None:
    write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- metrics


def stage_metrics(report: RunReport) -> dict[str, Any]:
    """An extraction stage's headline: videos stored (now or before), failed, and its speed."""
    return {
        "videos": report.done + report.skipped,
        "failed": report.failed,
        "frames_per_second": round(report.frames_per_second, 1),
    }


def write_stage_metrics(results: ResultsConfig, stage: str, metrics: Mapping[str, Any]) -> Path:
    path = results.metrics_dir / f"{stage}.json"
    write_json(path, dict(metrics))
    return path


def headline_train_metrics(
    metrics: Mapping[str, Any], declared: Sequence[str] = ()
) -> dict[str, dict[str, float]]:
    """Per split of the evaluate stage's metrics: the headline measures it has, rounded to 4 digits,
    under their short names (``validation.ccc_valence`` -> ``val.ccc_v``); ``declared``: the measures of
    the tasks a dataset declares (``f1_emotion``, ``accuracy_emotion``, ``ccc_dominance``), named as
    they are."""
    names = {**HEADLINE_METRICS, **{name: name for name in declared if name not in HEADLINE_METRICS}}
    headline = {}
    for split, short_split in SPLITS.items():
        values = metrics.get(split) or {}
        kept = {
            short: round(float(values[name]), 4)
            for name, short in names.items()
            if values.get(name) is not None
        }
        if kept:
            headline[short_split] = kept
    return headline


# --------------------------------------------------------------------------- plots


def copy_learning_curves(source: Path, results: ResultsConfig) -> int:
    """Each fold's per-epoch log (a few hundred rows at most) as ``plots/learning/fold_<i>.csv``."""
    target = results.plots_dir / "learning"
    _empty(target)
    copied = 0
    for path in sorted(source.glob("*.csv")):
        shutil.copyfile(path, target / path.name)
        copied += 1
    return copied


def write_prediction_plots(source: Path, results: ResultsConfig) -> dict[str, int]:
    """One CSV per video and dimension (``<video>_<dimension>.csv``: time, annotated, predicted) from
    the evaluate stage's per-video CSVs, thinned to ``results.plot_points`` evenly spaced labeled frames.

    Returns counts for the report: files written and how many curves were thinned.
    """
    target = results.plots_dir / "videos"
    _empty(target)
    counts = {"curves": 0, "thinned": 0}
    for path in sorted(source.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        keep = thin(len(rows), results.plot_points)
        counts["thinned"] += len(DIMENSIONS) * int(len(keep) < len(rows))
        for dimension in DIMENSIONS:
            if rows and f"{dimension}_pred" not in rows[0]:
                continue
            with (target / f"{path.stem}_{dimension}.csv").open("w", newline="", encoding="utf-8") as out:
                writer = csv.writer(out)
                writer.writerow(["time", "annotated", "predicted"])
                for i in keep:
                    row = rows[i]
                    writer.writerow([row["time"], row[dimension], row[f"{dimension}_pred"]])
            counts["curves"] += 1
    return counts


def thin(n_rows: int, points: int) -> list[int]:
    """At most ``points`` evenly spaced row numbers of ``n_rows``, first and last included."""
    if n_rows <= points:
        return list(range(n_rows))
    return sorted({int(i) for i in np.linspace(0, n_rows - 1, points).round()})


def _empty(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


# --------------------------------------------------------------------------- train params and inputs


def write_train_params(results: ResultsConfig, resolved: Mapping[str, Any]) -> Path:
    """The resolved train section (preset + overrides + defaults), git-tracked with each experiment."""
    header = (
        "# Written by `avpipe train-config` from params.yaml's train section and its preset: do not edit.\n"
        "# Compare two runs' settings: dvc params diff <a> <b> --targets results/train_params.yaml\n"
    )
    text = header + yaml.safe_dump(dict(resolved), sort_keys=True, default_flow_style=None, width=100)
    write_text_atomically(results.train_params, text)
    return results.train_params


def write_train_inputs(path: str | Path, inputs: Mapping[str, Any]) -> Path:
    write_json(Path(path), dict(inputs))
    return Path(path)


def shard_summary(attrs: Mapping[str, Any], size: int) -> dict[str, Any]:
    """What identifies a shard's content: the store skips re-extraction when these are unchanged."""
    return {
        "extractor_version": attrs.get("extractor_version"),
        "params_hash": attrs.get("params_hash"),
        "media_fingerprint": attrs.get("media_fingerprint"),
        "n_frames": attrs.get("n_frames"),
        "bytes": size,
    }
