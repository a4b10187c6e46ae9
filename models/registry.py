"""The one model registry: ``create_model(name, inputs=..., tasks=..., window=..., **config)``.

``config`` is the ``train.model.config`` mapping; it is validated by the model's config dataclass, so a
wrong key or value is a ConfigError naming ``train.model.config.<key>`` (and, for a plug-in, the model
and the distribution it comes from).

Besides the built-in models, installed packages add models through the ``avpipe.models`` entry-point
group (``avpipe.pipeline.plugins``, docs/EXTENDING.md): ``train.model.name: <plug-in>`` then trains it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from avpipe.models.aim3 import AIM3Model
from avpipe.models.base import InputSpec, ModelContext, SequenceModel
from avpipe.models.jca import JCAModel
from avpipe.models.lfan import LFANModel
from avpipe.models.recurrent import RNNModel
from avpipe.models.separate import PerDimensionVA
from avpipe.models.tasks import TaskSpec, as_specs
from avpipe.models.tcn import TCNModel
from avpipe.models.transformer import TransformerModel
from avpipe.pipeline.config import build_dataclass
from avpipe.pipeline.config.train import Task
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.plugins import BUILTIN_ORIGIN, PluginGroup, PluginRegistry

# The built-in models (the plug-ins come from entry points: ``model_registry``).
MODELS: Mapping[str, type[SequenceModel]] = MappingProxyType(
    {cls.name: cls for cls in (TCNModel, LFANModel, JCAModel, RNNModel, TransformerModel, AIM3Model)}
)


def check_model_class(cls: Any) -> None:
    """Raise TypeError when ``cls`` cannot be a registered model."""
    if not (isinstance(cls, type) and issubclass(cls, SequenceModel)):
        raise TypeError(f"{cls!r} is not a subclass of avpipe.models.base.SequenceModel")
    for attr in ("name", "config_class"):
        if not hasattr(cls, attr):
            raise TypeError(f"model class {cls.__qualname__} must set the class attribute {attr!r}")
    if not dataclasses.is_dataclass(cls.config_class):
        raise TypeError(f"model {cls.name!r}: config_class must be a dataclass")


def _model_error(problem: str) -> ConfigError:
    return ConfigError("train.model.name", problem)


def model_registry() -> PluginRegistry[type[SequenceModel]]:
    """The built-in models and the ``avpipe.models`` plug-ins (refused ones listed with their problem)."""
    registry: PluginRegistry[type[SequenceModel]] = PluginRegistry(
        "model", PluginGroup.MODELS.value, check_model_class, _model_error
    )
    for cls in MODELS.values():
        registry.add(cls, BUILTIN_ORIGIN)
    registry.load()
    return registry


def model_names() -> list[str]:
    return model_registry().names()


def model_class(name: str) -> type[SequenceModel]:
    """The model registered as ``name``; ConfigError("train.model.name") naming the problem."""
    return model_registry().get(name)


def validate_model_config(name: str, config: Mapping[str, Any] | None) -> Any:
    """The model's config dataclass filled from ``config`` (ConfigError on bad keys or values)."""
    return _settings(model_registry(), name, config)


def _settings(
    registry: PluginRegistry[type[SequenceModel]], name: str, config: Mapping[str, Any] | None
) -> Any:
    cls = registry.get(name)
    try:
        return build_dataclass(cls.config_class, config or {}, prefix="train.model.config")
    except ConfigError as err:
        if not registry.is_plugin(name):
            raise
        raise ConfigError(err.key, f"{err.problem} (model {name!r} from {registry.origins[name]})") from err


def create_model(
    name: str,
    *,
    inputs: Sequence[InputSpec],
    tasks: Sequence[Task] | Sequence[TaskSpec],
    window: int,
    separate_va: bool = False,
    **config: Any,
) -> SequenceModel:
    """Build registered model ``name`` for these inputs (sizes from the store), tasks and window length;
    ``separate_va``: one such model per valence/arousal dimension (``avpipe.models.separate``)."""
    if not inputs:
        raise ConfigError("train.features", "a model needs at least one input")
    context = ModelContext(inputs=tuple(inputs), tasks=tuple(as_specs(tasks)), window=int(window))
    registry = model_registry()
    cls = registry.get(name)
    settings = _settings(registry, name, config)
    build = _plugin_builder(cls, registry.origins[name]) if registry.is_plugin(name) else cls
    if not separate_va:
        return build(context, settings)
    if context.task_keys() != (Task.VA.value,):
        raise ConfigError("train.model.separate_va", f"needs tasks [va] alone, got {list(tasks)}")
    return PerDimensionVA(context, lambda: build(context, settings))


def _plugin_builder(cls: type[SequenceModel], origin: str) -> Any:
    """``cls(context, settings)``, with a failure of the plug-in's own code named after the plug-in."""

    def build(context: ModelContext, settings: Any) -> SequenceModel:
        try:
            model = cls(context, settings)
        except ConfigError:
            raise
        except Exception as err:
            raise ConfigError(
                "train.model.name",
                f"model {cls.name!r} from {origin} failed to build: {type(err).__name__}: {err}",
            ) from err
        if not isinstance(model, SequenceModel):
            raise ConfigError("train.model.name", f"model {cls.name!r} from {origin} built {model!r}")
        return model

    return build
