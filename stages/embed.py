"""DVC stage ``embed@<backbone>``: per-frame face embeddings of one backbone from the faces shards.

Thin on purpose: the backbone is a registered FACES extractor (``pipeline/extractors/embeddings.py``
or a plug-in), and ``avpipe.stages.extract.run`` does the rest (manifest, store, Dask, report).
"""

from __future__ import annotations

import logging

from avpipe.pipeline.config import Params
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.registry import InputKind, default_registry
from avpipe.stages import extract

log = logging.getLogger(__name__)


def run(params: Params, name: str) -> int:
    """Embed every manifest video's face crops with backbone ``name``; exit code as avpipe.stages.extract."""
    cls = default_registry().get(name)
    if cls.input_kind is not InputKind.FACES:
        raise ConfigError(
            "embed.backbones",
            f"{name!r} is not a face-embedding extractor: it reads {cls.input_kind.value}, not faces",
        )
    return extract.run(params, name)


def run_all(params: Params) -> int:
    """Every backbone of ``embed.backbones`` in turn (what ``dvc repro`` runs as ``embed@<name>``)."""
    worst = 0
    for name in params.embed.backbones:
        log.info("embed: %s", name)
        worst = max(worst, run(params, name))
    return worst
