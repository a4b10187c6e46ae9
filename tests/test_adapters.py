"""Dataset adapters (affwild2, folder), their label readers, and label alignment on real video timelines."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.adapters import (
    Candidate,
    DatasetAdapter,
    Scan,
    adapter_names,
    create_adapter,
    register_adapter,
)
from avpipe.pipeline.adapters.affwild2 import read_annotation
from avpipe.pipeline.adapters.folder import read_label_csv
from avpipe.pipeline.config.dataset import DatasetConfig
from avpipe.pipeline.config.labels import LabelConfig
from avpipe.pipeline.errors import ConfigError, LabelError
from avpipe.pipeline.labels import (
    AU_NAMES,
    EXPRESSION_NAMES,
    UNLABELED_AU,
    UNLABELED_EXPRESSION,
    UNLABELED_VA,
    LabelTask,
    RawLabels,
    align_labels,
)
from avpipe.pipeline.manifest import FailureStage, Split, SubjectPosition
from avpipe.pipeline.timeline import video_timeline
from tests.media_factory import make_video

FPS = 10.0
N_FRAMES = 10  # 1 s at 10 fps

VA_HEADER = "valence,arousal"
EXPR_HEADER = ",".join(EXPRESSION_NAMES)
AU_HEADER = ",".join(AU_NAMES)


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-frame video the adapters copy into their trees."""
    return make_video(
        tmp_path_factory.mktemp("media") / "clip.mp4", seconds=N_FRAMES / FPS, fps=FPS, audio=False
    )


