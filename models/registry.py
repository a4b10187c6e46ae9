"""The one model registry: ``create_model(name, inputs=..., tasks=..., window=..., **config)``.

``config`` is the ``train.model.config`` mapping; it is validated by the model's config dataclass, so a
wrong key or value is a ConfigError naming ``train.model.config.<key>``.
"""

from __future__ import annotations

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

MODELS: Mapping[str, type[SequenceModel]] = MappingProxyType(
    {cls.name: cls for cls in (TCNModel, LFANModel, JCAModel, RNNModel, TransformerModel, AIM3Model)}
)


def model_names() -> list[str]:
    return sorted(MODELS)


def model_class(name: str) -> type[SequenceModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            "train.model.name", f"unknown model {name!r}; models: {', '.join(model_names())}"
        ) from None


def validate_model_config(name: str, config: Mapping[str, Any] | None) -> Any:
    """The model's config dataclass filled from ``config`` (ConfigError on bad keys or values)."""
    return build_dataclass(model_class(name).config_class, config or {}, prefix="train.model.config")


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
    settings = validate_model_config(name, config)
    if not separate_va:
        return model_class(name)(context, settings)
    if context.task_keys() != (Task.VA.value,):
        raise ConfigError("train.model.separate_va", f"needs tasks [va] alone, got {list(tasks)}")
    return PerDimensionVA(context, lambda: model_class(name)(context, settings))
