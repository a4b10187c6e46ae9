"""Plain data types shared by every part of avpipe.

Time convention (used everywhere): ``time`` is a presentation timestamp in seconds on the
container's clock, i.e. ``pts * time_base - format_start_time``. Video frames and audio samples
share that clock, so an audio feature at ``time[i]`` and a face crop at ``time[i]`` describe the
same instant. ``frame_index`` is the index of the source frame in presentation order of the
native stream (before any fps resampling); labels that are "one row per frame" use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np


class MaskValue(IntEnum):
    """Per-frame validity codes stored in every ``mask`` array."""

    MISSING = 0  # nothing valid at this frame (no face, no audio, ...)
    VALID = 1  # computed from the frame's own data (face detected, audio present)
    TRACKED = 2  # face stage only: box carried by the tracker between detections
    HELD = 3  # face stage only: last face held over a missing frame (missing policy "hold")


@dataclass(frozen=True)
class VideoStreamInfo:
    codec: str
    width: int  # display width, after rotation is applied
    height: int  # display height, after rotation is applied
    coded_width: int
    coded_height: int
    rotation: int  # degrees clockwise the decoded picture must be turned to display upright
    avg_fps: float
    real_fps: float  # ffprobe r_frame_rate
    is_vfr: bool
    n_frames: int  # counted from packets when the container does not say
    start_time: float  # seconds, container clock
    duration: float  # seconds


@dataclass(frozen=True)
class AudioStreamInfo:
    codec: str
    sample_rate: int
    channels: int
    start_time: float  # seconds, container clock
    duration: float


@dataclass(frozen=True)
class MediaInfo:
    path: str
    container: str
    duration: float
    size_bytes: int
    video: VideoStreamInfo | None
    audio: AudioStreamInfo | None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class Frame:
    """One decoded video frame, upright (rotation applied), RGB uint8 (H, W, 3)."""

    index: int  # source frame index in presentation order
    time: float  # seconds, container clock
    image: np.ndarray


@dataclass(frozen=True)
class Timeline:
    """The frames a stage works on: their times and their source frame indices."""

    time: np.ndarray  # (T,) float64 seconds
    frame_index: np.ndarray  # (T,) int64

    def __len__(self) -> int:
        return int(self.time.shape[0])


@dataclass
class AudioTrack:
    """Mono float32 samples in [-1, 1]; ``start`` is the time of sample 0 on the container clock."""

    samples: np.ndarray
    sample_rate: int
    start: float
    source_sample_rate: int | None = None  # the stream's own rate, before resampling to ``sample_rate``

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / float(self.sample_rate)

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass
class FeatureSet:
    """What one extractor produces for one video: per-frame arrays on a timeline.

    Every array in ``arrays`` has leading dimension T == len(time). The main array is named
    ``features`` unless the extractor documents otherwise (the face stage stores crops, boxes, ...).
    """

    time: np.ndarray  # (T,) float64
    frame_index: np.ndarray  # (T,) int64
    mask: np.ndarray  # (T,) uint8, MaskValue codes
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.time.shape[0]
        for name, arr in {"frame_index": self.frame_index, "mask": self.mask, **self.arrays}.items():
            if arr.shape[0] != n:
                raise ValueError(f"array {name!r} has {arr.shape[0]} rows, time has {n}")

    def __len__(self) -> int:
        return int(self.time.shape[0])


@dataclass(frozen=True)
class VideoContext:
    """What an extractor may need to know about the video besides its data."""

    video_id: str
    media_path: str
    info: MediaInfo | None = None  # the ffprobe description: FRAMES extractors only (None for AUDIO, FACES)
    subject_position: str | None = None  # "left" | "right" when two annotated people share the video


@dataclass
class FaceCrops:
    """Aligned face crops of one video, read from the face shard (input of FACES extractors)."""

    time: np.ndarray  # (T,) float64
    frame_index: np.ndarray  # (T,) int64
    mask: np.ndarray  # (T,) uint8 MaskValue codes; 0 where no face
    crops: np.ndarray  # (T, S, S, 3) uint8 RGB

    @property
    def timeline(self) -> Timeline:
        return Timeline(time=self.time, frame_index=self.frame_index)
