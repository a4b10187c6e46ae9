"""Dataset adapters: name -> class, filled by ``@register_adapter`` as adapter modules are imported.

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

__all__ = [
    "Candidate",
    "DatasetAdapter",
    "Scan",
    "adapter_classes",
    "adapter_names",
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


def register_adapter(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
    """Class decorator: make ``cls`` available to ``create_adapter`` under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, DatasetAdapter)):
        raise TypeError(f"{cls!r} is not a subclass of avpipe.pipeline.adapters.DatasetAdapter")
    name = getattr(cls, "name", "")
    if not name:
        raise TypeError(f"adapter class {cls.__qualname__} must set the class attribute 'name'")
    known = _REGISTERED.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(
            f"adapter name {name!r} is registered twice: by {known.__module__} and by {cls.__module__}"
        )
    _REGISTERED[name] = cls
    return cls


def adapter_classes() -> dict[str, type[DatasetAdapter]]:
    """Every registered adapter, the built-in ones included."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return dict(sorted(_REGISTERED.items()))


def adapter_names() -> list[str]:
    return list(adapter_classes())


def create_adapter(name: str, root: str | Path, **options: Any) -> DatasetAdapter:
    """The adapter ``name`` reading the dataset at ``root``; ``options`` go to its constructor."""
    classes = adapter_classes()
    if name not in classes:
        raise ConfigError(
            "dataset.adapter", f"unknown adapter {name!r}; known adapters: {', '.join(classes)}"
        )
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(
            "dataset.root", f"{root} {'is not a directory' if root.exists() else 'does not exist'}"
        )
    if options.get("labels") is None or "labels" not in inspect.signature(classes[name]).parameters:
        options.pop("labels", None)  # adapters written before dataset.labels existed take no label config
    try:
        return classes[name](root, **options)
    except TypeError as err:
        raise ConfigError("dataset", f"adapter {name!r} does not accept these options: {err}") from None
