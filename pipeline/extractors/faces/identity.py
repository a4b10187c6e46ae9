"""Whose face it is: the identity gate, and how a subject's track starts (docs/FACES.md, "Identity").

A track is one person's run of faces. ``track``, ``left`` and ``right`` keep a single track: the face
a frame stores must pass the gate against the track's last face (centre moved at most
``gate_motion`` face sizes per frame since then, capped at ``gate_max_shift``; size changed at most
``gate_scale`` times; colour histogram at least ``gate_appearance`` similar to the track's model), or
the frame has no face. A track starts (is anchored) on a confident face chosen by the rule: for
``left``/``right`` the leftmost/rightmost confident face when it lies in that half of the frame or has
another confident face on its other side; for ``track`` the largest. After ``reanchor_after`` frames
without the track's face a new track may start the same way, but it must still look like the old one.

``largest`` and ``central`` keep no identity: every whole-frame search applies the rule. For them the
gate (against the previous keyframe's face only) just says whether two keyframes' faces are the same
track, i.e. whether the frames between may be interpolated.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

from avpipe.pipeline.extractors.faces.config import FacesConfig, Selection
from avpipe.pipeline.extractors.faces.detect import Faces
from avpipe.pipeline.extractors.faces.select import box_area, select_face

IDENTITY_RULES = frozenset({Selection.TRACK, Selection.LEFT, Selection.RIGHT})
APPEARANCE_SIDE = 32  # px: the box is area-reduced to this before its histogram (noise, speed)
APPEARANCE_BINS = (8, 12, 12)  # L, a, b
MODEL_UPDATE = 0.3  # weight of a newly accepted keyframe face in the track's appearance model...
MODEL_UPDATE_MIN = 0.85  # ...when it is at least this similar: a half-hidden face does not drift it
REIDENTIFY_MIN = 0.85  # a lost track resumes anywhere on a face this similar, if no other face passes


def appearance(image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """Normalised Lab colour histogram of the box's pixels (None when the box holds none)."""
    height, width = image.shape[:2]
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    patch = cv2.resize(image[y1:y2, x1:x2], (APPEARANCE_SIDE, APPEARANCE_SIDE), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(patch, cv2.COLOR_RGB2LAB)
    hist = cv2.calcHist([lab], [0, 1, 2], None, list(APPEARANCE_BINS), [0, 256] * 3).ravel()
    return hist / max(float(hist.sum()), 1.0)


def similarity(model: np.ndarray, hist: np.ndarray) -> float:
    """Bhattacharyya coefficient of two normalised histograms: 1 identical, 0 disjoint."""
    return float(np.sqrt(model * hist).sum())


def box_side(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


def box_centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float64)


@dataclass(frozen=True)
class TrackState:
    """What is known of the kept track at some frame: its id (0: none yet), last face and where."""

    track: int = 0
    box: np.ndarray | None = None
    seen_at: int = -1  # frame position of ``box``
    model: np.ndarray | None = None  # appearance histogram (identity rules)


@dataclass(frozen=True)
class Choice:
    """A whole-frame search's pick: face index (None: no face kept) and what happened."""

    index: int | None
    rejected: bool = False  # faces were there, none passed the identity gate
    anchored: bool = False  # a new track starts on this face
    hist: np.ndarray | None = None  # the chosen face's appearance (identity rules)


@dataclass(frozen=True)
class Identity:
    """The gate's parameters and the rule: the decisions keyframes, re-detections and probes share."""

    rule: Selection
    gate_motion: float
    gate_max_shift: float
    gate_scale: float
    gate_appearance: float
    anchor_prob: float
    reanchor_after: int

    @classmethod
    def from_config(cls, config: FacesConfig, rule: Selection) -> Identity:
        names = [f.name for f in fields(cls) if f.name != "rule"]
        return cls(rule, **{name: getattr(config, name) for name in names})

    @property
    def keeps_identity(self) -> bool:
        return self.rule in IDENTITY_RULES

    def alive(self, state: TrackState, position: int) -> bool:
        return state.box is not None and position - state.seen_at <= self.reanchor_after

    def geometry_passes(self, reference: np.ndarray, elapsed: int, box: np.ndarray) -> bool:
        side = box_side(reference)
        shift = float(np.hypot(*(box_centre(box) - box_centre(reference))))
        allowed = side * min(self.gate_max_shift, self.gate_motion * max(1, abs(elapsed)))
        ratio = box_side(box) / max(side, 1e-6)
        return shift <= allowed and 1 / self.gate_scale <= ratio <= self.gate_scale

    def looks_alike(self, model: np.ndarray | None, hist: np.ndarray | None) -> bool:
        if self.gate_appearance <= 0 or model is None:
            return True
        return hist is not None and similarity(model, hist) >= self.gate_appearance

    def gated(
        self, faces: Faces, image: np.ndarray, reference: np.ndarray, elapsed: int, model: np.ndarray | None
    ) -> Choice:
        """The face nearest ``reference`` among those passing the gate, or a rejection."""
        order = np.argsort(np.hypot(*(box_centre(faces.boxes.T) - box_centre(reference)[:, None])))
        for index in order:
            box = faces.boxes[index]
            if not self.geometry_passes(reference, elapsed, box):
                continue
            hist = appearance(image, box) if self.keeps_identity else None
            if self.keeps_identity and not self.looks_alike(model, hist):
                continue
            return Choice(int(index), hist=hist)
        return Choice(None, rejected=len(faces) > 0)

    def choose(self, faces: Faces, image: np.ndarray, state: TrackState, position: int) -> Choice:
        """The face a whole-frame search keeps on the frame at ``position``, given the track so far."""
        if not self.keeps_identity:
            height, width = image.shape[:2]
            return Choice(select_face(faces, self.rule, (width, height), state.box))
        if len(faces) == 0:
            return Choice(None)
        if self.alive(state, position):
            return self.follow(faces, image, state.box, position - state.seen_at, state.model)
        return self.anchor(faces, image, state.model)

    def follow(
        self, faces: Faces, image: np.ndarray, reference: np.ndarray, elapsed: int, model: np.ndarray | None
    ) -> Choice:
        """An identity track's face: through the gate, or, when none passes it, re-identified (a new
        track of the same person, e.g. after a cut or after walking past someone)."""
        choice = self.gated(faces, image, reference, elapsed, model)
        if choice.index is not None or model is None or self.gate_appearance <= 0:
            return choice
        confident = np.flatnonzero(faces.probs >= self.anchor_prob)
        if confident.size == 0:
            return choice
        return self._reidentify(faces, image, model, confident)

    def anchor(self, faces: Faces, image: np.ndarray, model: np.ndarray | None) -> Choice:
        """A new track: the rule's confident face, on its side of the frame for left/right, looking like
        the previous track when there was one; failing that, the one face clearly like it."""
        confident = np.flatnonzero(faces.probs >= self.anchor_prob)
        if confident.size == 0:
            return Choice(None, rejected=True)
        by_rule = self._anchor_by_rule(faces, image, model, confident)
        if by_rule.index is not None or model is None or self.gate_appearance <= 0:
            return by_rule
        return self._reidentify(faces, image, model, confident)

    def _reidentify(
        self, faces: Faces, image: np.ndarray, model: np.ndarray, confident: np.ndarray
    ) -> Choice:
        """The lost person wherever they are now (walked past the other, a cut): the one confident face
        at least ``REIDENTIFY_MIN`` similar to the track's model while every other is below the gate."""
        hists = [appearance(image, faces.boxes[i]) for i in confident]
        scores = np.array([0.0 if h is None else similarity(model, h) for h in hists])
        best = int(np.argmax(scores))
        others = np.delete(scores, best)
        if scores[best] < REIDENTIFY_MIN or (others >= self.gate_appearance).any():
            return Choice(None, rejected=True)
        return Choice(int(confident[best]), anchored=True, hist=hists[best])

    def _anchor_by_rule(
        self, faces: Faces, image: np.ndarray, model: np.ndarray | None, confident: np.ndarray
    ) -> Choice:
        centres = (faces.boxes[confident, 0] + faces.boxes[confident, 2]) / 2
        if self.rule is Selection.TRACK:
            pick = confident[int(np.argmax(box_area(faces.boxes[confident])))]
        else:
            width = image.shape[1]
            left = self.rule is Selection.LEFT
            k = int(np.argmin(centres) if left else np.argmax(centres))
            on_its_side = centres[k] < width / 2 if left else centres[k] >= width / 2
            if not on_its_side and confident.size == 1:
                return Choice(None, rejected=True)
            pick = confident[k]
        hist = appearance(image, faces.boxes[pick])
        if not self.looks_alike(model, hist):
            return Choice(None, rejected=True)
        return Choice(int(pick), anchored=True, hist=hist)

    def advance(
        self, state: TrackState, choice: Choice, box: np.ndarray | None, position: int, image: np.ndarray
    ) -> TrackState:
        """The track after a whole-frame search kept ``box`` (None: nothing) on ``position``. For the
        rules without identity, two keyframes' faces are one track when they pass the geometric gate
        and look alike (a cut between two centred faces is two tracks: not interpolated)."""
        if box is None:
            return state
        if self.keeps_identity:
            track = state.track + 1 if choice.anchored else state.track
            model = (
                choice.hist
                if state.model is None or choice.hist is None
                else _blend(state.model, choice.hist)
            )
            return TrackState(track, box, position, model)
        hist = appearance(image, box) if self.gate_appearance > 0 else None
        same = (
            state.box is not None
            and self.geometry_passes(state.box, position - state.seen_at, box)
            and self.looks_alike(state.model, hist)
        )
        return TrackState(state.track if same else state.track + 1, box, position, hist)


def _blend(model: np.ndarray, hist: np.ndarray) -> np.ndarray:
    if similarity(model, hist) < MODEL_UPDATE_MIN:
        return model
    return (1 - MODEL_UPDATE) * model + MODEL_UPDATE * hist
