"""Which face a frame keeps when the detector finds several (``extractors.faces.selection``)."""

from __future__ import annotations

import numpy as np

from avpipe.pipeline.extractors.faces.config import Selection
from avpipe.pipeline.extractors.faces.detect import Faces

SUBJECT_RULES = {"left": Selection.LEFT, "right": Selection.RIGHT}


def rule_for_video(configured: Selection, subject_position: object | None) -> Selection:
    """A two-person video annotated for its left or right subject keeps that person's face."""
    if subject_position is None:
        return configured
    try:
        return SUBJECT_RULES[str(getattr(subject_position, "value", subject_position)).lower()]
    except KeyError:
        raise ValueError(f"subject_position must be 'left' or 'right', got {subject_position!r}") from None


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x1,y1,x2,y2 box with each of ``boxes`` (N, 4)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box_area(np.asarray(box)[None])[0] + box_area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def box_area(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def select_face(
    faces: Faces, rule: Selection, frame_size: tuple[int, int], previous: np.ndarray | None = None
) -> int | None:
    """Index of the face ``rule`` keeps (None when there is none). ``frame_size`` is (width, height);
    ``previous`` the box kept on the previous frame, used by the ``track`` rule."""
    if len(faces) == 0:
        return None
    centres_x = (faces.boxes[:, 0] + faces.boxes[:, 2]) / 2
    if rule is Selection.LEFT:
        return int(np.argmin(centres_x))
    if rule is Selection.RIGHT:
        return int(np.argmax(centres_x))
    if rule is Selection.CENTRAL:
        centres_y = (faces.boxes[:, 1] + faces.boxes[:, 3]) / 2
        width, height = frame_size
        return int(np.argmin(np.hypot(centres_x - width / 2, centres_y - height / 2)))
    if rule is Selection.TRACK and previous is not None:
        overlap = box_iou(previous, faces.boxes)
        if overlap.max() > 0:
            return int(np.argmax(overlap))
    return int(np.argmax(box_area(faces.boxes)))


def continue_track(faces: Faces, predicted: np.ndarray, min_iou: float) -> int | None:
    """The face that continues a track predicted at ``predicted``, if one overlaps it enough."""
    if len(faces) == 0:
        return None
    overlap = box_iou(predicted, faces.boxes)
    best = int(np.argmax(overlap))
    return best if overlap[best] >= min_iou else None
