"""DVC stage `demo`: build the synthetic Aff-Wild2-layout demo dataset (docs/DEMO.md).

Under DVC (``--only-if-dataset``) nothing is built when ``dataset.root`` is another dataset: the stage
leaves a marker in ``demo.root`` instead, so ``dvc repro`` on your own data does not generate the demo.
"""

from __future__ import annotations

import logging

from avpipe.pipeline.config import Params
from avpipe.pipeline.demo.guard import dataset_is_demo, mark_unused

log = logging.getLogger(__name__)


def run(params: Params, only_if_dataset: bool = False) -> int:
    if only_if_dataset and not dataset_is_demo(params.demo, params.dataset.root):
        root = mark_unused(params.demo, params.dataset.root)
        log.info("demo: not built, dataset.root is %s (marker in %s)", params.dataset.root, root)
        return 0
    from avpipe.pipeline.demo import build_demo_dataset

    root = build_demo_dataset(params.demo)
    log.info("demo dataset written to %s", root)
    return 0
