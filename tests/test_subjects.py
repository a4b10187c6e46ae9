"""Folds group people: Aff-Wild2's parts of one recording, the _left/_right rows of one video and a
user's subjects.csv share a subject; no fold trains and validates on the same person; videos moved
across the official split with their subject are counted."""

from __future__ import annotations

import itertools
import logging

import pytest

from avpipe.models.folds import make_folds
from avpipe.pipeline.adapters import create_adapter
from avpipe.pipeline.config.train import FoldConfig
from avpipe.pipeline.errors import LabelError
from avpipe.pipeline.manifest import ManifestRow, Split

# annotation name -> (official split, the person it shows: written by hand from the naming rules)
ANNOTATIONS = {
    "5-60-1920x1080-1": (Split.TRAIN, "5-60-1920x1080"),
    "5-60-1920x1080-2": (Split.TRAIN, "5-60-1920x1080"),
    "5-60-1920x1080-3": (Split.VALIDATION, "5-60-1920x1080"),  # a recording straddling the split
    "5-60-1920x1080-4": (Split.TRAIN, "5-60-1920x1080"),
    "30-30-640x480-1": (Split.TRAIN, "30-30-640x480"),
    "30-30-640x480-2": (Split.TRAIN, "30-30-640x480"),
    "30-30-640x480-3": (Split.TRAIN, "30-30-640x480"),
    "12-24-1280x720_left": (Split.TRAIN, "12-24-1280x720"),
    "12-24-1280x720_right": (Split.TRAIN, "12-24-1280x720"),
    "44-25-854x480-2_left": (Split.TRAIN, "44-25-854x480"),  # a part with two people
    "44-25-854x480-1_right": (Split.TRAIN, "44-25-854x480"),
    "video7": (Split.TRAIN, "alice"),  # grouped by subjects.csv
    "video8": (Split.VALIDATION, "alice"),
    "video9-2": (Split.TRAIN, "video9-2"),  # not a <W>x<H> part: stays itself
    "video10": (Split.VALIDATION, "video10"),
    "video11": (Split.TEST, "video11"),
    **{f"video{i}": (Split.TRAIN, f"video{i}") for i in range(20, 32)},
}
SET = {Split.TRAIN: "Train_Set", Split.VALIDATION: "Validation_Set", Split.TEST: "Test_Set"}


@pytest.fixture(scope="module")
def affwild_rows(tmp_path_factory) -> list[ManifestRow]:
    root = tmp_path_factory.mktemp("affwild")
    for name, (split, _) in ANNOTATIONS.items():
        video = name.removesuffix("_left").removesuffix("_right")
        (root / "videos").mkdir(exist_ok=True)
        (root / "videos" / f"{video}.mp4").write_bytes(b"")
        folder = root / "annotations" / "VA_Estimation_Challenge" / SET[split]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.txt").write_text("valence,arousal\n0.1,0.2\n")
    (root / "subjects.csv").write_text("video_id,subject\nvideo7,alice\nvideo8,alice\n")
    scan = create_adapter("affwild2", root).scan()
    assert scan.failures == []
    return [
        ManifestRow(
            video_id=c.video_id,
            media_path=str(c.media_path),
            split=c.split,
            subject=c.subject,
            n_frames=100 + 10 * i,
            notes="; ".join(c.notes),
        )
        for i, c in enumerate(scan.candidates)
    ]


def test_affwild2_subjects_merge_parts_positions_and_subjects_csv(affwild_rows):
    assert {row.video_id: row.subject for row in affwild_rows} == {
        name: person for name, (_, person) in ANNOTATIONS.items()
    }
    notes = {row.video_id: row.notes for row in affwild_rows}
    assert "a numbered part of that recording" in notes["5-60-1920x1080-3"]
    assert "from subjects.csv" in notes["video8"]
    assert notes["12-24-1280x720_left"] == notes["video20"] == ""  # no rule beyond _left/_right acted


@pytest.mark.parametrize(
    ("k", "validation_as_fold", "seed"),
    [(1, True, 0), *itertools.product((2, 3, 5), (True, False), (0, 1, 7))],
)
def test_no_subject_is_on_both_sides_of_any_fold(affwild_rows, k, validation_as_fold, seed):
    person = {name: who for name, (_, who) in ANNOTATIONS.items()}
    plan = make_folds(affwild_rows, FoldConfig(k=k, seed=seed, validation_as_fold=validation_as_fold))
    for fold, validation in enumerate(plan.folds):
        trained = {person[v] for v in plan.train_videos(fold)}
        validated = {person[v] for v in validation}
        assert trained.isdisjoint(validated), f"fold {fold} trains and validates on {trained & validated}"
    assert sorted(plan.pool) == sorted(n for n, (s, _) in ANNOTATIONS.items() if s is not Split.TEST)


def test_moves_across_the_official_split_are_logged_and_counted(affwild_rows, caplog):
    with caplog.at_level(logging.WARNING):
        plan = make_folds(affwild_rows, FoldConfig(k=3, seed=0))
    assert plan.moved == ("5-60-1920x1080-1", "5-60-1920x1080-2", "5-60-1920x1080-4", "video7")
    assert set(plan.moved) <= set(plan.folds[0])
    assert plan.to_dict()["moved_to_validation"] == list(plan.moved)
    assert "4 official training videos moved to the validation fold" in caplog.text
    assert make_folds(affwild_rows, FoldConfig(k=3, validation_as_fold=False)).moved == ()


def test_a_bad_subjects_csv_names_the_file_and_line(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "subjects.csv").write_text("video_id,subject\nvideo7,alice\nvideo7,bob\n")
    with pytest.raises(LabelError, match=r"subjects.csv: line 3: 'video7' is listed twice"):
        create_adapter("affwild2", tmp_path).scan()
    (tmp_path / "subjects.csv").write_text("video,who\nvideo7,alice\n")
    with pytest.raises(LabelError, match=r"subjects.csv: line 1: needs the columns video_id,subject"):
        create_adapter("affwild2", tmp_path).scan()
