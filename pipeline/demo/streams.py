"""Independent, reproducible random streams: one per (seed, clip, subject, purpose).

Each purpose gets its own stream so that, e.g., changing how head motion is drawn never changes the
labels, and valence and arousal are statistically independent by construction.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Purpose(IntEnum):
    CLIP = 0  # duration, face source choice, framing
    VALENCE = 1
    AROUSAL = 2
    SPEECH = 3
    MOTION = 4
    LIGHTING = 5
    UNLABELED = 6
    TURNS = 7  # who speaks when, in the two-person clip


def random_stream(seed: int, clip_number: int, purpose: Purpose, subject: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, clip_number, subject, int(purpose)])
