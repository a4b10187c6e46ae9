"""`avpipe predict`: per-frame predictions of the trained fold models (merged) as one CSV per video."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from avpipe.models.prediction import run_prediction
from avpipe.pipeline.manifest import read_manifest
from avpipe.pipeline.store import FeatureStore

if TYPE_CHECKING:
    from avpipe.pipeline.config import Params

log = logging.getLogger(__name__)


def run(params: Params, out: str | None = None, split: str | None = None) -> int:
    """Write ``<out>/<video>.csv`` (default ``train.predictions_dir``) for the manifest's videos."""
    rows = read_manifest(params.manifest.path)
    written = run_prediction(params.train, FeatureStore(params.store.root), rows, out_dir=out, split=split)
    return 0 if written else 1
