"""DVC stage `demo`: build the synthetic Aff-Wild2-layout demo dataset (docs/DEMO.md)."""

from __future__ import annotations

import logging

from pipeline.demo import build_demo_dataset
from pipeline.params import Params

log = logging.getLogger(__name__)


def run(params: Params) -> int:
    root = build_demo_dataset(params.demo)
    log.info("demo dataset written to %s", root)
    return 0
