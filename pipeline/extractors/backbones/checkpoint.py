"""Loading user checkpoints into backbones, with errors that say which file and which keys are wrong."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from avpipe.pipeline.errors import ExtractorError

log = logging.getLogger(__name__)

# Training scripts save the weights under one of these keys next to optimiser state and epoch counters.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "backbone")
# nn.DataParallel / DistributedDataParallel prepend this to every key.
PARALLEL_PREFIX = "module."
MAX_KEYS_SHOWN = 5


def read_state_dict(path: Path, backbone: str) -> dict[str, torch.Tensor]:
    """The tensors of a torch checkpoint, unwrapped from common training-script containers."""
    try:
        # weights_only: a checkpoint is data, never code to execute.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (pickle, zip, RuntimeError) for a bad file
        raise ExtractorError(f"backbone {backbone!r}: cannot read checkpoint {path}: {err}") from err
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ExtractorError(f"backbone {backbone!r}: {path} does not hold a state dict of tensors")
    return {_strip_parallel(str(k)): v for k, v in obj.items()}


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_parallel(key: str) -> str:
    return key[len(PARALLEL_PREFIX) :] if key.startswith(PARALLEL_PREFIX) else key


def load_checkpoint(
    model: nn.Module, path: Path, backbone: str, ignore_prefixes: tuple[str, ...] = ()
) -> None:
    """Load ``path`` into ``model`` strictly; keys under ``ignore_prefixes`` (heads) are dropped first."""
    state = read_state_dict(path, backbone)
    dropped = [k for k in state if k.startswith(ignore_prefixes)] if ignore_prefixes else []
    for key in dropped:
        del state[key]
    if dropped:
        log.info("%s: ignoring %d head tensors of %s (%s...)", backbone, len(dropped), path, dropped[0])
    load_state(model, state, path, backbone)


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, backbone: str) -> None:
    """Load tensors read from ``path`` into ``model`` strictly; the error lists wrong keys and shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ExtractorError(
            f"backbone {backbone!r}: checkpoint {path} does not match the architecture: "
            f"{len(missing)} missing keys {_show(missing)}, "
            f"{len(unexpected)} unexpected keys {_show(unexpected)}"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise ExtractorError(
            f"backbone {backbone!r}: checkpoint {path} has {len(wrong)} tensors of the wrong shape: "
            f"{'; '.join(wrong[:MAX_KEYS_SHOWN])}"
        )
    model.load_state_dict(state, strict=True)


def _show(keys: list[str]) -> str:
    if not keys:
        return "[]"
    more = f", ... (+{len(keys) - MAX_KEYS_SHOWN})" if len(keys) > MAX_KEYS_SHOWN else ""
    return "[" + ", ".join(keys[:MAX_KEYS_SHOWN]) + more + "]"
