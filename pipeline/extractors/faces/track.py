"""Detection stride and tracking: whole-frame MTCNN on keyframes, a local search in between.

Every ``detect_every``-th frame (and the last one) is a keyframe: a whole-frame search picks its
face by the selection rule. Frames between two keyframes are known only after both, so the tracker
buffers them (``batch_keyframes`` intervals at a time, so that keyframes are detected in one
batched call) and predicts the face's box on each by interpolating the two keyframe boxes. The
cascade then runs only in a window around that prediction and only on the pyramid levels where a
face of that size is found; the face that overlaps the prediction continues the track. A frame whose
local search loses the face gets a whole-frame search of its own (re-detection). Intervals are
independent once their keyframes are known: with a thread pool they are searched in parallel while
the caller's thread detects the next batch's keyframes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, fields

import numpy as np

from pipeline.extractors.faces.config import FacesConfig, Selection
from pipeline.extractors.faces.detect import Faces, MtcnnCascade, Pyramid, Search
from pipeline.extractors.faces.select import box_iou, continue_track, select_face
from pipeline.types import Frame, MaskValue

log = logging.getLogger(__name__)

SHRINK_ALLOWANCE = 0.7


@dataclass(frozen=True)
class Observation:
    """The face kept on one frame, full-resolution pixels (box/landmarks None when there is none)."""

    status: MaskValue  # VALID (whole-frame detection), TRACKED (local search) or MISSING
    box: np.ndarray | None = None  # (4,) float32
    landmarks: np.ndarray | None = None  # (5, 2) float32
    prob: float = 0.0

    @classmethod
    def of(cls, faces: Faces, index: int | None, status: MaskValue) -> Observation:
        if index is None:
            return MISSING
        return cls(status, faces.boxes[index], faces.landmarks[index], float(faces.probs[index]))


MISSING = Observation(MaskValue.MISSING)


@dataclass(frozen=True)
class TrackerSettings:
    """The tracking part of ``FacesConfig`` (docs/FACES.md)."""

    detect_every: int
    batch_keyframes: int
    track_margin: float
    track_iou: float
    track_scale_limit: float
    detect_max_side: int
    min_face_size: float
    pyramid_factor: float

    @classmethod
    def from_config(cls, config: FacesConfig) -> TrackerSettings:
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


class FaceTracker:
    """Turns a stream of frames into one ``Observation`` per frame, in order."""

    def __init__(
        self, cascade: MtcnnCascade, settings: TrackerSettings, rule: Selection, pool: Executor | None = None
    ) -> None:
        self.cascade = cascade
        self.settings = settings
        self.rule = rule
        self.pool = pool  # intervals between keyframes are independent: searched in parallel on it
        self._pyramid: Pyramid | None = None

    def run(self, frames: Iterable[Frame]) -> Iterator[tuple[Frame, Observation]]:
        last_key: tuple[Frame, Observation] | None = None
        last_box: np.ndarray | None = None  # the track rule's memory, across missing keyframes
        previous: _Batch | None = None
        for pending, last_position, final in self._batches(frames):
            # With a pool, this batch's keyframes are detected while the previous batch's intervals
            # are still being searched.
            batch = self._start(pending, last_position, final, last_key, last_box)
            last_key, last_box = batch.rights[-1], batch.last_box
            if previous is not None:
                yield from previous.rows()
            previous = batch
        if previous is not None:
            yield from previous.rows()

    def _batches(self, frames: Iterable[Frame]) -> Iterator[tuple[list[Frame], int, bool]]:
        """Runs of frames ending on every ``batch_keyframes``-th keyframe (the last run ends on the
        video's last frame), with the position of their last frame and whether it is the last run."""
        every = self.settings.detect_every
        pending: list[Frame] = []
        keyframes = 0
        position = -1
        for position, frame in enumerate(frames):
            pending.append(frame)
            keyframes += position % every == 0
            if keyframes == self.settings.batch_keyframes:
                yield pending, position, False
                pending, keyframes = [], 0
        if pending:
            yield pending, position, True

    def _start(
        self,
        pending: list[Frame],
        last_position: int,
        final: bool,
        last_key: tuple[Frame, Observation] | None,
        last_box: np.ndarray | None,
    ) -> _Batch:
        """Detect the keyframes among ``pending`` now; search the intervals before each of them
        (on the pool when there is one)."""
        first_position = last_position - len(pending) + 1
        every = self.settings.detect_every
        is_key = [(first_position + i) % every == 0 for i in range(len(pending))]
        is_key[-1] = is_key[-1] or final
        key_slots = [i for i, key in enumerate(is_key) if key]
        tracked = None if last_key is None else last_key[1].box
        pyramid = self.pyramid_for(pending[0].image)
        key_obs, last_box = self._detect_keyframes(
            [pending[i] for i in key_slots], pyramid, last_box, tracked
        )
        starts = [0] + [slot + 1 for slot in key_slots[:-1]]
        rights = [(pending[slot], obs) for slot, obs in zip(key_slots, key_obs, strict=True)]
        lefts = [last_key, *rights[:-1]]
        inners = [pending[start:slot] for start, slot in zip(starts, key_slots, strict=True)]
        jobs = [(pyramid, *args) for args in zip(inners, lefts, rights, strict=True)]
        if self.pool is None:
            filled: list = [self._between(*job) for job in jobs]
        else:
            filled = [self.pool.submit(self._between, *job) for job in jobs]
        return _Batch(inners, filled, rights, last_box)

    def _detect_keyframes(
        self,
        keyframes: list[Frame],
        pyramid: Pyramid,
        last_box: np.ndarray | None,
        tracked: np.ndarray | None,
    ) -> tuple[list[Observation], np.ndarray | None]:
        whole = Search(None, self._keyframe_scales(pyramid, tracked))
        found = self.cascade.detect([f.image for f in keyframes], [whole] * len(keyframes))
        observations = []
        size = (pyramid.width, pyramid.height)
        for faces in found:
            obs = Observation.of(faces, select_face(faces, self.rule, size, last_box), MaskValue.VALID)
            last_box = obs.box if obs.box is not None else last_box
            observations.append(obs)
        return observations, last_box

    def _keyframe_scales(self, pyramid: Pyramid, tracked: np.ndarray | None) -> tuple[float, ...]:
        """Pyramid levels of a keyframe's whole-frame search. While a face of size F is tracked, the
        ``largest`` and ``track`` rules cannot switch to a face much smaller than F, so only the
        levels that find faces from about F / 3 up are needed: those the local search uses, computed
        over the whole frame (a fraction of the cost). Other rules, and no track, get every level."""
        coarse = pyramid.coarse_scales(self.settings.detect_max_side)
        if tracked is None or self.rule not in (Selection.LARGEST, Selection.TRACK):
            return coarse
        # The face may shrink before the next keyframes: plan for 70 % of its size.
        side = SHRINK_ALLOWANCE * float(max(tracked[2] - tracked[0], tracked[3] - tracked[1]))
        return pyramid.scales_for_face(side, self.settings.track_scale_limit, self.settings.detect_max_side)

    def _between(
        self,
        pyramid: Pyramid,
        inner: list[Frame],
        left: tuple[Frame, Observation] | None,
        right: tuple[Frame, Observation],
    ) -> list[Observation]:
        """Observations of the frames strictly between two keyframes (runs on the pool's threads)."""
        if not inner:
            return []
        left_box = None if left is None else left[1].box
        predicted = predict_boxes(left_box, right[1].box, len(inner))
        if predicted is None:
            return [MISSING] * len(inner)
        searches = [self._local_search(pyramid, box) for box in predicted]
        found = self.cascade.detect([f.image for f in inner], searches)
        observations = [
            Observation.of(faces, continue_track(faces, box, self.settings.track_iou), MaskValue.TRACKED)
            for faces, box in zip(found, predicted, strict=True)
        ]
        lost = [i for i, obs in enumerate(observations) if obs.status is MaskValue.MISSING]
        if lost:
            redetected = self._redetect([inner[i] for i in lost], [predicted[i] for i in lost], pyramid)
            for i, obs in zip(lost, redetected, strict=True):
                observations[i] = obs
        return observations

    def _redetect(
        self, frames: list[Frame], predicted: list[np.ndarray], pyramid: Pyramid
    ) -> list[Observation]:
        whole = Search(None, pyramid.coarse_scales(self.settings.detect_max_side))
        found = self.cascade.detect([f.image for f in frames], [whole] * len(frames))
        size = (pyramid.width, pyramid.height)
        observations = []
        for faces, box in zip(found, predicted, strict=True):
            index = continue_track(faces, box, self.settings.track_iou)
            if index is None:
                index = select_face(faces, self.rule, size, box)
            observations.append(Observation.of(faces, index, MaskValue.VALID))
        return observations

    def _local_search(self, pyramid: Pyramid, box: np.ndarray) -> Search:
        side = float(max(box[2] - box[0], box[3] - box[1]))
        pad = self.settings.track_margin * side
        window = (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)
        scales = pyramid.scales_for_face(side, self.settings.track_scale_limit, self.settings.detect_max_side)
        return Search(tuple(float(v) for v in window), scales)

    def pyramid_for(self, image: np.ndarray) -> Pyramid:
        height, width = image.shape[:2]
        if self._pyramid is None or (self._pyramid.height, self._pyramid.width) != (height, width):
            self._pyramid = Pyramid.for_frame(
                height, width, self.settings.min_face_size, self.settings.pyramid_factor
            )
        return self._pyramid


@dataclass
class _Batch:
    """Keyframes detected, intervals searched or being searched (futures) on the pool."""

    inners: list[list[Frame]]
    filled: list[list[Observation] | Future[list[Observation]]]
    rights: list[tuple[Frame, Observation]]
    last_box: np.ndarray | None

    def rows(self) -> Iterator[tuple[Frame, Observation]]:
        for inner, filled, right in zip(self.inners, self.filled, self.rights, strict=True):
            observations = filled.result() if isinstance(filled, Future) else filled
            yield from zip(inner, observations, strict=True)
            yield right


def predict_boxes(left: np.ndarray | None, right: np.ndarray | None, n: int) -> list[np.ndarray] | None:
    """Predicted boxes of the ``n`` frames between two keyframe boxes: linear between them when they
    are the same face (they overlap), else the nearer one; the one there is when one is missing."""
    if left is None and right is None:
        return None
    if left is None or right is None:
        only = left if left is not None else right
        return [only] * n
    if box_iou(left, right[None])[0] > 0:
        weights = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
        return [((1 - w) * left + w * right).astype(np.float32) for w in weights]
    return [left if i < n / 2 else right for i in range(n)]
