"""RAVDESS (Livingstone & Russo 2018, zenodo.org/record/1188976) as its archives unpack::

    <root>/**/Actor_<NN>/<MM>-<VV>-<EE>-<II>-<SS>-<RR>-<NN>.mp4     (Video_Speech/Song_Actor_NN.zip)
    <root>/**/Actor_<NN>/03-<VV>-<EE>-<II>-<SS>-<RR>-<NN>.wav       (Audio_Speech/Song_Actors_01-24.zip)

The seven two-digit identifiers of the published naming scheme: modality (01 full-AV, 02 video-only,
03 audio-only), vocal channel (01 speech, 02 song), emotion (01 neutral, 02 calm, 03 happy, 04 sad,
05 angry, 06 fearful, 07 disgust, 08 surprised), intensity (01 normal, 02 strong; neutral has no strong),
statement (01 "Kids are talking by the door", 02 "Dogs are sitting by the door"), repetition (01, 02),
actor (01-24; odd male, even female). Tasks, one label per clip:

- ``emotion``: the eight emotions in that order; ``intensity``: normal, strong;
  ``vocal_channel``: speech, song; ``statement``: kids, dogs;
- ``expression``: the trainers' Aff-Wild2 classes (neutral Neutral, happy Happiness, sad Sadness,
  angry Anger, fearful Fear, disgust Disgust, surprised Surprise); calm has no Aff-Wild2 class and
  leaves it unlabeled (noted on the clip).

``dataset.options.modality`` picks the files (``full_av`` by default, ``video_only``, ``audio_only``,
which needs dataset.audio_fps) and ``vocal_channel`` the channel (``both`` by default, ``speech``,
``song``); files of the other modalities are skipped and counted in the log. Subjects are the actors
(``Actor_NN``); there is no official split: every clip is "train" unless
``dataset.options.speaker_splits`` ({validation: ["01", ...], test: [...]}) moves actors.
A name that breaks the scheme, or a file in another actor's folder, is a discover failure.
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

MODALITIES = {"full_av": "01", "video_only": "02", "audio_only": "03"}
VOCAL_CHANNELS = {"speech": ("01",), "song": ("02",), "both": ("01", "02")}
EMOTION_NAMES = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
INTENSITY_NAMES = ("normal", "strong")
CHANNEL_NAMES = ("speech", "song")
STATEMENT_NAMES = ("kids", "dogs")
TO_EXPRESSION = {
    "neutral": "Neutral",
    "happy": "Happiness",
    "sad": "Sadness",
    "angry": "Anger",
    "fearful": "Fear",
    "disgust": "Disgust",
    "surprised": "Surprise",
}
NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
FIELDS = ("modality", "vocal_channel", "emotion", "intensity", "statement", "repetition", "actor")
RANGES = {
    "modality": (1, 3),
    "vocal_channel": (1, 2),
    "emotion": (1, 8),
    "intensity": (1, 2),
    "statement": (1, 2),
    "repetition": (1, 2),
    "actor": (1, 24),
}
ACTOR_FOLDER = re.compile(r"^Actor_(\d\d)$")
SUFFIXES = (".mp4", ".wav")
TASKS = (
    ClipTask("emotion", TaskKind.CATEGORICAL, EMOTION_NAMES),
    ClipTask("intensity", TaskKind.CATEGORICAL, INTENSITY_NAMES),
    ClipTask("vocal_channel", TaskKind.CATEGORICAL, CHANNEL_NAMES),
    ClipTask("statement", TaskKind.CATEGORICAL, STATEMENT_NAMES),
    ClipTask("expression", TaskKind.CATEGORICAL, EXPRESSION_NAMES),
)


def _actor_id(speaker: str) -> str:
    return f"{int(speaker):02d}" if speaker.isdigit() else speaker


def parse_name(stem: str) -> dict[str, str]:
    """``02-01-06-01-02-01-12`` -> the seven identifiers; ValueError naming the one out of range."""
    match = NAME.match(stem)
    if not match:
        raise ValueError("not seven two-digit identifiers MM-VV-EE-II-SS-RR-NN (e.g. 01-01-06-01-02-01-12)")
    parts = dict(zip(FIELDS, match.groups(), strict=True))
    for key, (low, high) in RANGES.items():
        if not low <= int(parts[key]) <= high:
            raise ValueError(f"{key} {parts[key]} is outside {low:02d}-{high:02d}")
    if parts["emotion"] == "01" and parts["intensity"] == "02":
        raise ValueError("neutral has no strong intensity (02) in RAVDESS")
    return parts


def clip_labels(parts: Mapping[str, str]) -> dict[str, int | None]:
    emotion = EMOTION_NAMES[int(parts["emotion"]) - 1]
    expression = TO_EXPRESSION.get(emotion)
    return {
        "emotion": int(parts["emotion"]) - 1,
        "intensity": int(parts["intensity"]) - 1,
        "vocal_channel": int(parts["vocal_channel"]) - 1,
        "statement": int(parts["statement"]) - 1,
        "expression": EXPRESSION_NAMES.index(expression) if expression else None,
    }


@register_adapter
class RavdessAdapter(DatasetAdapter):
    name = "ravdess"
    description = "RAVDESS: **/Actor_NN/MM-VV-EE-II-SS-RR-NN.mp4|.wav (identifiers in the file name)"

    def __init__(
        self,
        root: str | Path,
        video_extensions: Iterable[str] = DEFAULT_VIDEO_EXTENSIONS,
        labels: LabelConfig | None = None,
        modality: str = "full_av",
        vocal_channel: str = "both",
        speaker_splits: Mapping[str, list] | None = None,
    ) -> None:
        super().__init__(root, video_extensions, labels)
        for key, value, known in (
            ("modality", modality, MODALITIES),
            ("vocal_channel", vocal_channel, VOCAL_CHANNELS),
        ):
            if value not in known:
                raise ConfigError(
                    f"dataset.options.{key}", f"must be one of {', '.join(known)}, got {value!r}"
                )
        self.modality = MODALITIES[modality]
        self.channels = VOCAL_CHANNELS[vocal_channel]
        self.splits = speaker_split_table(speaker_splits or {}, normalize=_actor_id)

    def scan(self) -> Scan:
        scan = Scan()
        skipped = 0
        for path in self._media_files():
            try:
                parts = parse_name(path.stem)
                self._check_folder(path, parts["actor"])
            except ValueError as err:
                scan.failures.append(Failure(str(path), FailureStage.DISCOVER.value, f"{path.name}: {err}"))
                continue
            if parts["modality"] != self.modality or parts["vocal_channel"] not in self.channels:
                skipped += 1
                continue
            labels = clip_labels(parts)
            notes = (
                ("calm has no Aff-Wild2 expression class: expression unlabeled",)
                if labels["expression"] is None
                else ()
            )
            scan.candidates.append(
                Candidate(
                    video_id=path.stem,
                    media_path=path,
                    subject=f"Actor_{parts['actor']}",
                    split=Split(self.splits.get(parts["actor"], Split.TRAIN.value)),
                    notes=notes,
                    label_text=encode_clip_labels(labels),
                )
            )
        self._check_unique(scan)
        actors = (c.subject.removeprefix("Actor_") for c in scan.candidates)
        warn_unknown_speakers(self.name, self.splits, actors)
        log.info(
            "%s: %d clips, %d of other modalities or channels skipped, %d names rejected, under %s",
            self.name,
            len(scan.candidates),
            skipped,
            len(scan.failures),
            self.root,
        )
        return scan

    def read_labels(self, candidate: Candidate) -> RawLabels:
        return clip_label_tracks(candidate, TASKS)

    def _media_files(self) -> list[Path]:
        found = []
        for path in sorted(self.root.rglob("*")):
            relative = path.relative_to(self.root)
            if any(part.startswith(".") for part in relative.parts):
                continue
            if path.is_file() and path.suffix.lower() in SUFFIXES:
                found.append(path)
        return found

    @staticmethod
    def _check_folder(path: Path, actor: str) -> None:
        match = ACTOR_FOLDER.match(path.parent.name)
        if match and match[1] != actor:
            raise ValueError(f"actor {actor} in the name, but the file is in {path.parent.name}")

    def _check_unique(self, scan: Scan) -> None:
        """The same clip in two archives (a copy unpacked twice) would be two rows of one video id."""
        seen: dict[str, Candidate] = {}
        kept = []
        for candidate in scan.candidates:
            if candidate.video_id in seen:
                other = seen[candidate.video_id].media_path
                reason = f"{candidate.media_path.name}: the same clip is also at {other}"
                scan.failures.append(Failure(str(candidate.media_path), FailureStage.DISCOVER.value, reason))
                continue
            seen[candidate.video_id] = candidate
            kept.append(candidate)
        scan.candidates = kept
