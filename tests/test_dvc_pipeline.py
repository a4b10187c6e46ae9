"""`dvc repro` end to end on a tiny demo: every stage runs, a second repro does nothing, a changed
parameter re-runs only the stages that depend on it; experiments compare; nothing of the user's is deleted."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Applied with DVC's own params writer (as `dvc exp run -S` does), so params.yaml keeps its style.
TINY = [
    "demo.n_clips=3",
    "demo.min_seconds=3.0",
    "demo.max_seconds=4.0",
    "demo.width=320",
    "demo.height=240",
    "demo.validation_clips=1",
    "runner.n_workers=1",
    "audio.extractors=[logmel,mfcc]",
    "embed.backbones=[fer-minixception]",
    # logmel is extracted but not read by train: changing it must leave train up to date
    "train.features=[fer-minixception,mfcc]",
    "train.epochs=2",
    "train.min_epochs=1",
    "train.window=50",
    "train.hop=25",
    "train.folds.k=2",
]
# dvc exp show must fit this many columns with --only-changed
TERMINAL_COLUMNS = 160
# the longest log line a stage may print off a terminal (tqdm used to write 43,700-character lines)
MAX_LOG_LINE = 400

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("git") is None, reason="needs git")]


def dvc(workdir: Path, *args: str, ok: bool = True) -> str:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "COLUMNS": str(TERMINAL_COLUMNS),
    }
    done = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
    )
    assert (done.returncode == 0) == ok, (
        f"dvc {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout + done.stderr


def set_params(workdir: Path, *overrides: str) -> None:
    from dvc.utils.hydra import apply_overrides

    apply_overrides(workdir / "params.yaml", list(overrides))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A clone of the committed repository with a tiny demo configuration."""
    workdir = tmp_path_factory.mktemp("dvc") / "avpipe"
    subprocess.run(["git", "clone", "-q", str(REPO), str(workdir)], check=True)
    for tracked in ("pipeline", "stages", "models", "presets", "dvc.yaml"):
        if not (workdir / tracked).exists():
            pytest.fail(f"{tracked} is not committed")
    set_params(workdir, *TINY)
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
        "train_config",
        "train",
    ):
        assert f"Running stage '{stage}'" in first, first
    assert max(len(line) for line in first.splitlines()) < MAX_LOG_LINE
    assert " ERROR " not in first and "Traceback" not in first, first
    assert "fold 0 epoch 1/2" in first  # a line per epoch at INFO

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

    # train does not read logmel: its inputs are unchanged, it stays up to date
    set_params(project, "extractors.logmel.n_mels=40")
    third = dvc(project, "repro")
    ran = {line.split("'")[1] for line in third.splitlines() if line.startswith("Running stage")}
    assert ran == {"audio@logmel", "train_config"}, third
    with h5py.File(project / "data/features/logmel" / name) as shard:
        assert next(iter(shard.values()))["features"].shape[1] == 40
    # the DVC cache shares the store's files (hardlinks) instead of holding a second copy
    assert (project / "data/features/mfcc" / name).stat().st_nlink >= 2


def git(workdir: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=workdir, check=True, capture_output=True)


def test_experiments_compare(project: Path) -> None:
    """The research loop: a committed baseline and two experiments, compared by dvc exp show / params /
    metrics / plots diff."""
    git(project, "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "demo baseline")
    dvc(project, "exp", "run", "-n", "jca", "-S", "train.preset=jca")
    dvc(project, "exp", "run", "-n", "epochs5", "-S", "train.epochs=5")
    assert "epochs: 5" in (project / "params.yaml").read_text()

    table = dvc(project, "exp", "show", "--only-changed", "--no-pager")
    assert max(len(line) for line in table.splitlines()) <= TERMINAL_COLUMNS, table
    assert "…" not in table, table  # no column left out or cut for lack of room
    rows = list(csv.DictReader(io.StringIO(dvc(project, "exp", "show", "--only-changed", "--csv"))))
    by_name = {row["Experiment"] or row["rev"]: row for row in rows}
    baseline = next(row for row in rows if row["typ"] == "baseline" and row["rev"] != "workspace")
    for row in (baseline, by_name["jca"], by_name["epochs5"]):
        for column in ("val.ccc", "val.ccc_v", "val.ccc_a", "cv.ccc"):
            assert -1.0 <= float(row[column]) <= 1.0, (column, row)
    assert (baseline["train.preset"], by_name["jca"]["train.preset"]) == ("abaw2-lfan", "jca")
    assert by_name["epochs5"]["train.epochs"] == "5"

    resolved = dvc(project, "params", "diff", "HEAD", "jca", "--targets", "results/train_params.yaml")
    assert "model.name" in resolved and "lfan" in resolved and "jca" in resolved, resolved
    assert "epochs" in dvc(project, "params", "diff", "jca", "epochs5")
    metrics = dvc(project, "metrics", "diff", "jca", "epochs5")
    assert "results/metrics/train.json" in metrics and "val.ccc" in metrics, metrics
    plots = dvc(project, "plots", "diff", "jca", "epochs5", "--json")
    for expected in ("jca", "epochs5", "plots/learning/fold_0.csv", "_valence.csv", "_arousal.csv"):
        assert expected in plots, expected


def test_repro_never_deletes_a_folder_that_is_not_a_demo_build(project: Path) -> None:
    mine = project / "data" / "mine"
    (mine / "videos").mkdir(parents=True)
    (mine / "videos" / "precious.mp4").write_bytes(b"not a demo")
    original = (project / "params.yaml").read_text()
    set_params(project, "demo.root=data/mine")
    try:
        out = dvc(project, "repro", "demo", ok=False)
    finally:
        (project / "params.yaml").write_text(original)
    assert "not a demo dataset" in out, out
    assert (mine / "videos" / "precious.mp4").read_bytes() == b"not a demo"
