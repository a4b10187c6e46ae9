"""Cheap, stable identities for "what was computed from what": parameter hashes, media fingerprints,
library versions. The store records them in every shard so that a re-run can tell a shard that is
still valid (STORED) from one computed with other parameters or from another file (STALE).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from avpipe.pipeline.errors import MediaError

PARAMS_HASH_CHARS = 16
FINGERPRINT_BLOCK = 1 << 20  # bytes hashed at each end of a media file
NOT_INSTALLED = "not installed"


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data: dataclasses and mappings become dicts, enums their value,
    paths strings, tuples/sets/arrays lists, numpy scalars Python numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return canonical(value.value)
    if isinstance(value, Mapping):
        return {str(key): canonical(item) for key, item in value.items()}
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, np.ndarray):
        return canonical(value.tolist())
    if isinstance(value, np.generic):
        return canonical(value.item())
    if isinstance(value, (set, frozenset)):
        # Sets have no order; sort their canonical JSON texts so equal sets hash alike.
        return sorted((canonical(item) for item in value), key=_dumps)
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN/inf; keep them distinct and deterministic
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot serialise a {type(value).__name__} into parameters JSON: {value!r}")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def params_json(config: Any) -> str:
    """Canonical JSON of a config (dataclass or mapping): sorted keys, no whitespace."""
    return _dumps(canonical(config))


def params_hash(config: Any, version: str) -> str:
    """16 hex chars of sha256 over the canonical JSON of ``config`` together with ``version``.

    Two configs that differ only in key order or container type (tuple vs list) hash alike;
    bumping the extractor ``version`` changes the hash, so old shards become STALE.
    """
    payload = _dumps({"config": canonical(config), "version": str(version)})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:PARAMS_HASH_CHARS]


def media_fingerprint(path: str | Path) -> str:
    """``"<size>:<32 hex>"``: the file size and sha256 of its first and last MiB.

    Reads at most 2 MiB whatever the file size, and depends on content only (not on name,
    path or mtime), so a copied or moved file keeps its fingerprint.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            digest = hashlib.sha256(str(size).encode("ascii"))
            handle.seek(0)
            head = handle.read(FINGERPRINT_BLOCK)
            digest.update(head)
            tail_start = max(len(head), size - FINGERPRINT_BLOCK)
            handle.seek(tail_start)
            digest.update(handle.read(size - tail_start))
    except FileNotFoundError as err:
        raise MediaError(path, "cannot fingerprint: no such file") from err
    except IsADirectoryError as err:
        raise MediaError(path, "cannot fingerprint: it is a directory, not a media file") from err
    except OSError as err:
        raise MediaError(path, f"cannot fingerprint: {err.strerror or err}") from err
    return f"{size}:{digest.hexdigest()[:32]}"


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def library_versions(extra: Sequence[str] = ()) -> dict[str, str]:
    """Versions of python, numpy, h5py, HDF5, avpipe and of the extra distributions named in ``extra``
    (``"not installed"`` for one that is missing)."""
    import h5py

    import avpipe

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "avpipe": avpipe.__version__,
    }
    for name in extra:
        versions.setdefault(name, _package_version(name))
    return versions
