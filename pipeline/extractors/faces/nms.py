"""Greedy non-maximum suppression per frame, in NumPy (no torchvision in the face workers).

The rule is torchvision's ``batched_nms``: within each group, visit boxes by descending score (ties:
lower index first); keep a box unless a kept box overlaps it with IoU above the threshold; return
the kept indices by descending score, ties by index. Boxes are x1, y1, x2, y2 and areas have no +1.
The cascade calls it on a few dozen boxes at a time, so the per-kept-box vector loop is cheap.
"""

from __future__ import annotations

import numpy as np
import torch


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept, by descending score."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes.astype(np.float32, copy=False)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    kept = []
    while order.size:
        first, rest = order[0], order[1:]
        kept.append(first)
        width = np.maximum(np.minimum(x2[first], x2[rest]) - np.maximum(x1[first], x1[rest]), 0)
        height = np.maximum(np.minimum(y2[first], y2[rest]) - np.maximum(y1[first], y1[rest]), 0)
        inter = width * height
        with np.errstate(divide="ignore", invalid="ignore"):  # degenerate boxes: NaN never suppresses
            iou = inter / (areas[first] + areas[rest] - inter)
        order = rest[~(iou > iou_threshold)]
    return np.asarray(kept, dtype=np.int64)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """``nms`` within each group (frame); kept indices by descending score, on the input's device."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    boxes_np = boxes.detach().float().cpu().numpy()
    scores_np = scores.detach().float().cpu().numpy()
    groups_np = groups.detach().cpu().numpy()
    kept = []
    for group in np.unique(groups_np):
        members = np.flatnonzero(groups_np == group)
        kept.append(members[nms(boxes_np[members], scores_np[members], iou_threshold)])
    keep = np.sort(np.concatenate(kept))
    keep = keep[np.argsort(-scores_np[keep], kind="stable")]
    return torch.from_numpy(keep).to(boxes.device)
