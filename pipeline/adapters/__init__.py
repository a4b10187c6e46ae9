"""Dataset adapters: name -> class, filled by ``@register_adapter`` as adapter modules are imported,
and by installed packages through the ``avpipe.adapters`` entry-point group (docs/EXTENDING.md).

Built-in adapters (``affwild2``, ``folder``, the corpus recipes of docs/DATASETS.md) are imported on
first use of the registry, so that importing this package stays cheap and free of import cycles.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from avpipe.pipeline.adapters.base import Candidate, DatasetAdapter, Scan
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.plugins import PluginGroup, PluginRegistry, builtin_origin

__all__ = [
    "Candidate",
    "DatasetAdapter",
    "Scan",
    "adapter_class",
    "adapter_classes",
    "adapter_names",
    "adapter_registry",
    "create_adapter",
    "register_adapter",
]

BUILTIN_MODULES = (
    "avpipe.pipeline.adapters.affwild2",
    "avpipe.pipeline.adapters.folder",
    "avpipe.pipeline.adapters.crema_d",
    "avpipe.pipeline.adapters.ravdess",
    "avpipe.pipeline.adapters.recola",
    "avpipe.pipeline.adapters.msp_podcast",
    "avpipe.pipeline.adapters.avec2019_ces",
)

# Filled at import time by the decorator and never emptied, like Python's codec registry.
_REGISTERED: dict[str, type[DatasetAdapter]] = {}


def check_adapter_class(cls: Any) -> None:
    """Raise TypeError when ``cls`` cannot be a registered adapter."""
    if not (isinstance(cls, type) and issubclass(cls, DatasetAdapter)):
        raise TypeError(f"{cls!r} is not a subclass of avpipe.pipeline.adapters.DatasetAdapter")
    if not getattr(cls, "name", ""):
        raise TypeError(f"adapter class {cls.__qualname__} must set the class attribute 'name'")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise TypeError(f"adapter class {cls.__qualname__} does not implement {missing}")


def register_adapter(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
    """Class decorator: make ``cls`` available to ``create_adapter`` under ``cls.name``."""
    check_adapter_class(cls)
    name = cls.name
    known = _REGISTERED.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(
            f"adapter name {name!r} is registered twice: by {known.__module__} and by {cls.__module__}"
        )
    _REGISTERED[name] = cls
    return cls


def _adapter_error(problem: str) -> ConfigError:
    return ConfigError("dataset.adapter", problem)


def adapter_registry() -> PluginRegistry[type[DatasetAdapter]]:
    """The built-in adapters, those registered by decorator, and the ``avpipe.adapters`` plug-ins."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    registry: PluginRegistry[type[DatasetAdapter]] = PluginRegistry(
        "adapter", PluginGroup.ADAPTERS.value, check_adapter_class, _adapter_error
    )
    for cls in _REGISTERED.values():
        registry.add(cls, builtin_origin(cls.__module__))
    registry.load()
    return registry


def adapter_classes() -> dict[str, type[DatasetAdapter]]:
    """Every usable adapter by name, the built-in ones included."""
    registry = adapter_registry()
    return {name: registry.get(name) for name in registry.names()}


def adapter_names() -> list[str]:
    return adapter_registry().names()


def adapter_class(name: str) -> type[DatasetAdapter]:
    """The adapter registered as ``name``; ConfigError("dataset.adapter") naming the problem."""
    return adapter_registry().get(name)


def create_adapter(name: str, root: str | Path, **options: Any) -> DatasetAdapter:
    """The adapter ``name`` reading the dataset at ``root``; ``options`` go to its constructor."""
    registry = adapter_registry()
    cls = registry.get(name)
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(
            "dataset.root", f"{root} {'is not a directory' if root.exists() else 'does not exist'}"
        )
    if options.get("labels") is None or "labels" not in inspect.signature(cls).parameters:
        options.pop("labels", None)  # adapters written before dataset.labels existed take no label config
    where = f" from {registry.origins[name]}" if registry.is_plugin(name) else ""
    try:
        return cls(root, **options)
    except TypeError as err:
        raise ConfigError(
            "dataset", f"adapter {name!r}{where} does not accept these options: {err}"
        ) from None
    except ConfigError as err:
        if not where:
            raise
        raise ConfigError(err.key, f"{err.problem} (adapter {name!r}{where})") from err
