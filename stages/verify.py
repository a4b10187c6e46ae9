"""``avpipe verify``: read every shard of the store against its checksums, report (or remove, when
asked) the corrupt ones and rebuild each extractor's index. Not a DVC stage: a tool to run after a
disk fault, a copy between machines, or whenever a store's integrity is in doubt."""

from __future__ import annotations

import logging

from avpipe.pipeline.config import Params
from avpipe.pipeline.errors import StoreError
from avpipe.pipeline.extract import open_store
from avpipe.pipeline.integrity import verify_store

log = logging.getLogger(__name__)


def run(params: Params, extractors: list[str], remove_corrupt: bool = False) -> int:
    """Exit 0 when every shard is intact, 1 when some were corrupt (removed or not)."""
    store = open_store(params.store)
    if not store.root.is_dir():
        raise StoreError(f"store.root {store.root} is not a directory")
    unknown = [name for name in extractors if not store.folder(name).is_dir()]
    if unknown:
        raise StoreError(f"no extractor folder {', '.join(unknown)} under {store.root}")
    report = verify_store(store, extractors or None, remove_corrupt=remove_corrupt)
    for path, problem in report.corrupt:
        action = "removed" if path in report.removed else "kept (use --remove-corrupt to delete it)"
        log.warning("CORRUPT %s: %s; %s", path, problem, action)
    log.info("%s; indexes rebuilt: %s", report.summary(), report.indexed)
    return 1 if report.corrupt else 0
