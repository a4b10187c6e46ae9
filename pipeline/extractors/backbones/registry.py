"""Backbone registry: name -> factory, timm's ``create_model`` shape.

A backbone is a ``Backbone`` module: it owns its input preprocessing (uint8 RGB crops in, normalised
tensor out) and returns a ``BackboneOutput`` (pooled embedding, and expression logits when it has a
head). Factories are plain functions decorated with ``@register_backbone("name")`` and take keyword
configuration, so ``create_backbone("ir50", checkpoint="w.pth")`` works for every backbone alike.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from avpipe.pipeline.errors import ExtractorError

BackboneFactory = Callable[..., "Backbone"]

# Modules whose import registers the built-in backbones (imported on first lookup).
BUILTIN_MODULES = (
    "avpipe.pipeline.extractors.backbones.fer_minixception",
    "avpipe.pipeline.extractors.backbones.inception_resnet_v1",
    "avpipe.pipeline.extractors.backbones.resnet",
    "avpipe.pipeline.extractors.backbones.iresnet",
    "avpipe.pipeline.extractors.backbones.timm_backbone",
    "avpipe.pipeline.extractors.backbones.hf_vision",
)

# Filled by the decorator at import time of the modules above; never mutated otherwise (like timm's
# model entrypoint table).
_FACTORIES: dict[str, BackboneFactory] = {}


class BackboneOutput(NamedTuple):
    embedding: torch.Tensor  # (N, D) float
    logits: torch.Tensor | None  # (N, C) float, None for backbones without a classification head


class Backbone(nn.Module, ABC):
    """A face CNN with its own preprocessing. Subclasses set the class attributes below."""

    embedding_dim: int
    input_size: int  # side of the square input the network is fed
    logit_names: tuple[str, ...] = ()  # class names of ``logits``; empty when there is no head

    @abstractmethod
    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, S, S, 3) uint8 RGB crops -> (N, C, input_size, input_size) float network input."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """Network input -> pooled embedding and logits."""


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: make ``factory`` available as ``create_backbone(name, **cfg)``."""

    def decorate(factory: BackboneFactory) -> BackboneFactory:
        known = _FACTORIES.get(name)
        if known is not None and known is not factory:
            raise ExtractorError(
                f"backbone name {name!r} is registered twice: {known.__module__}, {factory.__module__}"
            )
        _FACTORIES[name] = factory
        return factory

    return decorate


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def list_backbones() -> list[str]:
    _load_builtins()
    return sorted(_FACTORIES)


def create_backbone(name: str, **cfg: Any) -> Backbone:
    """Build backbone ``name`` in eval mode; ``cfg`` goes to its factory (e.g. ``checkpoint=...``)."""
    _load_builtins()
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ExtractorError(
            f"unknown backbone {name!r}; known backbones: {', '.join(sorted(_FACTORIES))}"
        ) from None
    model = factory(**cfg)
    return model.eval()
