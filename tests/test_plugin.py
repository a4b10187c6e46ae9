"""The plug-in interface: a package installed from tests/plugin_example registers its extractor through
the ``avpipe.extractors`` entry point and runs through the pipeline, with no change to avpipe.

The package is installed with pip into a temporary ``--target`` folder (offline, no build isolation) and
used from subprocesses (``avpipe`` commands, ``python -c``) whose PYTHONPATH includes that folder, so
the venv is never modified.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from avpipe.pipeline.manifest import ManifestRow, write_manifest
from avpipe.pipeline.registry import default_registry
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.timeline import iter_frames

from tests.media_factory import make_video

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SOURCE = REPO / "tests" / "plugin_example"
PLUGIN = "frame-colour"
ENTRY_POINT = "avpipe_plugin_example.colour:FrameColourExtractor"
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


def run_with_plugin(site: Path, argv: list[str], cwd: Path) -> str:
    """Run ``python <argv>`` in a fresh interpreter that sees the installed plug-in; return its stdout."""
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
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_plugin_is_not_installed_in_the_test_environment():
    # The positive results below therefore come from the installed package, not from the repo.
    assert PLUGIN not in default_registry().names()


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
    assert found["origin"] == f"avpipe-plugin-example 0.1.0 (entry point {ENTRY_POINT})"
    assert found["dim"] == 1 and found["kind"] == "frames"


def test_avpipe_extractors_list_shows_the_plugin(plugin_site, tmp_path):
    listing = run_with_plugin(plugin_site, ["-m", "avpipe.pipeline.cli", "extractors", "list"], tmp_path)
    line = next(row for row in listing.splitlines() if row.startswith(f"{PLUGIN} "))
    assert line.split()[:3] == [PLUGIN, "frames", "3"] and f"entry point {ENTRY_POINT}" in line


def test_installed_plugin_runs_as_a_stage_with_params_from_yaml(plugin_site, tmp_path):
    video = make_video(
        tmp_path / "bars.mp4", seconds=1.0, fps=10, size=(64, 48), audio=False, pattern="smptebars"
    )
    write_manifest([ManifestRow(video_id="bars", media_path=str(video))], tmp_path / "manifest.csv")
    params = {
        "dataset": {"root": str(tmp_path)},
        "manifest": {"path": str(tmp_path / "manifest.csv"), "failures": str(tmp_path / "failures.csv")},
        "store": {"root": str(tmp_path / "features")},
        "runner": {
            "n_workers": 1,
            "threads_per_worker": 1,
            "device": "cpu",
            "reports": str(tmp_path / "reports"),
        },
        "extractors": {PLUGIN: {"space": "grey", "border": 4}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    run_with_plugin(
        plugin_site, ["-m", "avpipe.pipeline.cli", "-p", "params.yaml", "extract", PLUGIN], tmp_path
    )
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
