"""RECOLA as distributed for AVEC 2016 (Valstar et al. 2016; Ringeval et al. 2013)::

    <root>/recordings_video/<id>.mp4                     (media: video, the default)
    <root>/recordings_audio/<id>.wav                     (media: audio; set dataset.audio_fps)
    <root>/ratings_gold_standard/{arousal,valence}/<id>.arff
    <root>/ratings_individual/{arousal,valence}/<id>.csv  (optional)

``<id>`` is ``train_N``, ``dev_N`` or ``test_N`` (splits train, validation, test; the test partition has
no ratings). A gold-standard ARFF has the attributes ``Instance_name``, ``frameTime`` (seconds, every
40 ms) and ``GoldStandard``; an individual-ratings CSV is ``;``-separated with a header, the time in the
first column and one column per rater (``FM1 FM2 FM3 FF1 FF2 FF3``: six raters).

Both dimensions are time-keyed and reach the frames by ``dataset.labels`` (linear by default; on 25 fps
video the 40 ms samples fall on the frames). ``dataset.options.labels_from``: ``gold_standard`` (the
default) takes the provided gold standard and keeps the individual ratings beside it as raters;
``individual`` computes the gold standard from the raters by ``dataset.labels.gold_standard`` (``avec2016``
is the organisers' own). Each recording is one participant, its own subject.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from avpipe.pipeline.adapters import register_adapter
from avpipe.pipeline.adapters.base import Candidate, DatasetAdapter, Scan
from avpipe.pipeline.config.dataset import DEFAULT_VIDEO_EXTENSIONS
from avpipe.pipeline.config.labels import RATER_SEPARATOR, LabelConfig
from avpipe.pipeline.errors import ConfigError, LabelError
from avpipe.pipeline.labels import KeyKind, LabelTrack, RawLabels, TaskKind, parse_float
from avpipe.pipeline.manifest import Failure, FailureStage, Split
from avpipe.pipeline.raters import gold_standard

log = logging.getLogger(__name__)

MEDIA_FOLDERS = {"video": ("recordings_video", ".mp4"), "audio": ("recordings_audio", ".wav")}
DIMENSIONS = ("arousal", "valence")
GOLD_FOLDER = "ratings_gold_standard"
INDIVIDUAL_FOLDER = "ratings_individual"
LABELS_FROM = ("gold_standard", "individual")
SPLITS = {"train": Split.TRAIN, "dev": Split.VALIDATION, "test": Split.TEST}
RECORDING = re.compile(r"^(?P<partition>train|dev|test)_(?P<number>\d+)$")
RATERS_KEY = RATER_SEPARATOR + "raters"  # Candidate.labels key of a dimension's individual ratings


@register_adapter
class RecolaAdapter(DatasetAdapter):
    name = "recola"
    description = "RECOLA (AVEC 2016): recordings_video/<id>.mp4, ratings_gold_standard/<dim>/<id>.arff"

    def __init__(
        self,
        root: str | Path,
        video_extensions: Iterable[str] = DEFAULT_VIDEO_EXTENSIONS,
        labels: LabelConfig | None = None,
        media: str = "video",
        labels_from: str = "gold_standard",
    ) -> None:
        super().__init__(root, video_extensions, labels)
        if media not in MEDIA_FOLDERS:
            raise ConfigError(
                "dataset.options.media", f"must be one of {', '.join(MEDIA_FOLDERS)}, got {media!r}"
            )
        if labels_from not in LABELS_FROM:
            raise ConfigError(
                "dataset.options.labels_from", f"must be one of {', '.join(LABELS_FROM)}, got {labels_from!r}"
            )
        self.media = media
        self.labels_from = labels_from

    def scan(self) -> Scan:
        folder_name, suffix = MEDIA_FOLDERS[self.media]
        folder = self.root / folder_name
        scan = Scan()
        if not folder.is_dir():
            log.warning("%s: no %s folder at %s", self.name, folder_name, folder)
            return scan
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == suffix):
            match = RECORDING.match(path.stem)
            if not match:
                reason = f"{path.name}: not an AVEC 2016 recording name (train_N, dev_N or test_N)"
                scan.failures.append(Failure(str(path), FailureStage.DISCOVER.value, reason))
                continue
            labels, notes = self._label_files(path.stem, match["partition"])
            scan.candidates.append(
                Candidate(path.stem, path, path.stem, SPLITS[match["partition"]], labels, notes=notes)
            )
        log.info("%s: %d recordings under %s", self.name, len(scan.candidates), folder)
        return scan

    def _label_files(self, recording: str, partition: str) -> tuple[dict[str, Path], tuple[str, ...]]:
        labels: dict[str, Path] = {}
        missing = []
        for dimension in DIMENSIONS:
            gold = self.root / GOLD_FOLDER / dimension / f"{recording}.arff"
            individual = self.root / INDIVIDUAL_FOLDER / dimension / f"{recording}.csv"
            if gold.is_file() and self.labels_from == "gold_standard":
                labels[dimension] = gold
            if individual.is_file():
                labels[dimension + RATERS_KEY] = individual
            if dimension not in labels and (self.labels_from == "gold_standard" or not individual.is_file()):
                missing.append(dimension)
        notes = ()
        if missing and partition != "test":  # the test partition's ratings are withheld
            notes = (f"no {self.labels_from.replace('_', ' ')} ratings for {', '.join(missing)}",)
        return labels, notes

    def read_labels(self, candidate: Candidate) -> RawLabels:
        tracks = []
        for dimension in DIMENSIONS:
            gold_path = candidate.labels.get(dimension)
            raters_path = candidate.labels.get(dimension + RATERS_KEY)
            if gold_path is None and raters_path is None:
                continue
            tracks.append(self._track(dimension, gold_path, raters_path))
        return RawLabels(tracks)

    def _track(self, dimension: str, gold_path: Path | None, raters_path: Path | None) -> LabelTrack:
        raters = rater_names = None
        if raters_path is not None:
            rater_times, raters, rater_names = read_individual_csv(raters_path)
        gold_note = ""
        if gold_path is not None:
            times, values = read_gold_arff(gold_path)
            source = gold_path
            if raters is not None and not np.allclose(rater_times, times, atol=1e-6):
                raise LabelError(raters_path, f"its times differ from those of {gold_path}")
        else:
            assert raters is not None and raters_path is not None
            config = self.label_config
            result = gold_standard(raters, config.gold_standard, config.ewe_reference)
            times, values, source = rater_times, result.values, raters_path
            gold_note = f"{config.gold_standard} of {len(rater_names)} raters"
        return LabelTrack(
            dimension,
            values.astype(np.float32),
            times,
            KeyKind.TIME,
            str(source),
            TaskKind.CONTINUOUS,
            raters=raters,
            rater_names=tuple(rater_names or ()),
            gold=gold_note,
        )


def read_gold_arff(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An AVEC 2016 gold-standard ARFF -> (frameTime, GoldStandard); LabelError naming the line."""
    lines = _lines(path)
    attributes: list[str] = []
    data_at = None
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text.lower().startswith("@attribute"):
            attributes.append(text.split()[1].strip("'\"").lower())
        elif text.lower() == "@data":
            data_at = number
            break
    if data_at is None:
        raise LabelError(path, "no @data line: not an ARFF file")
    for needed in ("frametime", "goldstandard"):
        if needed not in attributes:
            raise LabelError(path, f"no @attribute {needed}; found {', '.join(attributes) or 'none'}")
    time_col, value_col = attributes.index("frametime"), attributes.index("goldstandard")
    times, values = [], []
    for number, line in enumerate(lines[data_at:], start=data_at + 1):
        if not line.strip() or line.lstrip().startswith("%"):
            continue
        cells = line.split(",")
        if len(cells) != len(attributes):
            raise LabelError(path, f"line {number}: expected {len(attributes)} values, found {len(cells)}")
        times.append(parse_float(cells[time_col], path, number, "frameTime"))
        values.append(parse_float(cells[value_col], path, number, "GoldStandard"))
    return _checked_times(path, np.asarray(times)), np.asarray(values)


