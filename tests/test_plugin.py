"""The plug-in interface: a package installed from tests/plugin_example registers two extractors, a model,
a dataset adapter and a loss through avpipe's entry-point groups; each is listed and runs through the
pipeline (``avpipe extract``, ``avpipe manifest``, ``avpipe train``), with no change to avpipe.

The package is installed with pip into a temporary ``--target`` folder (offline, no build isolation) and
used from subprocesses (``avpipe`` commands, ``python -c``) whose PYTHONPATH includes that folder, so
the venv is never modified.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from avpipe.models.losses import loss_registry
from avpipe.models.registry import model_names
from avpipe.pipeline.adapters import adapter_names
from avpipe.pipeline.labels import LABELS_EXTRACTOR, FrameLabels
from avpipe.pipeline.manifest import ManifestRow, read_manifest, write_manifest
from avpipe.pipeline.registry import default_registry
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.timeline import decode_audio, iter_frames
from tests.media_factory import espeak_binary, make_video, run_ffmpeg
from tests.test_train import FAST, build_dataset

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SOURCE = REPO / "tests" / "plugin_example"
PLUGIN = "frame-colour"
ENTRY_POINT = "avpipe_plugin_example.colour:FrameColourExtractor"
DISTRIBUTION = "avpipe-plugin-example 0.1.0"
# (command, name, entry point) of every plug-in the example package declares
PLUGINS = [
    ("extractors", PLUGIN, ENTRY_POINT),
    ("extractors", "rms-energy", "avpipe_plugin_example.energy:RmsEnergyExtractor"),
    ("models", "late-gru", "avpipe_plugin_example.model:LateGRUModel"),
    ("adapters", "clip-table", "avpipe_plugin_example.adapter:ClipTableAdapter"),
    ("losses", "huber", "avpipe_plugin_example.loss:HuberLoss"),
]
LUMA = np.array([0.299, 0.587, 0.114])
SUBPROCESS_TIMEOUT_S = 240


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """The example plug-in, pip-installed into a private folder."""
    source = tmp_path_factory.mktemp("plugin_source") / "plugin_example"
    # Built from a copy: a setuptools build leaves build/ and *.egg-info next to the sources.
    shutil.copytree(
        PLUGIN_SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    site = tmp_path_factory.mktemp("plugin_site")
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
    ]
    done = subprocess.run(
        [*pip, "--target", str(site), str(source)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    assert (site / "avpipe_plugin_example" / "colour.py").is_file()
    return site


def run_with_plugin(site: Path, argv: list[str], cwd: Path, returncode: int = 0) -> str:
    """Run ``python <argv>`` in a fresh interpreter that sees the installed plug-in; return its stdout
    (its stderr too when ``returncode`` is not 0)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert done.returncode == returncode, done.stderr[-4000:]
    return done.stdout if returncode == 0 else done.stdout + done.stderr


def avpipe(site: Path, cwd: Path, *args: str, returncode: int = 0) -> str:
    return run_with_plugin(site, ["-m", "avpipe.cli", *args], cwd, returncode)


def test_extending_md_shows_the_example_package_as_it_is():
    """docs/EXTENDING.md walks through every file of the example: each is shown whole and unchanged."""
    doc = (REPO / "docs" / "EXTENDING.md").read_text(encoding="utf-8")
    blocks = {block.strip() for block in re.findall(r"^```(?:python|toml)\n(.*?)^```", doc, re.M | re.S)}
    shown = [
        PLUGIN_SOURCE / "pyproject.toml",
        *sorted((PLUGIN_SOURCE / "avpipe_plugin_example").glob("[!_]*.py")),
    ]
    assert len(shown) == 6
    for path in shown:
        assert path.read_text(encoding="utf-8").strip() in blocks, f"{path.name} is not shown as it is"


def test_plugin_is_not_installed_in_the_test_environment():
    # The positive results below therefore come from the installed package, not from the repo.
    assert PLUGIN not in default_registry().names() and "rms-energy" not in default_registry().names()
    assert "late-gru" not in model_names() and "clip-table" not in adapter_names()
    assert "huber" not in loss_registry().names()


