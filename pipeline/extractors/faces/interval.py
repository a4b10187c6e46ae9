"""The frames strictly between two keyframes: searched so that a face is never guessed.

- Both keyframes hold a face of the same track: the boxes are interpolated and each frame is searched
  locally around its prediction (one batched call). A frame whose local search loses the face is
  searched whole-frame and keeps only a face passing the identity gate against the prediction.
- Otherwise (a keyframe without a face, or two different tracks) nothing is interpolated: the face of
  each end is followed outward frame by frame with local searches (each frame against the previous
  one) until it is lost, and each run of frames still unsearched is bisected: its middle frame is
  searched whole-frame; a face found there is followed outward the same way, the rest bisected again,
  down to ``probe_depth`` levels. Frames never reached stay missing. A probe whose picture is unchanged
  from a frame of the interval found empty by a whole-frame search is skipped, and counted
  (``change.py``).

Identity rules (``track``/``left``/``right``) also check every tracked face's appearance against its
track's model, so a face that slides into the predicted box is not taken for the tracked one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avpipe.pipeline.extractors.faces.change import picture_signature, unchanged
from avpipe.pipeline.extractors.faces.detect import MtcnnCascade, Pyramid, Search
from avpipe.pipeline.extractors.faces.identity import Choice, Identity, TrackState, appearance
from avpipe.pipeline.extractors.faces.observation import MISSING, Observation, SearchStats
from avpipe.pipeline.extractors.faces.select import continue_track
from avpipe.pipeline.types import Frame, MaskValue


@dataclass(frozen=True)
class LocalSearch:
    """The tracker's local-search settings (``FacesConfig`` fields of the same names)."""

    track_margin: float
    track_iou: float
    track_scale_limit: float
    detect_max_side: int
    probe_depth: int
    skip_unchanged: float

    def search(self, pyramid: Pyramid, box: np.ndarray) -> Search:
        side = float(max(box[2] - box[0], box[3] - box[1]))
        pad = self.track_margin * side
        window = (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)
        scales = pyramid.scales_for_face(side, self.track_scale_limit, self.detect_max_side)
        return Search(tuple(float(v) for v in window), scales)


