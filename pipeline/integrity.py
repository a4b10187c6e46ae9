"""Data integrity of shards: every chunk read back against its checksum, and the store-wide verify.

Every chunked dataset is written with HDF5's Fletcher-32 filter (pipeline/store.py), so each chunk
carries a checksum computed at write time and HDF5 refuses to return a chunk whose bytes no longer
match it. The metadata check that ``FeatureStore.status`` always does (attributes, row counts) never
touches the data chunks; ``data_problem`` reads them all, one chunk at a time so that memory stays
bounded by the 16 MiB chunk limit, and says which array and rows are damaged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import h5py

if TYPE_CHECKING:
    from avpipe.pipeline.store import FeatureStore

log = logging.getLogger(__name__)


def data_problem(group: h5py.Group) -> str | None:
    """Why some data chunk of the group's datasets cannot be read intact, or None when all can."""
    for name, item in group.items():
        if not isinstance(item, h5py.Dataset):
            continue
        problem = _dataset_problem(name, item)
        if problem is not None:
            return problem
    return None


def _dataset_problem(name: str, dset: h5py.Dataset) -> str | None:
    if dset.size == 0:
        return None
    pieces: Iterable[tuple[slice, ...]] = dset.iter_chunks() if dset.chunks is not None else [()]
    for piece in pieces:
        try:
            dset[piece]
        except OSError as err:  # checksum mismatch, undecodable compressed bytes, short read
            rows = f"rows {piece[0].start}:{piece[0].stop}" if piece else "its data"
            return f"array {name!r}, {rows}, fails its checksum or cannot be read ({err})"
    return None


@dataclass
class VerifyReport:
    """What ``verify_store`` found: shards checked per extractor and the corrupt ones with why."""

    checked: dict[str, int] = field(default_factory=dict)
    corrupt: list[tuple[Path, str]] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    indexed: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"verify: {sum(self.checked.values())} shards in {len(self.checked)} extractors, "
            f"{len(self.corrupt)} corrupt, {len(self.removed)} removed"
        )


def verify_store(
    store: FeatureStore, extractors: Iterable[str] | None = None, remove_corrupt: bool = False
) -> VerifyReport:
    """Read every shard of ``extractors`` (default: all) in full; report corrupt ones, delete them only
    with ``remove_corrupt``, then rebuild each extractor's index from the shards that remain readable.

    Run it while no stage writes to the store: a shard renamed in during the scan may be missed.
    """
    report = VerifyReport()
    for extractor in list(extractors) if extractors else store.extractors():
        files = store.shard_files(extractor)
        report.checked[extractor] = len(files)
        for path in files:
            problem = store.file_problem(extractor, path, verify_data=True)
            if problem is None:
                continue
            log.warning("%s: corrupt shard: %s", path, problem)
            report.corrupt.append((path, problem))
            if remove_corrupt:
                path.unlink(missing_ok=True)
                report.removed.append(path)
                log.info("removed %s (--remove-corrupt); the next run recomputes it", path)
        report.indexed[extractor] = len(store.rebuild_index(extractor))
    return report
