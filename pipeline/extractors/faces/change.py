"""Whether a frame's picture is unchanged from another's: the test that lets a whole-frame search be
skipped (docs/FACES.md, "Unchanged pictures are not searched twice").

A whole-frame search finds the same faces in the same picture. A keyframe whose picture is unchanged
from the last keyframe found empty, or a probe (``interval.py``) whose picture is unchanged from a
frame of its interval found empty, is therefore not searched, and counted (``keyframes_skipped``,
``probes_skipped``). "Found empty" means a search of every coarse pyramid level found no face at all;
a face can then be missed only if it sits exactly on MTCNN's thresholds in both frames. The picture is
compared as its mean colour in blocks of ``BLOCK`` x ``BLOCK`` px: encoding noise averages out over a
block, while a face that enters, leaves or moves changes every block it covers by tens of grey levels.
A still shot without anybody in it (title cards, an empty room, the gaps of a face that flickers in
and out) costs one search instead of one per keyframe and probe."""

from __future__ import annotations

import cv2
import numpy as np

BLOCK = 16  # px of the full-resolution frame per side of a compared block


def picture_signature(image: np.ndarray) -> np.ndarray:
    """The frame's mean colour per BLOCK x BLOCK block: (H // BLOCK, W // BLOCK, 3) float32."""
    height, width = image.shape[:2]
    size = (max(1, width // BLOCK), max(1, height // BLOCK))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)


def unchanged(signature: np.ndarray, other: np.ndarray, threshold: float) -> bool:
    """No block's mean colour moved by more than ``threshold`` grey levels, in any channel."""
    return signature.shape == other.shape and float(np.abs(signature - other).max()) <= threshold
