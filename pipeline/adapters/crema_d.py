"""CREMA-D (Cao et al. 2014, github.com/CheyneyComputerScience/CREMA-D) as published::

    <root>/VideoFlash/<ActorID>_<Sentence>_<Emotion>_<Level>.flv    (media: video, the default)
    <root>/AudioWAV/<ActorID>_<Sentence>_<Emotion>_<Level>.wav      (media: audio; set dataset.audio_fps)

The file name carries the intended (acted) labels: ActorID 1001-1091; Sentence one of the 12 codes
(IEO, TIE, IOM, IWW, TAI, MTI, IWL, ITH, DFA, ITS, TSI, WSI); Emotion ANG, DIS, FEA, HAP, NEU, SAD;
Level LO, MD, HI or XX (unspecified). Tasks, one label per clip:

- ``emotion``: anger, disgust, fear, happy, neutral, sad (the six codes in that order);
- ``intensity``: low, medium, high; XX leaves it unlabeled;
- ``expression``: the trainers' Aff-Wild2 classes (ANG Anger, DIS Disgust, FEA Fear, HAP Happiness,
  NEU Neutral, SAD Sadness), so an expression model trains on CREMA-D as it is.

Subjects are the actors, so cross-validation folds never split an actor. CREMA-D has no official split:
every clip is "train" unless ``dataset.options.speaker_splits`` ({validation: [1001, ...], test: [...]})
moves actors. A file whose name breaks the scheme is a discover failure naming the part.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from avpipe.pipeline.adapters import register_adapter
from avpipe.pipeline.adapters.base import Candidate, DatasetAdapter, Scan
from avpipe.pipeline.adapters.clip_labels import (
    ClipTask,
    clip_label_tracks,
    encode_clip_labels,
    speaker_split_table,
    warn_unknown_speakers,
)
from avpipe.pipeline.config.dataset import DEFAULT_VIDEO_EXTENSIONS
from avpipe.pipeline.config.labels import LabelConfig
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.labels import EXPRESSION_NAMES, RawLabels, TaskKind
from avpipe.pipeline.manifest import Failure, FailureStage, Split

log = logging.getLogger(__name__)

MEDIA_FOLDERS = {"video": ("VideoFlash", ".flv"), "audio": ("AudioWAV", ".wav")}
EMOTION_CODES = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
EMOTION_NAMES = ("anger", "disgust", "fear", "happy", "neutral", "sad")
LEVEL_CODES = {"LO": 0, "MD": 1, "HI": 2, "XX": None}
LEVEL_NAMES = ("low", "medium", "high")
SENTENCE_CODES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
TO_EXPRESSION = {
    "ANG": "Anger",
    "DIS": "Disgust",
    "FEA": "Fear",
    "HAP": "Happiness",
    "NEU": "Neutral",
    "SAD": "Sadness",
}
NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")
TASKS = (
    ClipTask("emotion", TaskKind.CATEGORICAL, EMOTION_NAMES),
    ClipTask("intensity", TaskKind.CATEGORICAL, LEVEL_NAMES),
    ClipTask("expression", TaskKind.CATEGORICAL, EXPRESSION_NAMES),
)


def parse_name(stem: str) -> dict[str, str]:
    """``1001_DFA_ANG_XX`` -> its parts; ValueError naming the part that breaks the scheme."""
    match = NAME.match(stem)
    if not match:
        raise ValueError("not <ActorID>_<Sentence>_<Emotion>_<Level> (e.g. 1001_DFA_ANG_XX)")
    parts = match.groupdict()
    if not 1001 <= int(parts["actor"]) <= 1091:
        raise ValueError(f"actor {parts['actor']} is outside 1001-1091")
    for key, known in (
        ("sentence", SENTENCE_CODES),
        ("emotion", EMOTION_CODES),
        ("level", tuple(LEVEL_CODES)),
    ):
        if parts[key] not in known:
            raise ValueError(f"unknown {key} code {parts[key]!r}; known: {', '.join(known)}")
    return parts


def clip_labels(parts: Mapping[str, str]) -> dict[str, int | None]:
    return {
        "emotion": EMOTION_CODES.index(parts["emotion"]),
        "intensity": LEVEL_CODES[parts["level"]],
        "expression": EXPRESSION_NAMES.index(TO_EXPRESSION[parts["emotion"]]),
    }


@register_adapter
class CremaDAdapter(DatasetAdapter):
    name = "crema_d"
    description = "CREMA-D: VideoFlash/<actor>_<sentence>_<emotion>_<level>.flv (or AudioWAV/*.wav)"

    def __init__(
        self,
        root: str | Path,
        video_extensions: Iterable[str] = DEFAULT_VIDEO_EXTENSIONS,
        labels: LabelConfig | None = None,
        media: str = "video",
        speaker_splits: Mapping[str, list] | None = None,
    ) -> None:
        super().__init__(root, video_extensions, labels)
        if media not in MEDIA_FOLDERS:
            raise ConfigError(
                "dataset.options.media", f"must be one of {', '.join(MEDIA_FOLDERS)}, got {media!r}"
            )
        self.media = media
        self.splits = speaker_split_table(speaker_splits or {})

    def scan(self) -> Scan:
        folder_name, suffix = MEDIA_FOLDERS[self.media]
        folder = self.root / folder_name
        scan = Scan()
        if not folder.is_dir():
            log.warning("%s: no %s folder at %s", self.name, folder_name, folder)
            return scan
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == suffix):
            try:
                parts = parse_name(path.stem)
            except ValueError as err:
                scan.failures.append(Failure(str(path), FailureStage.DISCOVER.value, f"{path.name}: {err}"))
                continue
            actor = parts["actor"]
            notes = ("intensity unspecified (XX)",) if parts["level"] == "XX" else ()
            scan.candidates.append(
                Candidate(
                    video_id=path.stem,
                    media_path=path,
                    subject=actor,
                    split=Split(self.splits.get(actor, Split.TRAIN.value)),
                    notes=notes,
                    label_text=encode_clip_labels(clip_labels(parts)),
                )
            )
        warn_unknown_speakers(self.name, self.splits, (c.subject for c in scan.candidates))
        log.info(
            "%s: %d clips of %d actors, %d names rejected, under %s",
            self.name,
            len(scan.candidates),
            len({c.subject for c in scan.candidates}),
            len(scan.failures),
            folder,
        )
        return scan

    def read_labels(self, candidate: Candidate) -> RawLabels:
        return clip_label_tracks(candidate, TASKS)
