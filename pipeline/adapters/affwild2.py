"""Aff-Wild2 / ABAW layout::

    <root>/videos/**/<name>.mp4                                    (batch1/, batch2/, new_vids/, ...)
    <root>/annotations/[...]/<Challenge>/<Set>/<annotation>.txt

``<Challenge>`` is one of the official folder names of the ABAW editions, case-insensitive:
VA_Estimation_Challenge / VA_Set, EXPR_Recognition_Challenge / EXPR_Classification_Challenge / EXPR_Set,
AU_Detection_Challenge / AU_Set (other folders such as MTL_Challenge are ignored). ``<Set>`` is Train_Set /
Training_Set, Validation_Set / Valid_Set / Val_Set, or Test_Set. An annotation named ``<name>_left`` or
``<name>_right`` is about one of two people in video ``<name>``; the row's video id is the annotation name.
Each file has a header line and one row per video frame (row ``i`` is frame ``i``).

Subjects (the unit cross-validation folds keep together): the ``_left``/``_right`` annotations of one
video share a subject, and so do the parts of one long recording, which Aff-Wild2 cuts into videos named
``<id>-<fps>-<W>x<H>-<N>`` (``5-60-1920x1080-1`` ... ``-4``). Any further grouping (one person in several
recordings) comes from an optional ``<root>/subjects.csv`` with columns ``video_id,subject``, where
``video_id`` is an annotation name, a video name, or a recording name with the part number removed.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from avpipe.pipeline.adapters import register_adapter
from avpipe.pipeline.adapters.base import Candidate, DatasetAdapter, Scan
from avpipe.pipeline.errors import LabelError
from avpipe.pipeline.labels import (
    AU_NAMES,
    EXPRESSION_NAMES,
    VA_NAMES,
    KeyKind,
    LabelTask,
    LabelTrack,
    RawLabels,
    check_au,
    check_expression,
    check_va,
    label_arrays,
    parse_float,
    parse_int,
)
from avpipe.pipeline.manifest import Failure, FailureStage, Split, SubjectPosition, printable

log = logging.getLogger(__name__)

CHALLENGE_FOLDERS = {
    "va_estimation_challenge": LabelTask.VA,
    "va_set": LabelTask.VA,
    "expr_recognition_challenge": LabelTask.EXPR,
    "expr_classification_challenge": LabelTask.EXPR,
    "expr_set": LabelTask.EXPR,
    "au_detection_challenge": LabelTask.AU,
    "au_set": LabelTask.AU,
}
SET_FOLDERS = {
    "train_set": Split.TRAIN,
    "training_set": Split.TRAIN,
    "validation_set": Split.VALIDATION,
    "valid_set": Split.VALIDATION,
    "val_set": Split.VALIDATION,
    "test_set": Split.TEST,
}
TASK_ORDER = (LabelTask.VA, LabelTask.EXPR, LabelTask.AU)  # the first task's split wins on disagreement
HEADERS = {LabelTask.VA: VA_NAMES, LabelTask.EXPR: EXPRESSION_NAMES, LabelTask.AU: AU_NAMES}
POSITION_SUFFIXES = {f"_{p.value}": p for p in SubjectPosition}
SUBJECTS_FILE = "subjects.csv"
# a part of a recording cut into several videos: <id>-<fps>-<W>x<H>-<N>
RECORDING_PART = re.compile(r"^(?P<recording>.+-\d+x\d+)-(?P<part>\d+)$")


@register_adapter
class AffWild2Adapter(DatasetAdapter):
    name = "affwild2"
    description = "Aff-Wild2 / ABAW: videos/**/<name>.mp4, annotations/<Challenge>/<Set>/<name>.txt"

    def scan(self) -> Scan:
        scan = Scan()
        videos = self._videos_by_name(scan.failures)
        annotations = self._annotations(scan)
        self._subjects = read_subjects(self.root / SUBJECTS_FILE)
        self._grouping = {"recording_parts": 0, "subjects_csv": 0}
        for annotation_name in sorted(annotations):
            self._add_candidate(scan, annotation_name, annotations[annotation_name], videos)
        unused = sorted(set(self._subjects) - self._used_subject_names(scan))
        if unused:
            log.warning(
                "%s lists %d names that match no annotation, video or recording: %s",
                self.root / SUBJECTS_FILE,
                len(unused),
                ", ".join(unused[:10]),
            )
        log.info(
            "%s: %d annotated videos, %d rejected, under %s; subjects: %d videos grouped as parts of a "
            "recording, %d by %s",
            self.name,
            len(scan.candidates),
            len(scan.failures),
            self.root,
            self._grouping["recording_parts"],
            self._grouping["subjects_csv"],
            SUBJECTS_FILE,
        )
        return scan

    def _subject_of(self, annotation_name: str, video_name: str) -> tuple[str, str | None]:
        """The person an annotation is about (subjects.csv first, else the recording with its parts
        merged) and a manifest note saying which rule grouped it, if one did."""
        recording = recording_of(video_name)
        for name in (annotation_name, video_name, recording):
            if name in self._subjects:
                self._grouping["subjects_csv"] += 1
                return self._subjects[name], f"subject {self._subjects[name]!r} from {SUBJECTS_FILE}"
        if recording != video_name:
            self._grouping["recording_parts"] += 1
            return recording, f"subject {recording!r}: a numbered part of that recording"
        return recording, None

    def _used_subject_names(self, scan: Scan) -> set[str]:
        names = set()
        for candidate in scan.candidates:
            video_name = candidate.media_path.stem
            names |= {candidate.video_id, video_name, recording_of(video_name)}
        return names

    def read_labels(self, candidate: Candidate) -> RawLabels:
        return RawLabels(
            [read_annotation(task, candidate.labels[task]) for task in TASK_ORDER if task in candidate.labels]
        )

    # ---- discovery

    def _videos_by_name(self, failures: list[Failure]) -> dict[str, list[Path]]:
        folder = self.root / "videos"
        by_name: dict[str, list[Path]] = defaultdict(list)
        if folder.is_dir():
            for path in self.video_files(folder, failures):
                by_name[path.stem].append(path)
        else:
            log.warning("%s: no videos folder at %s", self.name, folder)
        return by_name

    def _annotations(self, scan: Scan) -> dict[str, dict[LabelTask, list[tuple[Split, Path]]]]:
        """annotation name -> task -> every (split, file) found for it."""
        found: dict[str, dict[LabelTask, list[tuple[Split, Path]]]] = defaultdict(lambda: defaultdict(list))
        folder = self.root / "annotations"
        if not folder.is_dir():
            log.warning("%s: no annotations folder at %s", self.name, folder)
            return found
        for challenge, task in self._challenge_folders(folder):
            for set_folder in sorted(p for p in challenge.iterdir() if p.is_dir()):
                split = SET_FOLDERS.get(set_folder.name.lower())
                if split is None:
                    log.warning(
                        "%s: ignoring %s: not a known set folder (%s)", self.name, set_folder, _known_sets()
                    )
                    continue
                for path in sorted(set_folder.glob("*.txt")):
                    found[path.stem][task].append((split, path))
        return found

    def _challenge_folders(self, folder: Path) -> list[tuple[Path, LabelTask]]:
        """Challenge folders anywhere under ``annotations`` (releases nest them under a version folder)."""
        challenges = []
        for dirpath, dirnames, _ in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in list(dirnames):
                task = CHALLENGE_FOLDERS.get(name.lower())
                if task is not None:
                    challenges.append((Path(dirpath) / name, task))
                    dirnames.remove(name)  # set folders are handled by the caller
        return challenges

    def _add_candidate(
        self,
        scan: Scan,
        annotation_name: str,
        by_task: dict[LabelTask, list[tuple[Split, Path]]],
        videos: dict[str, list[Path]],
    ) -> None:
        first_file = next(path for task in TASK_ORDER for _, path in by_task.get(task, []))
        for task, entries in by_task.items():
            if len(entries) > 1:
                listed = ", ".join(str(p) for _, p in entries)
                reason = f"{annotation_name!r} has {len(entries)} {task.value} annotation files: {listed}"
                scan.failures.append(Failure(str(entries[0][1]), FailureStage.DISCOVER.value, reason))
                return
        video_name, position = split_position(annotation_name, videos)
        matches = videos.get(video_name, [])
        if len(matches) != 1:
            reason = (
                f"no video named {video_name!r} under {self.root / 'videos'}"
                if not matches
                else f"{len(matches)} videos named {video_name!r}: {', '.join(map(str, matches))}"
            )
            scan.failures.append(Failure(str(first_file), FailureStage.DISCOVER.value, reason))
            return
        split, notes = _merged_split(by_task)
        subject, grouped = self._subject_of(annotation_name, video_name)
        notes = (*notes, grouped) if grouped else notes
        scan.candidates.append(
            Candidate(
                video_id=printable(annotation_name),
                media_path=matches[0],
                subject=subject,
                split=split,
                labels={task: by_task[task][0][1] for task in TASK_ORDER if task in by_task},
                subject_position=position,
                notes=notes,
            )
        )


def split_position(annotation_name: str, videos: dict[str, list[Path]]) -> tuple[str, SubjectPosition | None]:
    """``"x_left"`` -> ``("x", LEFT)`` unless a video is named ``x_left`` itself and none ``x``."""
    for suffix, position in POSITION_SUFFIXES.items():
        if annotation_name.endswith(suffix):
            base = annotation_name[: -len(suffix)]
            if base in videos or annotation_name not in videos:
                return base, position
            return annotation_name, position
    return annotation_name, None


def recording_of(video_name: str) -> str:
    """``"5-60-1920x1080-3"`` -> ``"5-60-1920x1080"``; names that are not a numbered part stay as they are."""
    match = RECORDING_PART.match(video_name)
    return match["recording"] if match else video_name


def read_subjects(path: Path) -> dict[str, str]:
    """``video_id -> subject`` from an optional subjects.csv; LabelError naming the line on a bad one."""
    if not path.is_file():
        return {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, skipinitialspace=True)
            reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
            missing = {"video_id", "subject"} - set(reader.fieldnames)
            if missing:
                raise LabelError(
                    path, f"line 1: needs the columns video_id,subject; missing {sorted(missing)}"
                )
            subjects: dict[str, str] = {}
            for record in reader:
                line = reader.line_num
                video_id = (record["video_id"] or "").strip()
                subject = (record["subject"] or "").strip()
                if not video_id or not subject:
                    raise LabelError(path, f"line {line}: empty video_id or subject")
                if video_id in subjects:
                    raise LabelError(path, f"line {line}: {video_id!r} is listed twice")
                subjects[video_id] = subject
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LabelError(path, f"cannot read: {err}") from None
    return subjects


def _merged_split(by_task: dict[LabelTask, list[tuple[Split, Path]]]) -> tuple[Split, tuple[str, ...]]:
    splits = {task: by_task[task][0][0] for task in TASK_ORDER if task in by_task}
    first = next(iter(splits.values()))
    if len(set(splits.values())) == 1:
        return first, ()
    listed = ", ".join(f"{task.value}={split.value}" for task, split in splits.items())
    return first, (f"split differs by task ({listed}); using {first.value}",)


def _known_sets() -> str:
    return "known: " + ", ".join(sorted(SET_FOLDERS))


# --------------------------------------------------------------------------- annotation files


def read_annotation(task: LabelTask, path: Path) -> LabelTrack:
    """One Aff-Wild2 annotation file -> its track (row ``i`` is frame ``i``); LabelError on any bad line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise LabelError(path, f"cannot read: {err}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # trailing blank lines are harmless; blank lines inside would shift frame indices
    if not lines:
        raise LabelError(path, f"empty file; expected the header {','.join(HEADERS[task])}")
    _check_header(task, path, lines[0])
    parse_row = ROW_PARSERS[task]
    rows = [parse_row(line.split(","), path, number) for number, line in enumerate(lines[1:], start=2)]
    values = label_arrays(task, rows)
    return LabelTrack(task, values, np.arange(len(rows), dtype=np.int64), KeyKind.FRAME, str(path))


def _check_header(task: LabelTask, path: Path, line: str) -> None:
    found = [cell.strip().lower() for cell in line.split(",")]
    expected = HEADERS[task]
    if found != [name.lower() for name in expected]:
        raise LabelError(
            path, f"line 1: bad header {line.strip()!r}; a {task.value} file starts with {','.join(expected)}"
        )


def _cells(cells: list[str], count: int, path: Path, line: int) -> list[str]:
    if len(cells) != count:
        raise LabelError(path, f"line {line}: expected {count} comma-separated values, found {len(cells)}")
    return cells


def _va_row(cells: list[str], path: Path, line: int) -> list[float]:
    cells = _cells(cells, 2, path, line)
    return [
        check_va(parse_float(c, path, line, n), path, line, n) for c, n in zip(cells, VA_NAMES, strict=True)
    ]


def _expr_row(cells: list[str], path: Path, line: int) -> int:
    (cell,) = _cells(cells, 1, path, line)
    return check_expression(parse_int(cell, path, line, "expression"), path, line)


def _au_row(cells: list[str], path: Path, line: int) -> list[int]:
    cells = _cells(cells, len(AU_NAMES), path, line)
    return [
        check_au(parse_int(c, path, line, n), path, line, n) for c, n in zip(cells, AU_NAMES, strict=True)
    ]


ROW_PARSERS: dict[LabelTask, Callable[[list[str], Path, int], object]] = {
    LabelTask.VA: _va_row,
    LabelTask.EXPR: _expr_row,
    LabelTask.AU: _au_row,
}
