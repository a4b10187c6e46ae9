"""What every dataset adapter provides: candidate videos with their label files and split, and a reader
for those label files (lhotse-recipe style: one module per dataset layout)."""

from __future__ import annotations

import dataclasses
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from avpipe.pipeline.config.dataset import DEFAULT_VIDEO_EXTENSIONS, normalize_extensions
from avpipe.pipeline.config.labels import LabelConfig
from avpipe.pipeline.labels import LabelTask, RawLabels
from avpipe.pipeline.manifest import Failure, FailureStage, Split, SubjectPosition

log = logging.getLogger(__name__)

DISCOVER = FailureStage.DISCOVER.value
# Audio-only containers: reported, never silently passed over (the manifest needs a video stream).
AUDIO_EXTENSIONS = frozenset({".wav", ".m4a", ".mp3", ".flac", ".aac", ".ogg", ".opus", ".wma", ".aiff"})
AUDIO_ONLY_REASON = (
    "audio-only file: the manifest holds videos (labels align to video frames); mux it with its video, "
    "or add its extension to dataset.video_extensions if it does hold a video stream"
)


@dataclass(frozen=True)
class Candidate:
    """One annotated subject-video found by an adapter, before probing. Paths are absolute."""

    video_id: str
    media_path: Path
    subject: str
    split: Split
    labels: dict[LabelTask | str, Path] = field(default_factory=dict)  # task -> its annotation file
    subject_position: SubjectPosition | None = None
    notes: tuple[str, ...] = ()
    # Labels the adapter parsed from file names or a corpus-wide index file, as text (JSON): read by
    # ``read_labels`` and hashed into the labels shard's hash like a label file's contents.
    label_text: str = ""


@dataclass
class Scan:
    """What an adapter found under its root: candidates, and files it had to reject (with why)."""

    candidates: list[Candidate] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


class DatasetAdapter(ABC):
    """Base class of dataset adapters. Subclasses set ``name`` and register with ``@register_adapter``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(
        self,
        root: str | Path,
        video_extensions: Iterable[str] = DEFAULT_VIDEO_EXTENSIONS,
        labels: LabelConfig | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.video_extensions = tuple(normalize_extensions(video_extensions))
        self.label_config = labels or LabelConfig()

    @abstractmethod
    def scan(self) -> Scan:
        """Walk the dataset tree; one bad file becomes a failure, never an exception."""

    @abstractmethod
    def read_labels(self, candidate: Candidate) -> RawLabels:
        """Parse the candidate's label files; raises ``LabelError`` naming the file and line."""

    def is_video(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in self.video_extensions

    def video_files(self, folder: Path, failures: list[Failure] | None = None) -> list[Path]:
        """Every video file under ``folder`` (recursively, hidden folders skipped), sorted.

        What is passed over is appended to ``failures`` with why (DISCOVER rows): folders that cannot
        be listed, names with a video extension that are broken symbolic links, and audio-only files
        (the manifest is one row per video; their audio has no frames to align labels to).
        """
        found: list[Path] = []
        skipped = failures if failures is not None else []

        def unreadable(err: OSError) -> None:
            reason = f"folder cannot be listed ({err.strerror}); the videos in it are not in the manifest"
            skipped.append(Failure(str(err.filename), DISCOVER, reason))

        for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                suffix = path.suffix.lower()
                if suffix in self.video_extensions:
                    if self.is_video(path):
                        found.append(path)
                    elif path.is_symlink() and not path.exists():
                        target = os.readlink(path)
                        skipped.append(Failure(str(path), DISCOVER, f"broken symbolic link (to {target})"))
                elif suffix in AUDIO_EXTENSIONS and path.is_file():
                    skipped.append(Failure(str(path), DISCOVER, AUDIO_ONLY_REASON))
        return sorted(found)


def distinct_ids(candidates: list[Candidate]) -> tuple[list[Candidate], int]:
    """Candidates whose video ids are unique, and how many ids were changed to make them so.

    The rule (docs/RELIABILITY.md): videos sharing an id (``clip.flv`` and ``clip.mp4`` both give
    ``clip``) each get their file extension appended (``clip.flv``, ``clip.mp4``); if that still
    collides, ``~2``, ``~3``, ... in the order of their media paths. Each change is logged and noted
    in the row's ``notes``; no video is dropped.
    """
    groups: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.video_id, []).append(candidate)
    taken = set(groups)
    result, renamed = [], 0
    for video_id, group in groups.items():
        if len(group) == 1:
            result.extend(group)
            continue
        group = sorted(group, key=lambda c: str(c.media_path))
        with_suffix = [f"{video_id}{c.media_path.suffix}" for c in group]
        if len(set(with_suffix)) == len(group) and not taken & set(with_suffix):
            new_ids = with_suffix
        else:
            new_ids = [video_id if i == 0 else f"{video_id}~{i + 1}" for i in range(len(group))]
        others = ", ".join(str(c.media_path) for c in group)
        for candidate, new_id in zip(group, new_ids, strict=True):
            taken.add(new_id)
            if new_id == video_id:
                result.append(candidate)
                continue
            renamed += 1
            note = f"video id {video_id!r} is shared by {len(group)} files ({others}); this one is {new_id!r}"
            log.warning("%s", note)
            result.append(dataclasses.replace(candidate, video_id=new_id, notes=(*candidate.notes, note)))
    return result, renamed
