"""avpipe: feature extraction and preprocessing for audio-visual continuous emotion recognition.

The repository keeps its three folders at the top (``pipeline/`` the core library, ``models/`` the
trainers, ``stages/`` the DVC stage shells); installed, they are the sub-packages ``avpipe.pipeline``,
``avpipe.models`` and ``avpipe.stages``, so a research repository with folders of its own called
``pipeline`` or ``models`` imports avpipe without a clash.

``avpipe.extract(path, ["faces", "logmel", "egemaps"])`` extracts one media file's features in memory
(docs/API.md); it is imported on first use, so ``import avpipe`` stays light (no torch, no pandas).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"

# Public names served lazily: attribute -> the module that defines it.
_LAZY = {
    "extract": "avpipe.pipeline.extract_file",
    "ExtractedFeatures": "avpipe.pipeline.extract_file",
}
__all__ = ["__version__", *_LAZY]


def _serve_source_tree() -> None:
    # Run from a checkout (PYTHONPATH=. or `python -m avpipe...` in the repository), the sub-packages
    # are the sibling folders; an installed wheel has them inside this folder and never takes this path.
    here = Path(__file__).resolve().parent
    root = here.parent
    if not (here / "pipeline").is_dir() and (root / "pipeline" / "__init__.py").is_file():
        __path__.append(str(root))


_serve_source_tree()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'avpipe' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
