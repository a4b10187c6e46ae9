"""ResNet-50 (torchvision) and the ArcFace-style IR-50, both with weights from a user checkpoint.

IR-50 is the "improved residual" ResNet-50 of InsightFace/ArcFace as written in face.evoLVe (the
backbone of the ABAW2 visual stream): module and key names follow face.evoLVe's ``model_irse.py`` so
its ``backbone_ir50_*.pth`` checkpoints load as they are. Input 112x112 RGB scaled to [-1, 1];
embedding 512-d. ResNet-50 outputs the 2048-d global-average-pooled features; a classifier ``fc`` in
the checkpoint is dropped (its classes belong to the training set).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from avpipe.pipeline.extractors.backbones.catalog import IR50_DEFAULT, RESNET50_DEFAULT, user_weights
from avpipe.pipeline.extractors.backbones.checkpoint import load_checkpoint
from avpipe.pipeline.extractors.backbones.preprocess import normalize, resize, to_float_nchw
from avpipe.pipeline.extractors.backbones.registry import Backbone, BackboneOutput, register_backbone

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# Units per stage of IR-50 (and of ResNet-50): 3, 4, 14, 3 with 64..512 channels.
IR50_STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))


class ResNet50Backbone(Backbone):
    """torchvision ResNet-50 trunk, ImageNet normalisation, 2048-d pooled output."""

    embedding_dim = 2048

    def __init__(self, input_size: int = 224) -> None:
        super().__init__()
        from torchvision.models import resnet50

        self.input_size = input_size
        self.net = resnet50(weights=None)
        self.net.fc = nn.Identity()

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        return normalize(resize(to_float_nchw(crops), self.input_size), IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        return BackboneOutput(embedding=self.net(x), logits=None)


class Flatten(nn.Module):
    """Parameter-free, kept as a module so ``output_layer`` indices match face.evoLVe's checkpoints."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class BottleneckIR(nn.Module):
    """IR unit: BN-conv-PReLU-conv(stride)-BN, plus a (projected) shortcut."""

    def __init__(self, in_ch: int, depth: int, stride: int) -> None:
        super().__init__()
        if in_ch == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_ch, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IR50Backbone(Backbone):
    """ArcFace IR-50 on 112x112 crops; 512-d embedding (before any L2 normalisation)."""

    embedding_dim = 512
    input_size = 112

    def __init__(self) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        units: list[nn.Module] = []
        in_ch = 64
        for depth, n_units in IR50_STAGES:
            units.append(BottleneckIR(in_ch, depth, 2))
            units += [BottleneckIR(depth, depth, 1) for _ in range(n_units - 1)]
            in_ch = depth
        self.body = nn.Sequential(*units)
        spatial = self.input_size // 16  # four stride-2 stages
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(),
            Flatten(),
            nn.Linear(512 * spatial * spatial, 512),
            nn.BatchNorm1d(512),
        )

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        # face.evoLVe: ToTensor then Normalize(mean=0.5, std=0.5) on RGB, i.e. x / 127.5 - 1.
        return resize(to_float_nchw(crops), self.input_size) / 127.5 - 1.0

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        return BackboneOutput(embedding=self.output_layer(self.body(self.input_layer(x))), logits=None)


@register_backbone("resnet50")
def resnet50(
    checkpoint: str | Path | None = None, input_size: int = 224, random_init: bool = False
) -> ResNet50Backbone:
    """torchvision ResNet-50 with the user's weights (``fc.*`` of the checkpoint is ignored)."""
    model = ResNet50Backbone(input_size=input_size)
    if random_init:
        log.warning("resnet50: random weights (random_init=True): embeddings are meaningless")
        return model
    path = user_weights("resnet50", checkpoint, RESNET50_DEFAULT)
    load_checkpoint(model.net, path, "resnet50", ignore_prefixes=("fc.",))
    return model


@register_backbone("ir50")
def ir50(checkpoint: str | Path | None = None, random_init: bool = False) -> IR50Backbone:
    """ArcFace IR-50 with the user's weights (face.evoLVe key names, ``module.`` prefixes accepted)."""
    model = IR50Backbone()
    if random_init:
        log.warning("ir50: random weights (random_init=True): embeddings are meaningless")
        return model
    load_checkpoint(model, user_weights("ir50", checkpoint, IR50_DEFAULT), "ir50")
    return model
