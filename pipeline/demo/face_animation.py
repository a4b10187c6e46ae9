"""Animated faces: head motion, zoom and lighting, with valence written on the face by a local warp.

A frame is rendered with one ``cv2.remap`` per subject. The backward map is the composition of
(1) a similarity transform placing the source face's eyes at the planned position, size and roll,
and (2) a smooth displacement field made of Gaussian bumps anchored on the source landmarks:
mouth corners up and out for positive valence (smile), down and in for negative (frown), inner
brows lowered and pulled together and the lower lip pushed up for negative valence, cheeks raised
for positive valence, and the jaw dropped with each spoken syllable.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avpipe.pipeline.demo.curves import smooth_noise

MAP_DECIMATION = 4  # the maps are smooth: compute them on a 1/4 grid and upsample
EYE_DISTANCE_OF_HEIGHT = 0.17  # eye distance as a fraction of frame height: face height ~0.4 H
EYE_DISTANCE_OF_WIDTH = 0.26
EYE_LINE_OF_HEIGHT = 0.40
ZOOM_RANGE = 0.12
ROLL_DEGREES = 8.0
SHIFT_OF_WIDTH = 0.08
SHIFT_OF_HEIGHT = 0.06
MOTION_MIN_PERIOD = 2.0
MOTION_MAX_PERIOD = 9.0
WARP_ITERATIONS = 3  # fixed-point steps that invert the forward displacement field
TINT_STRENGTH = 0.04


@dataclass(frozen=True)
class FaceMotion:
    """Per-frame placement of one subject's face in its region of the frame (pixels, radians)."""

    eye_center_x: np.ndarray
    eye_center_y: np.ndarray
    eye_distance: np.ndarray
    roll: np.ndarray
    source_offset: float  # seconds into the source sequence at frame 0
    mirrored: bool


@dataclass(frozen=True)
class Lighting:
    """Per-frame global gain and left-to-right gradient (relative gain change across the region)."""

    gain: np.ndarray
    gradient: np.ndarray


@dataclass(frozen=True)
class ExpressionStyle:
    """How a source face takes the valence warp.

    ``resting_smile``: the valence the face already shows unwarped (the astronaut smiles), so the
    mouth is warped by the difference and valence -1 still reads as a frown. ``gain``: scales the
    valence warps, larger for a face whose own expressions (carphone) would otherwise drown them.
    """

    resting_smile: float = 0.0
    gain: float = 1.0


@dataclass(frozen=True)
class Bump:
    """A Gaussian displacement: content around ``center`` moves by ``shift`` (source pixels)."""

    center: np.ndarray
    shift: np.ndarray
    radius: float


def plan_motion(
    rng: np.random.Generator, n_frames: int, fps: float, region_width: int, region_height: int
) -> FaceMotion:
    times = np.arange(n_frames) / fps
    base_distance = min(EYE_DISTANCE_OF_HEIGHT * region_height, EYE_DISTANCE_OF_WIDTH * region_width)

    def wobble() -> np.ndarray:
        return smooth_noise(rng, times, MOTION_MIN_PERIOD, MOTION_MAX_PERIOD, n_components=3)

    return FaceMotion(
        eye_center_x=region_width / 2.0 + SHIFT_OF_WIDTH * region_width * wobble(),
        eye_center_y=EYE_LINE_OF_HEIGHT * region_height + SHIFT_OF_HEIGHT * region_height * wobble(),
        eye_distance=base_distance * (1.0 + ZOOM_RANGE * wobble()),
        roll=np.deg2rad(ROLL_DEGREES) * wobble(),
        source_offset=float(rng.uniform(0.0, 8.0)),
        mirrored=bool(rng.integers(0, 2)),
    )


def plan_lighting(rng: np.random.Generator, n_frames: int, fps: float) -> Lighting:
    times = np.arange(n_frames) / fps
    return Lighting(
        gain=1.0 + 0.15 * smooth_noise(rng, times, 2.0, 8.0, n_components=3),
        gradient=0.25 * smooth_noise(rng, times, 3.0, 10.0, n_components=3),
    )


