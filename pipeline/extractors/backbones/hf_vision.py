"""Any Hugging Face vision encoder (ViT, MAE, DINOv2, ConvNeXt, Swin, ...) as a face backbone, offline.

The model is ``AutoModel.from_pretrained(folder, local_files_only=True)`` from a ``save_pretrained``
folder or the local HF cache (avpipe.pipeline.hf_local); the input size, mean and std come from the folder's
image processor (preprocessor_config.json), the rescale to [0, 1] included. The embedding is the
model's ``pooler_output`` (``pool: pooler``), the first token of the last hidden state (``cls``), or the
mean over its tokens (``mean``: what MAE-style face encoders use). Crops are resized whole to the
processor's size (no centre crop: the face stage framed them).
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from typing import Any

import torch
from torch.nn import functional

from avpipe.pipeline.errors import ExtractorError
from avpipe.pipeline.extractors.backbones.preprocess import normalize, to_float_nchw
from avpipe.pipeline.extractors.backbones.registry import Backbone, BackboneOutput, register_backbone
from avpipe.pipeline.hf_local import resolve_local_model

log = logging.getLogger(__name__)


class VisionPool(StrEnum):
    POOLER = "pooler"
    CLS = "cls"
    MEAN = "mean"


def processor_transform(processor: Any) -> tuple[tuple[int, int], tuple[float, ...], tuple[float, ...]]:
    """``(height, width)``, mean and std in 0..255 units from an image processor's settings."""
    size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = size or getattr(processor, "size", None) or {}
    if "height" in size and "width" in size:
        hw = (int(size["height"]), int(size["width"]))
    elif "shortest_edge" in size:
        hw = (int(size["shortest_edge"]),) * 2
    else:
        raise ExtractorError(f"hf-vision: cannot tell the input size from the image processor ({size})")
    rescale = float(getattr(processor, "rescale_factor", 1 / 255)) if processor.do_rescale else 1.0
    if not processor.do_normalize:
        return hw, (0.0, 0.0, 0.0), (1 / rescale,) * 3
    mean = tuple(float(m) / rescale for m in processor.image_mean)
    std = tuple(float(s) / rescale for s in processor.image_std)
    return hw, mean, std


class HfVisionBackbone(Backbone):
    def __init__(self, net: torch.nn.Module, processor: Any, pool: VisionPool, colour_order: str) -> None:
        super().__init__()
        self.net = net
        config = net.config
        self.embedding_dim = int(getattr(config, "hidden_size", None) or config.hidden_sizes[-1])
        self.input_hw, self.mean, self.std = processor_transform(processor)
        self.input_size = self.input_hw[-1]
        self.pool = VisionPool(pool)
        self.bgr = colour_order == "bgr"

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        x = to_float_nchw(crops)
        if self.bgr:
            x = x.flip(1)
        if tuple(x.shape[-2:]) != self.input_hw:
            x = functional.interpolate(x, size=self.input_hw, mode="bicubic", align_corners=False)
        return normalize(x, self.mean, self.std)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        out = self.net(pixel_values=x)
        if self.pool is VisionPool.POOLER:
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise ExtractorError("hf-vision: this model has no pooler_output; use pool: cls or mean")
            return BackboneOutput(embedding=pooled.flatten(1), logits=None)
        hidden = out.last_hidden_state
        if hidden.ndim == 4:  # convolutional models: (N, C, H, W) maps
            hidden = hidden.flatten(2).transpose(1, 2)
        pooled = hidden[:, 0] if self.pool is VisionPool.CLS else hidden.mean(dim=1)
        return BackboneOutput(embedding=pooled, logits=None)


@register_backbone("hf-vision")
def hf_vision_backbone(
    model: str | None = None, pool: str = "pooler", colour_order: str = "rgb", **_: Any
) -> HfVisionBackbone:
    from transformers import AutoImageProcessor, AutoModel
    from transformers.utils import logging as hf_logging

    if not model:
        raise ExtractorError("hf-vision: extractors.hf-vision.model is not set (a save_pretrained directory)")
    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()
    folder = resolve_local_model(model, "hf-vision")
    try:
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        net = AutoModel.from_pretrained(folder, local_files_only=True)
    except Exception as err:
        raise ExtractorError(f"hf-vision: cannot load the model in {folder}: {err}") from err
    log.info("hf-vision %s (%s)", folder, net.config.model_type)
    return HfVisionBackbone(net, processor, VisionPool(pool), colour_order)
