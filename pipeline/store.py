"""The HDF5 feature store: one atomic shard per (extractor, video), an index per extractor, a reader API.

Layout, attributes and guarantees are specified in docs/FORMAT.md. In short::

    <root>/<extractor>/<safe video id>.h5     one shard per video, written by any worker process
    <root>/<extractor>/index.json             video id -> summary (snapshot), written by drivers
    <root>/<extractor>/index.log              entries recorded since the snapshot, one JSON line each
    <root>/<extractor>/packs/<name>.h5        multi-video shards (store.videos_per_shard > 1)

A shard is written to a private temp file in the same folder and renamed onto its final name only
once it is complete and on disk, so a reader (or a re-run after a crash) sees either the whole old
shard, the whole new one, or nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, TypedDict, Unpack

import h5py
import numpy as np
import psutil
from tqdm.auto import tqdm

from avpipe.pipeline import fingerprint, integrity
from avpipe.pipeline.config import Compression
from avpipe.pipeline.diskguard import GuardedFile
from avpipe.pipeline.errors import StoreError
from avpipe.pipeline.index import INDEX_FILE, INDEX_LOG_FILE, LogRecord, ShardIndex
from avpipe.pipeline.index import fsync_path as _fsync_path
from avpipe.pipeline.packs import PACKS_FOLDER, WRITTEN_ATTR
from avpipe.pipeline.types import FeatureSet

log = logging.getLogger(__name__)

FORMAT_NAME = "avpipe-shard"
FORMAT_VERSION = 1
SHARD_SUFFIX = ".h5"
TEMP_SUFFIX = ".tmp.h5"
TIMELINE_DATASETS = ("time", "frame_index", "mask")
# Group attributes the store owns; a FeatureSet attr of the same name would shadow one of them.
META_ATTRS = (
    "video_id",
    "extractor",
    "extractor_version",
    "params_hash",
    "params_json",
    "media_fingerprint",
    "n_frames",
    "dataset",
    "library_versions",
    "feature_attrs",
    "json_attrs",
)
REQUIRED_ATTRS = ("video_id", "extractor_version", "params_hash", "n_frames")
# A chunk is decompressed whole even to read one row: big rows (224 px crops) get fewer rows per chunk.
MAX_CHUNK_BYTES = 16 << 20
GZIP_LEVEL = 4
# Shard names stay well under the 255-byte file-name limit even with the temp-file decoration.
MAX_STEM_CHARS = 180
NAME_HASH_CHARS = 12
DEFAULT_TEMP_MAX_AGE_S = 3600.0
# Write failures of the disk itself: a failure row naming the shard, never a crash.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})
# HDF5 1.8 file format: readable by every HDF5 since 2008 and allows attributes over 64 KiB.
LIBVER = ("v108", "v108")

_SAFE_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.(?P<pid>\d+)\.(?P<host>[0-9a-f]{8})[0-9a-f]{8}\.tmp\.h5$")


class ShardStatus(enum.StrEnum):
    """What the store holds for one (extractor, video) compared with what a run would compute."""

    STORED = "stored"  # readable, same params hash (and media fingerprint when given): skip it
    STALE = "stale"  # readable, but computed with other parameters or from another media file
    MISSING = "missing"  # no shard
    CORRUPT = "corrupt"  # a file that is not a readable, complete shard: never trusted


# --------------------------------------------------------------------------------------------------
# Names


def shard_name(video_id: str) -> str:
    """The file name of a video's shard: collision-free and safe on any file system.

    Bytes outside ``[A-Za-z0-9_.-]`` (and a leading dot) become ``%XX``. Ids with capitals, or too
    long for a file name, also get ``~`` and a hash of the exact id, so that two ids differing only in
    case stay two files on case-insensitive file systems (``~`` never occurs otherwise).
    """
    encoded = "".join(_encode_byte(byte, pos) for pos, byte in enumerate(video_id.encode("utf-8")))
    if len(encoded) > MAX_STEM_CHARS or video_id.lower() != video_id:
        digest = hashlib.sha256(video_id.encode("utf-8")).hexdigest()[:NAME_HASH_CHARS]
        encoded = f"{encoded[:MAX_STEM_CHARS]}~{digest}"
    return encoded + SHARD_SUFFIX


def _encode_byte(byte: int, pos: int) -> str:
    if byte in _SAFE_NAME_BYTES and not (pos == 0 and byte == ord(".")):
        return chr(byte)
    return f"%{byte:02X}"


def video_id_from_shard_name(name: str) -> str | None:
    """The video id a shard file name encodes, or None when the name alone cannot tell (hashed
    names) or is not one ``shard_name`` would produce."""
    if not name.endswith(SHARD_SUFFIX) or "~" in name:
        return None
    stem = name[: -len(SHARD_SUFFIX)]
    try:
        video_id = _percent_decode(stem)
    except ValueError:
        return None
    return video_id if shard_name(video_id) == name else None


def _percent_decode(text: str) -> str:
    out = bytearray()
    pos = 0
    while pos < len(text):
        if text[pos] == "%":
            out.append(int(text[pos + 1 : pos + 3], 16))
            pos += 3
        else:
            out.extend(text[pos].encode("ascii"))
            pos += 1
    return out.decode("utf-8")


def group_name(video_id: str) -> str:
    """The HDF5 group of a video inside its shard: the id with ``%``, ``/`` and NUL escaped."""
    name = video_id.replace("%", "%25").replace("/", "%2F").replace("\x00", "%00")
    return "%2E" if name == "." else name


def _this_host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8")).hexdigest()[:8]


def _temp_name(stem: str) -> str:
    """``.<stem>.<pid>.<random>.tmp.h5``; the random part starts with a tag of this host so that
    ``cleanup_temp`` judges by pid only the files of writers on its own host."""
    return f".{stem}.{os.getpid()}.{_this_host_tag()}{secrets.token_hex(4)}{TEMP_SUFFIX}"


def _check_video_id(video_id: str) -> None:
    if not isinstance(video_id, str) or not video_id:
        raise StoreError(f"video id must be a non-empty string, got {video_id!r}")


def _check_extractor(extractor: str) -> None:
    if not isinstance(extractor, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", extractor):
        raise StoreError(
            f"extractor name {extractor!r} cannot name a store folder (letters, digits and _ . + - only)"
        )


# --------------------------------------------------------------------------------------------------
# Arrays and attributes <-> HDF5


@dataclasses.dataclass
class _Column:
    """One array ready for HDF5: ``data`` is what is written, ``numpy_dtype`` what read gives back
    when HDF5 cannot hold the numpy dtype itself (unicode text, datetimes)."""

    name: str
    data: np.ndarray
    numpy_dtype: str | None = None


def _column(path: Path, name: str, array: Any) -> _Column:
    arr = np.asarray(array)
    kind = arr.dtype.kind
    if kind == "U":
        encoded = np.char.encode(arr, "utf-8")
        width = max(1, encoded.dtype.itemsize)
        return _Column(name, encoded.astype(h5py.string_dtype("utf-8", width)), arr.dtype.str)
    if kind in "mM":
        return _Column(name, arr.view(np.int64), arr.dtype.str)
    if kind == "O" or (kind == "V" and arr.dtype.fields is None):
        raise StoreError(f"{path}: array {name!r} has dtype {arr.dtype}, which HDF5 cannot store")
    return _Column(name, np.ascontiguousarray(arr))


def _restore(raw: np.ndarray, numpy_dtype: str | None) -> np.ndarray:
    if numpy_dtype is None:
        return raw
    dtype = np.dtype(numpy_dtype)
    if dtype.kind == "U":
        return np.char.decode(raw, "utf-8").astype(dtype)
    return raw.view(dtype)


def _columns(path: Path, features: FeatureSet) -> list[_Column]:
    if np.ndim(features.time) != 1:
        raise StoreError(f"{path}: time must be one-dimensional (T,), got shape {np.shape(features.time)}")
    columns = [
        _Column("time", np.ascontiguousarray(features.time, dtype=np.float64)),
        _Column("frame_index", np.ascontiguousarray(features.frame_index, dtype=np.int64)),
        _Column("mask", np.ascontiguousarray(features.mask, dtype=np.uint8)),
    ]
    for name, array in features.arrays.items():
        if not isinstance(name, str) or not name or "/" in name or name == "." or "\x00" in name:
            raise StoreError(f"{path}: array name {name!r} is not a valid dataset name")
        if name in TIMELINE_DATASETS:
            raise StoreError(f"{path}: array name {name!r} is reserved for the timeline; rename the array")
        columns.append(_column(path, name, array))
    n_frames = columns[0].data.shape[0]
    for column in columns:
        # FeatureSet checks this when built, but its arrays dict can be changed afterwards.
        if column.data.ndim == 0 or column.data.shape[0] != n_frames:
            shape = column.data.shape
            raise StoreError(f"{path}: array {column.name!r} has shape {shape}, expected {n_frames} rows")
    return columns


def _is_scalar_attr(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63  # wider ints do not fit an HDF5 integer: JSON keeps them exact
    return isinstance(value, (float, str, np.bool_, np.number, np.str_))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (enum.Enum, PurePath, set, frozenset)):
        return fingerprint.canonical(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _feature_attrs_to_hdf5(path: Path, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """FeatureSet.attrs as HDF5 attributes: scalars as they are, anything else as JSON text."""
    stored: dict[str, Any] = {}
    json_keys = []
    for key, value in attrs.items():
        if key in META_ATTRS:
            raise StoreError(f"{path}: feature attribute {key!r} collides with a shard attribute; rename it")
        if _is_scalar_attr(value):
            stored[key] = value
            continue
        try:
            stored[key] = json.dumps(value, default=_json_default, ensure_ascii=False)
        except (TypeError, ValueError) as err:
            raise StoreError(f"{path}: feature attribute {key!r} cannot be stored: {err}") from err
        json_keys.append(key)
    stored["feature_attrs"] = json.dumps(list(attrs))
    stored["json_attrs"] = json.dumps(json_keys)
    return stored


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _feature_attrs_from_group(group: h5py.Group) -> dict[str, Any]:
    keys = json.loads(group.attrs.get("feature_attrs", "[]"))
    json_keys = set(json.loads(group.attrs.get("json_attrs", "[]")))
    attrs = {}
    for key in keys:
        value = _plain(group.attrs[key])
        attrs[key] = json.loads(value) if key in json_keys else value
    return attrs


# --------------------------------------------------------------------------------------------------
# Files on disk


def _shard_stats(folder: Path, prefix: str = "") -> dict[str, os.stat_result]:
    """Shard file name (after ``prefix``) -> stat for one folder (temp files start with a dot:
    not listed)."""
    stats = {}
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if entry.name.endswith(SHARD_SUFFIX) and not entry.name.startswith(".") and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    stats[prefix + entry.name] = entry.stat()
    return stats


def _written(entry: Mapping[str, Any] | None) -> int:
    """When an entry's copy was written: ``written_ns`` of a packed video, else its file's mtime."""
    if entry is None:
        return -1
    return int(entry.get(WRITTEN_ATTR) or entry.get("mtime_ns") or 0)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _entry(
    name: str,
    params_hash: Any,
    media_fingerprint: Any,
    n_frames: Any,
    extractor_version: Any,
    stat: os.stat_result,
) -> dict[str, Any]:
    """One index entry (docs/FORMAT.md, the index)."""
    return {
        "shard": name,
        "params_hash": str(params_hash),
        "media_fingerprint": str(media_fingerprint),
        "n_frames": int(n_frames),
        "extractor_version": str(extractor_version),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


@dataclasses.dataclass(frozen=True)
class WrittenShard:
    """A shard just written: its path and its index entry."""

    path: Path
    entry: dict[str, Any]


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_ino, b.st_size, b.st_mtime_ns)


def _entry_matches(entry: Mapping[str, Any], stat: os.stat_result | None) -> bool:
    """Whether an index entry describes the shard file with this stat (every write is a new file:
    a rewritten shard has a new mtime)."""
    if stat is None:
        return False
    return entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns


@dataclasses.dataclass
class IndexSync:
    """What ``sync_index`` changed."""

    added: int = 0  # shards read and (re-)entered: unrecorded, replaced or unknown to the index
    dropped: int = 0  # entries whose shard is gone
    temp_files_removed: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.dropped or self.temp_files_removed)

    def __str__(self) -> str:
        return (
            f"{self.added} shard(s) added or refreshed, {self.dropped} entry(ies) dropped, "
            f"{self.temp_files_removed} temp file(s) removed"
        )


def _shard_files_in(folder: Path) -> list[Path]:
    """Shard files of one extractor folder (temp files are hidden, so never listed)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(SHARD_SUFFIX) and not p.name.startswith("."))


