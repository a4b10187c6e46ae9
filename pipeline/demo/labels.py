"""Demo labels: valence/arousal curves and the fixed rules deriving expressions and AUs from them.

The rules are documented in docs/DEMO.md; keep the two in step.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from avpipe.pipeline.demo.curves import spanning_curve

AU_NAMES = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
VA_DECIMALS = 3  # Aff-Wild2 writes VA with 3 decimals
# Periods of the label curves: slow enough to be smooth, fast enough that a 10 s clip swings.
# Shorter clips (tests) use proportionally shorter periods so the range is spanned without
# stretching a nearly flat curve into a steep ramp.
LABEL_MIN_PERIOD = 3.0
LABEL_MAX_PERIOD = 12.0
SPEAKING_THRESHOLD = 0.25  # per-frame speech envelope above which the lips are parted


class Expression(IntEnum):
    """ABAW expression classes, in the order of the EXPR header."""

    NEUTRAL = 0
    ANGER = 1
    DISGUST = 2
    FEAR = 3
    HAPPINESS = 4
    SADNESS = 5
    SURPRISE = 6
    OTHER = 7


def valence_arousal_curve(rng: np.random.Generator, n_frames: int, fps: float) -> np.ndarray:
    """One smooth curve in [-1, 1] per frame, rounded to the precision written to the VA file."""
    times = np.arange(n_frames) / fps
    seconds = n_frames / fps
    min_period = min(LABEL_MIN_PERIOD, seconds / 2.0)
    max_period = min(LABEL_MAX_PERIOD, seconds * 1.2)
    curve = spanning_curve(rng, times, min_period, max_period)
    # Render from the rounded values so that the file is exactly what the media show.
    return np.round(curve, VA_DECIMALS)


def expression_classes(valence: np.ndarray, arousal: np.ndarray) -> np.ndarray:
    """(T,) int Expression per frame; the first matching rule wins (see docs/DEMO.md)."""
    v, a = valence, arousal
    rules = [
        (v >= 0.3, Expression.HAPPINESS),
        ((v <= -0.3) & (a >= 0.6), Expression.FEAR),
        ((v <= -0.3) & (a >= 0.3), Expression.ANGER),
        ((v <= -0.3) & (a <= -0.3), Expression.SADNESS),
        (v <= -0.3, Expression.DISGUST),
        (a >= 0.5, Expression.SURPRISE),
    ]
    result = np.full(v.shape, int(Expression.NEUTRAL), dtype=np.int64)
    decided = np.zeros(v.shape, dtype=bool)
    for condition, expression in rules:
        chosen = condition & ~decided
        result[chosen] = int(expression)
        decided |= condition
    return result


def action_units(valence: np.ndarray, arousal: np.ndarray, speaking: np.ndarray) -> np.ndarray:
    """(T, 12) int 0/1 in AU_NAMES order. ``speaking`` is the per-frame speech envelope in [0, 1]."""
    v, a = valence, arousal
    talking = speaking > SPEAKING_THRESHOLD
    negative = v <= -0.3
    columns = {
        "AU1": (a >= 0.5) | (negative & (a <= -0.3)),  # surprise, sadness
        "AU2": (a >= 0.5) & (np.abs(v) < 0.3),  # surprise
        "AU4": v <= -0.3,  # the rendered brow lowering
        "AU6": v >= 0.4,  # the rendered cheek raise
        "AU7": negative & (a >= 0.3),  # anger, fear
        "AU10": negative & (np.abs(a) < 0.3),  # disgust
        "AU12": v >= 0.2,  # the rendered smile
        "AU15": v <= -0.2,  # the rendered frown
        "AU23": negative & (a >= 0.3),
        "AU24": negative & (a <= -0.5),
        "AU25": talking,  # the rendered jaw motion with each syllable
        "AU26": talking & (a >= 0.3),
    }
    return np.stack([columns[name] for name in AU_NAMES], axis=1).astype(np.int64)


def unlabeled_stretch(rng: np.random.Generator, n_frames: int, fps: float) -> slice:
    """A short run of frames (0.4 to 1.2 s, away from the clip ends) left unannotated."""
    length = min(round(rng.uniform(0.4, 1.2) * fps), max(1, n_frames // 4))
    margin = n_frames // 8
    start = int(rng.integers(margin, max(margin + 1, n_frames - margin - length)))
    return slice(start, start + length)


def va_text(valence: np.ndarray, arousal: np.ndarray, unlabeled: slice | None) -> str:
    rows = [f"{v:.{VA_DECIMALS}f},{a:.{VA_DECIMALS}f}" for v, a in zip(valence, arousal, strict=True)]
    # "-0.000" would read back fine but Aff-Wild2 never writes it
    rows = [row.replace("-0.000", "0.000") for row in rows]
    if unlabeled is not None:
        rows[unlabeled] = ["-5,-5"] * len(rows[unlabeled])
    return "valence,arousal\n" + "\n".join(rows) + "\n"


def expr_text(expressions: np.ndarray, unlabeled: slice | None) -> str:
    rows = [str(int(e)) for e in expressions]
    if unlabeled is not None:
        rows[unlabeled] = ["-1"] * len(rows[unlabeled])
    header = ",".join(e.name.capitalize() for e in Expression)
    return header + "\n" + "\n".join(rows) + "\n"


def au_text(units: np.ndarray, unlabeled: slice | None) -> str:
    rows = [",".join(str(int(x)) for x in row) for row in units]
    if unlabeled is not None:
        rows[unlabeled] = [",".join(["-1"] * len(AU_NAMES))] * len(rows[unlabeled])
    return ",".join(AU_NAMES) + "\n" + "\n".join(rows) + "\n"