def put(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def copy_video(clip: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(clip, path)
    return path


def va_rows(values: list[tuple[float, float]]) -> str:
    return VA_HEADER + "\n" + "".join(f"{v},{a}\n" for v, a in values)


def expr_rows(values: list[int]) -> str:
    return EXPR_HEADER + "\n" + "".join(f"{v}\n" for v in values)


def au_rows(rows: list[list[int]]) -> str:
    return AU_HEADER + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)


# --------------------------------------------------------------------------- registry and config


def test_registry_lists_builtin_adapters_and_rejects_unknown_names(tmp_path: Path) -> None:
    assert {"affwild2", "folder"} <= set(adapter_names())
    with pytest.raises(ConfigError) as err:
        create_adapter("affwild3", tmp_path)
    assert err.value.key == "dataset.adapter"
    assert "affwild2" in str(err.value) and "folder" in str(err.value)


class SingleVideoAdapter(DatasetAdapter):
    """A dataset of one video, as a plug-in adapter would register it."""

    name = "test-single-video"

    def scan(self) -> Scan:
        video = next(iter(self.video_files(self.root)))
        return Scan(candidates=[Candidate(video.stem, video, video.stem, Split.TEST)])

    def read_labels(self, candidate: Candidate) -> RawLabels:
        return RawLabels()


def test_register_adapter_makes_a_new_layout_available(tmp_path: Path, clip: Path) -> None:
    register_adapter(SingleVideoAdapter)
    assert "test-single-video" in adapter_names()
    copy_video(clip, tmp_path / "only.mp4")
    (candidate,) = create_adapter("test-single-video", tmp_path).scan().candidates
    assert candidate.video_id == "only" and candidate.split is Split.TEST

    class Impostor(SingleVideoAdapter):
        pass

    with pytest.raises(TypeError, match="registered twice"):
        register_adapter(Impostor)


def test_missing_root_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as err:
        create_adapter("folder", missing)
    assert err.value.key == "dataset.root" and str(missing) in str(err.value)
    with pytest.raises(ConfigError, match="does not exist"):
        DatasetConfig(root=str(missing)).require_root()


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"fps": 0.0}, "dataset.fps"),
        ({"adapter": "nope"}, "dataset.adapter"),
        ({"video_extensions": []}, None),
    ],
)
def test_dataset_config_validation(options: dict, key: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        DatasetConfig(**options)
    assert err.value.key == (key or "dataset.video_extensions")


def test_dataset_config_normalizes_extensions() -> None:
    assert DatasetConfig(video_extensions=["MP4", ".Avi", "mp4"]).video_extensions == [".mp4", ".avi"]


# --------------------------------------------------------------------------- Aff-Wild2


@pytest.fixture
def affwild_tree(tmp_path: Path, clip: Path) -> Path:
    root = tmp_path / "affwild2"
    copy_video(clip, root / "videos" / "batch1" / "video5.mp4")
    copy_video(clip, root / "videos" / "batch2" / "10-60-1280x720.mp4")
    ann = root / "annotations"
    put(
        ann / "VA_Estimation_Challenge" / "Train_Set" / "video5.txt",
        va_rows([(0.5, -0.25), (-5, -5), (1, -1)]),
    )
    put(ann / "EXPR_Recognition_Challenge" / "Train_Set" / "video5.txt", expr_rows([4, -1, 0]))
    put(ann / "AU_Detection_Challenge" / "Train_Set" / "video5.txt", au_rows([[1] * 12, [-1] * 12, [0] * 12]))
    put(ann / "VA_Estimation_Challenge" / "Validation_Set" / "10-60-1280x720_left.txt", va_rows([(0.1, 0.2)]))
    put(
        ann / "VA_Estimation_Challenge" / "Validation_Set" / "10-60-1280x720_right.txt", va_rows([(0.3, 0.4)])
    )
    put(ann / "MTL_Challenge" / "train_set.txt", "ignored\n")
    return root


def test_affwild2_one_row_per_annotated_subject_with_tasks_merged(affwild_tree: Path) -> None:
    scan = create_adapter("affwild2", affwild_tree).scan()
    assert scan.failures == []
    by_id = {c.video_id: c for c in scan.candidates}
    assert sorted(by_id) == ["10-60-1280x720_left", "10-60-1280x720_right", "video5"]

    video5 = by_id["video5"]
    assert set(video5.labels) == {LabelTask.VA, LabelTask.EXPR, LabelTask.AU}
    assert video5.split is Split.TRAIN and video5.subject_position is None and video5.subject == "video5"
    assert video5.media_path == (affwild_tree / "videos" / "batch1" / "video5.mp4").resolve()

    left, right = by_id["10-60-1280x720_left"], by_id["10-60-1280x720_right"]
    assert (
        left.media_path == right.media_path == (affwild_tree / "videos/batch2/10-60-1280x720.mp4").resolve()
    )
    assert (left.subject_position, right.subject_position) == (SubjectPosition.LEFT, SubjectPosition.RIGHT)
    assert left.subject == right.subject == "10-60-1280x720"
    assert left.split is Split.VALIDATION and set(left.labels) == {LabelTask.VA}


def test_affwild2_reads_unlabeled_codes_of_every_task(affwild_tree: Path) -> None:
    adapter = create_adapter("affwild2", affwild_tree)
    video5 = next(c for c in adapter.scan().candidates if c.video_id == "video5")
    tracks = {t.task: t for t in adapter.read_labels(video5).tracks}
    np.testing.assert_array_equal(tracks[LabelTask.VA].values, [[0.5, -0.25], [-5, -5], [1, -1]])
    np.testing.assert_array_equal(tracks[LabelTask.EXPR].values, [4, -1, 0])
    assert tracks[LabelTask.AU].values.shape == (3, 12) and tracks[LabelTask.AU].values.dtype == np.int8
    np.testing.assert_array_equal(tracks[LabelTask.AU].values[:, 0], [1, -1, 0])
    np.testing.assert_array_equal(tracks[LabelTask.VA].keys, [0, 1, 2])


def test_affwild2_accepts_other_official_folder_names(tmp_path: Path, clip: Path) -> None:
    root = tmp_path / "abaw"
    copy_video(clip, root / "videos" / "new_vids" / "video7.avi")
    ann = root / "annotations" / "6th_ABAW_Annotations"
    put(ann / "va_set" / "Training_Set" / "video7.txt", va_rows([(0, 0)]))
    put(ann / "EXPR_Classification_Challenge" / "validation_set" / "video7.txt", expr_rows([1]))
    put(ann / "AU_Set" / "Valid_Set" / "video7.txt", au_rows([[0] * 12]))
    (candidate,) = create_adapter("affwild2", root).scan().candidates
    assert set(candidate.labels) == {LabelTask.VA, LabelTask.EXPR, LabelTask.AU}
    # the tasks disagree on the split: the VA split is kept and the disagreement noted
    assert candidate.split is Split.TRAIN
    assert any("va=train" in note and "expr=validation" in note for note in candidate.notes)


def test_affwild2_annotation_without_video_is_a_discover_failure(affwild_tree: Path) -> None:
    orphan = put(
        affwild_tree / "annotations/VA_Estimation_Challenge/Train_Set/video99.txt", va_rows([(0, 0)])
    )
    scan = create_adapter("affwild2", affwild_tree).scan()
    assert "video99" not in {c.video_id for c in scan.candidates}
    (failure,) = scan.failures
    assert failure.path == str(orphan) and failure.stage == FailureStage.DISCOVER
    assert "video99" in failure.reason


def test_affwild2_same_task_in_two_sets_is_a_failure(affwild_tree: Path) -> None:
    put(affwild_tree / "annotations/VA_Estimation_Challenge/Validation_Set/video5.txt", va_rows([(0, 0)]))
    scan = create_adapter("affwild2", affwild_tree).scan()
    assert "video5" not in {c.video_id for c in scan.candidates}
    assert any("2 va annotation files" in f.reason for f in scan.failures)


@pytest.mark.parametrize(
    ("task", "text", "line", "problem"),
    [
        (LabelTask.VA, "valence;arousal\n0,0\n", 1, "bad header"),
        (LabelTask.VA, VA_HEADER + "\n0.1,0.2\n0.3,abc\n", 3, "not a number"),
        (LabelTask.VA, VA_HEADER + "\n0.1,0.2\n1.5,0\n", 3, "outside [-1, 1]"),
        (LabelTask.VA, VA_HEADER + "\n0.1\n", 2, "expected 2"),
        (LabelTask.VA, VA_HEADER + "\n0,0\n\n0,0\n", 3, "expected 2"),
        (LabelTask.EXPR, EXPR_HEADER + "\n0\n8\n", 3, "outside -1..7"),
        (LabelTask.EXPR, EXPR_HEADER + "\n1.5\n", 2, "not an integer"),
        (LabelTask.AU, AU_HEADER + "\n" + ",".join(["0"] * 11 + ["2"]) + "\n", 2, "AU26 2"),
        (LabelTask.AU, "AU1,AU2\n0,1\n", 1, "bad header"),
    ],
)
def test_bad_annotation_names_file_and_line(
    tmp_path: Path, task: LabelTask, text: str, line: int, problem: str
) -> None:
    path = put(tmp_path / "video1.txt", text)
    with pytest.raises(LabelError) as err:
        read_annotation(task, path)
    assert err.value.path == str(path)
    assert f"line {line}:" in err.value.reason and problem in err.value.reason


def test_empty_annotation_file_is_a_label_error(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="empty file"):
        read_annotation(LabelTask.EXPR, put(tmp_path / "v.txt", ""))


# --------------------------------------------------------------------------- folder


@pytest.fixture
def folder_tree(tmp_path: Path, clip: Path) -> Path:
    root = tmp_path / "clips"
    copy_video(clip, root / "alice" / "take1.mp4")
    copy_video(clip, root / "bob" / "take1.MOV")
    copy_video(clip, root / "loose.mkv")
    put(root / "alice" / "notes.txt", "not a video\n")
    put(root / "alice" / "take1.csv", "frame,valence,arousal,expression\n0,0.5,0.5,4\n3,-0.5,,2\n")
    put(root / "bob" / "take1.csv", "time,AU12,AU25\n0.0,1,0\n0.55,0,1\n")
    put(root / "splits.csv", "video_id,split,subject\nalice/take1,validation,alice\nbob/take1,test,\n")
    return root


def test_folder_adapter_ids_splits_and_label_files(folder_tree: Path) -> None:
    scan = create_adapter("folder", folder_tree).scan()
    by_id = {c.video_id: c for c in scan.candidates}
    assert sorted(by_id) == ["alice/take1", "bob/take1", "loose"]
    assert by_id["alice/take1"].split is Split.VALIDATION and by_id["alice/take1"].subject == "alice"
    assert by_id["bob/take1"].split is Split.TEST and by_id["bob/take1"].subject == "bob/take1"
    assert by_id["loose"].split is Split.TRAIN and by_id["loose"].labels == {}
    assert set(by_id["alice/take1"].labels) == {"valence", "arousal", "expression"}
    assert set(by_id["bob/take1"].labels) == {"au"}


def test_folder_adapter_extensions_are_configurable(folder_tree: Path) -> None:
    scan = create_adapter("folder", folder_tree, video_extensions=["mkv"]).scan()
    assert [c.video_id for c in scan.candidates] == ["loose"]


def test_folder_without_splits_file_is_all_train(folder_tree: Path) -> None:
    (folder_tree / "splits.csv").unlink()
    assert {c.split for c in create_adapter("folder", folder_tree).scan().candidates} == {Split.TRAIN}


def test_folder_bad_splits_file_names_the_line(folder_tree: Path) -> None:
    put(folder_tree / "splits.csv", "video_id,split\nalice/take1,train\nloose,holdout\n")
    with pytest.raises(LabelError) as err:
        create_adapter("folder", folder_tree).scan()
    assert "line 3" in err.value.reason and "holdout" in err.value.reason


def test_folder_frame_keyed_labels_on_the_video_timeline(folder_tree: Path) -> None:
    adapter = create_adapter("folder", folder_tree)
    alice = next(c for c in adapter.scan().candidates if c.video_id == "alice/take1")
    labels, note = align_labels(adapter.read_labels(alice), video_timeline(alice.media_path))
    assert len(labels) == N_FRAMES
    np.testing.assert_allclose(labels.valence_arousal[0], [0.5, 0.5])
    np.testing.assert_allclose(labels.valence_arousal[3], [-0.5, UNLABELED_VA])  # empty cell = unlabeled
    assert labels.expression[0] == 4 and labels.expression[3] == 2
    assert np.all(labels.expression[[1, 2, 4, 5, 6, 7, 8, 9]] == UNLABELED_EXPRESSION)
    assert np.all(labels.action_units == UNLABELED_AU)
    assert "8 frames without a row left unlabeled" in note


def test_folder_time_keyed_labels_sparse_rule_goes_to_the_nearest_frame(folder_tree: Path) -> None:
    # resample: sparse (each row to one frame, the old rule). 0.46 and 0.53 share the frame at 0.5 s,
    # where the nearer 0.53 wins; 0.57 goes to the frame at 0.6 s
    put(folder_tree / "bob" / "take1.csv", "time,AU12,AU25\n0.0,1,0\n0.53,0,1\n0.46,1,0\n0.57,1,1\n5.0,1,1\n")
    config = LabelConfig(resample={"au": "sparse"})
    adapter = create_adapter("folder", folder_tree, labels=config)
    bob = next(c for c in adapter.scan().candidates if c.video_id == "bob/take1")
    timeline = video_timeline(bob.media_path)
    labels, note = align_labels(adapter.read_labels(bob), timeline, config)
    au12, au25 = AU_NAMES.index("AU12"), AU_NAMES.index("AU25")
    frame_05 = int(np.argmin(np.abs(timeline.time - 0.5)))
    frame_06 = int(np.argmin(np.abs(timeline.time - 0.6)))
    assert labels.action_units[0, au12] == 1 and labels.action_units[0, au25] == 0
    assert labels.action_units[frame_05, au12] == 0 and labels.action_units[frame_05, au25] == 1
    assert labels.action_units[frame_06, au12] == 1
    assert int(labels.task_mask(LabelTask.AU).sum()) == 3
    assert "1 of 5 timed rows" in note  # the row at 5 s is past the last frame


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("frame,valence,dominance\n0,0.1,3\n", "unknown column 'dominance'"),
        ("frame,valence@\n0,0.1\n", "unknown column 'valence@'"),
        ("frame,expression@r1\n0,1\n", "unknown column 'expression@r1'"),
        ("time,expression\n0.5,1\n0.5,2\n", "line 3: time 0.5 already labeled on line 2"),
        ("expression\n1\n2\n", "one row (the clip's label) expected"),
        ("frame,expression\n0,Joy\n", "line 2: expression 'Joy' is not one of"),
        ("frame,time,expression\n0,0,1\n", "at most one of"),
        ("frame,expression,mood\n0,1,happy\n", "unknown column 'mood'"),
        ("frame,expression\n0,1\n0,2\n", "line 3: frame 0 already labeled on line 2"),
        ("frame,expression\n-1,1\n", "line 2: frame -1 is negative"),
        ("time,valence,arousal\n0.0,0.1,1.2\n", "line 2: arousal 1.2 is outside"),
        ("frame,AU4\n0,3\n", "line 2: AU4 3"),
        ("frame,expression\n0,1,7\n", "line 2: expected 2 values"),
    ],
)
def test_folder_bad_label_csv_names_file_and_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = put(tmp_path / "clip.csv", text)
    with pytest.raises(LabelError) as err:
        read_label_csv(path)
    assert err.value.path == str(path) and problem in err.value.reason