def _writer_is_gone(pid: int, host: str) -> bool:
    """True when the temp file's writer is known to be dead: it ran on this host and its pid is
    not a live process. A writer on another host sharing the folder is never judged by pid."""
    if host != _this_host_tag():
        return False
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _shard_problem(
    h5: h5py.File, extractor: str, video_id: str, arrays: Sequence[str] | None = None
) -> str | None:
    """Why an open HDF5 file is not a complete shard of ``video_id``, or None when it is one.

    Row counts are checked for every dataset, or only for the timeline and ``arrays`` when given
    (a window read should not pay for inspecting arrays it does not touch).
    """
    if h5.attrs.get("format") != FORMAT_NAME:
        return f"not an avpipe shard (root attribute format = {h5.attrs.get('format')!r})"
    version = _plain(h5.attrs.get("format_version"))
    if not isinstance(version, int) or version > FORMAT_VERSION:
        return f"format_version {version!r} is not one this avpipe reads (<= {FORMAT_VERSION})"
    if h5.attrs.get("extractor") != extractor:
        return f"belongs to extractor {h5.attrs.get('extractor')!r}, not {extractor!r}"
    group = h5.get(group_name(video_id))
    if not isinstance(group, h5py.Group):
        return f"no group {group_name(video_id)!r} for video {video_id!r}"
    return _group_problem(group, video_id, arrays)


