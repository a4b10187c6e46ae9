"""Any tree of videos: ``<root>/**/<clip>.<ext>``, the video id is the relative path without its suffix.

Bytes of a file name that are not UTF-8 appear in the id as ``\\xNN``. Two videos differing only in
their extension (``clip.flv``, ``clip.mp4``) keep it in their ids (``pipeline.adapters.base.distinct_ids``).

Optional labels per video in ``<same stem>.csv`` next to it, with a header and one row per labeled frame:

- a key column, exactly one of ``frame`` (native frame index, >= 0, unique) or ``time`` (seconds on the
  container clock; the row goes to the nearest frame);
- any of ``valence,arousal`` (together; [-1, 1], -5 unlabeled), ``expression`` (-1..7, in the order of
  ``pipeline.labels.EXPRESSION_NAMES``), and action-unit columns named as in ``pipeline.labels.AU_NAMES``
  (-1, 0, 1; units without a column are unlabeled). An empty cell is unlabeled.

Optional ``<root>/splits.csv`` with columns ``video_id,split`` (train | validation | test) and optionally
``subject``; videos it does not list are "train". Without it every video is "train".
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pipeline.adapters import register_adapter
from pipeline.adapters.base import Candidate, DatasetAdapter, Scan
from pipeline.errors import LabelError
from pipeline.labels import (
    AU_NAMES,
    UNLABELED_AU,
    UNLABELED_EXPRESSION,
    UNLABELED_VA,
    VA_NAMES,
    KeyKind,
    LabelTask,
    LabelTrack,
    RawLabels,
    check_au,
    check_expression,
    check_va,
    parse_float,
    parse_int,
)
from pipeline.manifest import DEFAULT_VIDEO_EXTENSIONS, Split, printable

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.csv"
LABEL_SUFFIX = ".csv"
KEY_COLUMNS = {"frame": KeyKind.FRAME, "time": KeyKind.TIME}
EXPRESSION_COLUMN = "expression"
LABEL_COLUMNS = (*VA_NAMES, EXPRESSION_COLUMN, *AU_NAMES)


@register_adapter
class FolderAdapter(DatasetAdapter):
    name = "folder"
    description = "any tree of videos; optional <stem>.csv labels and splits.csv"

    def __init__(
        self,
        root: str | Path,
        video_extensions: Iterable[str] = DEFAULT_VIDEO_EXTENSIONS,
        splits_file: str = SPLITS_FILE,
    ) -> None:
        super().__init__(root, video_extensions)
        self.splits_file = self.root / splits_file

    def scan(self) -> Scan:
        assignments = self._read_splits()
        scan = Scan()
        for path in self.video_files(self.root, scan.failures):
            video_id = printable(path.relative_to(self.root).with_suffix("").as_posix())
            split, subject = assignments.pop(video_id, (Split.TRAIN, video_id))
            label_file = path.with_suffix(LABEL_SUFFIX)
            labels = {task: label_file for task in _tasks_in(label_file)} if label_file.is_file() else {}
            scan.candidates.append(Candidate(video_id, path, subject, split, labels))
        for video_id in sorted(assignments):
            log.warning(
                "%s lists %r, but there is no such video under %s", self.splits_file, video_id, self.root
            )
        log.info("%s: %d videos under %s", self.name, len(scan.candidates), self.root)
        return scan

    def read_labels(self, candidate: Candidate) -> RawLabels:
        files = sorted(set(candidate.labels.values()))
        return RawLabels([track for path in files for track in read_label_csv(path)])

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


def _tasks_in(path: Path) -> list[LabelTask]:
    """The tasks a label CSV has columns for (from its header only; rows are read later)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError):
        return [LabelTask.VA]  # unreadable: keep it referenced so that reading it reports the problem
    columns = {c.strip() for c in header}
    tasks = [task for task, names in _TASK_COLUMNS.items() if columns & set(names)]
    return tasks or [LabelTask.VA]  # a header without label columns is reported when read


