"""IResNet-100 (and -50), the ArcFace face-recognition backbone of InsightFace's arcface_torch.

The architecture follows recognition/arcface_torch/backbones/iresnet.py (deepinsight/insightface):
module and parameter names are the same, so its ``backbone.pth`` checkpoints (e.g. ms1mv3_arcface_r100)
load as they are. Block: BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN, plus a 1x1-conv-BN shortcut
when the shape changes; stem conv3x3 - BN - PReLU; stages of 64/128/256/512 channels, each halving the
size; then BN, flatten (512 x 7 x 7), dropout, fc to 512 and a BatchNorm1d whose output is the embedding.
Input: 112x112 RGB scaled to [-1, 1] (arcface_torch's inference.py: ``(img / 255 - 0.5) / 0.5``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from avpipe.pipeline.extractors.backbones.checkpoint import load_checkpoint
from avpipe.pipeline.extractors.backbones.preprocess import normalize, resize, to_float_nchw
from avpipe.pipeline.extractors.backbones.registry import Backbone, BackboneOutput, register_backbone

DEPTHS = {"iresnet50": (3, 4, 14, 3), "iresnet100": (3, 13, 30, 3)}
IRESNET_INPUT = 112
EMBEDDING = 512


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNetBackbone(Backbone):
    """ArcFace IResNet trunk; 512-d embedding (not L2-normalised, as arcface_torch returns it)."""

    embedding_dim = EMBEDDING
    input_size = IRESNET_INPUT

    def __init__(self, depths: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for index, (cout, blocks) in enumerate(zip((64, 128, 256, 512), depths, strict=True), start=1):
            stage = [IBasicBlock(cin, cout, 2)] + [IBasicBlock(cout, cout, 1) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            cin = cout
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * 7 * 7, EMBEDDING)
        self.features = nn.BatchNorm1d(EMBEDDING, eps=1e-5)

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        x = resize(to_float_nchw(crops), IRESNET_INPUT)
        return normalize(x, (127.5, 127.5, 127.5), (127.5, 127.5, 127.5))

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return BackboneOutput(embedding=self.features(self.fc(x)), logits=None)


def _build(name: str, checkpoint: str | Path | None, random_init: bool) -> IResNetBackbone:
    from avpipe.pipeline.extractors.backbones.catalog import IRESNET_DEFAULTS, user_weights

    model = IResNetBackbone(DEPTHS[name])
    if not random_init:
        load_checkpoint(model, user_weights(name, checkpoint, IRESNET_DEFAULTS[name]), name)
    return model.eval()


@register_backbone("iresnet100")
def iresnet100(checkpoint: str | Path | None = None, random_init: bool = False) -> IResNetBackbone:
    return _build("iresnet100", checkpoint, random_init)


@register_backbone("iresnet50")
def iresnet50(checkpoint: str | Path | None = None, random_init: bool = False) -> IResNetBackbone:
    return _build("iresnet50", checkpoint, random_init)