def expression_bumps(
    landmarks: np.ndarray, valence: float, mouth_open: float, style: ExpressionStyle = ExpressionStyle()
) -> list[Bump]:
    """Displacements (source coordinates) that show ``valence`` and the jaw opening on the face."""
    left_eye, right_eye, _nose, mouth_left, mouth_right = landmarks.astype(np.float64)
    eye_vector = right_eye - left_eye
    unit = float(np.linalg.norm(eye_vector))
    across = eye_vector / unit  # towards the image-right eye
    down = np.array([-across[1], across[0]])  # towards the mouth
    mouth_center = (mouth_left + mouth_right) / 2.0
    positive, negative = style.gain * max(valence, 0.0), style.gain * max(-valence, 0.0)
    smile = style.gain * (valence - style.resting_smile)
    bumps = [
        # mouth corners: up and out with a smile, down and in with a frown
        Bump(mouth_left, unit * (-0.22 * smile * down - 0.07 * smile * across), 0.22 * unit),
        Bump(mouth_right, unit * (-0.22 * smile * down + 0.07 * smile * across), 0.22 * unit),
        # lower lip: dropped while speaking, pushed up (pout) when negative
        Bump(
            mouth_center + 0.12 * unit * down,
            unit * (0.10 * mouth_open - 0.06 * negative) * down,
            0.18 * unit,
        ),
        Bump(mouth_center + 0.45 * unit * down, unit * 0.07 * mouth_open * down, 0.3 * unit),
        # cheeks raised with a smile (narrows the eyes)
        Bump(left_eye + 0.3 * unit * down, unit * -0.07 * positive * down, 0.18 * unit),
        Bump(right_eye + 0.3 * unit * down, unit * -0.07 * positive * down, 0.18 * unit),
    ]
    for eye, inward in ((left_eye, across), (right_eye, -across)):
        inner_brow = eye + 0.22 * unit * inward - 0.42 * unit * down
        shift = unit * (negative * (0.15 * down + 0.07 * inward) - 0.05 * positive * down)
        bumps.append(Bump(inner_brow, shift, 0.2 * unit))
    return bumps


@dataclass(frozen=True)
class FaceState:
    """What one rendered frame of a subject shows."""

    frame: int  # output frame index (selects the motion)
    valence: float
    mouth_open: float  # 0 closed .. 1 fully open (syllable envelope)


def render_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    motion: FaceMotion,
    state: FaceState,
    size: tuple[int, int],
    style: ExpressionStyle = ExpressionStyle(),
) -> np.ndarray:
    """Render one subject region of ``size`` (width, height) from a source frame and its landmarks."""
    width, height = size
    grid_x, grid_y = _source_coordinates(landmarks, motion, state.frame, size)
    bumps = expression_bumps(landmarks, state.valence, state.mouth_open, style)
    map_x, map_y = _invert_displacement(grid_x, grid_y, bumps)
    full_x = cv2.resize(map_x.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    full_y = cv2.resize(map_y.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    region = cv2.remap(
        image, full_x, full_y, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
    )
    return region[:, ::-1] if motion.mirrored else region


def _source_coordinates(
    landmarks: np.ndarray, motion: FaceMotion, frame: int, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Coarse grid of output pixels mapped back through the similarity transform into the source."""
    width, height = size
    coarse_w = -(-width // MAP_DECIMATION)
    coarse_h = -(-height // MAP_DECIMATION)
    # sample positions that cv2.resize(INTER_LINEAR) assumes for a (coarse_w, coarse_h) image
    xs = (np.arange(coarse_w) + 0.5) * (width / coarse_w) - 0.5
    ys = (np.arange(coarse_h) + 0.5) * (height / coarse_h) - 0.5
    out_x, out_y = np.meshgrid(xs, ys)
    left_eye, right_eye = landmarks[0].astype(np.float64), landmarks[1].astype(np.float64)
    eye_vector = right_eye - left_eye
    source_center = (left_eye + right_eye) / 2.0
    scale = float(motion.eye_distance[frame]) / float(np.linalg.norm(eye_vector))
    angle = float(motion.roll[frame]) - float(np.arctan2(eye_vector[1], eye_vector[0]))
    dx = out_x - float(motion.eye_center_x[frame])
    dy = out_y - float(motion.eye_center_y[frame])
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    return source_center[0] + cos * dx + sin * dy, source_center[1] - sin * dx + cos * dy


def _invert_displacement(
    grid_x: np.ndarray, grid_y: np.ndarray, bumps: list[Bump]
) -> tuple[np.ndarray, np.ndarray]:
    """Backward map of the forward field D: the q with q + D(q) = p, by fixed-point iteration."""
    source_x, source_y = grid_x, grid_y
    for _ in range(WARP_ITERATIONS):
        shift_x = np.zeros_like(grid_x)
        shift_y = np.zeros_like(grid_y)
        for bump in bumps:
            distance2 = (source_x - bump.center[0]) ** 2 + (source_y - bump.center[1]) ** 2
            weight = np.exp(-distance2 / (2.0 * bump.radius**2))
            shift_x += weight * bump.shift[0]
            shift_y += weight * bump.shift[1]
        source_x, source_y = grid_x - shift_x, grid_y - shift_y
    return source_x, source_y


def apply_lighting(region: np.ndarray, lighting: Lighting, frame: int, valence: float) -> np.ndarray:
    """Global gain, a horizontal light gradient, and a faint warm (positive) or cool (negative) tint."""
    width = region.shape[1]
    ramp = 1.0 + lighting.gradient[frame] * np.linspace(-1.0, 1.0, width, dtype=np.float32)
    channel_gain = np.array(
        [1.0 + TINT_STRENGTH * valence, 1.0, 1.0 - TINT_STRENGTH * valence], dtype=np.float32
    )
    gain = (lighting.gain[frame] * ramp)[None, :, None] * channel_gain[None, None, :]
    return np.clip(region.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)
