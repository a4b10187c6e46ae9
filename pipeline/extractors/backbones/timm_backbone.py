"""Any timm model as a face backbone, with weights from a local file or a timm/HF-hub style folder.

The network is ``timm.create_model(name, pretrained=False, num_classes=...)``; its weights come from
``checkpoint``: a state dict (``.pth``/``.pt``/``.bin``, wrapped or not, see checkpoint.py), a
``.safetensors`` file, or a folder as timm's ``push_to_hub``/``save_for_hf`` writes it (config.json
naming the architecture, its class count and ``pretrained_cfg``, beside model.safetensors or
pytorch_model.bin). Input size, mean, std and interpolation come from the model's pretrained config
(timm's ``resolve_data_config``), overridable; faces are fed whole (no centre crop: the face stage
already framed them). ``num_classes`` null reads the head's width from the checkpoint (0 when it has
none). Outputs: the pooled pre-logits embedding (``forward_head(pre_logits=True)``) and, when the
model has a head and ``logits`` is on, its class scores.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional

from avpipe.pipeline.errors import ExtractorError
from avpipe.pipeline.extractors.backbones.checkpoint import load_state, read_state_dict
from avpipe.pipeline.extractors.backbones.preprocess import normalize, to_float_nchw
from avpipe.pipeline.extractors.backbones.registry import Backbone, BackboneOutput, register_backbone

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors")


@dataclass(frozen=True)
class TimmSource:
    """Where the weights are, which architecture and head size, and the folder's pretrained config."""

    weights: Path
    model: str
    num_classes: int | None
    pretrained_cfg: dict[str, Any]


def resolve_timm_source(model: str | None, checkpoint: str | Path, num_classes: int | None) -> TimmSource:
    """Read what a checkpoint file or folder says about itself (no network, no model built)."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        config_path = path / "config.json"
        config = _read_json(config_path) if config_path.is_file() else {}
        weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
        if weights is None:
            raise ExtractorError(
                f"backbone 'timm': {path} has none of the weights files {list(WEIGHT_FILES)}"
            )
        name = model or config.get("architecture")
        if not name:
            raise ExtractorError(
                f"backbone 'timm': {config_path} names no architecture: set extractors.timm.model"
            )
        classes = num_classes if num_classes is not None else config.get("num_classes")
        return TimmSource(weights, name, classes, dict(config.get("pretrained_cfg") or {}))
    if not path.is_file():
        raise ExtractorError(
            f"backbone 'timm': weights file not found: {path.resolve()} (avpipe never downloads weights; "
            "set extractors.timm.checkpoint to a state dict, a .safetensors file or a timm hub folder)"
        )
    if not model:
        raise ExtractorError("backbone 'timm': extractors.timm.model must name the timm architecture")
    return TimmSource(path, model, num_classes, {})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ExtractorError(f"backbone 'timm': cannot read {path}: {err}") from err


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of ``path``, never unpickled in full (a whole saved model is converted once first)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise ExtractorError(f"backbone 'timm': cannot read {path}: {err}") from err
    try:
        return read_state_dict(path, "timm")
    except ExtractorError as err:
        # Unpickling a whole model runs code from the file: avpipe does it only in the explicit,
        # one-off conversion command, never while a stage loads weights (docs/RELIABILITY.md).
        raise ExtractorError(
            f"{err}. A whole pickled model (e.g. HSEmotion's enet_b0_8_best_afew.pt) is not unpickled "
            f"at run time: convert it once, if you trust it, with `avpipe convert-checkpoint "
            f"--trust-pickle {path} <tensors-only file>` and point extractors.timm.checkpoint at the result"
        ) from err


def head_width(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Classes of the checkpoint's head (the weight under timm's ``classifier`` key), 0 without one."""
    classifier = net.pretrained_cfg.get("classifier") if hasattr(net, "pretrained_cfg") else None
    names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    for name in names:
        weight = state.get(f"{name}.weight") if name else None
        if weight is not None:
            return int(weight.shape[0])
    return 0


