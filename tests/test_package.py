"""avpipe installs as one package, ``avpipe``: a research repo with its own ``models/`` and ``pipeline/``
folders (sucv/ABAW2, the JCA code and AIM3 all have a ``models/``) imports both its folders and avpipe."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

USER_SCRIPT = """
import models, pipeline
from pipeline.params import load_params as theirs
from models.net import Net

import avpipe
from avpipe.pipeline.config import load_params
from avpipe.pipeline.config import TrainConfig

params = load_params({params!r})
assert theirs() == "the research repo's own loader"
assert Net.__module__ == "models.net"
assert isinstance(params.train, TrainConfig)
assert models.__file__.startswith({root!r}) and pipeline.__file__.startswith({root!r})
print("ok", avpipe.__version__)
"""


def test_a_research_repo_with_its_own_models_and_pipeline_folders_imports_avpipe(tmp_path: Path) -> None:
    for name, body in {
        "models/__init__.py": "",
        "models/net.py": "class Net:\n    pass\n",
        "pipeline/__init__.py": "",
        "pipeline/params.py": 'def load_params():\n    return "the research repo\'s own loader"\n',
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    script = tmp_path / "train.py"
    script.write_text(USER_SCRIPT.format(params=str(REPO / "params.yaml"), root=str(tmp_path)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # Where avpipe is not installed (a checkout on PYTHONPATH), the checkout goes after the user's folders.
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok")


def test_no_module_of_avpipe_imports_the_bare_folder_names() -> None:
    offenders = []
    for folder in ("pipeline", "models", "stages", "avpipe", "bench", "tests"):
        for path in sorted(set((REPO / folder).rglob("*.py")) - {Path(__file__).resolve()}):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                words = line.split()
                bare = len(words) >= 2 and words[1].split(".")[0] in {"pipeline", "models", "stages"}
                if bare and words[0] in {"from", "import"}:
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.slow
def test_the_wheel_holds_avpipe_only(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path / "source"
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    for folder in ("avpipe", "pipeline", "models", "stages"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("avpipe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"avpipe"}, tops
    for module in (
        "avpipe/__init__.py",
        "avpipe/pipeline/store.py",
        "avpipe/models/trainer.py",
        "avpipe/stages/faces.py",
        "avpipe/pipeline/extractors/faces/detect.py",
    ):
        assert module in names
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "avpipe = avpipe.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, lazy imports inside functions included."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)] + [
                (node.lineno, f"{node.module}.{alias.name}") for alias in node.names
            ]
    return found


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [("pipeline", ("avpipe.models", "avpipe.stages")), ("models", ("avpipe.stages",))],
)
def test_layers_import_only_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    """The core library never imports the trainers or the stage shells; the trainers never the stages."""
    offenders = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for path in sorted((REPO / layer).rglob("*.py"))
        for line, module in _imported_modules(path)
        if module.startswith(forbidden)
    ]
    assert not offenders, "\n".join(offenders)
