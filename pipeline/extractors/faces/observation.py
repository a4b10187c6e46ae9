"""What the tracker says about one frame (``Observation``) and what its searches did (``SearchStats``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from avpipe.pipeline.extractors.faces.detect import Faces
from avpipe.pipeline.types import MaskValue


@dataclass(frozen=True)
class Observation:
    """The face kept on one frame, full-resolution pixels (box/landmarks None when there is none)."""

    status: MaskValue  # VALID (whole-frame search), TRACKED (local search) or MISSING
    box: np.ndarray | None = None  # (4,) float32
    landmarks: np.ndarray | None = None  # (5, 2) float32
    prob: float = 0.0
    track: int = 0  # which track the face belongs to (identity.TrackState.track); 0 with no face
    model: np.ndarray | None = None  # the track's appearance model when the face was kept (identity rules)

    @classmethod
    def of(
        cls,
        faces: Faces,
        index: int | None,
        status: MaskValue,
        track: int = 0,
        model: np.ndarray | None = None,
    ) -> Observation:
        if index is None:
            return MISSING
        return cls(
            status, faces.boxes[index], faces.landmarks[index], float(faces.probs[index]), track, model
        )

    @property
    def found(self) -> bool:
        return self.box is not None


MISSING = Observation(MaskValue.MISSING)


@dataclass
class SearchStats:
    """How often each search and each heuristic acted on one video (the stage's report shows them)."""

    keyframes: int = 0  # whole-frame searches on keyframes
    # keyframes not searched: the picture was unchanged from a keyframe found empty (change.py)
    keyframes_skipped: int = 0
    redetected: int = 0  # whole-frame searches of frames whose local search lost the face
    probed: int = 0  # whole-frame searches of frames between keyframes that had no usable face
    # probes not searched: the picture was unchanged from a frame of the interval found empty (change.py)
    probes_skipped: int = 0
    tracked_out: int = 0  # frames searched one by one outward from a face (ends of different tracks)
    split_intervals: int = 0  # intervals whose keyframes are not one track: not interpolated
    identity_rejections: int = 0  # searches where faces were found and none passed the identity gate
    tracks_started: int = 0  # identity rules: tracks anchored (1 for a video followed throughout)

    @property
    def full_cascade(self) -> int:
        """Frames searched whole-frame at full cascade."""
        return self.keyframes + self.redetected + self.probed

    def add(self, other: SearchStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "full_cascade": self.full_cascade}
