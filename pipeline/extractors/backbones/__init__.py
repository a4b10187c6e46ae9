"""Face CNN backbones behind one registry: ``create_backbone(name, **cfg)`` (timm style).

The registry is imported on first use so that ``avpipe.pipeline.extractors.backbones.catalog``
(weights locations, label names) stays importable without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Backbone", "BackboneOutput", "create_backbone", "list_backbones", "register_backbone"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from avpipe.pipeline.extractors.backbones import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'avpipe.pipeline.extractors.backbones' has no attribute {name!r}")
