"""Detection stride and tracking: whole-frame MTCNN on keyframes, searches in between.

Every ``detect_every``-th frame (and the last one) is a keyframe: a whole-frame search picks its
face, by the selection rule or, for ``track``/``left``/``right``, by the identity gate
(``identity.py``). Keyframes are decided in order on the caller's thread, so the track they follow
does not depend on threads. Frames between two keyframes are known only after both, so the tracker
buffers them (``batch_keyframes`` intervals at a time, so that keyframes are detected in one batched
call) and fills each interval as ``interval.py`` says: interpolated local searches when both ends are
one track, else outward tracking and bisection with whole-frame searches. Intervals are independent
once their keyframes are known: with a thread pool they are searched in parallel while the caller's
thread detects the next batch's keyframes. ``stats`` counts what every search and heuristic did.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, fields

import numpy as np

from avpipe.pipeline.extractors.faces.change import picture_signature, unchanged
from avpipe.pipeline.extractors.faces.config import FacesConfig, Selection
from avpipe.pipeline.extractors.faces.detect import Faces, MtcnnCascade, Pyramid, Search
from avpipe.pipeline.extractors.faces.identity import Identity, TrackState
from avpipe.pipeline.extractors.faces.interval import IntervalFill, LocalSearch
from avpipe.pipeline.extractors.faces.observation import MISSING, Observation, SearchStats
from avpipe.pipeline.types import Frame, MaskValue

__all__ = ["MISSING", "FaceTracker", "Observation", "SearchStats", "TrackerSettings"]

log = logging.getLogger(__name__)

SHRINK_ALLOWANCE = 0.7


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
    probe_depth: int
    skip_unchanged: float

    @classmethod
    def from_config(cls, config: FacesConfig) -> TrackerSettings:
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    @property
    def local(self) -> LocalSearch:
        return LocalSearch(
            self.track_margin,
            self.track_iou,
            self.track_scale_limit,
            self.detect_max_side,
            self.probe_depth,
            self.skip_unchanged,
        )


class FaceTracker:
    """Turns a stream of frames into one ``Observation`` per frame, in order."""

    def __init__(
        self,
        cascade: MtcnnCascade,
        settings: TrackerSettings,
        identity: Identity,
        pool: Executor | None = None,
        stats: SearchStats | None = None,
    ) -> None:
        self.cascade = cascade
        self.settings = settings
        self.identity = identity
        self.pool = pool  # intervals between keyframes are independent: searched in parallel on it
        self.stats = SearchStats() if stats is None else stats  # complete once the last row is out
        self._pyramid: Pyramid | None = None

    @property
    def rule(self) -> Selection:
        return self.identity.rule

    def run(self, frames: Iterable[Frame]) -> Iterator[tuple[Frame, Observation]]:
        last_key: tuple[Frame, Observation] | None = None
        last_empty: np.ndarray | None = None  # the last keyframe's picture when it was found empty
        state = TrackState()  # the kept track, as the keyframes so far know it
        previous: _Batch | None = None
        for pending, last_position, final in self._batches(frames):
            # With a pool, this batch's keyframes are detected while the previous batch's intervals
            # are still being searched.
            batch, state, last_empty = self._start(pending, last_position, final, last_key, state, last_empty)
            last_key = batch.rights[-1]
            if previous is not None:
                yield from previous.rows(self.stats)
            previous = batch
        if previous is not None:
            yield from previous.rows(self.stats)

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
        state: TrackState,
        last_empty: np.ndarray | None,
    ) -> tuple[_Batch, TrackState, np.ndarray | None]:
        """Detect the keyframes among ``pending`` now; search the intervals before each of them
        (on the pool when there is one). Also returns the last keyframe's picture signature when its
        whole-frame search found no face (probes may skip unchanged pictures, ``change.py``)."""
        first_position = last_position - len(pending) + 1
        every = self.settings.detect_every
        is_key = [(first_position + i) % every == 0 for i in range(len(pending))]
        is_key[-1] = is_key[-1] or final
        key_slots = [i for i, key in enumerate(is_key) if key]
        pyramid = self.pyramid_for(pending[0].image)
        tracked = None if last_key is None else last_key[1].box
        if self.identity.keeps_identity:
            tracked = state.box if self.identity.alive(state, first_position) else None
        positions = [first_position + slot for slot in key_slots]
        key_obs, states, empties = self._detect_keyframes(
            [pending[i] for i in key_slots], positions, pyramid, state, tracked, last_empty
        )
        starts = [0] + [slot + 1 for slot in key_slots[:-1]]
        rights = [(pending[slot], obs) for slot, obs in zip(key_slots, key_obs, strict=True)]
        lefts = [last_key, *rights[:-1]]
        inners = [pending[start:slot] for start, slot in zip(starts, key_slots, strict=True)]
        local = self.settings.local
        jobs = [
            IntervalFill(
                self.cascade, local, self.identity, pyramid, inner, first_position + start,
                (None if left is None else left[1], right[1]), before, (left_empty, right_empty),
            )
            for inner, start, left, right, before, left_empty, right_empty in zip(
                inners, starts, lefts, rights, [state, *states[:-1]], [last_empty, *empties[:-1]], empties,
                strict=True,
            )
        ]  # fmt: skip
        if self.pool is None:
            filled: list = [job.fill() for job in jobs]
        else:
            filled = [self.pool.submit(job.fill) for job in jobs]
        return _Batch(inners, filled, rights), states[-1], empties[-1]

    def _detect_keyframes(
        self,
        keyframes: list[Frame],
        positions: list[int],
        pyramid: Pyramid,
        state: TrackState,
        tracked: np.ndarray | None,
        last_empty: np.ndarray | None,
    ) -> tuple[list[Observation], list[TrackState], list[np.ndarray | None]]:
        """Each keyframe's face, the kept track after it, and the picture signature of a whole-frame
        search of every coarse level that found no face there (None when there is none)."""
        whole = Search(None, self._keyframe_scales(pyramid, tracked))
        every_level = whole.scales == pyramid.coarse_scales(self.settings.detect_max_side)
        found, empties = self._keyframe_faces(keyframes, whole, every_level, last_empty)
        observations, states = [], []
        for frame, position, faces in zip(keyframes, positions, found, strict=True):
            choice = self.identity.choose(faces, frame.image, state, position)
            self.stats.identity_rejections += choice.rejected
            self.stats.tracks_started += choice.anchored
            box = None if choice.index is None else faces.boxes[choice.index]
            state = self.identity.advance(state, choice, box, position, frame.image)
            observations.append(
                Observation.of(faces, choice.index, MaskValue.VALID, state.track, state.model)
            )
            states.append(state)
        return observations, states, empties

    def _keyframe_faces(
        self, keyframes: list[Frame], whole: Search, every_level: bool, last_empty: np.ndarray | None
    ) -> tuple[list[Faces], list[np.ndarray | None]]:
        """The keyframes' whole-frame searches in one call. A keyframe whose picture is unchanged from
        ``last_empty`` (a search of every level found no face there) is not searched: no faces, counted
        (``change.py``); it keeps ``last_empty`` as the empty picture its intervals compare with."""
        threshold = self.settings.skip_unchanged
        gated = every_level and threshold > 0
        pictures = [picture_signature(f.image) if gated else None for f in keyframes]
        skipped = [
            last_empty is not None and picture is not None and unchanged(picture, last_empty, threshold)
            for picture in pictures
        ]
        searched = [i for i, skip in enumerate(skipped) if not skip]
        detected = self.cascade.detect([keyframes[i].image for i in searched], [whole] * len(searched))
        self.stats.keyframes += len(searched)
        self.stats.keyframes_skipped += len(keyframes) - len(searched)
        found = [Faces.empty()] * len(keyframes)
        empties: list[np.ndarray | None] = [last_empty if skip else None for skip in skipped]
        for i, faces in zip(searched, detected, strict=True):
            found[i] = faces
            empties[i] = pictures[i] if gated and not len(faces) else None
        return found, empties

    def _keyframe_scales(self, pyramid: Pyramid, tracked: np.ndarray | None) -> tuple[float, ...]:
        """Pyramid levels of a keyframe's whole-frame search. While a face of size F is tracked, the
        ``largest`` rule cannot switch to a face much smaller than F, and the identity rules do not
        take a face more than ``gate_scale`` times smaller, so only the levels that find faces from
        about F / 3 up are needed: those the local search uses, computed over the whole frame (a
        fraction of the cost). ``central``, and no track (identity rules: none alive), get every level."""
        coarse = pyramid.coarse_scales(self.settings.detect_max_side)
        if tracked is None or self.rule is Selection.CENTRAL:
            return coarse
        # The face may shrink before the next keyframes: plan for 70 % of its size.
        side = SHRINK_ALLOWANCE * float(max(tracked[2] - tracked[0], tracked[3] - tracked[1]))
        return pyramid.scales_for_face(side, self.settings.track_scale_limit, self.settings.detect_max_side)

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
    filled: list[tuple[list[Observation], SearchStats] | Future[tuple[list[Observation], SearchStats]]]
    rights: list[tuple[Frame, Observation]]

    def rows(self, stats: SearchStats) -> Iterator[tuple[Frame, Observation]]:
        """The batch's rows in order; each interval's counts are added to ``stats`` as it is read."""
        for inner, filled, right in zip(self.inners, self.filled, self.rights, strict=True):
            observations, counted = filled.result() if isinstance(filled, Future) else filled
            stats.add(counted)
            yield from zip(inner, observations, strict=True)
            yield right
