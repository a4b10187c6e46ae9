"""Build the synthetic demo dataset in the Aff-Wild2 / ABAW layout (docs/DEMO.md)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avpipe.pipeline.config.demo import DemoConfig, Split
from avpipe.pipeline.demo.clips import ClipPlan, SubjectPlan, Task, plan_clip, two_person_clip_number
from avpipe.pipeline.demo.encode import Mp4Writer
from avpipe.pipeline.demo.face_animation import FaceState, apply_lighting, render_face
from avpipe.pipeline.demo.face_sources import FaceSource, FaceSourceName, load_face_source
from avpipe.pipeline.demo.guard import MANIFEST_NAME, check_replaceable
from avpipe.pipeline.demo.labels import action_units, au_text, expr_text, expression_classes, va_text
from avpipe.pipeline.demo.speech import per_frame_mean, synthesize_voice, turn_taking
from avpipe.pipeline.demo.streams import Purpose, random_stream
from avpipe.pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
PEAK_LIMIT = 0.99


def build_demo_dataset(cfg: DemoConfig) -> Path:
    """Generate every clip, its labels and ``demo.json`` under ``cfg.root``; return the root.

    The dataset is built in a sibling staging directory and moved into place at the end, so an
    interrupted build never leaves a half-written dataset behind.
    """
    root = Path(cfg.root)
    check_replaceable(root)
    absolute = root.resolve()
    if not absolute.name:
        raise ConfigError("demo.root", f"{cfg.root!r} is a filesystem root; name a directory inside one")
    staging = absolute.with_name(absolute.name + ".building")
    if staging.exists():
        shutil.rmtree(staging)
    started = time.monotonic()
    sources = {name: load_face_source(name) for name in FaceSourceName}
    plans = [plan_clip(cfg, number) for number in range(1, cfg.n_clips + 1)]
    with tqdm(
        total=sum(p.n_frames for p in plans), unit="frame", desc="demo dataset", disable=None
    ) as progress:
        for plan in plans:
            _build_clip(plan, sources, staging, cfg.sample_rate, progress)
    _write_manifest(staging, cfg, plans)
    if root.exists():
        shutil.rmtree(root)
    staging.rename(root)
    logger.info("built %d demo clips in %s (%.1f s)", len(plans), root, time.monotonic() - started)
    return root


def _build_clip(
    plan: ClipPlan, sources: dict[FaceSourceName, FaceSource], staging: Path, sample_rate: int, progress: tqdm
) -> None:
    audio, mouth_open = _synthesize_audio(plan, sample_rate)
    for subject, speaking in zip(plan.subjects, mouth_open, strict=True):
        _write_labels(staging, plan.split, subject, speaking)
    video = staging / "videos" / f"{plan.name}.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    width = sum(subject.region[1] for subject in plan.subjects)
    height = plan.subjects[0].region[2]
    with Mp4Writer(video, (width, height), plan.fps, audio, sample_rate) as writer:
        for frame in range(plan.n_frames):
            regions = [
                _render_subject(subject, sources[subject.face_source], frame, plan.fps, float(opening[frame]))
                for subject, opening in zip(plan.subjects, mouth_open, strict=True)
            ]
            writer.write(np.concatenate(regions, axis=1) if len(regions) > 1 else regions[0])
            progress.update(1)


def _synthesize_audio(plan: ClipPlan, sample_rate: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The clip's mono audio and, per subject, the per-frame syllable envelope (mouth opening)."""
    n_samples = round(plan.seconds * sample_rate)
    if len(plan.subjects) == 1:
        turns = [None]
    else:
        turns = list(
            turn_taking(random_stream(plan.seed, plan.number, Purpose.TURNS), n_samples, sample_rate)
        )
    audio = np.zeros(n_samples, dtype=np.float32)
    mouth_open = []
    for index, (subject, active) in enumerate(zip(plan.subjects, turns, strict=True)):
        rng = random_stream(plan.seed, plan.number, Purpose.SPEECH, subject=index)
        voice = synthesize_voice(rng, subject.arousal, plan.fps, sample_rate, n_samples, active)
        audio += voice.samples
        mouth_open.append(per_frame_mean(voice.envelope, plan.fps, sample_rate, plan.n_frames))
    return np.clip(audio, -PEAK_LIMIT, PEAK_LIMIT), mouth_open


def _render_subject(
    subject: SubjectPlan, source: FaceSource, frame: int, fps: float, mouth_open: float
) -> np.ndarray:
    index = source.frame_at(frame / fps + subject.motion.source_offset)
    valence = float(subject.valence[frame])
    state = FaceState(frame=frame, valence=valence, mouth_open=mouth_open)
    _, width, height = subject.region
    region = render_face(
        source.frames[index],
        source.landmarks[index],
        subject.motion,
        state,
        (width, height),
        source.style,
    )
    return apply_lighting(region, subject.lighting, frame, valence)


def _write_labels(staging: Path, split: Split, subject: SubjectPlan, speaking: np.ndarray) -> None:
    texts = {
        Task.VA: va_text(subject.valence, subject.arousal, subject.unlabeled[Task.VA]),
        Task.EXPR: expr_text(
            expression_classes(subject.valence, subject.arousal), subject.unlabeled[Task.EXPR]
        ),
        Task.AU: au_text(
            action_units(subject.valence, subject.arousal, speaking), subject.unlabeled[Task.AU]
        ),
    }
    for task, text in texts.items():
        path = staging / "annotations" / task.value / split.value / f"{subject.annotation}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _write_manifest(staging: Path, cfg: DemoConfig, plans: list[ClipPlan]) -> None:
    facts = {
        "format_version": FORMAT_VERSION,
        "description": "avpipe synthetic demo dataset (docs/DEMO.md); Aff-Wild2 / ABAW layout",
        "seed": cfg.seed,
        "config": asdict(cfg),
        "two_person_clip": plans[two_person_clip_number(cfg.n_clips) - 1].name,
        "clips": [_clip_facts(plan) for plan in plans],
    }
    (staging / MANIFEST_NAME).write_text(json.dumps(facts, indent=2) + "\n")


def _clip_facts(plan: ClipPlan) -> dict:
    return {
        "name": plan.name,
        "video": f"videos/{plan.name}.mp4",
        "seconds": plan.seconds,
        "n_frames": plan.n_frames,
        "fps": plan.fps,
        "split": plan.split.value,
        "face_source": "+".join(subject.face_source.value for subject in plan.subjects),
        "subjects": [
            {
                "annotation": subject.annotation,
                "position": subject.position.value if subject.position else None,
                "face_source": subject.face_source.value,
                "mirrored": subject.motion.mirrored,
                "unlabeled_frames": {
                    task.name: [gap.start, gap.stop] if gap else None
                    for task, gap in subject.unlabeled.items()
                },
            }
            for subject in plan.subjects
        ],
    }
