"""avpipe: feature extraction and preprocessing for audio-visual continuous emotion recognition.

The repository keeps its three folders at the top (``pipeline/`` the core library, ``models/`` the
trainers, ``stages/`` the DVC stage shells); installed, they are the sub-packages ``avpipe.pipeline``,
``avpipe.models`` and ``avpipe.stages``, so a research repository with folders of its own called
``pipeline`` or ``models`` imports avpipe without a clash.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def _serve_source_tree() -> None:
    # Run from a checkout (PYTHONPATH=. or `python -m avpipe...` in the repository), the sub-packages
    # are the sibling folders; an installed wheel has them inside this folder and never takes this path.
    here = Path(__file__).resolve().parent
    root = here.parent
    if not (here / "pipeline").is_dir() and (root / "pipeline" / "__init__.py").is_file():
        __path__.append(str(root))


_serve_source_tree()
