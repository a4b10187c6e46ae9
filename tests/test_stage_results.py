"""What stages tell DVC and the user: exit codes, overrides, the params DVC tracks, the result files."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import shutil
import typing
from pathlib import Path

import pytest
import yaml

from avpipe.cli import parse_args
from avpipe.models.registry import MODELS
from avpipe.pipeline.config import ResultsConfig, load_params
from avpipe.pipeline.config.train import TrainConfig
from avpipe.pipeline.results import headline_train_metrics, thin, write_prediction_plots
from avpipe.pipeline.runner import RunReport
from avpipe.stages.extract import exit_code

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    ("done", "skipped", "failed", "fail_on_error", "code"),
    [
        (0, 0, 6, False, 1),  # every video failed
        (0, 0, 0, False, 1),  # nothing to do: the manifest was empty
        (0, 4, 0, False, 0),  # everything already stored
        (3, 0, 3, False, 0),  # partial failure: today's rule
        (3, 0, 3, True, 1),
        (6, 0, 0, True, 0),
    ],
)
def test_extraction_exit_code(done, skipped, failed, fail_on_error, code, caplog) -> None:
    params = load_params(REPO / "params.yaml", [f"runner.fail_on_error={str(fail_on_error).lower()}"])
    report = RunReport(stage="faces", done=done, skipped=skipped, failed=failed)
    report.failures = [object()] * failed  # type: ignore[list-item]
    with caplog.at_level(logging.ERROR):
        assert exit_code(params, report) == code
    if done + skipped == 0:
        assert "faces: nothing extracted" in caplog.text


# --------------------------------------------------------------------------- overrides


def test_set_works_before_and_after_the_sub_command() -> None:
    args = parse_args(["--set", "a.b=1", "faces", "--set", "c=2", "-v"])
    assert args.overrides == ["a.b=1", "c=2"] and args.verbose and args.command == "faces"
    args = parse_args(["audio", "mfcc", "--set", "runner.n_workers=4", "-p", "other.yaml"])
    assert args.overrides == ["runner.n_workers=4"] and args.params == "other.yaml" and args.name == "mfcc"
    assert parse_args(["-p", "x.yaml", "train"]).params == "x.yaml"


def test_empty_train_keys_take_the_presets_values_and_set_ones_override_them() -> None:
    preset = yaml.safe_load((REPO / "presets" / "jca.yaml").read_text())
    params = load_params(REPO / "params.yaml", ["train.preset=jca"])
    assert params.train.epochs == preset["epochs"] and params.train.model.name == "jca"
    assert params.train.model.config == preset["model"]["config"]
    params = load_params(
        REPO / "params.yaml", ["train.preset=jca", "train.epochs=5", "train.model.config.dropout=0.25"]
    )
    assert params.train.epochs == 5 and params.train.model.config["dropout"] == 0.25
    assert params.train.model.config["encoder_dim"] == preset["model"]["config"]["encoder_dim"]


def _dataclass_keys(cls: type, prefix: str) -> set[str]:
    keys = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys |= _dataclass_keys(hint, f"{prefix}{f.name}.")
        else:
            keys.add(f"{prefix}{f.name}")
    return keys


def _yaml_keys(section: dict, prefix: str) -> set[str]:
    keys = set()
    for key, value in section.items():
        if isinstance(value, dict):
            keys |= _yaml_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_params_yaml_lists_every_train_key_so_dvc_can_set_it() -> None:
    """`dvc exp run -S train.x=1` only sets keys params.yaml has: every TrainConfig and model key is there."""
    train = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    listed = _yaml_keys(train, "")
    wanted = {k for k in _dataclass_keys(TrainConfig, "") if not k.startswith("model.config")}
    wanted |= {"loss.weights.va", "loss.weights.expr", "loss.weights.au"} - {"loss.weights"}
    wanted.discard("loss.weights")
    wanted |= {
        f"model.config.{f.name}" for cls in MODELS.values() for f in dataclasses.fields(cls.config_class)
    }
    assert sorted(wanted - listed) == [], "add these keys (empty) to params.yaml's train section"
    assert sorted(listed - wanted) == [], "params.yaml names train keys avpipe does not have"


def test_dvc_set_param_changes_one_line_of_params_yaml(tmp_path: Path) -> None:
    """`dvc exp run -S` rewrites params.yaml with DVC's own writer: the style must survive it."""
    from dvc.utils.hydra import apply_overrides

    original = (REPO / "params.yaml").read_text()
    copy = tmp_path / "params.yaml"
    for override, changed in (
        ("train.epochs=5", ["-  epochs:", "+  epochs: 5"]),
        ("train.model.config.dropout=0.3", ["-      dropout:", "+      dropout: 0.3"]),
        ("dataset.fps=5", None),
        ("audio.extractors=[logmel]", None),
    ):
        copy.write_text(original)
        apply_overrides(copy, [override])
        diff = [
            line.split("#")[0].rstrip()
            for line in difflib.unified_diff(original.splitlines(), copy.read_text().splitlines(), n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        ]
        if changed is not None:
            assert diff == changed, override
        else:
            assert all(line.strip("+-").strip() != "" for line in diff), (override, diff)
            assert len([d for d in diff if d.startswith("+")]) <= 1, (override, diff)


# --------------------------------------------------------------------------- result files


def test_headline_metrics_keep_the_abaw_measures_per_split() -> None:
    metrics = {
        "validation": {"ccc_valence": 0.512345, "ccc_arousal": 0.3, "ccc_mean": 0.41, "rmse_valence": 0.2},
        "folds": {"0": {"ccc_valence": 0.1}},
        "test": {"f1_expr": 0.25, "mtl_score": None},
    }
    assert headline_train_metrics(metrics) == {
        "val": {"ccc_v": 0.5123, "ccc_a": 0.3, "ccc": 0.41},
        "test": {"f1_expr": 0.25},
    }


def test_prediction_plots_one_file_per_video_and_dimension_thinned(tmp_path: Path) -> None:
    source = tmp_path / "videos"
    source.mkdir()
    with (source / "clip.csv").open("w") as out:
        out.write("frame_index,time,valence,valence_pred,arousal,arousal_pred\n")
        for i in range(1001):
            out.write(f"{i},{i / 25:.4f},{i / 1000:.4f},0.1,{-i / 1000:.4f},0.2\n")
    results = ResultsConfig(dir=str(tmp_path / "results"), plot_points=11)
    counts = write_prediction_plots(source, results)
    assert counts == {"curves": 2, "thinned": 2}
    rows = (tmp_path / "results/plots/videos/clip_arousal.csv").read_text().splitlines()
    assert rows[0] == "time,annotated,predicted" and len(rows) == 12
    assert rows[1] == "0.0000,0.0000,0.2" and rows[-1] == "40.0000,-1.0000,0.2"
    assert thin(5, 10) == [0, 1, 2, 3, 4] and thin(101, 3) == [0, 50, 100]
    shutil.rmtree(source)


# --------------------------------------------------------------------------- dataset provenance


def test_extraction_does_not_replace_a_feature_shard_of_another_dataset(tmp_path: Path) -> None:
    """The labels shard says which dataset a video id now belongs to; a feature shard of that id written
    from another dataset becomes a failure, not a silent overwrite (unless store.replace_other_dataset)."""
    import numpy as np

    from avpipe.pipeline.config import StoreConfig
    from avpipe.pipeline.extract import ExtractionJob, pending_tasks
    from avpipe.pipeline.extractors.audio import LogMelConfig
    from avpipe.pipeline.labels import LABELS_EXTRACTOR
    from avpipe.pipeline.manifest import ManifestRow
    from avpipe.pipeline.registry import default_registry
    from avpipe.pipeline.store import FeatureStore
    from avpipe.pipeline.types import FeatureSet

    media = tmp_path / "clip.mp4"
    media.write_bytes(b"new media")
    store = FeatureStore(tmp_path / "features")
    block = FeatureSet(
        time=np.zeros(2), frame_index=np.arange(2), mask=np.ones(2, np.uint8), arrays={"x": np.zeros((2, 1))}
    )
    store.write(LABELS_EXTRACTOR, "clip", block, extractor_version="1", params_hash="l", dataset="/data/new")
    store.write("logmel", "clip", block, extractor_version="1", params_hash="old", dataset="/data/old")
    rows = [ManifestRow(video_id="clip", media_path=str(media))]
    cls = default_registry().get("logmel")
    for replace, tasks_expected in ((False, 0), (True, 1)):
        store_cfg = StoreConfig(root=str(store.root), replace_other_dataset=replace)
        job = ExtractionJob.create("logmel", cls, LogMelConfig(), store_cfg)
        report = RunReport(stage="logmel")
        tasks = pending_tasks(job, cls.input_kind, store, rows, report)
        assert len(tasks) == tasks_expected
        if tasks:
            assert tasks[0][1]["video"]["dataset"] == "/data/new"
        else:
            assert "stored from dataset /data/old, not from /data/new" in report.failures[0].reason


# --------------------------------------------------------------------------- logs


def test_dask_shutdown_noise_is_dropped_other_dask_warnings_kept(caplog) -> None:
    from avpipe.pipeline.logs import quiet_dask_logs

    quiet_dask_logs()
    worker, nanny = logging.getLogger("distributed.worker"), logging.getLogger("distributed.nanny")
    with caplog.at_level(logging.INFO):
        worker.error("Failed to communicate with scheduler during heartbeat.")
        nanny.warning("Worker process still alive after 4.0 seconds, killing")
        worker.warning("Worker is at 85% memory usage. Pausing worker.")
        worker.info("Starting Worker plugin")
    assert [r.getMessage() for r in caplog.records] == ["Worker is at 85% memory usage. Pausing worker."]


def test_verbose_turns_on_debug_for_avpipe_only() -> None:
    from avpipe.pipeline.logs import OWN_LOGGERS, configure_logging

    levels = {name: logging.getLogger(name).level for name in OWN_LOGGERS}
    try:
        configure_logging(verbose=True)
        assert logging.getLogger("avpipe.pipeline.store").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("avpipe.models.trainer").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("fsspec").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("distributed.scheduler").isEnabledFor(logging.INFO)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


# --------------------------------------------------------------------------- the demo stage


def test_demo_stage_builds_nothing_for_another_dataset_and_keeps_a_previous_build(tmp_path: Path) -> None:
    import json

    from avpipe.pipeline.errors import ConfigError
    from avpipe.stages import demo

    def params(root: Path) -> object:
        overrides = [f"demo.root={tmp_path / 'demo'}", f"dataset.root={root}"]
        return load_params(REPO / "params.yaml", overrides)

    assert demo.run(params(tmp_path / "mine"), only_if_dataset=True) == 0
    marker = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert marker["skipped"] and "mine" in marker["reason"]
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["demo.json"]  # no clip generated

    (tmp_path / "demo" / "videos").mkdir()  # as a previous build left it: kept as it is
    assert demo.run(params(tmp_path / "mine"), only_if_dataset=True) == 0
    assert (tmp_path / "demo" / "videos").is_dir()

    foreign = tmp_path / "foreign"
    (foreign / "thesis.tex").parent.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    overrides = [f"demo.root={foreign}", f"dataset.root={tmp_path / 'mine'}"]
    with pytest.raises(ConfigError, match=r"demo\.root"):
        demo.run(load_params(REPO / "params.yaml", overrides), only_if_dataset=True)
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