def test_installed_plugin_appears_in_the_registry(plugin_site, tmp_path):
    code = textwrap.dedent(
        """
        import json
        from avpipe.pipeline.registry import default_registry, create_extractor
        registry = default_registry()
        extractor = create_extractor("frame-colour", space="grey")
        print(json.dumps({"names": registry.names(), "origin": registry.origins[extractor.name],
                          "dim": extractor.feature_dim, "kind": extractor.input_kind.value}))
        """
    )
    found = json.loads(run_with_plugin(plugin_site, ["-c", code], tmp_path))
    assert PLUGIN in found["names"] and "fer-minixception" in found["names"]
    assert found["origin"] == f"{DISTRIBUTION} (entry point {ENTRY_POINT})"
    assert found["dim"] == 1 and found["kind"] == "frames"


def test_avpipe_extractors_list_shows_the_plugin(plugin_site, tmp_path):
    listing = run_with_plugin(plugin_site, ["-m", "avpipe.cli", "extractors", "list"], tmp_path)
    line = next(row for row in listing.splitlines() if row.startswith(f"{PLUGIN} "))
    assert line.split()[:3] == [PLUGIN, "frames", "3"] and f"entry point {ENTRY_POINT}" in line
    line = next(row for row in listing.splitlines() if row.startswith("rms-energy "))
    assert line.split()[:3] == ["rms-energy", "audio", "1"] and "REFUSED" not in listing


@pytest.mark.parametrize("command", ["models", "adapters", "losses"])
def test_avpipe_lists_show_the_plugins_beside_the_builtins(plugin_site, tmp_path, command):
    listing = avpipe(plugin_site, tmp_path, command, "list").splitlines()
    header, rows = listing[0].split(), {line.split()[0]: line for line in listing[1:]}
    assert header[0] == "name" and "origin" in header and header[-1] == "description"
    builtin = {"models": "lfan", "adapters": "folder", "losses": "ccc"}[command]
    assert rows[builtin].split()[1:3] in (["built-in", rows[builtin].split()[2]], ["continuous", "built-in"])
    ((_, name, entry_point),) = [p for p in PLUGINS if p[0] == command]
    assert f"{DISTRIBUTION} (entry point {entry_point})" in rows[name]
    assert rows[name].endswith("(example plug-in)")  # its description
    if command == "losses":
        assert rows["huber"].split()[1] == "continuous"


def test_installed_plugin_runs_as_a_stage_with_params_from_yaml(plugin_site, tmp_path):
    video = make_video(
        tmp_path / "bars.mp4", seconds=1.0, fps=10, size=(64, 48), audio=False, pattern="smptebars"
    )
    params = one_video_params(tmp_path, "bars", video)
    params["extractors"] = {PLUGIN: {"space": "grey", "border": 4}}
    write_params(tmp_path / "params.yaml", params)
    run_with_plugin(plugin_site, ["-m", "avpipe.cli", "-p", "params.yaml", "extract", PLUGIN], tmp_path)
    report = json.loads((tmp_path / "reports" / f"{PLUGIN}.json").read_text(encoding="utf-8"))
    assert report["done"] == 1 and report["failed"] == 0
    stored = FeatureStore(tmp_path / "features").read(PLUGIN, "bars")  # readable without the plug-in
    frames = list(iter_frames(video))
    # The params.yaml section reached the extractor: grey (1 column) inside a 4-pixel border.
    expected = np.array([[(f.image[4:-4, 4:-4].mean(axis=(0, 1)) / 255.0) @ LUMA] for f in frames])
    assert stored.arrays["features"].shape == (len(frames), 1)
    assert np.allclose(stored.arrays["features"], expected, atol=1e-5)
    assert np.array_equal(stored.time, [f.time for f in frames]) and stored.mask.all()
    # smptebars frames are all alike: also check the value is a plausible mean, not a constant 0 or 1.
    assert 0.2 < float(stored.arrays["features"].mean()) < 0.8


# --------------------------------------------------------------------------- model and loss plug-ins


def train_params(root: Path, store: FeatureStore, out: Path, **train: object) -> dict:
    """A params.yaml dict training on ``store`` cheaply (one fold, two epochs, small windows)."""
    return {
        "store": {"root": str(store.root)},
        "manifest": {"path": str(root / "manifest.csv"), "failures": str(out / "failures.csv")},
        "train": {
            **FAST,
            "features": ["fer-minixception", "mfcc"],  # one visual, one audio input
            "tasks": ["va"],
            "folds": {"k": 1},
            "output_dir": str(out / "train"),
            "eval_dir": str(out / "evaluate"),
            **train,
        },
        "results": {"dir": str(out / "results"), "train_inputs": str(out / "inputs.json")},
        "runner": {"reports": str(out / "reports")},
    }


