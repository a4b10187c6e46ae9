"""SEWA as distributed for the AVEC 2019 Cross-cultural Emotion Sub-challenge (CES; Ringeval et al. 2019)::

    <root>/video/<Partition>_<Culture>_<NN>.<ext>    media: video (default; any of dataset.video_extensions)
    <root>/audio/<Partition>_<Culture>_<NN>.wav      media: audio (set dataset.audio_fps)
    <root>/labels/<Partition>_<Culture>_<NN>.csv

``<Partition>`` is ``Train``, ``Devel`` or ``Test`` (splits train, validation, test; the test labels are
withheld), ``<Culture>`` ``DE``, ``HU`` or ``CN``. A label file is ``;``-separated with a header: the
instance ``name``, a ``timestamp`` in seconds (every 100 ms) and the gold-standard ``arousal``,
``valence`` and ``liking`` (the organisers' baseline reads the columns by these names, ``AVEC2019/
Baseline_systems/CES``). ``arousal`` and ``valence`` feed the VA task, ``liking`` is stored as a
dimension; all three are time-keyed (``dataset.labels``: linear by default; the baseline shifts the
labels by 2.0 s, ``dataset.labels.delay: 2.0``). A timestamp column stepping by more than a second is
refused as not being in seconds. Each recording is one participant, its own subject; the culture is
noted on the row.
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
from avpipe.pipeline.config.labels import LabelConfig
from avpipe.pipeline.errors import ConfigError, LabelError
from avpipe.pipeline.labels import KeyKind, LabelTrack, RawLabels, TaskKind, parse_float
from avpipe.pipeline.manifest import Failure, FailureStage, Split

log = logging.getLogger(__name__)

MEDIA = ("video", "audio")
DIMENSIONS = ("arousal", "valence", "liking")
SPLITS = {"Train": Split.TRAIN, "Devel": Split.VALIDATION, "Test": Split.TEST}
CULTURES = ("DE", "HU", "CN")
RECORDING = re.compile(r"^(?P<partition>Train|Devel|Test)_(?P<culture>[A-Z]{2})_(?P<number>\d+)$")
TIME_COLUMNS = ("timestamp", "time", "frametime")


@register_adapter
class Avec2019CesAdapter(DatasetAdapter):
    name = "avec2019_ces"
    description = "SEWA (AVEC 2019 CES): video|audio/<Partition>_<Culture>_<NN>.*, labels/<same>.csv"

    def __init__(
        self,
        root: str | Path,
        video_extensions: Iterable[str] = DEFAULT_VIDEO_EXTENSIONS,
        labels: LabelConfig | None = None,
        media: str = "video",
    ) -> None:
        super().__init__(root, video_extensions, labels)
        if media not in MEDIA:
            raise ConfigError("dataset.options.media", f"must be one of {', '.join(MEDIA)}, got {media!r}")
        self.media = media

    def scan(self) -> Scan:
        scan = Scan()
        folder = self.root / self.media
        if not folder.is_dir():
            log.warning("%s: no %s folder at %s", self.name, self.media, folder)
            return scan
        suffixes = (".wav",) if self.media == "audio" else self.video_extensions
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes):
            match = RECORDING.match(path.stem)
            if not match or match["culture"] not in CULTURES:
                reason = f"{path.name}: not an AVEC 2019 CES name (<Train|Devel|Test>_<DE|HU|CN>_<NN>)"
                scan.failures.append(Failure(str(path), FailureStage.DISCOVER.value, reason))
                continue
            label_file = self.root / "labels" / f"{path.stem}.csv"
            labels = {"ces": label_file} if label_file.is_file() else {}
            notes = [f"culture {match['culture']}"]
            if not labels and match["partition"] != "Test":
                notes.append(f"no label file {label_file}")
            split = SPLITS[match["partition"]]
            scan.candidates.append(Candidate(path.stem, path, path.stem, split, labels, notes=tuple(notes)))
        log.info("%s: %d recordings under %s", self.name, len(scan.candidates), folder)
        return scan

    def read_labels(self, candidate: Candidate) -> RawLabels:
        path = candidate.labels["ces"]
        times, columns = read_ces_labels(path)
        return RawLabels(
            [
                LabelTrack(
                    name,
                    columns[name].astype(np.float32),
                    times,
                    KeyKind.TIME,
                    str(path),
                    TaskKind.CONTINUOUS,
                )
                for name in DIMENSIONS
                if name in columns
            ]
        )


def read_ces_labels(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A CES label CSV -> (timestamps in seconds, dimension -> values); LabelError naming the line."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle, delimiter=";"))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LabelError(path, f"cannot read: {err}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise LabelError(path, "expected a header (name;timestamp;arousal;valence;liking) and rating rows")
    header = [cell.strip().lower() for cell in rows[0]]
    time_column = next((header.index(c) for c in TIME_COLUMNS if c in header), None)
    present = [d for d in DIMENSIONS if d in header]
    if time_column is None or not present:
        raise LabelError(
            path, f"line 1: needs a timestamp column and any of {', '.join(DIMENSIONS)}; found {rows[0]}"
        )
    times, values = [], {d: [] for d in present}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise LabelError(path, f"line {number}: expected {len(header)} values, found {len(row)}")
        times.append(parse_float(row[time_column], path, number, header[time_column]))
        for name in present:
            values[name].append(parse_float(row[header.index(name)], path, number, name))
    stamps = np.asarray(times, dtype=np.float64)
    steps = np.diff(stamps)
    if (steps <= 0).any():
        raise LabelError(path, f"line {int(np.argmax(steps <= 0)) + 3}: timestamps do not increase")
    if steps.size and float(np.median(steps)) > 1.0:
        raise LabelError(
            path, f"timestamps step by {float(np.median(steps)):g}: expected seconds (CES rates every 0.1 s)"
        )
    return stamps, {name: np.asarray(v) for name, v in values.items()}
