"""DVC stage ``audio@<name>``: one audio feature extractor (logmel, mfcc, egemaps, vggish) over the manifest.

The stage is a ``foreach`` over ``audio.extractors`` in params.yaml; each item runs the registered
extractor of that name through ``avpipe.pipeline.extract.run_extractor`` (docs/AUDIO.md).
"""

from __future__ import annotations

from avpipe.pipeline.config import Params
from avpipe.pipeline.errors import ExtractorError
from avpipe.pipeline.registry import InputKind, default_registry
from avpipe.stages import extract


def run(params: Params, name: str) -> int:
    """Extract audio feature ``name`` for every manifest video; exit code as avpipe.stages.extract."""
    cls = default_registry().get(name)
    if cls.input_kind is not InputKind.AUDIO:
        raise ExtractorError(
            f"{name!r} is a {cls.input_kind.value} extractor, not an audio one; use its own stage"
        )
    return extract.run(params, name)