def one_video_params(folder: Path, video_id: str, video: Path) -> dict:
    """A manifest of one video under ``folder`` and params for a one-worker CPU run on it there."""
    write_manifest([ManifestRow(video_id=video_id, media_path=str(video))], folder / "manifest.csv")
    return {
        "dataset": {"root": str(folder)},
        "manifest": {"path": str(folder / "manifest.csv"), "failures": str(folder / "failures.csv")},
        "store": {"root": str(folder / "features")},
        "runner": {
            "n_workers": 1,
            "threads_per_worker": 1,
            "device": "cpu",
            "reports": str(folder / "reports"),
        },
    }


def write_params(path: Path, params: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def training_log(out: Path) -> list[dict[str, float]]:
    """fold_0/log.csv: one row per epoch (0 = the untrained model), empty cells as NaN."""
    with (out / "train" / "fold_0" / "log.csv").open(newline="") as handle:
        return [
            {k: float(v) if v else float("nan") for k, v in row.items()} for row in csv.DictReader(handle)
        ]


def test_plugin_model_trains_through_avpipe_train_with_the_plugin_loss(plugin_site, tmp_path):
    store, _ = build_dataset(tmp_path, n_train=6, n_validation=2, n_test=0, frames=(40, 90), seed=0)
    model = {"name": "late-gru", "config": {"hidden": 8}}
    huber = {"va": "huber", "options": {"huber": {"delta": 0.25}}}
    plugin_run, builtin_run = tmp_path / "plugin", tmp_path / "builtin"
    params = write_params(
        plugin_run / "params.yaml", train_params(tmp_path, store, plugin_run, model=model, loss=huber)
    )
    avpipe(plugin_site, tmp_path, "-p", str(params), "train-config")
    resolved = yaml.safe_load((plugin_run / "results" / "train_params.yaml").read_text(encoding="utf-8"))
    assert resolved["model"]["config"] == {"hidden": 8, "dropout": 0.0}  # the plug-in's full config
    assert resolved["loss"]["va"] == "huber" and resolved["loss"]["options"] == {"huber": {"delta": 0.25}}
    avpipe(plugin_site, tmp_path, "-p", str(params), "train")
    summary = json.loads((plugin_run / "train" / "summary.json").read_text(encoding="utf-8"))
    assert summary["config"]["model"] == {**model, "separate_va": False}
    assert summary["config"]["loss"]["va"] == "huber" and len(summary["folds"]) == 1
    assert summary["folds"][0]["epochs_run"] == FAST["epochs"]
    # The checkpoint rebuilds the plug-in's model, with the weights of one GRU per modality.
    code = textwrap.dedent(
        f"""
        import json
        from avpipe.models.checkpoint import load_checkpoint
        loaded = load_checkpoint({str(plugin_run / "train" / "fold_0" / "model.pt")!r})
        print(json.dumps({{"class": type(loaded.model).__qualname__,
                          "keys": sorted(loaded.model.state_dict())}}))
        """
    )
    loaded = json.loads(run_with_plugin(plugin_site, ["-c", code], tmp_path))
    assert loaded["class"] == "LateGRUModel"
    assert {"grus.visual.weight_ih_l0", "grus.audio.weight_ih_l0", "heads.heads.va.weight"} <= set(
        loaded["keys"]
    )
    # The same run with the built-in CCC loss: the logged training loss is another function.
    params = write_params(
        builtin_run / "params.yaml", train_params(tmp_path, store, builtin_run, model=model)
    )
    avpipe(plugin_site, tmp_path, "-p", str(params), "train")
    huber_log, ccc_log = training_log(plugin_run), training_log(builtin_run)
    assert len(huber_log) == len(ccc_log) == 1 + FAST["epochs"]
    # Same seed, same untrained model: epoch 0 is the same; the loss alone makes the epochs differ.
    assert huber_log[0]["val_ccc_mean"] == ccc_log[0]["val_ccc_mean"]
    assert all(
        h["val_ccc_mean"] != c["val_ccc_mean"] for h, c in zip(huber_log[1:], ccc_log[1:], strict=True)
    )
    # Huber (delta 0.25) of errors below 2 (tanh outputs, labels in [-0.9, 0.9]) is below 0.25 * 1.875;
    # 1 - CCC of a barely trained model is far above the Huber values logged
    huber_losses = [row["train_loss_va"] for row in huber_log[1:]]
    ccc_losses = [row["train_loss_va"] for row in ccc_log[1:]]
    assert all(0.0 < h < 0.25 * 1.875 for h in huber_losses)
    assert all(c > 0.3 and c > 3 * h for c, h in zip(ccc_losses, huber_losses, strict=True))


def test_plugin_loss_computes_the_huber_loss_over_labelled_frames(plugin_site, tmp_path):
    """The loss the trainer calls for ``train.loss.va: huber`` against Huber's formula, written here."""
    code = textwrap.dedent(
        """
        import json, torch
        from avpipe.pipeline.config.train import LossConfig, Task
        from avpipe.models.losses import MultiTaskLoss
        torch.manual_seed(0)
        output = torch.rand(2, 5, 2) * 2 - 1
        target = torch.rand(2, 5, 2) * 2 - 1
        target[0, :2] = -5.0  # unlabelled frames (padding too) hold -5
        loss = MultiTaskLoss([Task.VA], LossConfig(va="huber", options={"huber": {"delta": 0.3}}))
        total, parts = loss({"va": output}, {"va": target})
        print(json.dumps({"total": float(total), "output": output.tolist(), "target": target.tolist()}))
        """
    )
    found = json.loads(run_with_plugin(plugin_site, ["-c", code], tmp_path))
    output, target = np.array(found["output"]), np.array(found["target"])
    labelled = np.all(target != -5.0, axis=-1)
    errors = np.abs(output[labelled] - target[labelled]).ravel()
    delta = 0.3
    expected = np.where(errors <= delta, 0.5 * errors**2, delta * (errors - 0.5 * delta)).mean()
    assert labelled.sum() == 8 and found["total"] == pytest.approx(expected, rel=1e-5)


def test_plugin_config_errors_name_the_plugin_and_its_distribution(plugin_site, tmp_path):
    store, _ = build_dataset(tmp_path, n_train=2, n_validation=1, n_test=0, frames=(40, 50), seed=3)
    cases = [
        ({"model": {"name": "late-gru", "config": {"hiden": 8}}}, "train.model.config.hiden", "late-gru"),
        ({"model": {"name": "late-gru", "config": {"hidden": 0}}}, "train.model.config.hidden", "late-gru"),
        (
            {"loss": {"va": "huber", "options": {"huber": {"delta": -1}}}},
            "train.loss.options.huber.delta",
            "huber",
        ),
        ({"tasks": ["expr"], "loss": {"categorical": "huber"}}, "train.loss.categorical", "huber"),
    ]
    for i, (train, key, name) in enumerate(cases):
        out = tmp_path / f"case{i}"
        params = write_params(out / "params.yaml", train_params(tmp_path, store, out, **train))
        message = avpipe(plugin_site, tmp_path, "-p", str(params), "train", returncode=2)
        assert f"config key '{key}'" in message and f"{name!r} from {DISTRIBUTION}" in message, message
        assert "Traceback" not in message and not (out / "train").exists()


# --------------------------------------------------------------------------- adapter plug-in


def test_plugin_adapter_builds_the_manifest_and_the_labels(plugin_site, tmp_path):
    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    for name in ("a1", "a2", "b1"):
        make_video(data / "clips" / f"{name}.mp4", seconds=0.5, fps=10, size=(64, 48), audio=False)
    (data / "clips.csv").write_text(
        "file,speaker,split,emotion\n"
        "clips/a1.mp4,spk_a,train,happy\n"
        "clips/a2.mp4,spk_a,validation,\n"  # unlabelled clip
        "clips/b1.mp4,spk_b,test,sad\n"
        "clips/b2.mp4,spk_b,train,sad\n"  # no such file
        "clips/a1.mp4,spk_a,train,bored\n",  # not a class
        encoding="utf-8",
    )
    params = {
        "dataset": {
            "root": str(data),
            "adapter": "clip-table",
            "options": {"classes": ["neutral", "happy", "sad"]},
        },
        "manifest": {"path": str(tmp_path / "manifest.csv"), "failures": str(tmp_path / "failures.csv")},
        "store": {"root": str(tmp_path / "features")},
        "runner": {"n_workers": 1, "threads_per_worker": 1, "reports": str(tmp_path / "reports")},
    }
    write_params(tmp_path / "params.yaml", params)
    avpipe(plugin_site, tmp_path, "-p", "params.yaml", "manifest")
    rows = {row.video_id: row for row in read_manifest(tmp_path / "manifest.csv")}
    assert sorted(rows) == ["a1", "a2", "b1"]
    assert [(rows[v].subject, rows[v].split.value) for v in sorted(rows)] == [
        ("spk_a", "train"),
        ("spk_a", "validation"),
        ("spk_b", "test"),
    ]
    assert all(rows[v].n_frames == 5 for v in rows)
    with (tmp_path / "failures.csv").open(newline="") as handle:
        failures = list(csv.DictReader(handle))
    reasons = sorted(row["reason"] for row in failures)
    assert len(reasons) == 2
    assert "clips.csv:5: clips/b2.mp4 is not a video file" in reasons[0]
    assert "clips.csv:6: unknown emotion 'bored'" in reasons[1]
    store = FeatureStore(tmp_path / "features")
    labels = {v: FrameLabels.from_feature_set(store.read(LABELS_EXTRACTOR, v)) for v in rows}
    assert labels["a1"].category_names["emotion"] == ["neutral", "happy", "sad"]
    assert labels["a1"].categories["emotion"].tolist() == [1] * 5  # happy on every frame
    assert labels["b1"].categories["emotion"].tolist() == [2] * 5
    assert "emotion" not in labels["a2"].categories or (labels["a2"].categories["emotion"] == -1).all()
    # An option the adapter does not take: an error naming the adapter and its distribution.
    params["dataset"]["options"]["clases"] = ["neutral"]
    write_params(tmp_path / "bad.yaml", params)
    message = avpipe(plugin_site, tmp_path, "-p", "bad.yaml", "manifest", returncode=2)
    assert "adapter 'clip-table' from avpipe-plugin-example 0.1.0" in message and "clases" in message, message


# --------------------------------------------------------------------------- audio extractor plug-in


def expected_levels(samples: np.ndarray, rate: int, start: float, frame_times: np.ndarray) -> np.ndarray:
    """rms-energy from its definition: dBFS of the RMS of 25 ms windows every 10 ms, each frame the
    mean of the windows whose centre lies between the midpoints to its neighbouring frames."""
    window, hop = round(0.025 * rate), round(0.010 * rate)
    levels, centres = [], []
    for first in range(0, len(samples) - window + 1, hop):
        chunk = samples[first : first + window].astype(np.float64)
        levels.append(max(10 * np.log10(max(np.mean(chunk * chunk), 1e-20)), -100.0))
        centres.append(start + (first + window / 2) / rate)
    levels, centres = np.array(levels), np.array(centres)
    out = np.zeros(len(frame_times))
    for i, t in enumerate(frame_times):
        low = t - (frame_times[1] - frame_times[0]) / 2 if i == 0 else (frame_times[i - 1] + t) / 2
        high = t + (t - frame_times[-2]) / 2 if i == len(frame_times) - 1 else (t + frame_times[i + 1]) / 2
        inside = (centres >= low) & (centres < high)
        out[i] = levels[inside].mean() if inside.any() else levels[np.argmin(np.abs(centres - t))]
    return out


def test_plugin_audio_extractor_levels_on_the_video_frames(plugin_site, tmp_path):
    espeak = espeak_binary()
    speech = tmp_path / "speech.wav"
    subprocess.run([espeak, "-w", str(speech), "Hello there. The weather is lovely today."], check=True)
    video = tmp_path / "speech.mp4"
    encode = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"]
    run_ffmpeg(["-f", "lavfi", "-i", "color=c=gray:s=64x48:r=25:d=3", "-i", str(speech), *encode, str(video)])
    write_params(tmp_path / "params.yaml", one_video_params(tmp_path, "speech", video))
    avpipe(plugin_site, tmp_path, "-p", "params.yaml", "extract", "rms-energy")
    stored = FeatureStore(tmp_path / "features").read("rms-energy", "speech")
    track = decode_audio(video, sample_rate=16000)
    covered = (stored.time >= track.start) & (stored.time < track.end)
    assert np.array_equal(stored.mask.astype(bool), covered) and covered.sum() > 60
    expected = expected_levels(track.samples, 16000, track.start, stored.time)
    assert np.allclose(stored.arrays["features"][covered, 0], expected[covered], atol=1e-3)
    assert not stored.arrays["features"][~covered].any()  # frames without audio: zero, masked
    # speech and pauses: the level moves by tens of dB (a constant would pass a weaker test)
    assert np.ptp(expected[covered]) > 20