# --------------------------------------------------------------------------- alignment rule


@pytest.mark.parametrize("n_rows", [N_FRAMES + 3, N_FRAMES - 3, N_FRAMES])
def test_frame_rows_longer_or_shorter_than_the_video(tmp_path: Path, clip: Path, n_rows: int) -> None:
    values = [(round(i / 20, 2), -round(i / 20, 2)) for i in range(n_rows)]
    track = read_annotation(LabelTask.VA, put(tmp_path / "v.txt", va_rows(values)))
    timeline = video_timeline(clip)
    assert len(timeline) == N_FRAMES
    labels, note = align_labels(RawLabels([track]), timeline)
    assert labels.valence_arousal.shape == (N_FRAMES, 2) and labels.valence_arousal.dtype == np.float32
    kept = min(n_rows, N_FRAMES)
    np.testing.assert_allclose(labels.valence_arousal[:kept], np.asarray(values[:kept], dtype=np.float32))
    assert np.all(labels.valence_arousal[kept:] == UNLABELED_VA)
    if n_rows > N_FRAMES:
        assert note == f"va: labels have {n_rows} rows, video has {N_FRAMES} frames: 3 extra rows dropped"
    elif n_rows < N_FRAMES:
        assert note == (
            f"va: labels have {n_rows} rows, video has {N_FRAMES} frames: "
            "3 frames without a row left unlabeled"
        )
    else:
        assert note == ""


def test_labels_follow_frame_index_on_a_resampled_timeline(tmp_path: Path, clip: Path) -> None:
    track = read_annotation(
        LabelTask.EXPR, put(tmp_path / "e.txt", expr_rows([i % 8 for i in range(N_FRAMES)]))
    )
    timeline = video_timeline(clip, fps=5.0)
    labels, _ = align_labels(RawLabels([track]), timeline)
    np.testing.assert_array_equal(labels.expression, timeline.frame_index % 8)
