"""The docs say what the code does: runnable command blocks run, and every params key they name exists.

A fenced block whose info string is ``bash runnable`` is run line by line from the repository root (with
the venv's bin first on PATH) and must exit 0. A ``python runnable`` block is run whole by this Python in
a temporary folder holding what a user has after the pipeline ran: a small feature store in
``data/features`` (features that encode the labels, tests/test_train.py) and ``data/manifest.csv``.
Every inline-code dotted name that starts with a params section (``train.epochs``,
``extractors.vggish.checkpoint``, ``--set runner.n_workers=4``) must be a key of that section's config
class.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avpipe.models.registry import MODELS
from avpipe.pipeline.config import Params
from avpipe.pipeline.manifest import ManifestRow, Split, write_manifest
from avpipe.pipeline.registry import default_registry
from avpipe.pipeline.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SECTIONS = {f.name for f in dataclasses.fields(Params)}
RUNNABLE = re.compile(r"^```bash runnable\n(.*?)^```", re.M | re.S)
PYTHON_RUNNABLE = re.compile(r"^```python runnable\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
KEY = re.compile(r"(?<![\w./-])((?:" + "|".join(sorted(SECTIONS)) + r")(?:\.[A-Za-z0-9_<>-]+)+)")


def runnable_commands() -> list[tuple[str, str]]:
    commands = []
    for doc in DOCS:
        for block in RUNNABLE.findall(doc.read_text(encoding="utf-8")):
            for line in block.splitlines():
                line = line.split(" #")[0].strip()
                if line and not line.startswith("#"):
                    commands.append((doc.name, line))
    return commands


@pytest.mark.parametrize(("doc", "command"), runnable_commands())
def test_runnable_command_blocks_run(doc: str, command: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{doc}: `{command}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


def test_docs_have_runnable_blocks() -> None:
    assert len(runnable_commands()) >= 4
    assert runnable_python_blocks()


def runnable_python_blocks() -> list[tuple[str, str]]:
    return [(doc.name, block) for doc in DOCS for block in PYTHON_RUNNABLE.findall(doc.read_text("utf-8"))]


@pytest.fixture(scope="module")
def pipeline_outputs(tmp_path_factory) -> Path:
    """``data/features`` and ``data/manifest.csv``: 6 training, 2 validation and 1 test video."""
    from tests.test_train import write_video  # faces carry valence, voices arousal

    root = tmp_path_factory.mktemp("doc_data")
    store = FeatureStore(root / "data" / "features")
    rng = np.random.default_rng(0)
    rows = []
    for i, split in enumerate([Split.TRAIN] * 6 + [Split.VALIDATION] * 2 + [Split.TEST]):
        video_id, n = f"clip{i:02d}", int(rng.integers(60, 120))
        write_video(store, video_id, n, rng)
        row = ManifestRow(video_id=video_id, media_path=f"/data/{video_id}.mp4", split=split, n_frames=n)
        rows.append(row)
    write_manifest(rows, root / "data" / "manifest.csv")
    return root


@pytest.mark.parametrize(("doc", "block"), runnable_python_blocks())
def test_runnable_python_blocks_run(doc: str, block: str, pipeline_outputs: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", block],
        cwd=pipeline_outputs,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (
        f"{doc}: block exited {done.returncode}:\n{block}\n{done.stdout}\n{done.stderr}"
    )


def _field_hint(cls: type, name: str) -> Any:
    if not dataclasses.is_dataclass(cls) or name not in {f.name for f in dataclasses.fields(cls)}:
        return None
    return typing.get_type_hints(cls)[name]


FILE_SUFFIXES = (".json", ".csv", ".yaml", ".h5", ".py", ".md", ".png", ".txt")


def plugin_example_names() -> set[str]:
    """Extractors, models, adapters and losses of the plug-in example the docs walk through (not in the
    registries: the example is not installed)."""
    names = set()
    for path in (REPO / "tests" / "plugin_example").rglob("*.py"):
        names |= set(re.findall(r'^\s+name = "([^"]+)"', path.read_text(encoding="utf-8"), re.M))
    return names


def key_exists(key: str) -> bool:
    parts = key.split(".")
    if "<" in key:  # a placeholder such as train.<key>: only the part before it is checked
        parts = parts[: next(i for i, p in enumerate(parts) if "<" in p)]
        if parts[:3] == ["train", "model", "config"] or parts[:1] == ["extractors"]:
            return True
    if parts[0] == "extractors":
        if len(parts) < 2:
            return True
        if parts[1] in plugin_example_names():
            return True
        try:
            cls = default_registry().get(parts[1]).config_class
        except Exception:
            return False
        return len(parts) == 2 or _walk(cls, parts[2:])
    if parts[:3] == ["train", "model", "config"] and len(parts) > 3:
        return any(_walk(model.config_class, parts[3:]) for model in MODELS.values())
    if parts[:3] == ["train", "loss", "weights"] and len(parts) == 4:
        return parts[3] in ("va", "expr", "au")
    if parts[:3] == ["train", "loss", "options"] and len(parts) > 3:  # options.<loss>: a plug-in loss's
        return parts[3] in plugin_example_names()
    return _walk(Params, parts)


def _walk(cls: Any, parts: list[str]) -> bool:
    for i, part in enumerate(parts):
        hint = _field_hint(cls, part)
        if hint is None:
            properties = {name for name, v in vars(cls).items() if isinstance(v, property)}
            return part in properties and i == len(parts) - 1
        if i == len(parts) - 1:
            return True
        if not dataclasses.is_dataclass(hint):
            return False
        cls = hint
    return True


def named_keys() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for code in INLINE.findall(doc.read_text(encoding="utf-8")):
            for key in KEY.findall(code):
                key = key.split("=")[0].rstrip(".>")
                if not key.endswith(FILE_SUFFIXES):
                    found.append((doc.name, key))
    return sorted(set(found))


def test_every_params_key_the_docs_name_exists() -> None:
    missing = [f"{doc}: {key}" for doc, key in named_keys() if not key_exists(key)]
    assert not missing, "docs name params keys that do not exist:\n" + "\n".join(missing)
    assert len(named_keys()) > 30  # the check finds the docs' keys at all
