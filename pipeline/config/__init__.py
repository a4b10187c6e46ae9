"""The whole params.yaml schema, one module per section, loaded and validated once.

This package mirrors params.yaml: ``Params`` (here) holds one dataclass per top-level section, each in
the module of that name (``dataset`` -> ``config/dataset.py`` with its ``labels`` in ``config/labels.py``,
``store``, ``runner``, ``audio``, ``embed``, ``demo``, ``manifest``, ``train``, ``results``).
``extractors.<name>`` sections are validated against the config class each registered extractor declares
next to its code (extractors are plug-ins, so their configs live with them). ``load_params(path,
overrides)`` is the only reader of params.yaml; ``build.py`` has the generic dataclass filling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avpipe.pipeline.config.audio import AudioStageConfig
from avpipe.pipeline.config.build import (
    DEFAULT_PARAMS,
    apply_overrides,
    build_dataclass,
    parse_override,
    read_params,
)
from avpipe.pipeline.config.dataset import DatasetConfig
from avpipe.pipeline.config.demo import DemoConfig
from avpipe.pipeline.config.embed import EmbedStageConfig
from avpipe.pipeline.config.labels import LabelConfig
from avpipe.pipeline.config.manifest import ManifestConfig
from avpipe.pipeline.config.results import ResultsConfig
from avpipe.pipeline.config.runner import RunnerConfig
from avpipe.pipeline.config.store import Compression, StoreConfig
from avpipe.pipeline.config.train import TrainConfig, resolve_train_section
from avpipe.pipeline.errors import ConfigError, ExtractorError
from avpipe.pipeline.registry import ExtractorRegistry, default_registry

__all__ = [
    "DEFAULT_PARAMS",
    "AudioStageConfig",
    "Compression",
    "DatasetConfig",
    "DemoConfig",
    "EmbedStageConfig",
    "LabelConfig",
    "ManifestConfig",
    "Params",
    "ResultsConfig",
    "RunnerConfig",
    "StoreConfig",
    "TrainConfig",
    "apply_overrides",
    "build_dataclass",
    "drop_unset",
    "load_params",
    "parse_override",
    "read_params",
]


@dataclass
class Params:
    """Every section of params.yaml. ``extractors`` maps an extractor name to its config dataclass."""

    demo: DemoConfig = field(default_factory=DemoConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    manifest: ManifestConfig = field(default_factory=ManifestConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    audio: AudioStageConfig = field(default_factory=AudioStageConfig)
    embed: EmbedStageConfig = field(default_factory=EmbedStageConfig)
    extractors: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    results: ResultsConfig = field(default_factory=ResultsConfig)

    def extractor_config(self, name: str, registry: ExtractorRegistry | None = None) -> Any:
        """The validated config of extractor ``name`` (its defaults when params has no section)."""
        if name in self.extractors:
            return self.extractors[name]
        cls = (registry or default_registry()).get(name)
        return cls.config_class()


def load_params(
    path: str | Path = DEFAULT_PARAMS,
    overrides: Sequence[str] = (),
    registry: ExtractorRegistry | None = None,
) -> Params:
    """Read params.yaml, apply ``--set key=value`` overrides, validate everything."""
    return params_from_dict(read_params(path), overrides, Path(path).resolve().parent, registry)


def params_from_dict(
    data: dict[str, Any],
    overrides: Sequence[str] = (),
    base_dir: str | Path = ".",
    registry: ExtractorRegistry | None = None,
) -> Params:
    """``load_params`` for sections already read (``{}``: the built-in defaults); paths in ``train``
    are relative to ``base_dir``."""
    data = apply_overrides(data, overrides)
    base_dir = Path(base_dir).resolve()
    if "train" in data:
        data["train"] = resolve_train_section(drop_unset(data["train"]), base_dir)
    raw_extractors = data.pop("extractors", None) or {}
    if not isinstance(raw_extractors, dict):
        raise ConfigError("extractors", "must be a mapping of extractor name to its parameters")
    params = build_dataclass(Params, data, prefix="")
    registry = registry or default_registry()
    params.extractors = {name: _extractor_config(registry, name, cfg) for name, cfg in raw_extractors.items()}
    for key, names in (
        ("audio.extractors", params.audio.extractors),
        ("embed.backbones", params.embed.backbones),
    ):
        for name in names:
            try:
                registry.get(name)
            except ExtractorError as err:
                raise ConfigError(key, str(err)) from None
    return params


def _extractor_config(registry: ExtractorRegistry, name: str, section: Any) -> Any:
    try:
        cls = registry.get(name)
    except ExtractorError as err:
        raise ConfigError(f"extractors.{name}", str(err)) from None
    return build_dataclass(cls.config_class, section, prefix=f"extractors.{name}")


def drop_unset(section: Any) -> Any:
    """``section`` without its null values, at any depth: in ``train`` a null key means "the preset's value".

    params.yaml lists every train key (most of them null) so that ``dvc exp run -S train.<key>=<value>``
    finds the key: DVC refuses to set a key the file does not have.
    """
    if not isinstance(section, dict):
        return section
    kept = {key: drop_unset(value) for key, value in section.items() if value is not None}
    return {key: value for key, value in kept.items() if value != {} or not isinstance(section[key], dict)}
