"""``dataset`` section: which adapter reads which tree, its labels, and the frame rates of extraction."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avpipe.pipeline.config.labels import LabelConfig
from avpipe.pipeline.errors import ConfigError

DEFAULT_VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


@dataclass
class DatasetConfig:
    """``dataset`` section: which adapter reads which tree, and the frame rate extraction stages use.

    The root is checked when the manifest is built (``require_root``), not at load time, because the
    ``demo`` stage creates it.
    """

    adapter: str = "affwild2"
    root: str = "data/demo"
    fps: float | None = None  # None: every native frame; else resample extraction timelines to this rate
    # Files without a video stream (speech corpora): their native timeline is a grid at this rate
    # over the audio (frame_index = grid index). None: such files are failure rows.
    audio_fps: float | None = None
    video_extensions: list[str] = field(default_factory=lambda: list(DEFAULT_VIDEO_EXTENSIONS))
    labels: LabelConfig = field(default_factory=LabelConfig)  # declared tasks, resampling (docs/DATASETS.md)
    options: dict[str, Any] = field(default_factory=dict)  # the adapter's own options (docs/DATASETS.md)

    def __post_init__(self) -> None:
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ConfigError(
                "dataset.fps", f"must be > 0 (or null for the native frame rate), got {self.fps}"
            )
        if self.audio_fps is not None and not (math.isfinite(self.audio_fps) and self.audio_fps > 0):
            raise ConfigError(
                "dataset.audio_fps", f"must be > 0 (or null to refuse audio-only files), got {self.audio_fps}"
            )
        if not self.root:
            raise ConfigError("dataset.root", "must be a non-empty path")
        self.video_extensions = normalize_extensions(self.video_extensions)
        from avpipe.pipeline.adapters import adapter_class  # lazy: the adapters import this module

        adapter_class(self.adapter)  # ConfigError("dataset.adapter") when unknown or a refused plug-in

    def require_root(self) -> Path:
        root = Path(self.root)
        if not root.is_dir():
            what = "is not a directory" if root.exists() else "does not exist"
            raise ConfigError("dataset.root", f"{root} {what}")
        return root


def normalize_extensions(extensions: Iterable[str]) -> list[str]:
    """``["MP4", ".avi"]`` -> ``[".mp4", ".avi"]``; rejects empty lists and names with separators."""
    normalized = []
    for ext in extensions:
        text = ext.strip().lower()
        text = text if text.startswith(".") else f".{text}"
        if len(text) < 2 or "/" in text or "\\" in text:
            raise ConfigError("dataset.video_extensions", f"{ext!r} is not a file extension")
        if text not in normalized:
            normalized.append(text)
    if not normalized:
        raise ConfigError("dataset.video_extensions", "must list at least one extension")
    return normalized
