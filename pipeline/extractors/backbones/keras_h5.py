"""Keras 2 HDF5 models in torch: the layer graph, the weights, and Keras's 'same' max pooling.

A Keras ``model.save`` file holds the architecture as JSON (``model_config`` attribute) and each
layer's tensors under ``model_weights/<layer>/<scope>/<name>:0``. The ``copy_*`` helpers move them
into torch modules, converting Keras's channels-last kernel layouts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn
from torch.nn import functional

from avpipe.pipeline.errors import ExtractorError


def keras_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one axis for Keras/TensorFlow ``padding='same'``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class KerasSameMaxPool(nn.Module):
    """Max pooling with Keras 'same' padding: padded cells never win (as if they held -inf).

    Keras puts the odd padding cell after the input. torch's ``max_pool2d`` pads ``before`` on both
    sides, and ``ceil_mode`` adds a last, partial window that ignores cells past the input, which is
    exactly the extra cell: no padded copy of the activations is made. Where that identity does not
    hold (other kernel/stride/size combinations) the input is padded explicitly.
    """

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = (keras_same_pads(n, self.kernel, self.stride) for n in x.shape[-2:])
        if bottom - top in (0, 1) and right - left in (0, 1) and 2 * max(top, left) <= self.kernel:
            out = functional.max_pool2d(x, self.kernel, self.stride, padding=(top, left), ceil_mode=True)
            if out.shape[-2:] == tuple(math.ceil(n / self.stride) for n in x.shape[-2:]):
                return out
        padded = functional.pad(x, (left, right, top, bottom), value=-math.inf)
        return functional.max_pool2d(padded, self.kernel, self.stride)


@dataclass(frozen=True)
class KerasLayer:
    name: str
    class_name: str
    config: dict[str, Any]
    inbound: tuple[str, ...]


def read_keras_layers(h5: h5py.File, path: Path) -> list[KerasLayer]:
    raw = h5.attrs.get("model_config")
    if raw is None:
        raise ExtractorError(f"{path}: not a Keras model file (no 'model_config' attribute)")
    config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    layers = []
    for layer in config["config"]["layers"]:
        nodes = layer.get("inbound_nodes") or []
        inbound = tuple(node[0] for node in nodes[0]) if nodes else ()
        layers.append(KerasLayer(layer["name"], layer["class_name"], layer["config"], inbound))
    return layers


def layer_weights(h5: h5py.File, layer: str, path: Path) -> dict[str, np.ndarray]:
    """``{'kernel': ..., 'gamma': ...}`` of one layer (Keras stores them as ``<layer>/<scope>/<name>:0``)."""
    group = h5["model_weights"].get(layer)
    if group is None:
        raise ExtractorError(f"{path}: no weights for layer {layer!r}")
    found: dict[str, np.ndarray] = {}

    def collect(name: str, obj: h5py.HLObject) -> None:  # must return None, or h5py stops visiting
        if isinstance(obj, h5py.Dataset):
            found[name.rsplit("/", 1)[-1].split(":")[0]] = obj[()]

    group.visititems(collect)
    return found


def _set(param: torch.Tensor, value: np.ndarray, where: str) -> None:
    if tuple(param.shape) != value.shape:
        raise ExtractorError(f"{where}: weight shape {value.shape} does not fit {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def copy_conv(conv: nn.Conv2d, h5: h5py.File, layer: str, path: Path) -> None:
    w = layer_weights(h5, layer, path)
    # Keras kernels are (kh, kw, in, out); torch wants (out, in, kh, kw).
    _set(conv.weight, w["kernel"].transpose(3, 2, 0, 1), f"{path}:{layer}")
    if conv.bias is not None:
        _set(conv.bias, w["bias"], f"{path}:{layer}")


def copy_separable(depthwise: nn.Conv2d, pointwise: nn.Conv2d, h5: h5py.File, layer: str, path: Path) -> None:
    w = layer_weights(h5, layer, path)
    # depthwise (kh, kw, in, 1) -> (in, 1, kh, kw); pointwise (1, 1, in, out) -> (out, in, 1, 1).
    _set(depthwise.weight, w["depthwise_kernel"].transpose(2, 3, 0, 1), f"{path}:{layer}")
    _set(pointwise.weight, w["pointwise_kernel"].transpose(3, 2, 0, 1), f"{path}:{layer}")


def copy_batchnorm(bn: nn.BatchNorm2d, h5: h5py.File, layer: str, path: Path) -> None:
    w = layer_weights(h5, layer, path)
    where = f"{path}:{layer}"
    _set(bn.weight, w["gamma"], where)
    _set(bn.bias, w["beta"], where)
    _set(bn.running_mean, w["moving_mean"], where)
    _set(bn.running_var, w["moving_variance"], where)
