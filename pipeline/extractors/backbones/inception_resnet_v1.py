"""facenet-pytorch's InceptionResnetV1 (FaceNet, 512-d embeddings) with weights from a local file only.

facenet-pytorch downloads its weights when asked for ``pretrained=...``; avpipe never downloads, so the
network is built untrained and the state dict is loaded from ``checkpoint`` (the same ``.pt`` files
facenet-pytorch publishes: VGGFace2 or CASIA-WebFace). The identity classifier (``logits.*``) of those
files is dropped: its classes are training identities, not expressions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from avpipe.pipeline.extractors.backbones.catalog import FacenetWeights, facenet_weights
from avpipe.pipeline.extractors.backbones.checkpoint import load_checkpoint
from avpipe.pipeline.extractors.backbones.preprocess import resize, to_float_nchw
from avpipe.pipeline.extractors.backbones.registry import Backbone, BackboneOutput, register_backbone

log = logging.getLogger(__name__)

NAME = "inception-resnet-v1"


class InceptionResnetV1Backbone(Backbone):
    """FaceNet on 160x160 RGB with facenet-pytorch's fixed standardisation; L2-normalised 512-d output."""

    embedding_dim = 512
    input_size = 160

    def __init__(self) -> None:
        super().__init__()
        # Imported here: facenet_pytorch pulls in its MTCNN and utilities, only needed for this backbone.
        from facenet_pytorch import InceptionResnetV1

        self.net = InceptionResnetV1(pretrained=None, classify=False)

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        # facenet_pytorch.fixed_image_standardization: (x - 127.5) / 128.
        return (resize(to_float_nchw(crops), self.input_size) - 127.5) / 128.0

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        return BackboneOutput(embedding=self.net(x), logits=None)


@register_backbone(NAME)
def inception_resnet_v1(
    checkpoint: str | Path | None = None,
    pretrained: FacenetWeights | str = FacenetWeights.VGGFACE2,
    random_init: bool = False,
) -> InceptionResnetV1Backbone:
    """FaceNet; ``checkpoint`` defaults to ``data/weights/<facenet-pytorch file name of pretrained>``.

    ``random_init=True`` skips the weights (for speed measurements and tests only).
    """
    model = InceptionResnetV1Backbone()
    if random_init:
        log.warning("%s: random weights (random_init=True): embeddings are meaningless", NAME)
        return model
    load_checkpoint(model.net, facenet_weights(checkpoint, pretrained), NAME, ignore_prefixes=("logits.",))
    return model