def _group_problem(group: h5py.Group, video_id: str, arrays: Sequence[str] | None) -> str | None:
    missing_attrs = [key for key in REQUIRED_ATTRS if key not in group.attrs]
    if missing_attrs:
        return f"group lacks attributes {missing_attrs}"
    if group.attrs["video_id"] != video_id:
        return f"group holds video {group.attrs['video_id']!r}, not {video_id!r}"
    names = _dataset_names(group) if arrays is None else [*TIMELINE_DATASETS, *arrays]
    datasets = {name: group.get(name) for name in dict.fromkeys([*TIMELINE_DATASETS, *names])}
    missing = [name for name in TIMELINE_DATASETS if not isinstance(datasets[name], h5py.Dataset)]
    if missing:
        return f"lacks required datasets {missing}"
    n_frames = int(group.attrs["n_frames"])
    for name, item in datasets.items():
        if isinstance(item, h5py.Dataset) and (item.ndim == 0 or item.shape[0] != n_frames):
            return f"dataset {name!r} has shape {item.shape}, expected {n_frames} rows"
    return None


def _dataset_names(group: h5py.Group) -> list[str]:
    return [name for name, item in group.items() if isinstance(item, h5py.Dataset)]


def _read_dataset(path: Path, group: h5py.Group, name: str, rows: slice = slice(None)) -> np.ndarray:
    dset = group[name]
    try:
        raw = dset[rows]
    except OSError as err:  # checksum mismatch or unreadable chunk
        raise StoreError(f"{path}: corrupt shard: cannot read array {name!r}: {err}") from err
    return _restore(np.asarray(raw), dset.attrs.get("numpy_dtype"))


class IndexedStatus:
    """``FeatureStore.status`` with the index loaded once: a STORED answer costs one ``stat``."""

    def __init__(
        self,
        store: FeatureStore,
        extractor: str,
        entries: Mapping[str, Mapping[str, Any]],
        verify_data: bool = False,
    ) -> None:
        self.store = store
        self.extractor = extractor
        self.entries = entries
        self.verify_data = verify_data  # for shards the index cannot vouch for (pipeline/integrity.py)
        self.from_index = 0  # STORED decided from the index and a stat
        self.opened = 0  # decided by opening the shard

    def __call__(self, video_id: str, params_hash: str, media_fingerprint: str | None = None) -> ShardStatus:
        entry = self.entries.get(video_id)
        if (
            entry is not None
            and entry.get("params_hash") == params_hash
            and (media_fingerprint is None or entry.get("media_fingerprint") == media_fingerprint)
            and self.store._entry_is_current(self.extractor, video_id, entry)
        ):
            self.from_index += 1
            return ShardStatus.STORED
        self.opened += 1
        return self.store.status(self.extractor, video_id, params_hash, media_fingerprint, self.verify_data)


# --------------------------------------------------------------------------------------------------
# The store


class ShardReader:
    """One video's group in an open, verified shard (``FeatureStore.open_reader``): row ranges of its
    arrays without reopening the file. It holds an h5py handle: never pickle it or use it across a fork."""

    def __init__(self, path: Path, h5: h5py.File, group: h5py.Group) -> None:
        self.path = path
        self._h5 = h5
        self._group = group
        self.arrays = [name for name in _dataset_names(group) if name not in TIMELINE_DATASETS]
        self.n_rows = int(group["time"].shape[0])
        self._datasets: dict[str, tuple[h5py.Dataset, str | None]] = {}  # looked up once each

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of one array (``time``, ``frame_index`` and ``mask`` included)."""
        found = self._datasets.get(name)
        if found is None:
            if name not in TIMELINE_DATASETS:
                FeatureStore._check_names(self.path, [name], self.arrays)
            dset = self._group[name]
            found = self._datasets[name] = (dset, dset.attrs.get("numpy_dtype"))
        if not (0 <= int(start) <= int(stop) <= self.n_rows):
            raise StoreError(f"{self.path}: rows {start}:{stop} are outside 0:{self.n_rows}")
        dset, numpy_dtype = found
        try:
            raw = dset[int(start) : int(stop)]
        except OSError as err:  # checksum mismatch or unreadable chunk
            raise StoreError(f"{self.path}: corrupt shard: cannot read array {name!r}: {err}") from err
        return _restore(np.asarray(raw), numpy_dtype)

    def read_range(self, names: Sequence[str] = (), start: int = 0, stop: int | None = None) -> FeatureSet:
        """Rows ``start:stop`` (to the last row when None) of the timeline and of the arrays ``names``."""
        FeatureStore._check_names(self.path, list(names), self.arrays)
        stop = self.n_rows if stop is None else int(stop)
        return FeatureSet(
            time=self.read_rows("time", start, stop),
            frame_index=self.read_rows("frame_index", start, stop),
            mask=self.read_rows("mask", start, stop),
            arrays={name: self.read_rows(name, start, stop) for name in names},
        )

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(f"{self.path}: a ShardReader holds an open HDF5 file and cannot be pickled")


class _RequiredShardMeta(TypedDict):
    # Required keys by class totality: ``Required[...]`` is not seen under postponed annotations.
    extractor_version: str
    params_hash: str


class ShardMeta(_RequiredShardMeta, total=False):
    """How a shard was made: the keywords of ``FeatureStore.write`` / ``write_blocks`` / ``write_shard``
    and ``PackWriter.add``, stored as the video group's attributes (docs/FORMAT.md)."""

    params_json: str  # default "{}"
    media_fingerprint: str  # default ""
    library_versions: dict[str, str] | None  # added to the writer's own versions
    dataset: str  # default "": the dataset identity replacing checks compare


def check_shard_meta(meta: Mapping[str, Any]) -> None:
    """TypeError for a keyword ShardMeta does not have, or a required one missing: what a typo in an
    explicit keyword list would have raised."""
    unknown = sorted(set(meta) - set(ShardMeta.__annotations__))
    missing = sorted(ShardMeta.__required_keys__ - set(meta))
    if unknown or missing:
        raise TypeError(f"shard metadata: unknown keywords {unknown}, missing keywords {missing}")


