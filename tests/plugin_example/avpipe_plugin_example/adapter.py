"""Clips listed in one CSV index with a label per clip: a complete avpipe dataset adapter.

<root>/clips.csv    file,speaker,split,emotion      (one row per clip; file relative to the root)
<root>/<file>       the clips
"""

import csv
from collections.abc import Iterable
from pathlib import Path

from avpipe.pipeline.adapters import Candidate, DatasetAdapter, Scan
from avpipe.pipeline.adapters.clip_labels import ClipTask, clip_label_tracks, encode_clip_labels
from avpipe.pipeline.config.dataset import DEFAULT_VIDEO_EXTENSIONS
from avpipe.pipeline.config.labels import LabelConfig
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.labels import RawLabels, TaskKind
from avpipe.pipeline.manifest import Failure, FailureStage, Split

COLUMNS = ("file", "speaker", "split", "emotion")


class ClipTableAdapter(DatasetAdapter):
    name = "clip-table"
    description = "clips listed in clips.csv (file, speaker, split, emotion) (example plug-in)"

    def __init__(  # keyword options come from `dataset.options` in params.yaml
        self,
        root: str | Path,
        video_extensions: Iterable[str] = DEFAULT_VIDEO_EXTENSIONS,
        labels: LabelConfig | None = None,
        index: str = "clips.csv",
        classes: Iterable[str] = ("neutral", "happy", "sad", "angry"),
    ) -> None:
        super().__init__(root, video_extensions, labels)
        self.index = self.root / index
        self.task = ClipTask("emotion", TaskKind.CATEGORICAL, tuple(classes))
        if not self.task.class_names:
            raise ConfigError("dataset.options.classes", "must list at least one class")

    def scan(self) -> Scan:
        if not self.index.is_file():
            raise ConfigError("dataset.options.index", f"{self.index} does not exist")
        scan = Scan()
        with self.index.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise ConfigError(
                    "dataset.options.index", f"{self.index}: the header must be {','.join(COLUMNS)}"
                )
            for line, row in enumerate(reader, start=2):
                try:
                    scan.candidates.append(self._candidate(row))
                except ValueError as err:  # one bad row is a failure of that clip, never an exception
                    media = str(self.root / (row["file"] or ""))
                    reason = f"{self.index}:{line}: {err}"
                    scan.failures.append(Failure(media, FailureStage.DISCOVER.value, reason))
        return scan

    def _candidate(self, row: dict[str, str]) -> Candidate:
        """The clip of one index row; ValueError saying what is wrong with the row."""
        file, speaker, split, emotion = (str(row[c] or "").strip() for c in COLUMNS)
        if not (file and speaker):
            raise ValueError("file and speaker must not be empty")
        path = self.root / file
        if not self.is_video(path):
            raise ValueError(f"{file} is not a video file with one of {', '.join(self.video_extensions)}")
        if split not in {s.value for s in Split}:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(s.value for s in Split)}")
        if emotion and emotion not in self.task.class_names:
            raise ValueError(f"unknown emotion {emotion!r}; classes: {', '.join(self.task.class_names)}")
        return Candidate(
            video_id=path.stem,
            media_path=path.resolve(),
            subject=speaker,  # cross-validation folds never split a speaker
            split=Split(split),
            label_text=encode_clip_labels(  # a class index, or None (empty: unlabelled)
                {"emotion": self.task.class_names.index(emotion) if emotion else None}
            ),
        )

    def read_labels(self, candidate: Candidate) -> RawLabels:
        return clip_label_tracks(candidate, [self.task])
