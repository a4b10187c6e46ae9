"""What every dataset adapter provides: candidate videos with their label files and split, and a reader
for those label files (lhotse-recipe style: one module per dataset layout)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pipeline.label_config import LabelConfig
from pipeline.labels import LabelTask, RawLabels
from pipeline.manifest import DEFAULT_VIDEO_EXTENSIONS, Failure, Split, SubjectPosition, normalize_extensions


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

    def video_files(self, folder: Path) -> list[Path]:
        """Every video file under ``folder`` (recursively, hidden folders skipped), sorted."""
        found = []
        for path in folder.rglob("*"):
            relative = path.relative_to(folder)
            if any(part.startswith(".") for part in relative.parts):
                continue
            if self.is_video(path):
                found.append(path)
        return sorted(found)
