"""k-fold cross-validation plans over the train + validation videos, grouped by subject.

Videos of one subject (the manifest's ``subject``: for Aff-Wild2 the ``_left``/``_right`` rows of one
video, the numbered parts of one recording and any subjects.csv grouping) always share a fold, so no
fold validates on a person it trained on. With ``validation_as_fold`` fold 0 is the official validation
set (ABAW2); the training subjects are spread over the other folds, balanced by frame count. A subject
with videos on both sides of the official split validates in fold 0 with all of its videos: those
official training videos are *moved*, logged and listed in ``FoldPlan.moved`` (the training summary
reports them). Test videos belong to no fold: every fold model predicts them and the predictions are
merged.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from avpipe.pipeline.config.train import FoldConfig
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.manifest import ManifestRow, Split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldPlan:
    """Video ids per fold (validation videos of fold i = ``folds[i]``), the videos every fold trains on
    (``train_only``: the training set when k = 1), and the test videos."""

    folds: tuple[tuple[str, ...], ...]
    test: tuple[str, ...]
    train_only: tuple[str, ...] = ()
    moved: tuple[str, ...] = ()  # official training videos validated in fold 0 with their subject

    @property
    def pool(self) -> list[str]:
        return [video for fold in self.folds for video in fold] + list(self.train_only)

    def train_videos(self, fold: int) -> list[str]:
        others = [video for i, videos in enumerate(self.folds) if i != fold for video in videos]
        return sorted(others + list(self.train_only))

    def fold_of(self) -> dict[str, int]:
        return {video: i for i, videos in enumerate(self.folds) for video in videos}

    def to_dict(self) -> dict[str, object]:
        return {
            "folds": [list(f) for f in self.folds],
            "train_only": list(self.train_only),
            "test": list(self.test),
            "moved_to_validation": list(self.moved),
        }


def make_folds(rows: list[ManifestRow], config: FoldConfig) -> FoldPlan:
    """Assign every train/validation video to one of ``config.k`` folds (deterministic in ``config.seed``)."""
    subjects: dict[str, list[ManifestRow]] = defaultdict(list)
    for row in rows:
        if row.split is not Split.TEST:
            subjects[row.subject or row.video_id].append(row)
    validation = sorted(s for s, group in subjects.items() if any(r.split is Split.VALIDATION for r in group))
    training = sorted(s for s in subjects if s not in set(validation))
    folds: list[list[str]] = [[] for _ in range(config.k)]
    train_only: list[str] = []
    if config.validation_as_fold:
        if not validation:
            raise ConfigError("train.folds.validation_as_fold", "the manifest has no validation videos")
        folds[0] = validation
        if config.k == 1:  # the official split: train on the training set, select on the validation set
            train_only = training
        _spread(training, subjects, folds[1:], config)
    else:
        _spread(sorted(subjects), subjects, folds, config)
    empty = [i for i, fold in enumerate(folds) if not fold]
    if empty:
        raise ConfigError(
            "train.folds.k",
            f"{config.k} folds leave fold {empty[0]} without videos: only {len(training)} training and "
            f"{len(validation)} validation subjects; lower k",
        )
    if config.k == 1 and not training:
        raise ConfigError("train.folds.k", "k = 1 trains on the training split, and the manifest has none")
    as_videos = tuple(tuple(sorted(r.video_id for s in fold for r in subjects[s])) for fold in folds)
    test = tuple(sorted(r.video_id for r in rows if r.split is Split.TEST))
    extra = tuple(sorted(r.video_id for s in train_only for r in subjects[s]))
    moved = _moved(validation, subjects) if config.validation_as_fold else ()
    return FoldPlan(folds=as_videos, test=test, train_only=extra, moved=moved)


def _moved(validation: list[str], subjects: dict[str, list[ManifestRow]]) -> tuple[str, ...]:
    """Official training videos of validation subjects; they validate in fold 0 (logged)."""
    moved = []
    for subject in validation:
        trained = sorted(r.video_id for r in subjects[subject] if r.split is Split.TRAIN)
        if trained:
            log.warning(
                "subject %r has videos in both official splits: its training videos %s validate in fold 0",
                subject,
                ", ".join(trained),
            )
            moved += trained
    if moved:
        log.warning("%d official training videos moved to the validation fold with their subject", len(moved))
    return tuple(moved)


def _spread(
    subject_ids: list[str], subjects: dict[str, list[ManifestRow]], folds: list[list[str]], config: FoldConfig
) -> None:
    """Shuffle (seeded), then give each subject, largest first, to the fold with the fewest frames."""
    if not folds:
        return
    order = list(np.random.default_rng(config.seed).permutation(len(subject_ids)))
    shuffled = [subject_ids[i] for i in order]
    size = {s: sum(max(r.n_frames, 1) for r in subjects[s]) for s in shuffled}
    totals = [0] * len(folds)
    for subject in sorted(shuffled, key=lambda s: -size[s]):  # stable: ties keep the shuffled order
        target = int(np.argmin(totals))
        folds[target].append(subject)
        totals[target] += size[subject]
    for fold in folds:
        fold.sort()
