"""Any tree of videos: ``<root>/**/<clip>.<ext>``, the video id is the relative path without its suffix.

Bytes of a file name that are not UTF-8 appear in the id as ``\\xNN``. Two videos differing only in
their extension (``clip.flv``, ``clip.mp4``) keep it in their ids
(``avpipe.pipeline.adapters.base.distinct_ids``).

Optional labels per video in ``<same stem>.csv`` next to it, with a header and one row per labeled frame
(docs/DATASETS.md has a worked example):

- a key column, exactly one of ``frame`` (native frame index, >= 0, unique) or ``time`` (seconds on the
  container clock, unique; resampled onto the frame times by ``dataset.labels.resample``). Without a key
  column the file has one row, the label of the whole clip.
- any declared label column (``dataset.labels``): a continuous dimension (``valence``, ``arousal`` in
  [-1, 1] with -5 unlabeled; any other dimension any finite number), a categorical task (a class index
  or a class name; -1 unlabeled; ``expression`` uses the order of
  ``avpipe.pipeline.labels.EXPRESSION_NAMES``),
  and the class columns of a multi-label task (-1, 0, 1; the action units ``AU1`` ... of ``au``).
  An empty cell is unlabeled.
- rater columns ``<dimension>@<rater>`` (``arousal@FM1``): every rater is kept; without a plain
  ``<dimension>`` column the gold standard is computed by ``dataset.labels.gold_standard``.

Optional ``<root>/splits.csv`` with columns ``video_id,split`` (train | validation | test) and optionally
``subject``; videos it does not list are "train". Without it every video is "train".
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from avpipe.pipeline.adapters import register_adapter
from avpipe.pipeline.adapters.base import Candidate, DatasetAdapter, Scan
from avpipe.pipeline.config.dataset import DEFAULT_VIDEO_EXTENSIONS
from avpipe.pipeline.config.labels import RATER_SEPARATOR, LabelConfig
from avpipe.pipeline.errors import LabelError
from avpipe.pipeline.labels import (
    UNLABELED_AU,
    UNLABELED_EXPRESSION,
    UNLABELED_VA,
    VA_NAMES,
    KeyKind,
    LabelTrack,
    RawLabels,
    TaskKind,
    check_au,
    check_va,
    parse_float,
    parse_int,
)
from avpipe.pipeline.manifest import Split, printable
from avpipe.pipeline.raters import gold_standard

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.csv"
LABEL_SUFFIX = ".csv"
KEY_COLUMNS = {"frame": KeyKind.FRAME, "time": KeyKind.TIME}


@register_adapter
class FolderAdapter(DatasetAdapter):
    name = "folder"
    description = "any tree of videos; optional <stem>.csv labels and splits.csv"

    def __init__(
        self,
        root: str | Path,
        video_extensions: Iterable[str] = DEFAULT_VIDEO_EXTENSIONS,
        splits_file: str = SPLITS_FILE,
        labels: LabelConfig | None = None,
    ) -> None:
        super().__init__(root, video_extensions, labels)
        self.splits_file = self.root / splits_file

    def scan(self) -> Scan:
        assignments = self._read_splits()
        scan = Scan()
        for path in self.video_files(self.root, scan.failures):
            video_id = printable(path.relative_to(self.root).with_suffix("").as_posix())
            split, subject = assignments.pop(video_id, (Split.TRAIN, video_id))
            label_file = path.with_suffix(LABEL_SUFFIX)
            tasks = _tasks_in(label_file, self.label_config) if label_file.is_file() else []
            labels = {task: label_file for task in tasks}
            scan.candidates.append(Candidate(video_id, path, subject, split, labels))
        for video_id in sorted(assignments):
            log.warning(
                "%s lists %r, but there is no such video under %s", self.splits_file, video_id, self.root
            )
        log.info("%s: %d videos under %s", self.name, len(scan.candidates), self.root)
        return scan

    def read_labels(self, candidate: Candidate) -> RawLabels:
        files = sorted(set(candidate.labels.values()))
        return RawLabels([track for path in files for track in read_label_csv(path, self.label_config)])

    def _read_splits(self) -> dict[str, tuple[Split, str]]:
        """video id -> (split, subject) from splits.csv; LabelError on a bad line (it concerns all videos)."""
        if not self.splits_file.is_file():
            return {}
        path = self.splits_file
        assignments: dict[str, tuple[Split, str]] = {}
        for line, record in _csv_records(path, required=("video_id", "split"), allowed=("subject",)):
            video_id = (record["video_id"] or "").strip()
            if not video_id:
                raise LabelError(path, f"line {line}: empty video_id")
            if video_id in assignments:
                raise LabelError(path, f"line {line}: {video_id!r} is listed twice")
            split = _parse_split(record["split"] or "", path, line)
            subject = (record.get("subject") or "").strip() or video_id
            assignments[video_id] = (split, subject)
        return assignments


def _parse_split(text: str, path: Path, line: int) -> Split:
    aliases = {"val": Split.VALIDATION, "valid": Split.VALIDATION, "dev": Split.VALIDATION}
    value = text.strip().lower()
    try:
        return aliases.get(value) or Split(value)
    except ValueError:
        known = ", ".join(s.value for s in Split)
        raise LabelError(path, f"line {line}: unknown split {text.strip()!r}; known: {known}") from None


def _tasks_in(path: Path, config: LabelConfig) -> list[str]:
    """The tasks a label CSV has columns for (from its header only; rows are read later)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError):
        header = []
    columns = {c.strip().split(RATER_SEPARATOR)[0] for c in header}
    tasks = [d for d in config.dimensions if d in columns]
    tasks += [t for t in config.categorical if t in columns]
    tasks += [t for t, classes in config.multilabel.items() if columns & set(classes)]
    return tasks or ["labels"]  # no label column: keep the file referenced so that reading reports it


