"""Face crops from the full-resolution frame: a 5-point similarity warp, or a plain box crop.

Warped crops (``crop_mode: warped``, the "aligned face" of the face-recognition literature; in avpipe
"align" means putting a sequence onto the video frame clock) map MTCNN's five landmarks (left eye, right
eye, nose, mouth corners; "left" as seen in the image) onto the canonical 112x112 template used by
ArcFace-style face models, scaled to each output size. The crop of the largest size is warped once,
supersampled then area-reduced so that a big face is not aliased; smaller sizes are area reductions of it
(their template is the same one, scaled, so this is the same transform).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

TEMPLATE_SIZE = 112
# Canonical landmark positions in a 112x112 crop (InsightFace / ArcFace alignment template).
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
MAX_SUPERSAMPLE = 4


def template(size: int) -> np.ndarray:
    """The 5-point template for a ``size`` x ``size`` crop, (5, 2) x, y."""
    return TEMPLATE_112 * (size / TEMPLATE_SIZE)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation taking ``src`` points onto ``dst``
    (Umeyama 1991), as a 2x3 matrix for ``cv2.warpAffine``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    reflect = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ reflect @ vt
    variance = (src_c**2).sum() / len(src)
    scale = float(np.trace(np.diag(s) @ reflect) / variance) if variance > 0 else 1.0
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) through a 2x3 affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warped_crops(frame: np.ndarray, landmarks: np.ndarray, sizes: list[int]) -> dict[int, np.ndarray]:
    """One aligned RGB uint8 crop per size, warped from ``frame`` (RGB uint8, full resolution)."""
    largest = max(sizes)
    matrix = similarity_transform(landmarks, template(largest))
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    # A face bigger than the crop is shrunk: warp at up to 4x the size, then area-reduce (no aliasing).
    factor = int(min(MAX_SUPERSAMPLE, max(1, math.ceil(1.0 / scale)))) if scale > 0 else 1
    big = cv2.warpAffine(
        frame,
        matrix * factor,
        (largest * factor, largest * factor),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    crop = big if factor == 1 else cv2.resize(big, (largest, largest), interpolation=cv2.INTER_AREA)
    return {size: crop if size == largest else _shrink(crop, size) for size in sizes}


def _shrink(crop: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def margin_box(box: np.ndarray, margin: float, frame_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """facenet-pytorch's ``extract_face`` box: grown by ``margin`` (a fraction of the crop size, i.e.
    facenet's ``margin / image_size``), truncated to ints and clipped to the frame (width, height)."""
    width, height = frame_size
    grow = margin / (1.0 - margin)
    dx = grow * (box[2] - box[0])
    dy = grow * (box[3] - box[1])
    return (
        int(max(box[0] - dx / 2, 0)),
        int(max(box[1] - dy / 2, 0)),
        int(min(box[2] + dx / 2, width)),
        int(min(box[3] + dy / 2, height)),
    )


def box_crops(frame: np.ndarray, box: np.ndarray, sizes: list[int], margin: float) -> dict[int, np.ndarray]:
    """Box crops (plus margin) resized with area interpolation, one per size; black when the box
    holds no pixel of the frame."""
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = margin_box(box, margin, (width, height))
    region = frame[y1:y2, x1:x2]
    if region.size == 0:
        return {size: np.zeros((size, size, 3), np.uint8) for size in sizes}
    return {size: cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA) for size in sizes}
