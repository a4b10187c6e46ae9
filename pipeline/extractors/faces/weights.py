"""Where facenet-pytorch keeps the MTCNN weights it ships, found without importing it.

``facenet_pytorch/__init__`` imports torch and torchvision (about 3 s); the driver only needs to know
the files are there, and the workers load them into avpipe's own copies of the networks (``nets``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

MTCNN_WEIGHT_FILES = {"pnet": "pnet.pt", "rnet": "rnet.pt", "onet": "onet.pt"}
NOT_INSTALLED = "facenet-pytorch is not installed (scripts/setup.sh installs it with --no-deps)"


def mtcnn_weights_folder() -> Path | None:
    """facenet-pytorch's ``data`` folder, or None when the package is not installed."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data"


def missing_mtcnn_weights() -> list[str]:
    """The MTCNN weight files absent from facenet-pytorch's install (a note when it is not installed)."""
    folder = mtcnn_weights_folder()
    if folder is None:
        return [NOT_INSTALLED]
    return [str(folder / name) for name in MTCNN_WEIGHT_FILES.values() if not (folder / name).is_file()]