def _csv_records(
    path: Path, required: tuple[str, ...], allowed: tuple[str, ...] = ()
) -> list[tuple[int, dict]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, skipinitialspace=True)
            header = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = header
            records = [(reader.line_num, record) for record in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LabelError(path, f"cannot read: {err}") from None
    missing = [c for c in required if c not in header]
    unknown = [c for c in header if c not in required and c not in allowed]
    if missing or unknown:
        problems = [f"missing column {c!r}" for c in missing] + [f"unknown column {c!r}" for c in unknown]
        expected = ", ".join((*required, *allowed))
        raise LabelError(path, f"line 1: {'; '.join(problems)} (columns: {expected})")
    for line, record in records:
        if None in record or any(value is None for value in record.values()):
            raise LabelError(path, f"line {line}: expected {len(header)} values")
    return records


# --------------------------------------------------------------------------- label CSV


def read_label_csv(path: Path, config: LabelConfig | None = None) -> list[LabelTrack]:
    """A folder-adapter label CSV -> one track per declared task it has columns for."""
    config = config or LabelConfig()
    header = _label_header(path, config)
    key_column = next((c for c in header if c in KEY_COLUMNS), None)
    records = _csv_records(path, required=(key_column,) if key_column else (), allowed=tuple(header))
    if key_column is None:
        if len(records) != 1:
            raise LabelError(
                path, f"no frame or time column, so one row (the clip's label) expected; found {len(records)}"
            )
        key_kind, keys = KeyKind.CLIP, np.zeros(1, dtype=np.int64)
    else:
        key_kind = KEY_COLUMNS[key_column]
        keys = _keys(records, key_column, key_kind, path)
    tracks = [_dimension_track(d, header, records, keys, key_kind, path, config) for d in config.dimensions]
    tracks += [
        _categorical_track(task, classes, records, keys, key_kind, path)
        for task, classes in config.categorical.items()
        if task in header
    ]
    tracks += [
        _multilabel_track(task, classes, header, records, keys, key_kind, path)
        for task, classes in config.multilabel.items()
        if set(classes) & set(header)
    ]
    return [track for track in tracks if track is not None]


def _label_header(path: Path, config: LabelConfig) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = [c.strip() for c in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LabelError(path, f"cannot read: {err}") from None
    if not header:
        raise LabelError(path, "empty file; expected a header with frame or time and label columns")
    keys = [c for c in header if c in KEY_COLUMNS]
    if len(keys) > 1:
        raise LabelError(path, f"line 1: needs at most one of the columns frame, time; found {keys}")
    known = set(config.dimensions) | set(config.categorical)
    known |= {c for classes in config.multilabel.values() for c in classes}
    labels = [c for c in header if c not in KEY_COLUMNS]
    for column in labels:
        base, _, rater = column.partition(RATER_SEPARATOR)
        if (
            base not in known
            or (rater and base not in config.dimensions)
            or (RATER_SEPARATOR in column and not rater)
        ):
            raise LabelError(
                path,
                f"line 1: unknown column {column!r}; declared label columns: {', '.join(sorted(known))} "
                f"(declare more under dataset.labels; raters as <dimension>{RATER_SEPARATOR}<rater>)",
            )
    if len(set(header)) != len(header):
        raise LabelError(path, "line 1: a column name appears twice")
    if not labels:
        raise LabelError(path, f"line 1: no label column; declared: {', '.join(sorted(known))}")
    return header


def _keys(records: list[tuple[int, dict]], column: str, kind: KeyKind, path: Path) -> np.ndarray:
    parse = parse_int if kind is KeyKind.FRAME else parse_float
    keys = []
    seen: dict[float, int] = {}
    for line, record in records:
        key = parse(record[column], path, line, column)
        if key < 0:
            raise LabelError(path, f"line {line}: {column} {key} is negative")
        if key in seen:
            raise LabelError(path, f"line {line}: {column} {key} already labeled on line {seen[key]}")
        seen[key] = line
        keys.append(key)
    return np.asarray(keys, dtype=np.int64 if kind is KeyKind.FRAME else np.float64)


def _dimension_track(
    name: str,
    header: list[str],
    records: list[tuple[int, dict]],
    keys: np.ndarray,
    kind: KeyKind,
    path: Path,
    config: LabelConfig,
) -> LabelTrack | None:
    rater_columns = [c for c in header if c.startswith(name + RATER_SEPARATOR)]
    if name not in header and not rater_columns:
        return None
    raters = None
    if rater_columns:
        raters = np.asarray(
            [[_dimension_cell(r, c, name, path, line) for c in rater_columns] for line, r in records],
            dtype=np.float64,
        ).reshape(len(records), len(rater_columns))
    if name in header:
        values = np.asarray([_dimension_cell(r, name, name, path, line) for line, r in records])
        gold = ""  # given by the file
    else:
        result = gold_standard(raters, config.gold_standard, config.ewe_reference)
        values = result.values
        weights = ", ".join(
            f"{c.partition(RATER_SEPARATOR)[2]}={w:.3f}"
            for c, w in zip(rater_columns, result.weights, strict=True)
        )
        gold = f"{config.gold_standard} of {len(rater_columns)} raters ({weights})"
        if result.actions:
            gold += "; " + ", ".join(f"{k}: {v}" for k, v in result.actions.items())
    return LabelTrack(
        name,
        values.astype(np.float32),
        keys,
        kind,
        str(path),
        kind=TaskKind.CONTINUOUS,
        raters=raters,
        rater_names=tuple(c.partition(RATER_SEPARATOR)[2] for c in rater_columns),
        gold=gold,
    )


def _dimension_cell(record: dict, column: str, dimension: str, path: Path, line: int) -> float:
    text = (record[column] or "").strip()
    if not text:
        return math.nan
    value = parse_float(text, path, line, column)
    if dimension in VA_NAMES:
        value = check_va(value, path, line, column)
        return math.nan if value == UNLABELED_VA else value
    return value


def _categorical_track(
    task: str,
    classes: list[str],
    records: list[tuple[int, dict]],
    keys: np.ndarray,
    kind: KeyKind,
    path: Path,
) -> LabelTrack:
    by_name = {c.lower(): i for i, c in enumerate(classes)}
    values = [_class_cell(record[task], by_name, classes, task, path, line) for line, record in records]
    return LabelTrack(
        task, np.asarray(values, dtype=np.int16), keys, kind, str(path), TaskKind.CATEGORICAL, tuple(classes)
    )


def _class_cell(
    text: str, by_name: dict[str, int], classes: list[str], task: str, path: Path, line: int
) -> int:
    text = (text or "").strip()
    if not text:
        return UNLABELED_EXPRESSION
    if text.lower() in by_name:
        return by_name[text.lower()]
    try:
        value = int(text)
    except ValueError:
        raise LabelError(path, f"line {line}: {task} {text!r} is not one of {', '.join(classes)}") from None
    if not UNLABELED_EXPRESSION <= value < len(classes):
        raise LabelError(
            path, f"line {line}: {task} {value} is outside -1..{len(classes) - 1} (-1 = unlabeled)"
        )
    return value


def _multilabel_track(
    task: str,
    classes: list[str],
    header: list[str],
    records: list[tuple[int, dict]],
    keys: np.ndarray,
    kind: KeyKind,
    path: Path,
) -> LabelTrack:
    rows = [[_unit_cell(r, c, path, line) for c in classes] for line, r in records]
    values = np.asarray(rows, dtype=np.int8).reshape(len(records), len(classes))
    return LabelTrack(task, values, keys, kind, str(path), TaskKind.MULTILABEL, tuple(classes))


def _unit_cell(record: dict, column: str, path: Path, line: int) -> int:
    text = (record.get(column) or "").strip()
    return UNLABELED_AU if not text else check_au(parse_int(text, path, line, column), path, line, column)