class FeatureStore:
    """Per-video HDF5 shards of every extractor under ``root`` (docs/FORMAT.md).

    Instances hold settings (and a cache of which multi-video shard holds which video, refreshed
    when the index changes and never pickled), so they pickle to Dask workers; every method opens
    and closes its files. ``write`` is safe from any number of processes at once; the index is
    updated under a file lock by ``record``/``sync_index``/``rebuild_index``/``remove``.
    """

    def __init__(
        self, root: str | Path, compression: str = "lzf", chunk_frames: int = 256, videos_per_shard: int = 1
    ) -> None:
        try:
            self.compression = Compression(getattr(compression, "value", compression))
        except ValueError as err:
            choices = ", ".join(c.value for c in Compression)
            raise StoreError(f"store compression must be one of {choices}, got {compression!r}") from err
        if int(chunk_frames) < 1:
            raise StoreError(f"store chunk_frames must be >= 1, got {chunk_frames}")
        if int(videos_per_shard) < 1:
            raise StoreError(f"store videos_per_shard must be >= 1, got {videos_per_shard}")
        self.root = Path(root)
        self.chunk_frames = int(chunk_frames)
        self.videos_per_shard = int(videos_per_shard)  # > 1: batches write multi-video shards (packs)
        # Which pack holds which video, from the index; refreshed when the index files change.
        self._packed_cache: dict[str, tuple[tuple[int, ...], dict[str, str]]] = {}

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r}, compression={self.compression.value!r})"

    def __getstate__(self) -> dict[str, Any]:
        # Settings only travel to workers; the pack lookup cache is rebuilt where it is needed.
        return {**self.__dict__, "_packed_cache": {}}

    # ---- paths

    def folder(self, extractor: str) -> Path:
        """``<root>/<extractor>``."""
        _check_extractor(extractor)
        return self.root / extractor

    def shard_path(self, extractor: str, video_id: str) -> Path:
        """``<root>/<extractor>/<shard_name(video_id)>``, whether or not it exists."""
        _check_video_id(video_id)
        return self.folder(extractor) / shard_name(video_id)

    def _locate(self, extractor: str, video_id: str) -> Path:
        """The file holding a video: its own shard when there is one, else the multi-video shard
        the index names, else its (missing) own shard path."""
        path = self.shard_path(extractor, video_id)
        if path.exists():
            return path
        packed = self._packed(extractor).get(video_id)
        return path if packed is None else self.folder(extractor) / packed

    def _packed(self, extractor: str) -> dict[str, str]:
        """video id -> ``packs/<name>.h5`` from the index; empty (one stat) without a packs folder."""
        folder = self.folder(extractor)
        if not (folder / PACKS_FOLDER).is_dir():
            return {}
        stamp = tuple(
            value
            for name in (INDEX_FILE, INDEX_LOG_FILE)
            for stat in [_stat(folder / name)]
            for value in ((stat.st_mtime_ns, stat.st_size, stat.st_ino) if stat else (0, 0, 0))
        )
        cached = self._packed_cache.get(extractor)
        if cached is None or cached[0] != stamp:
            entries = self._load_index(extractor) or {}
            packed = {
                video_id: entry["shard"]
                for video_id, entry in entries.items()
                if str(entry.get("shard", "")).startswith(f"{PACKS_FOLDER}/")
            }
            self._packed_cache[extractor] = cached = (stamp, packed)
        return cached[1]

    def _index_path(self, extractor: str) -> Path:
        return self.folder(extractor) / INDEX_FILE

    def _shard_files(self, extractor: str) -> list[Path]:
        return _shard_files_in(self.folder(extractor))

    # ---- writing

    def write(
        self,
        extractor: str,
        video_id: str,
        features: FeatureSet,
        **meta: Unpack[ShardMeta],
    ) -> Path:
        """Write (or replace) the shard of one video atomically and return its path.

        Safe to call from many worker processes at once, for different videos or even the same one
        (the last rename wins; each shard is complete). The index is not touched: the driver calls
        ``record`` when the task is reported done.
        """
        return self.write_blocks(
            extractor,
            video_id,
            [features],
            len(features),
            **meta,
        )

    def write_blocks(
        self,
        extractor: str,
        video_id: str,
        blocks: Iterable[FeatureSet],
        n_frames: int,
        **meta: Unpack[ShardMeta],
    ) -> Path:
        """``write`` for a video produced as consecutive blocks of rows (same arrays in each block).

        Only one block is in memory at a time, so a long video costs no more memory than a short one.
        The shard still appears only when every block is written; the attributes of the last block
        are stored. If the blocks stop early or raise, nothing becomes visible.
        """
        return self.write_shard(extractor, video_id, blocks, n_frames, **meta).path

    def write_shard(
        self,
        extractor: str,
        video_id: str,
        blocks: Iterable[FeatureSet],
        n_frames: int,
        *,
        sync_folder: bool = True,
        **meta: Unpack[ShardMeta],
    ) -> WrittenShard:
        """``write_blocks`` that also returns the shard's index entry, for ``record(..., entry=)``
        (the driver then need not reopen the shard; the stat is the file's own, taken before its
        rename, so a concurrent writer of the same video cannot be described by mistake).

        ``sync_folder=False`` leaves the fsync of the folder (which makes the rename survive a power
        loss) to the caller: a batch of short clips syncs it once (``sync_folder``), not per clip.
        """
        check_shard_meta(meta)
        final = self.shard_path(extractor, video_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(_temp_name(final.name[: -len(SHARD_SUFFIX)]))
        try:
            # HDF5 writes through a GuardedFile: a full disk or I/O error is reported here and never
            # leaves the library's state broken for the next shard this process writes.
            with GuardedFile(tmp) as sink, h5py.File(sink, "w", libver=LIBVER, locking=False) as h5:
                h5.attrs.update(
                    {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "extractor": extractor}
                )
                self._write_group(
                    final,
                    h5,
                    extractor,
                    video_id,
                    blocks,
                    n_frames,
                    meta,
                    check_disk=sink.raise_if_failed,
                )
                h5.flush()
                sink.raise_if_failed()
            sink.raise_if_failed()  # closing the sink fsyncs it
            stat = os.stat(tmp)  # rename keeps inode, size and mtime
            os.replace(tmp, final)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            if err.errno not in STORAGE_ERRNOS:
                raise
            raise StoreError(f"{final}: cannot write the shard: {err.strerror} (nothing was stored)") from err
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if sync_folder:
            _fsync_path(final.parent)
        log.debug("wrote %s (%d frames)", final, n_frames)
        entry = _entry(
            final.name,
            meta["params_hash"],
            meta.get("media_fingerprint", ""),
            n_frames,
            meta["extractor_version"],
            stat,
        )
        return WrittenShard(final, entry)

    def _write_group(
        self,
        final: Path,
        h5: h5py.File,
        extractor: str,
        video_id: str,
        blocks: Iterable[FeatureSet],
        n_frames: int,
        meta: ShardMeta,
        *,
        extra_attrs: Mapping[str, Any] | None = None,
        check_disk: Callable[[], None] = lambda: None,
    ) -> h5py.Group:
        """One video's group in an open shard (or multi-video shard) file: datasets and attributes.
        ``check_disk`` raises a write failure the file recorded (diskguard), checked after each block."""
        group = h5.create_group(group_name(video_id))
        feature_attrs = self._write_rows(final, group, blocks, n_frames, check_disk)
        versions = {**fingerprint.library_versions(), **(meta.get("library_versions") or {})}
        group.attrs.update(
            {
                "video_id": video_id,
                "extractor": extractor,
                "extractor_version": str(meta["extractor_version"]),
                "params_hash": str(meta["params_hash"]),
                "params_json": str(meta.get("params_json", "{}")),
                "media_fingerprint": str(meta.get("media_fingerprint", "")),
                "n_frames": n_frames,
                # No write time: identical inputs and parameters give byte-identical shards.
                "dataset": str(meta.get("dataset", "")),
                "library_versions": json.dumps(versions),
                **_feature_attrs_to_hdf5(final, feature_attrs),
                **(extra_attrs or {}),
            }
        )
        return group

    def sync_folder(self, extractor: str) -> None:
        """fsync the extractor folder: renames done with ``sync_folder=False`` survive a power loss."""
        _fsync_path(self.folder(extractor))

    def _write_rows(
        self,
        final: Path,
        group: h5py.Group,
        blocks: Iterable[FeatureSet],
        n_frames: int,
        check_disk: Callable[[], None] = lambda: None,
    ) -> dict[str, Any]:
        """Create the datasets from the first block, fill them block by block; the last block's attrs."""
        written, attrs, names = 0, None, None
        for block in blocks:
            columns = _columns(final, block)
            if names is None:
                names = [c.name for c in columns]
                for column in columns:
                    self._create_dataset(group, column, n_frames)
            elif [c.name for c in columns] != names:
                raise StoreError(
                    f"{final}: a block has arrays {[c.name for c in columns]}, the first had {names}"
                )
            rows = len(block)
            if written + rows > n_frames:
                raise StoreError(f"{final}: blocks hold more than the {n_frames} rows announced")
            for column in columns:
                dset = group[column.name]
                if column.data.dtype != dset.dtype or column.data.shape[1:] != dset.shape[1:]:
                    raise StoreError(
                        f"{final}: array {column.name!r} changes dtype or shape between blocks "
                        f"({column.data.dtype}{column.data.shape[1:]} vs {dset.dtype}{dset.shape[1:]})"
                    )
                if rows:
                    dset[written : written + rows] = column.data
            written += rows
            attrs = block.attrs
            check_disk()  # stop at the first failed write, before the next block is computed
        if names is None or written != n_frames:
            raise StoreError(f"{final}: {written} rows were written, {n_frames} were announced")
        return attrs or {}

    def _create_dataset(self, group: h5py.Group, column: _Column, n_frames: int) -> None:
        shape = (n_frames, *column.data.shape[1:])
        options = self._storage_options(np.empty((0,), column.data.dtype), shape)
        dset = group.create_dataset(column.name, shape=shape, dtype=column.data.dtype, **options)
        if column.numpy_dtype is not None:
            dset.attrs["numpy_dtype"] = column.numpy_dtype

    def _storage_options(self, data: np.ndarray, shape: tuple[int, ...]) -> dict[str, Any]:
        """Chunking and compression for a dataset of ``shape`` with ``data``'s dtype."""
        size = int(np.prod(shape))
        if size == 0:
            return {}  # HDF5 cannot chunk a dimension of length 0; nothing to compress anyway
        row_bytes = data.itemsize * (size // shape[0])
        rows = min(self.chunk_frames, shape[0], max(1, MAX_CHUNK_BYTES // row_bytes))
        options: dict[str, Any] = {"chunks": (rows, *shape[1:]), "fletcher32": True}
        if self.compression is Compression.NONE:
            return options
        if self.compression is Compression.GZIP:
            # gzip is the choice for size, and byte shuffling helps it on float features.
            options.update(compression="gzip", compression_opts=GZIP_LEVEL, shuffle=data.itemsize > 1)
        else:
            # lzf is the choice for speed. Shuffling gains lzf little or loses (ReLU embeddings
            # grew 20 %) and made 300-row log-mel window reads ~5x slower, so it is left off.
            options["compression"] = "lzf"
        return options

    # ---- checking

    @contextlib.contextmanager
    def _open_group(
        self, extractor: str, video_id: str, arrays: Sequence[str] | None = None
    ) -> Iterator[tuple[Path, h5py.Group]]:
        """The video's group in its verified shard (see ``_shard_problem`` for ``arrays``);
        StoreError naming the shard otherwise."""
        path, h5 = self._open_verified(extractor, video_id, arrays)
        with h5:
            yield path, h5[group_name(video_id)]

    def _open_verified(
        self, extractor: str, video_id: str, arrays: Sequence[str] | None = None
    ) -> tuple[Path, h5py.File]:
        """The video's shard, open for reading and checked; StoreError naming the shard otherwise (and
        nothing left open)."""
        path = self._locate(extractor, video_id)
        if not path.exists():
            raise StoreError(f"{path}: no shard for video {video_id!r} of extractor {extractor!r}")
        try:
            h5 = h5py.File(path, "r", locking=False)
        except OSError as err:
            raise StoreError(f"{path}: corrupt shard: cannot be opened as HDF5 ({err})") from err
        try:
            problem = _shard_problem(h5, extractor, video_id, arrays)
        except BaseException:
            h5.close()
            raise
        if problem is not None:
            h5.close()
            raise StoreError(f"{path}: corrupt shard: {problem}")
        return path, h5

    def status(
        self,
        extractor: str,
        video_id: str,
        params_hash: str,
        media_fingerprint: str | None = None,
        verify_data: bool = False,
    ) -> ShardStatus:
        """STORED when a readable shard has this params hash (and this media fingerprint, when given).

        ``verify_data`` also reads every data chunk against its checksum (pipeline/integrity.py):
        a shard with a damaged chunk is CORRUPT instead of STORED.
        """
        path = self._locate(extractor, video_id)
        if not path.exists():
            return ShardStatus.MISSING
        try:
            with self._open_group(extractor, video_id) as (_, group):
                stored_hash = group.attrs["params_hash"]
                stored_media = group.attrs.get("media_fingerprint", "")
                problem = integrity.data_problem(group) if verify_data else None
                if problem is not None:
                    raise StoreError(f"{path}: corrupt shard: {problem}")
        except StoreError as err:
            if not path.exists():  # removed while we looked
                return ShardStatus.MISSING
            log.warning("%s", err)
            return ShardStatus.CORRUPT
        if stored_hash != params_hash:
            return ShardStatus.STALE
        if media_fingerprint is not None and stored_media != media_fingerprint:
            return ShardStatus.STALE
        return ShardStatus.STORED

    def check_dataset(self, extractor: str, video_id: str, dataset: str, replace: bool = False) -> None:
        """StoreError unless the video's shard may be replaced by one from ``dataset``: there is none, it
        names no dataset (or a corrupt one), it comes from ``dataset``, or ``replace`` says so."""
        path = self.shard_path(extractor, video_id)
        if replace or not dataset or not path.exists():
            return
        try:
            stored = str(self.attrs(extractor, video_id).get("dataset", ""))
        except StoreError:
            return
        if stored and stored != dataset:
            raise StoreError(
                f"{path}: video {video_id!r} is stored from dataset {stored}, not from {dataset}; not "
                "replacing it (two datasets with this video id share store.root: use another "
                "store.root, or set store.replace_other_dataset: true to replace it)"
            )

    def file_problem(self, extractor: str, path: Path, verify_data: bool = True) -> str | None:
        """Why the shard file ``path`` of ``extractor`` (its own shard or a multi-video one) is not
        complete and readable, or None. With ``verify_data`` every data chunk is read too."""
        if path.parent.name == PACKS_FOLDER:
            return self._pack_problem(path, verify_data)
        video_id = self._video_id_in(path)
        if video_id is None:
            return "not a readable shard whose video id matches its file name"
        try:
            with self._open_group(extractor, video_id) as (_, group):
                return integrity.data_problem(group) if verify_data else None
        except StoreError as err:
            return str(err)

    @staticmethod
    def _pack_problem(path: Path, verify_data: bool) -> str | None:
        try:
            with h5py.File(path, "r", locking=False) as h5:
                for group in h5.values():
                    video_id = group.attrs.get("video_id") if isinstance(group, h5py.Group) else None
                    if not isinstance(video_id, str):
                        return f"group {group.name!r} has no video_id"
                    problem = _group_problem(group, video_id, None)
                    if problem is None and verify_data:
                        problem = integrity.data_problem(group)
                    if problem is not None:
                        return f"video {video_id!r}: {problem}"
        except OSError as err:
            return f"cannot be opened as HDF5 ({err})"
        return None

    def shard_files(self, extractor: str) -> list[Path]:
        """The shard files of ``extractor`` on disk, its multi-video shards last (temp files excluded)."""
        return [*self._shard_files(extractor), *_shard_files_in(self.folder(extractor) / PACKS_FOLDER)]

    # ---- index

    def _index(self, extractor: str) -> ShardIndex:
        return ShardIndex(self.folder(extractor), extractor)

    def _load_index(self, extractor: str) -> dict[str, dict[str, Any]] | None:
        """The index's video entries (snapshot + log); None when there is no usable index."""
        loaded = self._index(extractor).load()
        return None if loaded is None else loaded.entries

    @staticmethod
    def _index_entry(path: Path, group: h5py.Group, stat: os.stat_result) -> dict[str, Any]:
        packed = path.parent.name == PACKS_FOLDER
        entry = _entry(
            f"{PACKS_FOLDER}/{path.name}" if packed else path.name,
            group.attrs["params_hash"],
            group.attrs.get("media_fingerprint", ""),
            group.attrs["n_frames"],
            group.attrs["extractor_version"],
            stat,
        )
        if packed:
            entry[WRITTEN_ATTR] = int(group.attrs.get(WRITTEN_ATTR, 0))
        return entry

    def _read_entry(self, extractor: str, video_id: str, verify_data: bool = False) -> dict[str, Any]:
        """The index entry of a video from its verified shard, with the stat of exactly that file
        (a shard replaced while it was read is read again). ``verify_data``: every chunk read too."""
        path = self._locate(extractor, video_id)
        for _ in range(3):
            try:
                before = path.stat()
            except FileNotFoundError:
                break  # _open_group names the missing shard
            with self._open_group(extractor, video_id) as (_, group):
                entry = self._index_entry(path, group, before)
                problem = integrity.data_problem(group) if verify_data else None
            if problem is not None:
                raise StoreError(f"{path}: corrupt shard: {problem}")
            with contextlib.suppress(FileNotFoundError):
                if _same_file(before, path.stat()):
                    return entry
        with self._open_group(extractor, video_id):
            pass
        raise StoreError(f"{path}: the shard kept changing while it was indexed (concurrent writers?)")

    def record(self, extractor: str, video_id: str, entry: Mapping[str, Any] | None = None) -> None:
        """Add or refresh the index entry of one video from its shard (driver only).

        O(1): one line appended to ``index.log``. ``entry`` is the one ``write_shard`` returned:
        used when the shard file on disk is still the one it describes (one ``stat``), else the
        shard is opened and read. The first record of a folder without an index starts it from
        every readable shard on disk. A write error (full disk) is raised as OSError with the index
        left valid; ``sync_index`` adds the shard on the next run.
        """
        if entry is not None and not self._entry_is_current(extractor, video_id, entry):
            entry = None
        if entry is None:
            entry = self._read_entry(extractor, video_id)
        index = self._index(extractor)
        if not index.exists():
            with index.lock():
                if not index.exists():
                    index._replace_locked(self._scan(extractor))
        index.append([LogRecord(video_id, entry)])

    def _entry_is_current(self, extractor: str, video_id: str, entry: Mapping[str, Any]) -> bool:
        """Whether ``entry`` describes the file that holds the video now (its own shard file comes
        before a multi-video shard), by name and one ``stat``."""
        own = self.shard_path(extractor, video_id)
        shard = str(entry.get("shard", ""))
        if shard.startswith(f"{PACKS_FOLDER}/"):
            return not own.exists() and _entry_matches(entry, _stat(self.folder(extractor) / shard))
        return shard == own.name and _entry_matches(entry, _stat(own))

    def compact_index(self, extractor: str) -> dict[str, dict[str, Any]]:
        """Fold the index log into ``index.json`` (end of a stage); return the entries."""
        return self._index(extractor).compact()

    def rebuild_index(self, extractor: str) -> dict[str, dict[str, Any]]:
        """Rewrite the index from the readable shards on disk and return its entries."""
        index = self._index(extractor)
        with index.lock():
            videos = self._scan(extractor)
            index._replace_locked(videos)
        return videos

    def sync_index(self, extractor: str, verify_data: bool = False) -> IndexSync:
        """Make the index agree with the shards on disk, opening only shards it does not describe.

        Shards written but never recorded (a driver killed between a worker's write and its
        ``record``), replaced or unknown are read and added; entries whose shard is gone are
        dropped; leftover index temp files are removed; the log is compacted. Costs one directory
        listing plus one open per shard the index did not know: run it at the start of a stage.
        ``verify_data`` reads every data chunk of those shards too: a damaged one is left out.
        """
        index = self._index(extractor)
        sync = IndexSync()
        with index.lock():
            sync.temp_files_removed = index.remove_temp_files_locked()
            loaded = index.load()
            entries = dict(loaded.entries) if loaded is not None else {}
            on_disk = _shard_stats(self.folder(extractor))
            packs = _shard_stats(self.folder(extractor) / PACKS_FOLDER, prefix=f"{PACKS_FOLDER}/")
            by_shard = {entry.get("shard"): video_id for video_id, entry in entries.items()}
            for video_id, entry in list(entries.items()):
                if entry.get("shard") not in on_disk and entry.get("shard") not in packs:
                    del entries[video_id]
                    sync.dropped += 1
            for name, stat in on_disk.items():
                known = by_shard.get(name)
                if known is not None and known in entries and _entry_matches(entries[known], stat):
                    continue
                path = self.folder(extractor) / name
                video_id = known if known is not None else self._video_id_in(path)
                if video_id is None:
                    continue
                try:
                    entries[video_id] = self._read_entry(extractor, video_id, verify_data)
                except StoreError as err:
                    log.warning("%s", err)
                    entries.pop(video_id, None)
                    continue
                sync.added += 1
            sync.added += self._sync_packs(extractor, entries, packs, set(on_disk))
            if sync.changed or loaded is None or loaded.log_lines or loaded.bad_lines:
                index._replace_locked(entries)
        if sync.changed:
            log.info("%s index: %s", extractor, sync)
        return sync

    def status_checker(self, extractor: str, verify_data: bool = False) -> IndexedStatus:
        """``status`` for many videos at once: the index (loaded once) answers STORED when its entry
        has the hash, the fingerprint and the shard file's current size and mtime; anything else
        goes through the full ``status`` check (reading every data chunk with ``verify_data``)."""
        return IndexedStatus(self, extractor, self._load_index(extractor) or {}, verify_data)

    def _sync_packs(
        self,
        extractor: str,
        entries: dict[str, dict[str, Any]],
        packs: Mapping[str, os.stat_result],
        own_shards: set[str],
    ) -> int:
        """Enter the videos of multi-video shards the index does not describe (new or changed
        packs): a video's own shard comes first, then the newest packed copy. How many entered."""
        current = {
            entry["shard"]
            for entry in entries.values()
            if entry.get("shard") in packs and _entry_matches(entry, packs[entry["shard"]])
        }
        added = 0
        for name in sorted(set(packs) - current):
            for video_id, entry in self._read_pack(self.folder(extractor) / name, extractor).items():
                if shard_name(video_id) in own_shards:
                    continue
                known = entries.get(video_id)
                if known is None or known.get("shard") == name or _written(entry) >= _written(known):
                    entries[video_id] = entry
                    added += 1
        return added

    def _read_pack(self, path: Path, extractor: str) -> dict[str, dict[str, Any]]:
        """Index entries of every readable video in a multi-video shard (none if unreadable)."""
        try:
            before = path.stat()
            with h5py.File(path, "r", locking=False) as h5:
                if h5.attrs.get("format") != FORMAT_NAME or h5.attrs.get("extractor") != extractor:
                    log.warning("%s: not a multi-video shard of %s", path, extractor)
                    return {}
                found = {}
                for group in h5.values():
                    video_id = group.attrs.get("video_id") if isinstance(group, h5py.Group) else None
                    if not isinstance(video_id, str) or group.name != f"/{group_name(video_id)}":
                        continue
                    problem = _group_problem(group, video_id, None)
                    if problem is None:
                        found[video_id] = self._index_entry(path, group, before)
                    else:
                        log.warning("%s: video %r: %s", path, video_id, problem)
            if not _same_file(before, path.stat()):
                return {}  # replaced while read: the next sync reads the new one
            return found
        except (OSError, KeyError) as err:
            log.warning("%s: corrupt multi-video shard, cannot be read (%s)", path, err)
            return {}

    def _scan(self, extractor: str) -> dict[str, dict[str, Any]]:
        videos = {}
        files = self._shard_files(extractor)
        for path in tqdm(
            files, desc=f"scan {extractor}", unit="shard", disable=True if len(files) < 500 else None
        ):
            video_id = self._video_id_in(path)
            if video_id is None:
                continue
            try:
                videos[video_id] = self._read_entry(extractor, video_id)
            except StoreError as err:
                log.warning("%s", err)
        packs = _shard_stats(self.folder(extractor) / PACKS_FOLDER, prefix=f"{PACKS_FOLDER}/")
        own = {entry["shard"] for entry in videos.values()}
        newest: dict[str, dict[str, Any]] = {}
        for name in sorted(packs):
            for video_id, entry in self._read_pack(self.folder(extractor) / name, extractor).items():
                if shard_name(video_id) not in own and _written(entry) >= _written(newest.get(video_id)):
                    newest[video_id] = entry
        return {**newest, **videos}

    @staticmethod
    def _video_id_in(path: Path) -> str | None:
        """The video id recorded inside a shard file, if it matches the file's name."""
        try:
            with h5py.File(path, "r", locking=False) as h5:
                ids = [g.attrs.get("video_id") for g in h5.values() if isinstance(g, h5py.Group)]
        except OSError as err:
            log.warning("%s: corrupt shard, cannot be opened as HDF5 (%s)", path, err)
            return None
        ids = [i for i in ids if isinstance(i, str) and shard_name(i) == path.name]
        if len(ids) != 1:
            log.warning("%s: corrupt shard: no group whose video_id matches the file name", path)
            return None
        return ids[0]

    # ---- listing

    def videos(self, extractor: str) -> list[str]:
        """Ids of the videos with a shard of ``extractor``, sorted (``status`` tells if one is valid)."""
        files = self._shard_files(extractor)
        known = {entry.get("shard"): vid for vid, entry in (self._load_index(extractor) or {}).items()}
        ids = []
        for path in files:
            video_id = known.get(path.name) or video_id_from_shard_name(path.name) or self._video_id_in(path)
            if video_id is not None:
                ids.append(video_id)
        packed = self._packed(extractor)
        present = {name for name in set(packed.values()) if (self.folder(extractor) / name).exists()}
        ids += [video_id for video_id, name in packed.items() if name in present]
        return sorted(set(ids))

    def extractors(self) -> list[str]:
        """Names of the extractors with a folder holding shards or an index under ``root``."""
        if not self.root.is_dir():
            return []
        names = []
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            if (
                (folder / INDEX_FILE).exists()
                or (folder / INDEX_LOG_FILE).exists()
                or _shard_files_in(folder)
            ):
                names.append(folder.name)
        return names

    # ---- reading

    def read(self, extractor: str, video_id: str, names: Sequence[str] | None = None) -> FeatureSet:
        """The stored FeatureSet of one video; only the arrays in ``names`` when given."""
        with self._open_group(extractor, video_id, names) as (path, group):
            available = [name for name in _dataset_names(group) if name not in TIMELINE_DATASETS]
            wanted = list(available if names is None else names)
            self._check_names(path, wanted, available)
            return FeatureSet(
                time=_read_dataset(path, group, "time"),
                frame_index=_read_dataset(path, group, "frame_index"),
                mask=_read_dataset(path, group, "mask"),
                arrays={name: _read_dataset(path, group, name) for name in wanted},
                attrs=_feature_attrs_from_group(group),
            )

    @staticmethod
    def _check_names(path: Path, wanted: Sequence[str], available: Sequence[str]) -> None:
        missing = [name for name in wanted if name not in available]
        if missing:
            raise StoreError(
                f"{path}: no array {missing[0]!r} in this shard (arrays: {', '.join(available)})"
            )

    def get(
        self, extractor: str, video_id: str, name: str = "features"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(time, values, mask)`` of one array of one video."""
        with self._open_group(extractor, video_id, [name]) as (path, group):
            available = _dataset_names(group)
            self._check_names(path, [name], available)
            return (
                _read_dataset(path, group, "time"),
                _read_dataset(path, group, name),
                _read_dataset(path, group, "mask"),
            )

    def read_rows(self, extractor: str, video_id: str, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of one array (``time``/``frame_index``/``mask`` included); reads only
        the chunks that hold them."""
        with self._open_group(extractor, video_id, [name]) as (path, group):
            if not isinstance(group.get(name), h5py.Dataset):
                self._check_names(path, [name], _dataset_names(group))
            n_rows = group[name].shape[0]
            if not (0 <= int(start) <= int(stop) <= n_rows):
                raise StoreError(f"{path}: rows {start}:{stop} of {name!r} are outside 0:{n_rows}")
            return _read_dataset(path, group, name, slice(int(start), int(stop)))

    def read_range(
        self,
        extractor: str,
        video_id: str,
        names: Sequence[str] = (),
        start: int = 0,
        stop: int | None = None,
    ) -> FeatureSet:
        """Rows ``start:stop`` (to the last row when ``stop`` is None) of the timeline and of the arrays
        in ``names``, read in one opening of the shard; only the chunks holding them are read."""
        with self.open_reader(extractor, video_id) as reader:
            return reader.read_range(names, start, stop)

    def open_reader(self, extractor: str, video_id: str) -> ShardReader:
        """The video's shard opened and verified once for many ``read_range`` calls (close it, or use it
        as a context manager). An h5py handle must not cross a fork: open readers in the process that
        reads, as avpipe.models.dataset does in each DataLoader worker."""
        path, h5 = self._open_verified(extractor, video_id)
        return ShardReader(path, h5, h5[group_name(video_id)])

    def attrs(self, extractor: str, video_id: str) -> dict[str, Any]:
        """Every attribute of a video's shard: the store's metadata (``library_versions`` as a dict)
        and the FeatureSet attrs, decoded."""
        with self._open_group(extractor, video_id, ()) as (_, group):
            meta = {key: _plain(group.attrs[key]) for key in META_ATTRS if key in group.attrs}
            features = _feature_attrs_from_group(group)
        meta.pop("feature_attrs", None)
        meta.pop("json_attrs", None)
        meta["library_versions"] = json.loads(meta.get("library_versions", "{}"))
        return {**meta, **features}

    # ---- removing

    def remove(self, extractor: str, video_id: str) -> None:
        """Delete a video's shard and its index entry; nothing happens when there is none.

        A video in multi-video shards is taken out of every one holding it (each such pack is
        rewritten without it, atomically, and its other videos re-indexed)."""
        path = self.shard_path(extractor, video_id)
        if path.exists():
            path.unlink(missing_ok=True)
            _fsync_path(path.parent)
        index = self._index(extractor)
        records = [LogRecord(video_id, None)]
        for pack in _shard_stats(self.folder(extractor) / PACKS_FOLDER):
            records += self._rewrite_pack_without(
                extractor, self.folder(extractor) / PACKS_FOLDER / pack, video_id
            )
        if index.exists():
            index.append(records)

    def _rewrite_pack_without(self, extractor: str, pack: Path, video_id: str) -> list[LogRecord]:
        """Copy ``pack`` without ``video_id`` into a new pack (or delete it if nothing else is left);
        the index records of the videos that moved (those whose current copy was in ``pack``)."""
        from avpipe.pipeline.packs import PackWriter

        try:
            with h5py.File(pack, "r", locking=False) as h5:
                if group_name(video_id) not in h5:
                    return []
        except OSError:
            return []
        moved = [
            vid for vid, name in self._packed(extractor).items() if name == f"{PACKS_FOLDER}/{pack.name}"
        ]
        with PackWriter(self, extractor) as writer, h5py.File(pack, "r", locking=False) as source:
            kept = [name for name in source if name != group_name(video_id)]
            for name in kept:
                source.copy(source[name], writer._h5, name=name)
            writer._videos.update({name: {} for name in kept})  # copied as they were
            if kept:
                writer._commit_file()
            else:
                writer.abort()
        pack.unlink(missing_ok=True)
        _fsync_path(pack.parent)
        if not kept:
            return []
        new_path = writer.final
        records = []
        with h5py.File(new_path, "r", locking=False) as h5:
            stat = new_path.stat()
            for vid in moved:
                if vid != video_id and group_name(vid) in h5:
                    records.append(LogRecord(vid, self._index_entry(new_path, h5[group_name(vid)], stat)))
        return records

    def cleanup_temp(self, extractor: str, max_age_s: float = DEFAULT_TEMP_MAX_AGE_S) -> int:
        """Remove temp files left by crashed writers; return how many were removed.

        A temp file goes when its writer ran on this host and is no longer alive, or when it was
        last modified more than ``max_age_s`` before this call (``0``: every temp file older than
        the call, for a driver that knows no writer is running). Live writers keep their files.
        """
        folder = self.folder(extractor)
        if not folder.is_dir():
            return 0
        deadline = time.time() - max_age_s
        removed = 0
        packs = folder / PACKS_FOLDER
        for path in [*folder.iterdir(), *(packs.iterdir() if packs.is_dir() else [])]:
            match = _TEMP_NAME.match(path.name)
            if match is None:
                continue
            try:
                too_old = path.stat().st_mtime < deadline
            except FileNotFoundError:
                continue  # its writer finished and renamed it meanwhile
            if too_old or _writer_is_gone(int(match["pid"]), match["host"]):
                path.unlink(missing_ok=True)
                removed += 1
                log.info("removed stale temp file %s", path)
        return removed