class TimmBackbone(Backbone):
    """A timm network with its own input transform; see the module docstring."""

    def __init__(
        self,
        net: torch.nn.Module,
        data_cfg: dict[str, Any],
        colour_order: str,
        logit_names: tuple[str, ...],
    ) -> None:
        super().__init__()
        self.net = net
        self.embedding_dim = int(net.num_features)
        self.input_hw = tuple(int(v) for v in data_cfg["input_size"][-2:])
        self.input_size = self.input_hw[-1]
        self.mean = tuple(float(m) * 255 for m in data_cfg["mean"])
        self.std = tuple(float(s) * 255 for s in data_cfg["std"])
        self.interpolation = "bicubic" if data_cfg.get("interpolation") == "bicubic" else "bilinear"
        self.bgr = colour_order == "bgr"
        self.logit_names = logit_names

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        x = to_float_nchw(crops)
        if self.bgr:
            x = x.flip(1)
        if tuple(x.shape[-2:]) != self.input_hw:
            x = functional.interpolate(x, size=self.input_hw, mode=self.interpolation, align_corners=False)
        return normalize(x, self.mean, self.std)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        features = self.net.forward_features(x)
        embedding = self.net.forward_head(features, pre_logits=True)
        logits = self.net.forward_head(features) if self.logit_names else None
        return BackboneOutput(embedding=embedding.flatten(1), logits=logits)


def data_config(net: torch.nn.Module, pretrained_cfg: dict[str, Any], overrides: dict[str, Any]) -> dict:
    """timm's eval data config for ``net`` (its own pretrained config, the folder's, then ``overrides``)."""
    from timm.data import resolve_data_config

    cfg = dict(resolve_data_config({}, model=net))
    for key in ("input_size", "mean", "std", "interpolation"):
        if pretrained_cfg.get(key) is not None:
            cfg[key] = tuple(pretrained_cfg[key]) if key != "interpolation" else pretrained_cfg[key]
    for key, value in overrides.items():
        if value is not None:
            cfg[key] = value
    if isinstance(cfg["input_size"], int):
        cfg["input_size"] = (3, cfg["input_size"], cfg["input_size"])
    return cfg


@register_backbone("timm")
def timm_backbone(
    model: str | None = None,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    logits: bool = True,
    logit_names: list[str] | None = None,
    colour_order: str = "rgb",
    input_size: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    random_init: bool = False,
) -> TimmBackbone:
    """``timm.create_model(model)`` with the weights of ``checkpoint`` (``random_init``: benchmarks only)."""
    import timm

    if checkpoint is None and not random_init:
        raise ExtractorError("backbone 'timm': extractors.timm.checkpoint is not set (a local weights file)")
    source = (
        resolve_timm_source(model, checkpoint, num_classes)
        if checkpoint is not None
        else TimmSource(Path("-"), str(model), num_classes, {})
    )
    state = None if random_init else read_weights(source.weights)
    classes = source.num_classes
    if classes is None:
        probe = _create(timm, source.model, None, meta=True)
        classes = head_width(probe, state) if state is not None else 0
    net = _create(timm, source.model, classes)
    if state is not None:
        _load(net, state, source.weights)
    overrides = {"input_size": input_size, "mean": mean, "std": std}
    cfg = data_config(net, source.pretrained_cfg, overrides)
    names = _logit_names(logit_names, classes) if logits and classes > 0 else ()
    log.info(
        "timm %s from %s: %d-d, %d classes, input %s, mean %s, std %s",
        source.model,
        source.weights,
        net.num_features,
        classes,
        cfg["input_size"],
        cfg["mean"],
        cfg["std"],
    )
    return TimmBackbone(net, cfg, colour_order, names)


def _create(timm: Any, name: str, num_classes: int | None, meta: bool = False) -> torch.nn.Module:
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:
        if meta:
            with torch.device("meta"):
                return timm.create_model(name, pretrained=False, **kwargs)
        return timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ExtractorError(f"backbone 'timm': {err} (timm.list_models() lists them)") from err
        raise


def _load(net: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    load_state(net, {_strip(k): v for k, v in state.items()}, path, "timm")


def _strip(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def _logit_names(names: list[str] | None, classes: int) -> tuple[str, ...]:
    if names is None:
        return tuple(f"class_{i}" for i in range(classes))
    if len(names) != classes:
        raise ExtractorError(f"backbone 'timm': {len(names)} logit_names for a head of {classes} classes")
    return tuple(names)
