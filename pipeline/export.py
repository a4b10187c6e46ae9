"""Feature tables into files: ``avpipe extract-file`` (one media file) and ``avpipe export`` (a store).

Formats, chosen by the file suffix or ``--format`` (docs/API.md):

- ``.parquet`` / ``.csv``: the table with named columns (``avpipe.pipeline.tables``);
- ``.npy``: the same table as a numpy structured array, one named field per column;
- ``.npz``: every stored array as it is (face crops included), ``<feature>/<array>``, and for each
  array that makes table columns their names, ``<feature>/<array>.columns``.

A file that exists is never replaced unless ``overwrite`` is set; every file is written under a temp
name and appears complete or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from avpipe.pipeline.atomic import STORAGE_ERRNOS, OutputWriteError, temp_path
from avpipe.pipeline.errors import AvpipeError
from avpipe.pipeline.tables import column_names, feature_table, is_table_array, structured_array
from avpipe.pipeline.types import FeatureSet

if TYPE_CHECKING:
    import pandas as pd

    from avpipe.pipeline.extract_file import ExtractedFeatures
    from avpipe.pipeline.registry import Extractor, ExtractorRegistry
    from avpipe.pipeline.store import FeatureStore

log = logging.getLogger(__name__)

FORMATS = ("parquet", "csv", "npy", "npz")
TABLE_FORMATS = ("parquet", "csv")
VIDEO_COLUMN = "video_id"


class OutputExistsError(AvpipeError):
    """An output file that exists and would be replaced without ``--overwrite``."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        more = f" (and {len(paths) - 1} more)" if len(paths) > 1 else ""
        super().__init__(
            f"{paths[0]}: already exists{more}; nothing was written (use --overwrite to replace)"
        )


def file_format(path: str | Path) -> str:
    """``parquet``, ``csv``, ``npy`` or ``npz`` from the suffix of ``path``."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        known = ", ".join(f".{fmt}" for fmt in FORMATS)
        raise AvpipeError(f"{path}: unknown output format {suffix or '(no suffix)'!r}; use {known}")
    return suffix


def check_free(paths: Sequence[Path], overwrite: bool) -> None:
    """OutputExistsError when any of ``paths`` exists and ``overwrite`` is not set."""
    if overwrite:
        return
    taken = [path for path in paths if os.path.lexists(path)]
    if taken:
        raise OutputExistsError(taken)


@contextlib.contextmanager
def new_file(path: str | Path, overwrite: bool) -> Iterator[Path]:
    """A temp path to write; on success it becomes ``path``: replacing it only with ``overwrite``,
    else linked without clobbering (a file that appeared meanwhile is an OutputExistsError)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            tmp.unlink()
    except FileExistsError as err:
        tmp.unlink(missing_ok=True)
        raise OutputExistsError([path]) from err
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in STORAGE_ERRNOS or err.errno == errno.EACCES:
            raise OutputWriteError(path, err) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_table(table: pd.DataFrame, path: str | Path, overwrite: bool = False) -> Path:
    """One table to ``path`` (.parquet, .csv or .npy, by its suffix)."""
    fmt = file_format(path)
    if fmt == "npz":
        raise AvpipeError(f"{path}: .npz holds arrays, not a table; use .parquet, .csv or .npy")
    check_free([Path(path)], overwrite)
    with new_file(path, overwrite) as tmp:
        if fmt == "parquet":
            table.to_parquet(tmp, index=False)
        elif fmt == "csv":
            table.to_csv(tmp, index=False)
        else:
            with open(tmp, "wb") as handle:
                np.save(handle, structured_array(table), allow_pickle=False)
    return Path(path)


def npz_arrays(
    extractor: str, features: FeatureSet, extractor_class: type[Extractor] | None = None
) -> dict[str, np.ndarray]:
    """``<extractor>/<array>`` -> the stored array (timeline included), and the column names of each
    array that makes table columns as ``<extractor>/<array>.columns``."""
    arrays = {"time": features.time, "frame_index": features.frame_index, "mask": features.mask}
    out = {f"{extractor}/{name}": np.asarray(values) for name, values in arrays.items()}
    for name, values in features.arrays.items():
        values = np.asarray(values)
        out[f"{extractor}/{name}"] = values
        if is_table_array(values):
            names = column_names(extractor, name, tuple(values.shape[1:]), features.attrs, extractor_class)
            out[f"{extractor}/{name}.columns"] = np.asarray(names, dtype=str)
    return out


def write_npz(arrays: Mapping[str, np.ndarray], path: str | Path, overwrite: bool = False) -> Path:
    check_free([Path(path)], overwrite)
    with new_file(path, overwrite) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return Path(path)


def write_extracted(result: ExtractedFeatures, out: str | Path, overwrite: bool = False) -> Path:
    """``avpipe.extract``'s result to one file: the joined table, or all arrays for ``.npz``."""
    if file_format(out) == "npz":
        arrays: dict[str, np.ndarray] = {}
        for name, features in result.feature_sets.items():
            arrays.update(npz_arrays(name, features, result.extractor_classes.get(name)))
        return write_npz(arrays, out, overwrite)
    return write_table(result.table(), out, overwrite)


# ---------------------------------------------------------------------------------- a whole store


