"""Parameters of the face stage (``extractors.faces`` in params.yaml), validated on construction."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from avpipe.pipeline.errors import ConfigError

KEY = "extractors.faces"


class Selection(enum.StrEnum):
    """Which face a frame keeps when several are found (docs/FACES.md)."""

    LARGEST = "largest"  # biggest box
    CENTRAL = "central"  # box centre nearest the frame centre
    TRACK = "track"  # one person: the largest face at the start, then only faces passing the identity gate
    LEFT = "left"  # two-person videos, the person on the left (anchored, then gated like track)
    RIGHT = "right"  # the person on the right


class CropMode(enum.StrEnum):
    """How a crop is cut from the full-resolution frame."""

    WARPED = "warped"  # similarity transform of the 5 landmarks onto a canonical template
    BOX = "box"  # the detector's box plus a margin, resized (facenet-pytorch ``extract_face`` parity)

    @classmethod
    def _missing_(cls, value: object) -> CropMode | None:
        # "aligned" was this mode's name until "align" came to mean one thing in avpipe (a sequence put
        # onto the video frame clock); params files that still say it mean the same warp.
        return cls.WARPED if value == "aligned" else None


class MissingPolicy(enum.StrEnum):
    """What a frame without a face stores."""

    BLACK = "black"  # zero crop, NaN box and landmarks, prob 0, mask MISSING
    HOLD = "hold"  # the last face's crop, box and landmarks again, mask HELD


@dataclass
class FacesConfig:
    """Face detection, tracking and alignment (docs/FACES.md explains every field)."""

    sizes: list[int] = field(default_factory=lambda: [112, 48])  # output crops, one array per size
    crop_mode: CropMode = CropMode.WARPED
    box_margin: float = 0.0  # box mode: margin as a fraction of the crop size (facenet margin / image_size)
    selection: Selection = Selection.LARGEST  # overridden by left/right when the video names its subject
    missing: MissingPolicy = MissingPolicy.BLACK
    detect_max_side: int = 480  # long side of the finest MTCNN pyramid level actually computed
    min_face_size: float = 20.0  # MTCNN min face size (px, full resolution): fixes the pyramid scales
    pyramid_factor: float = 0.709
    thresholds: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.7])  # P-, R-, O-net
    detect_every: int = 10  # whole-frame detection on every n-th frame; local search between
    track_margin: float = 0.5  # search window around the predicted box, per side, fraction of its size
    track_iou: float = 0.3  # a local detection continues the track when its IoU reaches this
    track_scale_limit: float = 24.0  # local search: pyramid levels where the face is at most this many px
    # Identity gate (docs/FACES.md, "Identity"): a face continues a track only when it passes all three.
    gate_motion: float = 0.1  # its centre moved at most this many face sizes per frame since last seen...
    gate_max_shift: float = 1.0  # ...and never more than this many face sizes, however long ago
    gate_scale: float = 1.5  # its box side changed at most by this factor
    gate_appearance: float = 0.6  # colour-histogram similarity (0-1) with the track at least this; 0: off
    anchor_prob: float = 0.95  # a track starts (or restarts) only on a face at least this probable
    reanchor_after: int = 30  # frames without the tracked face after which a new track may start
    probe_depth: int = 2  # frames with no face at either end: bisection levels searched whole-frame
    # A whole-frame search (keyframe or probe) is skipped when no 16x16-px block of the frame moved by
    # more than this many grey levels from a frame whose search of every level found no face (change.py;
    # H.264 noise moved them by up to 5, a face appearing by 200); 0: never skipped.
    skip_unchanged: float = 8.0
    batch_keyframes: int = 2  # keyframes per MTCNN call (more on a GPU); buffers n * detect_every frames
    half: bool = False  # fp16 networks on CUDA (ignored on CPU)
    # Frames decoded ahead on a background thread (0: inline). More than one batch (batch_keyframes *
    # detect_every = 20): the next batch decodes while this one is searched (8 left the main thread
    # waiting on the decoder for 5-17 % of the stage; 24 frames of 720p are 66 MB).
    prefetch_frames: int = 24
    threads: int = 0  # intervals searched in parallel; 0: torch's thread count (runner.torch_threads)
    block_frames: int = 256  # rows handed to the store at a time: memory does not grow with video length

    def __post_init__(self) -> None:
        self.sizes = list(self.sizes)
        self.thresholds = list(self.thresholds)
        self.crop_mode = _enum(CropMode, self.crop_mode, "crop_mode")
        self.selection = _enum(Selection, self.selection, "selection")
        self.missing = _enum(MissingPolicy, self.missing, "missing")
        self._check_sizes()
        _check_range("box_margin", self.box_margin, 0.0, 0.9)
        _check_int("detect_max_side", self.detect_max_side, 24)
        _check_min("min_face_size", self.min_face_size, 12.0)
        _check_range("pyramid_factor", self.pyramid_factor, 0.3, 0.95)
        if len(self.thresholds) != 3 or not all(0.0 <= t < 1.0 for t in self.thresholds):
            raise ConfigError(f"{KEY}.thresholds", f"must be 3 numbers in [0, 1), got {self.thresholds}")
        _check_int("detect_every", self.detect_every, 1)
        _check_range("track_margin", self.track_margin, 0.05, 3.0)
        _check_range("track_iou", self.track_iou, 0.01, 0.99)
        _check_min("track_scale_limit", self.track_scale_limit, 12.0)
        _check_range("gate_motion", self.gate_motion, 0.0, 2.0)
        _check_range("gate_max_shift", self.gate_max_shift, 0.05, 10.0)
        _check_range("gate_scale", self.gate_scale, 1.0, 10.0)
        _check_range("gate_appearance", self.gate_appearance, 0.0, 1.0)
        _check_range("anchor_prob", self.anchor_prob, 0.0, 1.0)
        _check_int("reanchor_after", self.reanchor_after, 1)
        _check_int("probe_depth", self.probe_depth, 0)
        _check_min("skip_unchanged", self.skip_unchanged, 0.0)
        _check_int("batch_keyframes", self.batch_keyframes, 1)
        _check_int("prefetch_frames", self.prefetch_frames, 0)
        _check_int("block_frames", self.block_frames, 1)
        _check_int("threads", self.threads, 0)

    def _check_sizes(self) -> None:
        if not self.sizes:
            raise ConfigError(f"{KEY}.sizes", "must list at least one crop size, e.g. [112, 48]")
        if len(set(self.sizes)) != len(self.sizes):
            raise ConfigError(f"{KEY}.sizes", f"must not repeat a size, got {self.sizes}")
        for size in self.sizes:
            if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 1024:
                raise ConfigError(
                    f"{KEY}.sizes", f"every size must be an integer in [16, 1024], got {size!r}"
                )

    @property
    def largest_size(self) -> int:
        return max(self.sizes)


def _enum(cls: type[enum.Enum], value: object, name: str) -> enum.Enum:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in cls)
        raise ConfigError(f"{KEY}.{name}", f"must be one of {choices}, got {value!r}") from None


def _check_min(name: str, value: float, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise ConfigError(f"{KEY}.{name}", f"must be a number >= {low}, got {value!r}")


def _check_int(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{KEY}.{name}", f"must be an integer >= {low}, got {value!r}")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{KEY}.{name}", f"must be a number in [{low}, {high}], got {value!r}")
