"""MSP-Podcast (Lotfian & Busso 2019; releases 1.x) as distributed::

    <root>/Audios/<FileName>.wav          (``Audio/`` in older releases; audio only: set dataset.audio_fps)
    <root>/Labels/labels_consensus.csv

``labels_consensus.csv`` has one row per segment with the columns ``FileName``
(``MSP-PODCAST_0001_0008.wav``), ``EmoClass`` (consensus category: A angry, S sad, H happy,
U surprise, F fear, D disgust, C contempt, N neutral, O other, X no agreement), ``EmoAct``, ``EmoVal``,
``EmoDom`` (consensus arousal, valence, dominance on the 1-7 scale), ``SpkrID`` (a number or
``Unknown``), ``Gender`` and ``Split_Set`` (``Train``, ``Development``, ``Test1``, ``Test2``, ``Test3``:
splits train, validation, test; the test set's name is kept in the row's notes). Tasks, one label per segment:

- ``emotion``: the nine classes A to O in that order; X (no agreement) leaves it unlabeled;
- ``expression``: the trainers' Aff-Wild2 classes (A Anger, S Sadness, H Happiness, U Surprise, F Fear,
  D Disgust, N Neutral, O Other); contempt and X leave it unlabeled;
- the dimensions: ``dataset.options.dimension_scale: unit`` (the default) maps the 1-7 ratings linearly
  onto [-1, 1] (``(x - 4) / 3``) as ``arousal``, ``valence`` (the VA trainers' task) and ``dominance``;
  ``raw`` keeps 1-7 under the corpus's names ``EmoAct``, ``EmoVal``, ``EmoDom`` (not fed to the VA trainers).

Subjects are the speakers (``SpkrID``); a segment of an unknown speaker is its own subject (counted in
the log). Segments listed without an audio file are discover failures; audio files the CSV does not list
(unlabeled segments) are skipped and counted.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from pathlib import Path

from avpipe.pipeline.adapters import register_adapter
from avpipe.pipeline.adapters.base import Candidate, DatasetAdapter, Scan
from avpipe.pipeline.adapters.clip_labels import ClipTask, clip_label_tracks, encode_clip_labels
from avpipe.pipeline.config.dataset import DEFAULT_VIDEO_EXTENSIONS
from avpipe.pipeline.config.labels import LabelConfig
from avpipe.pipeline.errors import ConfigError, LabelError
from avpipe.pipeline.labels import EXPRESSION_NAMES, RawLabels, TaskKind, parse_float
from avpipe.pipeline.manifest import Failure, FailureStage, Split

log = logging.getLogger(__name__)

AUDIO_FOLDERS = ("Audios", "Audio")
CONSENSUS_FILE = Path("Labels") / "labels_consensus.csv"
COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Split_Set")
EMOTION_CODES = ("A", "S", "H", "U", "F", "D", "C", "N", "O")
EMOTION_NAMES = ("angry", "sad", "happy", "surprise", "fear", "disgust", "contempt", "neutral", "other")
NO_AGREEMENT = "X"
TO_EXPRESSION = {
    "A": "Anger",
    "S": "Sadness",
    "H": "Happiness",
    "U": "Surprise",
    "F": "Fear",
    "D": "Disgust",
    "N": "Neutral",
    "O": "Other",
}
SPLITS = {
    "train": Split.TRAIN,
    "development": Split.VALIDATION,
    "test1": Split.TEST,
    "test2": Split.TEST,
    "test3": Split.TEST,
}
UNIT_NAMES = {"EmoAct": "arousal", "EmoVal": "valence", "EmoDom": "dominance"}
SCALES = ("unit", "raw")


@register_adapter
class MspPodcastAdapter(DatasetAdapter):
    name = "msp_podcast"
    description = "MSP-Podcast: Audios/<FileName>.wav, Labels/labels_consensus.csv (audio only)"

    def __init__(
        self,
        root: str | Path,
        video_extensions: Iterable[str] = DEFAULT_VIDEO_EXTENSIONS,
        labels: LabelConfig | None = None,
        dimension_scale: str = "unit",
    ) -> None:
        super().__init__(root, video_extensions, labels)
        if dimension_scale not in SCALES:
            raise ConfigError(
                "dataset.options.dimension_scale",
                f"must be one of {', '.join(SCALES)}, got {dimension_scale!r}",
            )
        self.dimension_scale = dimension_scale
        names = UNIT_NAMES if dimension_scale == "unit" else {k: k for k in UNIT_NAMES}
        self.dimension_names = names
        self.tasks = (
            ClipTask("emotion", TaskKind.CATEGORICAL, EMOTION_NAMES),
            ClipTask("expression", TaskKind.CATEGORICAL, EXPRESSION_NAMES),
            *(ClipTask(name, TaskKind.CONTINUOUS) for name in names.values()),
        )

    def scan(self) -> Scan:
        scan = Scan()
        audio = self._audio_files()
        listed = set()
        unknown_speakers = 0
        for line, record in self._consensus_rows():
            file_name = record["FileName"].strip()
            listed.add(file_name)
            path = audio.get(file_name)
            if path is None:
                folders = " or ".join(AUDIO_FOLDERS)
                reason = f"{file_name}: listed in {CONSENSUS_FILE} (line {line}) but not found in {folders}"
                scan.failures.append(
                    Failure(
                        str(self.root / AUDIO_FOLDERS[0] / file_name), FailureStage.DISCOVER.value, reason
                    )
                )
                continue
            speaker = record["SpkrID"].strip()
            stem = Path(file_name).stem
            if not speaker or speaker.lower() == "unknown":
                unknown_speakers += 1
                subject = stem
            else:
                subject = f"speaker_{speaker}"
            split_name = record["Split_Set"].strip()
            notes = (f"test set {split_name}",) if SPLITS[split_name.lower()] is Split.TEST else ()
            emotion = record["EmoClass"].strip()
            if emotion == "C":
                notes = (*notes, "contempt has no Aff-Wild2 expression class: expression unlabeled")
            scan.candidates.append(
                Candidate(
                    video_id=stem,
                    media_path=path,
                    subject=subject,
                    split=SPLITS[split_name.lower()],
                    notes=notes,
                    label_text=encode_clip_labels(self._values(record, line)),
                )
            )
        unlisted = len(set(audio) - listed)
        log.info(
            "%s: %d segments, %d listed without audio, %d audio files without labels skipped, %d of unknown "
            "speakers (each its own subject), under %s",
            self.name,
            len(scan.candidates),
            len(scan.failures),
            unlisted,
            unknown_speakers,
            self.root,
        )
        return scan

    def read_labels(self, candidate: Candidate) -> RawLabels:
        return clip_label_tracks(candidate, self.tasks)

    def _audio_files(self) -> dict[str, Path]:
        for name in AUDIO_FOLDERS:
            folder = self.root / name
            if folder.is_dir():
                return {p.name: p for p in sorted(folder.rglob("*.wav")) if p.is_file()}
        log.warning("%s: no %s folder under %s", self.name, " or ".join(AUDIO_FOLDERS), self.root)
        return {}

    def _consensus_rows(self) -> list[tuple[int, dict[str, str]]]:
        path = self.root / CONSENSUS_FILE
        if not path.is_file():
            raise LabelError(path, "missing: MSP-Podcast's consensus labels are needed to list the segments")
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                header = [c.strip() for c in reader.fieldnames or []]
                reader.fieldnames = header
                missing = [c for c in COLUMNS if c not in header]
                if missing:
                    raise LabelError(path, f"line 1: missing columns {', '.join(missing)}")
                rows = [(reader.line_num, record) for record in reader]
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise LabelError(path, f"cannot read: {err}") from None
        for line, record in rows:
            if any(record.get(c) is None for c in COLUMNS):
                raise LabelError(path, f"line {line}: expected {len(header)} values")
            split = record["Split_Set"].strip()
            if split.lower() not in SPLITS:
                raise LabelError(
                    path, f"line {line}: unknown Split_Set {split!r}; known: Train, Development, Test1-3"
                )
            code = record["EmoClass"].strip()
            if code not in EMOTION_CODES and code != NO_AGREEMENT:
                known = ", ".join((*EMOTION_CODES, NO_AGREEMENT))
                raise LabelError(path, f"line {line}: unknown EmoClass {code!r}; known: {known}")
        return rows

    def _values(self, record: dict[str, str], line: int) -> dict[str, float | int | None]:
        path = self.root / CONSENSUS_FILE
        code = record["EmoClass"].strip()
        expression = TO_EXPRESSION.get(code)
        values: dict[str, float | int | None] = {
            "emotion": EMOTION_CODES.index(code) if code in EMOTION_CODES else None,
            "expression": EXPRESSION_NAMES.index(expression) if expression else None,
        }
        for column, name in self.dimension_names.items():
            rating = parse_float(record[column], path, line, column)
            if not 1.0 <= rating <= 7.0:
                raise LabelError(path, f"line {line}: {column} {rating:g} is outside the 1-7 scale")
            values[name] = (rating - 4.0) / 3.0 if self.dimension_scale == "unit" else rating
        return values