class IntervalFill:
    """One interval's search (runs on a pool thread); ``fill`` returns its observations and stats."""

    def __init__(
        self,
        cascade: MtcnnCascade,
        local: LocalSearch,
        identity: Identity,
        pyramid: Pyramid,
        frames: list[Frame],
        first: int,
        ends: tuple[Observation | None, Observation],
        state: TrackState,
        empty_ends: tuple[np.ndarray | None, ...] = (),
    ) -> None:
        self.cascade, self.local, self.identity, self.pyramid = cascade, local, identity, pyramid
        self.frames = frames
        self.first = first  # position of frames[0] in the video
        self.left, self.right = ends
        self.state = state  # the kept track as known at the left keyframe (identity rules)
        self.obs: list[Observation | None] = [None] * len(frames)
        self.stats = SearchStats()
        # Picture signatures of frames here or at the ends whose whole-frame search found no face.
        self.empty_pictures = [picture for picture in empty_ends if picture is not None]

    def fill(self) -> tuple[list[Observation], SearchStats]:
        if not self.frames:
            return [], self.stats
        left_found = self.left is not None and self.left.found
        if left_found and self.right.found and self.left.track == self.right.track:
            self._interpolated()
        else:
            self.stats.split_intervals += 1
            self._outward_from_ends()
            for lo, hi in self._unsearched():
                self._probe(lo, hi, 1)
        return [obs if obs is not None else MISSING for obs in self.obs], self.stats

    # ---- one track at both ends

    def _interpolated(self) -> None:
        n = len(self.frames)
        predicted = interpolate_boxes(self.left.box, self.right.box, n)
        searches = [self.local.search(self.pyramid, box) for box in predicted]
        found = self.cascade.detect([f.image for f in self.frames], searches)
        for i, (faces, box) in enumerate(zip(found, predicted, strict=True)):
            self.obs[i] = self._continued(i, faces, box, self.left)
        lost = [i for i, obs in enumerate(self.obs) if not obs.found]
        if not lost:
            return
        whole = self._whole_search()
        redetected = self.cascade.detect([self.frames[i].image for i in lost], [whole] * len(lost))
        self.stats.redetected += len(lost)
        for i, faces in zip(lost, redetected, strict=True):
            index = continue_track(faces, predicted[i], self.local.track_iou)
            image = self.frames[i].image
            if index is not None and self._looks_like(self.left, image, faces.boxes[index]):
                self.obs[i] = Observation.of(faces, index, MaskValue.VALID, self.left.track, self.left.model)
                continue
            elapsed = min(i + 1, n - i)
            choice = self.identity.gated(faces, image, predicted[i], elapsed, self.left.model)
            self._count(choice)
            self.obs[i] = Observation.of(
                faces, choice.index, MaskValue.VALID, self.left.track, self.left.model
            )

    # ---- different tracks, or a keyframe without a face

    def _outward_from_ends(self) -> None:
        n = len(self.frames)
        middle = (n - 1) // 2
        forward_end = -1
        if self.left is not None and self.left.found:
            forward_end = self._follow(-1, middle, +1)
        backward_end = n
        if self.right.found:
            backward_end = self._follow(n, forward_end + 1, -1)
        if forward_end == middle and backward_end > forward_end + 1:
            self._follow(forward_end, backward_end - 1, +1)  # the right end's face was lost early

    def _follow(self, origin: int, limit: int, step: int) -> int:
        """Follow the face at ``origin`` frame by frame towards ``limit`` (inclusive) while local
        searches find it; the last index reached."""
        reference = self._known(origin)
        at = origin
        for i in range(origin + step, limit + step, step):
            if self.obs[i] is not None:
                break
            faces = self.cascade.detect(
                [self.frames[i].image], [self.local.search(self.pyramid, reference.box)]
            )[0]
            self.stats.tracked_out += 1
            observation = self._continued(i, faces, reference.box, reference)
            if not observation.found:
                break
            self.obs[i] = reference = observation
            at = i
        return at

    def _probe(self, lo: int, hi: int, depth: int) -> None:
        """Bisect the unsearched frames lo..hi: search the middle one whole-frame."""
        if lo > hi or depth > self.local.probe_depth:
            return
        middle = (lo + hi) // 2
        image = self.frames[middle].image
        picture = picture_signature(image) if self.local.skip_unchanged > 0 else None
        if picture is not None and any(
            unchanged(picture, empty, self.local.skip_unchanged) for empty in self.empty_pictures
        ):
            self.stats.probes_skipped += 1
            self.obs[middle] = MISSING
        else:
            faces = self.cascade.detect([image], [self._whole_search()])[0]
            self.stats.probed += 1
            if picture is not None and len(faces) == 0:
                self.empty_pictures.append(picture)
            self._keep_probed(middle, faces, image, lo, hi)
        for sub_lo, sub_hi in self._unsearched(lo, hi):
            self._probe(sub_lo, sub_hi, depth + 1)

    def _keep_probed(self, middle: int, faces, image: np.ndarray, lo: int, hi: int) -> None:
        """A probe's pick, and the face followed outward within lo..hi when there is one."""
        choice, reference = self._choose(middle, faces, image)
        self._count(choice)
        track = reference.track if reference is not None else (-1 if choice.anchored else 0)  # -1: new here
        model = reference.model if reference is not None else choice.hist
        self.obs[middle] = Observation.of(faces, choice.index, MaskValue.VALID, track, model)
        if self.obs[middle].found:
            self._follow(middle, hi, +1)
            self._follow(middle, lo, -1)

    def _choose(self, i: int, faces, image: np.ndarray) -> tuple[Choice, Observation | None]:
        """A probe's pick: gated against the nearest face already kept in this interval or at its ends,
        else as a keyframe would choose (the track as known at the left keyframe)."""
        if not self.identity.keeps_identity:
            return self.identity.choose(faces, image, self.state, self.first + i), None
        nearest = self._nearest_face(i)
        if nearest is not None:
            at, reference = nearest
            if abs(i - at) <= self.identity.reanchor_after:
                choice = self.identity.follow(faces, image, reference.box, i - at, reference.model)
                return choice, (None if choice.anchored else reference)
        return self.identity.choose(faces, image, self.state, self.first + i), None

    # ---- helpers

    def _continued(self, i: int, faces, predicted: np.ndarray, reference: Observation) -> Observation:
        """The face of a local search that continues ``reference``'s track (MISSING if none)."""
        index = continue_track(faces, predicted, self.local.track_iou)
        if index is None:
            return MISSING
        if not self._looks_like(reference, self.frames[i].image, faces.boxes[index]):
            self.stats.identity_rejections += 1
            return MISSING
        return Observation.of(faces, index, MaskValue.TRACKED, reference.track, reference.model)

    def _looks_like(self, reference: Observation, image: np.ndarray, box: np.ndarray) -> bool:
        if not self.identity.keeps_identity:
            return True
        return self.identity.looks_alike(reference.model, appearance(image, box))

    def _count(self, choice: Choice) -> None:
        self.stats.identity_rejections += choice.rejected

    def _known(self, i: int) -> Observation | None:
        if i == -1:
            return self.left
        if i == len(self.frames):
            return self.right
        return self.obs[i]

    def _nearest_face(self, i: int) -> tuple[int, Observation] | None:
        best = None
        for j in range(-1, len(self.frames) + 1):
            known = self._known(j)
            if known is not None and known.found and (best is None or abs(j - i) < abs(best[0] - i)):
                best = (j, known)
        return best

    def _unsearched(self, lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
        """Runs of frames in lo..hi not searched yet."""
        hi = len(self.frames) - 1 if hi is None else hi
        runs, start = [], None
        for i in range(lo, hi + 1):
            if self.obs[i] is None and start is None:
                start = i
            elif self.obs[i] is not None and start is not None:
                runs.append((start, i - 1))
                start = None
        if start is not None:
            runs.append((start, hi))
        return runs

    def _whole_search(self) -> Search:
        return Search(None, self.pyramid.coarse_scales(self.local.detect_max_side))


def interpolate_boxes(left: np.ndarray, right: np.ndarray, n: int) -> list[np.ndarray]:
    """Boxes of the ``n`` frames between two keyframe boxes of one track, linear in time."""
    weights = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
    return [((1 - w) * left + w * right).astype(np.float32) for w in weights]
