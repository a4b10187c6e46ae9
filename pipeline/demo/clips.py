"""What each demo clip contains: length, split, subjects (face source, label curves, motion, light)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from avpipe.pipeline.config.demo import DemoConfig, Split
from avpipe.pipeline.demo.face_animation import FaceMotion, Lighting, plan_lighting, plan_motion
from avpipe.pipeline.demo.face_sources import FaceSourceName
from avpipe.pipeline.demo.labels import unlabeled_stretch, valence_arousal_curve
from avpipe.pipeline.demo.streams import Purpose, random_stream

TWO_PERSON_CLIP = 7  # clip number of the two-person clip (the last clip when there are fewer)
UNLABELED_PROBABILITY = 0.5  # chance that an annotation file has an unannotated stretch


class Task(StrEnum):
    """ABAW annotation tasks: the directory names under annotations/."""

    VA = "VA_Estimation_Challenge"
    EXPR = "EXPR_Recognition_Challenge"
    AU = "AU_Detection_Challenge"


class Position(StrEnum):
    """Where a subject sits in a two-person clip (Aff-Wild2 suffixes ``_left`` / ``_right``)."""

    LEFT = "left"
    RIGHT = "right"


@dataclass(frozen=True)
class SubjectPlan:
    annotation: str  # annotation file stem: demo_03, or demo_07_left
    position: Position | None
    face_source: FaceSourceName
    region: tuple[int, int, int]  # x offset, width, height of the subject's part of the frame
    valence: np.ndarray  # (T,) per frame
    arousal: np.ndarray  # (T,) per frame
    motion: FaceMotion
    lighting: Lighting
    unlabeled: dict[Task, slice | None]


@dataclass(frozen=True)
class ClipPlan:
    seed: int
    number: int
    name: str
    n_frames: int
    fps: float
    split: Split
    subjects: tuple[SubjectPlan, ...]

    @property
    def seconds(self) -> float:
        return self.n_frames / self.fps


def clip_name(number: int, n_clips: int) -> str:
    return f"demo_{number:0{max(2, len(str(n_clips)))}d}"


def two_person_clip_number(n_clips: int) -> int:
    return min(TWO_PERSON_CLIP, n_clips)


def plan_clip(cfg: DemoConfig, number: int) -> ClipPlan:
    """Everything random about clip ``number`` (1-based); it depends only on the seed and the number."""
    rng = random_stream(cfg.seed, number, Purpose.CLIP)
    n_frames = round(rng.uniform(cfg.min_seconds, cfg.max_seconds) * cfg.fps)
    name = clip_name(number, cfg.n_clips)
    split = Split.VALIDATION if number > cfg.n_clips - cfg.validation_clips else Split.TRAIN
    if number == two_person_clip_number(cfg.n_clips):
        half = cfg.width // 2
        layout = [
            (f"{name}_left", Position.LEFT, FaceSourceName.ASTRONAUT, (0, half, cfg.height)),
            (f"{name}_right", Position.RIGHT, FaceSourceName.CARPHONE, (half, cfg.width - half, cfg.height)),
        ]
    else:
        # alternate the two sources so that both appear in training and in validation
        source = FaceSourceName.ASTRONAUT if number % 2 else FaceSourceName.CARPHONE
        layout = [(name, None, source, (0, cfg.width, cfg.height))]
    subjects = tuple(
        _plan_subject(cfg, number, index, n_frames, *entry) for index, entry in enumerate(layout)
    )
    return ClipPlan(
        seed=cfg.seed,
        number=number,
        name=name,
        n_frames=n_frames,
        fps=cfg.fps,
        split=split,
        subjects=subjects,
    )


def _plan_subject(
    cfg: DemoConfig,
    number: int,
    index: int,
    n_frames: int,
    annotation: str,
    position: Position | None,
    source: FaceSourceName,
    region: tuple[int, int, int],
) -> SubjectPlan:
    def stream(purpose: Purpose) -> np.random.Generator:
        return random_stream(cfg.seed, number, purpose, subject=index)

    _, width, height = region
    unlabeled_rng = stream(Purpose.UNLABELED)
    unlabeled = {}
    for task in Task:
        # the first clip always has one, so that every dataset exercises the "unlabeled" codes
        has_gap = unlabeled_rng.random() < UNLABELED_PROBABILITY or number == 1
        unlabeled[task] = unlabeled_stretch(unlabeled_rng, n_frames, cfg.fps) if has_gap else None
    return SubjectPlan(
        annotation=annotation,
        position=position,
        face_source=source,
        region=region,
        valence=valence_arousal_curve(stream(Purpose.VALENCE), n_frames, cfg.fps),
        arousal=valence_arousal_curve(stream(Purpose.AROUSAL), n_frames, cfg.fps),
        motion=plan_motion(stream(Purpose.MOTION), n_frames, cfg.fps, width, height),
        lighting=plan_lighting(stream(Purpose.LIGHTING), n_frames, cfg.fps),
        unlabeled=unlabeled,
    )