_TASK_COLUMNS = {LabelTask.VA: VA_NAMES, LabelTask.EXPR: (EXPRESSION_COLUMN,), LabelTask.AU: AU_NAMES}


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


def read_label_csv(path: Path) -> list[LabelTrack]:
    """A folder-adapter label CSV -> one track per task it has columns for."""
    header = _label_header(path)
    key_column = next(c for c in header if c in KEY_COLUMNS)
    key_kind = KEY_COLUMNS[key_column]
    records = _csv_records(path, required=(key_column,), allowed=LABEL_COLUMNS)
    keys = _keys(records, key_column, key_kind, path)
    tracks = []
    if VA_NAMES[0] in header:
        va = [[_va_cell(r, n, path, line) for n in VA_NAMES] for line, r in records]
        tracks.append(
            _track(LabelTask.VA, np.asarray(va, dtype=np.float32).reshape(-1, 2), keys, key_kind, path)
        )
    if EXPRESSION_COLUMN in header:
        expr = [_expr_cell(r, path, line) for line, r in records]
        tracks.append(_track(LabelTask.EXPR, np.asarray(expr, dtype=np.int16), keys, key_kind, path))
    present_units = [name for name in AU_NAMES if name in header]
    if present_units:
        au = [[_au_cell(r, n, path, line) for n in AU_NAMES] for line, r in records]
        units = np.asarray(au, dtype=np.int8).reshape(-1, len(AU_NAMES))
        tracks.append(_track(LabelTask.AU, units, keys, key_kind, path))
    return tracks


def _label_header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = [c.strip() for c in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LabelError(path, f"cannot read: {err}") from None
    if not header:
        raise LabelError(path, "empty file; expected a header with frame or time and label columns")
    keys = [c for c in header if c in KEY_COLUMNS]
    if len(keys) != 1:
        raise LabelError(
            path, f"line 1: needs exactly one of the columns frame, time; found {keys or 'none'}"
        )
    if (VA_NAMES[0] in header) != (VA_NAMES[1] in header):
        raise LabelError(path, "line 1: valence and arousal columns must come together")
    if not any(c in LABEL_COLUMNS for c in header):
        raise LabelError(path, f"line 1: no label column; expected any of {', '.join(LABEL_COLUMNS)}")
    return header


def _keys(records: list[tuple[int, dict]], column: str, kind: KeyKind, path: Path) -> np.ndarray:
    if kind is KeyKind.FRAME:
        frames = []
        seen: dict[int, int] = {}
        for line, record in records:
            frame = parse_int(record[column], path, line, column)
            if frame < 0:
                raise LabelError(path, f"line {line}: frame {frame} is negative")
            if frame in seen:
                raise LabelError(path, f"line {line}: frame {frame} already labeled on line {seen[frame]}")
            seen[frame] = line
            frames.append(frame)
        return np.asarray(frames, dtype=np.int64)
    return np.asarray([parse_float(r[column], path, line, column) for line, r in records], dtype=np.float64)


def _track(task: LabelTask, values: np.ndarray, keys: np.ndarray, kind: KeyKind, path: Path) -> LabelTrack:
    return LabelTrack(task, values, keys, kind, str(path))


def _va_cell(record: dict, column: str, path: Path, line: int) -> float:
    text = record[column].strip()
    return UNLABELED_VA if not text else check_va(parse_float(text, path, line, column), path, line, column)


def _expr_cell(record: dict, path: Path, line: int) -> int:
    text = record[EXPRESSION_COLUMN].strip()
    if not text:
        return UNLABELED_EXPRESSION
    return check_expression(parse_int(text, path, line, EXPRESSION_COLUMN), path, line)


def _au_cell(record: dict, column: str, path: Path, line: int) -> int:
    text = (record.get(column) or "").strip()
    return UNLABELED_AU if not text else check_au(parse_int(text, path, line, column), path, line, column)
