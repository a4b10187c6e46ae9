"""`dvc repro` end to end on a tiny demo: every stage runs, a second repro does nothing, and a changed
parameter re-runs only the stages that depend on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY = {
    "demo": {
        "n_clips": 3,
        "min_seconds": 3.0,
        "max_seconds": 4.0,
        "width": 320,
        "height": 240,
        "validation_clips": 1,
    },
    "runner": {"n_workers": 1},
    "audio": {"extractors": ["logmel", "mfcc"]},
    "embed": {"backbones": ["fer-minixception"]},
    "train": {
        "features": ["fer-minixception", "mfcc", "logmel"],
        "epochs": 2,
        "min_epochs": 1,
        "window": 50,
        "hop": 25,
        "folds": {"k": 2},
    },
}

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("git") is None, reason="needs git")]


def merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def dvc(workdir: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A clone of the committed repository with a tiny demo configuration."""
    workdir = tmp_path_factory.mktemp("dvc") / "avpipe"
    subprocess.run(["git", "clone", "-q", str(REPO), str(workdir)], check=True)
    for tracked in ("pipeline", "stages", "models", "presets", "dvc.yaml"):
        if not (workdir / tracked).exists():
            pytest.fail(f"{tracked} is not committed")
    params = merge(yaml.safe_load((workdir / "params.yaml").read_text()), TINY)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return workdir


def test_repro_runs_every_stage_then_nothing_then_only_what_changed(project: Path) -> None:
    first = dvc(project, "repro")
    for stage in (
        "demo",
        "manifest",
        "faces",
        "audio@logmel",
        "audio@mfcc",
        "embed@fer-minixception",
        "train",
        "evaluate",
    ):
        assert f"Running stage '{stage}'" in first, first

    rows = (project / "data/manifest.csv").read_text().splitlines()
    assert len(rows) == 1 + 4  # header + 3 clips, one of them with _left and _right subjects
    for feature in ("faces", "logmel", "mfcc", "fer-minixception", "labels"):
        shards = sorted((project / "data/features" / feature).glob("*.h5"))
        assert len(shards) == 4, feature
    # One instant, one row: every feature of a video shares the faces' time array.
    name = sorted((project / "data/features/faces").glob("*.h5"))[0].name
    times = []
    for feature in ("faces", "logmel", "fer-minixception"):
        with h5py.File(project / "data/features" / feature / name) as shard:
            group = next(iter(shard.values()))
            times.append(group["time"][:])
    assert all(np.array_equal(times[0], t) for t in times[1:])
    metrics = json.loads((project / "data/evaluate/metrics.json").read_text())
    assert metrics  # evaluate wrote its metrics
    assert list((project / "data/qa/faces").glob("*.png"))

    second = dvc(project, "repro")
    assert "Running stage" not in second, second

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["extractors"]["logmel"]["n_mels"] = 40
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = dvc(project, "repro")
    ran = {line.split("'")[1] for line in third.splitlines() if line.startswith("Running stage")}
    assert ran == {"audio@logmel", "train", "evaluate"}, third
    with h5py.File(project / "data/features/logmel" / name) as shard:
        assert next(iter(shard.values()))["features"].shape[1] == 40
