"""Loading plug-ins of every kind (extractors, models, adapters, losses) from entry points: a plug-in that
fails to import, is not of its kind or is misnamed, and a name claimed twice, are refused with an error
naming the entry point and the distribution, are listed with their problem, and hide nothing else.

The distributions here are bare ``*.dist-info`` folders (METADATA + entry_points.txt) on ``sys.path``,
which is all ``importlib.metadata`` reads: no installation, nothing in the venv changes.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from avpipe.cli import main as cli_main
from avpipe.models.losses import MultiTaskLoss, TaskLoss, build_kind_losses, loss_registry
from avpipe.models.registry import model_class, model_registry
from avpipe.models.tasks import TaskSpec
from avpipe.pipeline.adapters import adapter_registry
from avpipe.pipeline.config.dataset import DatasetConfig
from avpipe.pipeline.config.train import LossConfig, Task
from avpipe.pipeline.errors import AvpipeError, ConfigError, ExtractorError
from avpipe.pipeline.labels import TaskKind
from avpipe.pipeline.plugins import BUILTIN_ORIGIN, PluginGroup
from avpipe.pipeline.registry import default_registry

DIST = "broken-plugins"
VERSION = "1.0"
ORIGIN = f"{DIST} {VERSION}"
MODULE_PREFIX = "fake_avpipe_plugin_"

# One valid class per kind, named like a built-in of that kind (so that only the name clash is wrong).
VALID_CLASSES = {
    "extractors": """
        from dataclasses import dataclass
        from avpipe.pipeline.registry import Extractor, InputKind

        @dataclass
        class Config:
            pass

        class Thing(Extractor):
            name = "mfcc"
            input_kind = InputKind.AUDIO
            config_class = Config
            feature_dim = 1

            def extract(self, source, timeline, context):
                raise AssertionError("never run")
        """,
    "models": """
        from dataclasses import dataclass
        from avpipe.models.base import SequenceModel

        @dataclass
        class Config:
            pass

        class Thing(SequenceModel):
            name = "lfan"
            config_class = Config
        """,
    "adapters": """
        from avpipe.pipeline.adapters import DatasetAdapter

        class Thing(DatasetAdapter):
            name = "folder"

            def scan(self):
                raise AssertionError("never run")

            def read_labels(self, candidate):
                raise AssertionError("never run")
        """,
    "losses": """
        from avpipe.models.losses import TaskLoss
        from avpipe.pipeline.labels import TaskKind

        class Thing(TaskLoss):
            name = "ccc"
            targets = (TaskKind.CONTINUOUS,)

            def __call__(self, output, target, labelled):
                raise AssertionError("never run")
        """,
}


@dataclass(frozen=True)
class Kind:
    """One plug-in kind: its group, its registry, the error it raises, a built-in it keeps."""

    command: str
    group: PluginGroup
    registry: Callable[[], Any]
    error: type[AvpipeError]
    builtin: str  # the built-in VALID_CLASSES' class is named like
    other_builtin: str  # a built-in nothing here touches


KINDS = [
    Kind("extractors", PluginGroup.EXTRACTORS, default_registry, ExtractorError, "mfcc", "logmel"),
    Kind("models", PluginGroup.MODELS, model_registry, ConfigError, "lfan", "tcn"),
    Kind("adapters", PluginGroup.ADAPTERS, adapter_registry, ConfigError, "folder", "affwild2"),
    Kind("losses", PluginGroup.LOSSES, loss_registry, ConfigError, "ccc", "mse"),
]


def write_distribution(site: Path, name: str, entries: dict[str, dict[str, str]]) -> None:
    info = site / f"{name.replace('-', '_')}-{VERSION}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {VERSION}\n")
    lines = []
    for group, points in entries.items():
        lines += [f"[{group}]", *(f"{point} = {target}" for point, target in points.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder on sys.path for fake distributions and their modules; the modules are forgotten after."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for module in [m for m in sys.modules if m.startswith(MODULE_PREFIX)]:
        del sys.modules[module]


def write_module(site: Path, name: str, source: str) -> str:
    module = f"{MODULE_PREFIX}{name}"
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    return module


def install_bad_plugins(site: Path, kind: Kind) -> dict[str, str]:
    """Four refused plug-ins of ``kind`` in one distribution; returns name -> entry point."""
    boom = write_module(site, "boom", 'raise ImportError("needs libfoo, which is not installed")\n')
    valid = write_module(site, "valid", VALID_CLASSES[kind.command])
    other = write_module(site, "other", "class Other:\n    name = 'not-a-plugin'\n")
    points = {
        "boom": f"{boom}:Thing",
        "misnamed": f"{valid}:Thing",  # its class says another name
        "not-a-plugin": f"{other}:Other",  # not a subclass of the kind's base class
        kind.builtin: f"{valid}:Thing",  # a valid class whose name a built-in has
    }
    write_distribution(site, DIST, {kind.group.value: points})
    return points


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.command)
def test_refused_plugins_name_their_entry_point_and_hide_nothing_else(site: Path, kind: Kind) -> None:
    points = install_bad_plugins(site, kind)
    registry = kind.registry()
    assert kind.other_builtin in registry.names() and registry.origins[kind.other_builtin] == BUILTIN_ORIGIN
    assert kind.builtin not in registry.names()  # claimed twice: neither is used
    expected = {
        "boom": "failed to load: ImportError: needs libfoo, which is not installed",
        "misnamed": f"whose name is {kind.builtin!r}: the entry-point name must equal the class's name",
        "not-a-plugin": "is not a usable",
        kind.builtin: f"its name {kind.builtin!r} is taken by the built-in",
    }
    for name, problem in expected.items():
        with pytest.raises(kind.error) as caught:
            registry.get(name)
        message = str(caught.value)
        assert f"{ORIGIN} (entry point {points[name]})" in message and problem in message, message
    rows = [row for row in registry.listing() if row.item is None]
    assert sorted(row.name for row in rows) == sorted(points)
    assert all(row.origin.startswith(ORIGIN) and row.problem for row in rows)
    (builtin,) = [row for row in registry.listing() if row.name == kind.builtin and row.item is not None]
    assert builtin.origin == BUILTIN_ORIGIN and "not used: a plug-in claims its name too" in builtin.problem


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.command)
def test_listing_shows_the_refused_plugins_beside_the_usable_ones(
    site: Path, kind: Kind, capsys: pytest.CaptureFixture[str]
) -> None:
    install_bad_plugins(site, kind)
    assert cli_main([kind.command, "list"]) == 0
    output = capsys.readouterr().out.splitlines()[1:]
    lines = {line.split()[0]: line for line in output}
    clashed = [line for line in output if line.split()[0] == kind.builtin]
    assert len(clashed) == 2 and all("REFUSED" in line for line in clashed)  # the built-in and the plug-in
    assert BUILTIN_ORIGIN in lines[kind.other_builtin] and "REFUSED" not in lines[kind.other_builtin]
    assert "REFUSED: failed to load: ImportError" in lines["boom"] and ORIGIN in lines["boom"]
    assert "REFUSED" in lines["misnamed"] and "REFUSED" in lines["not-a-plugin"]


def test_two_plugins_with_one_name_are_both_refused(site: Path) -> None:
    source = write_module(site, "valid", VALID_CLASSES["losses"].replace('"ccc"', '"focal"'))
    write_distribution(site, "first-losses", {PluginGroup.LOSSES.value: {"focal": f"{source}:Thing"}})
    write_distribution(site, "second-losses", {PluginGroup.LOSSES.value: {"focal": f"{source}:Thing"}})
    registry = loss_registry()
    assert "focal" not in registry.names() and "ccc" in registry.names()
    with pytest.raises(ConfigError, match=r"declared by first-losses 1\.0 .* and second-losses 1\.0"):
        registry.get("focal")


def test_a_refused_model_named_in_train_model_name_says_why(site: Path) -> None:
    install_bad_plugins(site, next(kind for kind in KINDS if kind.command == "models"))
    with pytest.raises(ConfigError, match=r"train.model.name.*failed to load: ImportError") as caught:
        model_class("boom")
    assert ORIGIN in str(caught.value)
    with pytest.raises(ConfigError, match=r"unknown model 'lfn'; known models: .*tcn"):
        model_class("lfn")


def test_adapter_and_loss_names_in_params_say_why_they_are_refused(site: Path, tmp_path: Path) -> None:
    boom = write_module(site, "boom", 'raise ImportError("needs libfoo, which is not installed")\n')
    groups = {
        PluginGroup.ADAPTERS.value: {"boom": f"{boom}:Thing"},
        PluginGroup.LOSSES.value: {"boom": f"{boom}:X"},
    }
    write_distribution(site, DIST, groups)
    with pytest.raises(ConfigError, match=r"'dataset.adapter'.*adapter plug-in 'boom' is refused.*libfoo"):
        DatasetConfig(adapter="boom", root=str(tmp_path))
    assert DatasetConfig(adapter="folder", root=str(tmp_path)).adapter == "folder"
    with pytest.raises(ConfigError, match=r"'train.loss.va'.*loss plug-in 'boom' is refused.*libfoo"):
        build_kind_losses(LossConfig(va="boom"))
    with pytest.raises(
        ConfigError, match=r"'train.loss.categorical'.*'ccc' trains continuous tasks, not categ"
    ):
        build_kind_losses(LossConfig(categorical="ccc"))
    with pytest.raises(ConfigError, match=r"'train.loss.options.hubr'.*no such loss"):
        build_kind_losses(LossConfig(options={"hubr": {}}))


def test_an_extractor_whose_default_config_fails_is_listed_with_an_unknown_width(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = VALID_CLASSES["extractors"].replace('"mfcc"', '"needs-a-path"')
    source = source.replace(
        "            pass\n",
        "            def __post_init__(self):\n                raise ValueError('set path')\n",
    )
    module = write_module(site, "valid", source)
    write_distribution(site, DIST, {PluginGroup.EXTRACTORS.value: {"needs-a-path": f"{module}:Thing"}})
    assert cli_main(["extractors", "list"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["needs-a-path"][:3] == ["needs-a-path", "audio", "?"] and lines["mfcc"][2] == "39"


def test_a_loss_receives_targets_and_the_label_mask_of_every_task_kind() -> None:
    """The TaskLoss contract (docs/EXTENDING.md): unlabelled entries are False in ``labelled`` whatever the
    kind's marker (va -5, a declared dimension NaN, classes and flags -1), continuous targets hold no
    marker, and each kind's task gets the loss ``train.loss`` names for that kind."""
    import torch

    calls: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    class Recording(TaskLoss):
        name = "recording"
        targets = tuple(TaskKind)

        def __call__(self, output, target, labelled):
            calls.append((self.name, target.clone(), labelled.clone()))
            return output.sum() * 0.0

    registry = loss_registry()
    registry.add(Recording, "test")
    dominance = TaskSpec("dimension:dominance", TaskKind.CONTINUOUS, ("dominance",))
    colour = TaskSpec("category:colour", TaskKind.CATEGORICAL, ("red", "green"))
    config = LossConfig(va="recording", categorical="recording")  # multi-label: the built-in bce
    loss = MultiTaskLoss([Task.VA, dominance, colour, Task.AU], config, registry)
    va = torch.tensor([[[0.5, -5.0], [-5.0, -5.0], [0.1, 0.2]]])  # arousal of frame 0 unlabelled
    dim = torch.tensor([[[0.3], [float("nan")], [-5.0]]])  # -5 is a dominance value here, NaN is not
    classes = torch.tensor([[1, -1, 0]])
    au = torch.zeros(1, 3, 12)
    outputs = {
        "va": torch.zeros(1, 3, 2),
        dominance.key: torch.zeros(1, 3, 1),
        colour.key: torch.zeros(1, 3, 2),
    }
    outputs["au"] = torch.zeros(1, 3, 12)
    loss(outputs, {"va": va, dominance.key: dim, colour.key: classes, "au": au})
    assert [name for name, _, _ in calls] == ["recording"] * 3  # au went to bce
    (_, va_target, va_mask), (_, dim_target, dim_mask), (_, class_target, class_mask) = calls
    assert va_mask.tolist() == [[[True, False], [False, False], [True, True]]]
    assert torch.allclose(va_target, torch.tensor([[[0.5, 0.0], [0.0, 0.0], [0.1, 0.2]]]))
    assert dim_mask.tolist() == [[[True], [False], [True]]]
    assert torch.equal(dim_target, torch.tensor([[[0.3], [0.0], [-5.0]]]))
    assert class_mask.tolist() == [[True, False, True]] and class_target.tolist() == [[1, -1, 0]]
