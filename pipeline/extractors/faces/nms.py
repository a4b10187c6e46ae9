"""Greedy non-maximum suppression per frame, in NumPy (no torchvision in the face workers).

The rule is torchvision's ``batched_nms``: within each group, visit boxes by descending score (ties:
lower index first); keep a box unless a kept box overlaps it with IoU above the threshold; return
the kept indices by descending score, ties by index. Boxes are x1, y1, x2, y2 and areas have no +1.
The cascade calls it on a few dozen boxes at a time: one IoU matrix and a short greedy pass.
"""

from __future__ import annotations

import numpy as np
import torch

# Up to this many boxes the pairwise IoU matrix is built at once (4 MB of float32); beyond, row by row.
MATRIX_MAX_BOXES = 1024


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, groups: np.ndarray | None = None
) -> np.ndarray:
    """Indices of the boxes kept, by descending score (ties: lower index first). With ``groups``, boxes
    only suppress boxes of their own group."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes.astype(np.float32, copy=False)[order]
    same = None if groups is None else groups[order]
    if len(order) > MATRIX_MAX_BOXES:
        return order[_greedy_rows(boxes, same, iou_threshold)]
    overlaps = _overlaps(boxes, boxes, iou_threshold)
    if same is not None:
        overlaps &= same[:, None] == same[None, :]
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    for i in range(len(order)):
        if not suppressed[i]:
            kept.append(i)
            suppressed |= overlaps[i]
    return order[np.asarray(kept, dtype=np.int64)]


def _overlaps(first: np.ndarray, others: np.ndarray, iou_threshold: float) -> np.ndarray:
    """(len(first), len(others)) bool: IoU above the threshold (NaN, from zero-area boxes, is not)."""
    a, b = first[:, None, :], others[None, :, :]
    width = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0)
    height = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_a + area_b - inter) > iou_threshold


def _greedy_rows(boxes: np.ndarray, groups: np.ndarray | None, iou_threshold: float) -> np.ndarray:
    """The same greedy pass for boxes sorted by score, one row of overlaps per kept box."""
    remaining = np.arange(len(boxes))
    kept = []
    while remaining.size:
        first, rest = remaining[0], remaining[1:]
        kept.append(first)
        over = _overlaps(boxes[first : first + 1], boxes[rest], iou_threshold)[0]
        if groups is not None:
            over &= groups[rest] == groups[first]
        remaining = rest[~over]
    return np.asarray(kept, dtype=np.int64)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """``nms`` within each group (frame); kept indices by descending score, on the input's device."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    keep = nms(
        boxes.detach().float().cpu().numpy(),
        scores.detach().float().cpu().numpy(),
        iou_threshold,
        groups.detach().cpu().numpy(),
    )
    return torch.from_numpy(keep).to(boxes.device)