def read_individual_csv(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """An AVEC 2016 individual-ratings CSV (``;``, header, time then one column per rater)."""
    lines = [line for line in _lines(path) if line.strip()]
    if not lines:
        raise LabelError(path, "empty file; expected a header: time;<rater>;<rater>...")
    header = next(csv.reader([lines[0]], delimiter=";"))
    raters = [name.strip() for name in header[1:]]
    if not raters or any(not name for name in raters):
        raise LabelError(
            path, f"line 1: expected time;<rater>;... with named raters, found {lines[0].strip()!r}"
        )
    times, rows = [], []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split(";")
        if len(cells) != len(header):
            raise LabelError(path, f"line {number}: expected {len(header)} values, found {len(cells)}")
        times.append(parse_float(cells[0], path, number, header[0]))
        rows.append([parse_float(c, path, number, r) for c, r in zip(cells[1:], raters, strict=True)])
    return _checked_times(path, np.asarray(times)), np.asarray(rows, dtype=np.float64), raters


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise LabelError(path, f"cannot read: {err}") from None


def _checked_times(path: Path, times: np.ndarray) -> np.ndarray:
    if times.shape[0] == 0:
        raise LabelError(path, "no rating rows")
    steps = np.diff(times)
    if (steps <= 0).any():
        raise LabelError(path, f"times do not increase after row {int(np.argmax(steps <= 0)) + 1}")
    return times.astype(np.float64)
