"""Reading torch checkpoint files without running code from them, and converting legacy ones.

``torch.load(weights_only=True)`` reads tensors, containers and plain values; it refuses every other
pickled global. The torchvggish release files also hold numpy arrays, so ``load_weights`` allows the
numpy array reconstruction globals too (numpy's own constructor and dtypes, nothing that calls out).
No avpipe code path ever unpickles a file in full: a checkpoint that needs that (a whole pickled
``nn.Module``, custom classes) is refused with a message naming ``avpipe convert-checkpoint``, which
does the full unpickling once, only when asked with ``--trust-pickle``, and writes a tensors-only file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avpipe.pipeline.errors import AvpipeError

log = logging.getLogger(__name__)

CONVERT_HINT = (
    "it needs full unpickling, which can run code stored in the file, so avpipe never does that "
    "while it runs. If you trust the file's source, convert it once: "
    "`avpipe convert-checkpoint --trust-pickle {path} <output.pth>`, and point the parameter at the output"
)


class CheckpointError(AvpipeError):
    """A checkpoint file that cannot be read safely (or at all)."""


def _numpy_array_globals() -> list[Any]:
    """What pickled numpy arrays refer to: the array reconstructor, ndarray, dtype and dtype classes."""
    reconstruct = (
        np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
    )
    dtype_classes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    return [reconstruct, np.ndarray, np.dtype, scalar, *sorted(dtype_classes, key=str)]


def load_weights(path: str | Path, what: str) -> Any:
    """The contents of a torch file of tensors and/or numpy arrays, read without running its code.

    CheckpointError naming the file when it is unreadable or needs full unpickling.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (pickle, zip, RuntimeError) for a bad file
        if "GLOBAL" in str(err):  # a pickled object (class, function) the weights-only loader refuses
            raise CheckpointError(
                f"{path}: the {what} file holds Python objects other than tensors and arrays: "
                + CONVERT_HINT.format(path=path)
                + f" (torch said: {_torch_reason(err)})"
            ) from err
        raise CheckpointError(
            f"{path}: cannot read the {what} file with torch.load: {_torch_reason(err)}"
        ) from err


BOILERPLATE = ("Weights only load failed", "Check the documentation of torch.load", "Please file an issue")


def _torch_reason(err: BaseException) -> str:
    """torch's own reason, without its paragraphs about weights_only (which do not apply here)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(BOILERPLATE)]
    return " ".join(kept or lines[-1:]) or type(err).__name__


@dataclass(frozen=True)
class Conversion:
    """What ``convert_checkpoint`` did."""

    source: Path
    target: Path
    tensors: int
    full_unpickling: bool


def convert_checkpoint(source: str | Path, target: str | Path, trust_pickle: bool = False) -> Conversion:
    """Rewrite ``source`` as a tensors-only file at ``target`` that ``load_weights`` reads.

    An ``nn.Module`` becomes its state dict, numpy arrays become tensors, nested mappings are kept.
    The full unpickling happens only with ``trust_pickle``. ``target`` is never overwritten.
    """
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise CheckpointError(f"{source}: no such file")
    if target.exists():
        raise CheckpointError(
            f"{target}: already exists; choose another output path (nothing is overwritten)"
        )
    full = False
    try:
        raw = load_weights(source, "checkpoint")
    except CheckpointError:
        if not trust_pickle:
            raise
        log.warning("%s: unpickling in full, which runs any code the file holds (--trust-pickle)", source)
        try:
            raw = torch.load(source, map_location="cpu", weights_only=False)
        except Exception as err:
            raise CheckpointError(f"{source}: cannot be unpickled: {err}") from err
        full = True
    converted = _tensors_only(raw, source)
    count = _count_tensors(converted)
    if count == 0:
        raise CheckpointError(f"{source}: holds no tensors or arrays to convert")
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(converted, target)
    load_weights(target, "converted checkpoint")  # proves the output needs no unpickling
    return Conversion(source, target, count, full)


def _tensors_only(value: Any, source: Path) -> Any:
    if isinstance(value, nn.Module):
        value = value.state_dict()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray | np.generic):
        return torch.from_numpy(np.array(value))
    if isinstance(value, Mapping):
        return {str(key): _tensors_only(item, source) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_tensors_only(item, source) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise CheckpointError(
        f"{source}: holds a {type(value).__module__}.{type(value).__name__}, which is not weights; "
        "save its state_dict() instead"
    )


def _count_tensors(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return 1
    if isinstance(value, Mapping):
        return sum(_count_tensors(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_tensors(v) for v in value)
    return 0