@dataclass
class ExportReport:
    """What ``export_store`` wrote: per feature, the videos and rows; the files."""

    videos: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{name}: {self.videos[name]} videos, {self.rows[name]} rows" for name in self.videos]
        return f"exported {'; '.join(parts)} into {len(self.files)} files"


def export_plan(
    store: FeatureStore, features: Sequence[str] | None, videos: Sequence[str] | None
) -> dict[str, list[str]]:
    """Feature -> the video ids to export: all the store has, or the chosen ones, each of which must
    have a shard of every chosen feature (AvpipeError naming what is missing, before any write)."""
    available = store.extractors()
    names = list(dict.fromkeys(features)) if features else available
    if not names:
        raise AvpipeError(f"{store.root}: no features in this store (is it store.root?)")
    plan = {}
    for name in names:
        if name not in available:
            raise AvpipeError(
                f"{store.root}: no feature {name!r} in this store; features: {', '.join(available) or 'none'}"
            )
        stored = store.videos(name)
        if videos:
            missing = [video for video in dict.fromkeys(videos) if video not in stored]
            if missing:
                raise AvpipeError(
                    f"{store.folder(name)}: no shard of video {missing[0]!r}"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                )
            plan[name] = list(dict.fromkeys(videos))
        else:
            plan[name] = stored
    return plan


def export_paths(out_dir: Path, fmt: str, plan: Mapping[str, Sequence[str]]) -> dict[str, list[Path]]:
    """Feature -> its output files: ``<out>/<feature>.<fmt>`` for tables, else one file per video
    ``<out>/<feature>/<shard name>.<fmt>`` (the store's file-name escaping of the id)."""
    from avpipe.pipeline.store import shard_name

    if fmt in TABLE_FORMATS:
        return {name: [out_dir / f"{name}.{fmt}"] for name in plan}
    return {
        name: [out_dir / name / f"{shard_name(video).removesuffix('.h5')}.{fmt}" for video in videos]
        for name, videos in plan.items()
    }


def export_store(
    store: FeatureStore,
    out_dir: str | Path,
    fmt: str,
    features: Sequence[str] | None = None,
    videos: Sequence[str] | None = None,
    overwrite: bool = False,
    registry: ExtractorRegistry | None = None,
) -> ExportReport:
    """Write the store's features as files (module docstring): per feature one table with a
    ``video_id`` column (parquet, csv), or one file per video (npy, npz). Nothing is written when a
    chosen feature or video is missing or any output exists without ``overwrite``."""
    from avpipe.pipeline.registry import default_registry

    if fmt not in FORMATS:
        raise AvpipeError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    plan = export_plan(store, features, videos)
    paths = export_paths(out, fmt, plan)
    check_free([path for group in paths.values() for path in group], overwrite)
    classes = (registry or default_registry()).classes
    report = ExportReport()
    for name, video_ids in plan.items():
        cls = classes.get(name)
        report.videos[name] = len(video_ids)
        if fmt in TABLE_FORMATS:
            path = paths[name][0]
            report.rows[name] = _write_store_table(store, name, video_ids, path, fmt, overwrite, cls)
            report.files.append(path)
            continue
        report.rows[name] = 0
        for video, path in zip(video_ids, paths[name], strict=True):
            features_set = store.read(name, video)
            report.rows[name] += len(features_set)
            if fmt == "npz":
                write_npz(npz_arrays(name, features_set, cls), path, overwrite)
            else:
                write_table(feature_table(name, features_set, cls), path, overwrite)
            report.files.append(path)
        log.info("%s: %d videos written to %s", name, len(video_ids), out / name)
    return report


def _write_store_table(
    store: FeatureStore,
    name: str,
    video_ids: Sequence[str],
    path: Path,
    fmt: str,
    overwrite: bool,
    cls: type[Extractor] | None,
) -> int:
    """One feature's table of all ``video_ids``, written a video at a time (memory: one video)."""
    rows, first_columns, first_video = 0, None, None
    with new_file(path, overwrite) as tmp:
        writer: Any = None
        try:
            for video in video_ids:
                table = feature_table(name, store.read(name, video), cls)
                table.insert(0, VIDEO_COLUMN, video)
                if first_columns is None:
                    first_columns, first_video = list(table.columns), video
                elif list(table.columns) != first_columns:
                    raise AvpipeError(
                        f"{store.folder(name)}: videos {first_video!r} and {video!r} have different columns "
                        "(stored with other parameters?); export them separately with --video"
                    )
                rows += len(table)
                writer = _append(writer, tmp, table, fmt)
            if writer is None:  # no video: an empty table, just the timeline columns
                empty = _empty_table()
                empty.to_csv(tmp, index=False) if fmt == "csv" else empty.to_parquet(tmp, index=False)
        finally:
            if writer is not None and fmt == "parquet":
                writer.close()
    log.info("%s: %d videos, %d rows written to %s", name, len(video_ids), rows, path)
    return rows


def _append(writer: Any, tmp: Path, table: pd.DataFrame, fmt: str) -> Any:
    if fmt == "csv":
        table.to_csv(tmp, index=False, mode="w" if writer is None else "a", header=writer is None)
        return True
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    if writer is None:
        writer = pq.ParquetWriter(tmp, arrow.schema)
    writer.write_table(arrow)
    return writer


def _empty_table() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({VIDEO_COLUMN: [], "time": [], "frame_index": [], "mask": []})
