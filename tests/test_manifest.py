"""Manifest CSV round trips and the manifest stage end to end on real media."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from avpipe.cli import main as cli_main
from avpipe.pipeline.config import StoreConfig
from avpipe.pipeline.config.dataset import DatasetConfig
from avpipe.pipeline.config.manifest import ManifestConfig
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.labels import AU_NAMES, EXPRESSION_NAMES, LABELS_EXTRACTOR, UNLABELED_VA, FrameLabels
from avpipe.pipeline.manifest import (
    MANIFEST_COLUMNS,
    Failure,
    FailureStage,
    ManifestError,
    ManifestRow,
    Split,
    SubjectPosition,
    read_failures,
    read_manifest,
    write_failures,
    write_manifest,
)
from avpipe.pipeline.manifest_builder import build_manifest, labels_hash
from avpipe.pipeline.media import probe
from avpipe.pipeline.store import FeatureStore, ShardStatus
from avpipe.pipeline.timeline import video_timeline
from tests.media_factory import make_empty_file, make_text_file, make_video

FPS = 10.0
N_FRAMES = 12


# --------------------------------------------------------------------------- CSV round trips


def full_row(video_id: str, **changes: object) -> ManifestRow:
    values: dict = {
        "video_id": video_id,
        "media_path": f"/data/videos/{video_id}.mp4",
        "subject": "10-60-1280x720",
        "subject_position": SubjectPosition.LEFT,
        "split": Split.VALIDATION,
        "labels": {"va": "/a/va, with comma.txt", "au": "/a/au.txt"},
        "container": "mov,mp4,m4a,3gp,3g2,mj2",
        "size_bytes": 123456,
        "duration": 40.04,
        "video_codec": "h264",
        "width": 1280,
        "height": 720,
        "rotation": 90,
        "avg_fps": 29.97002997002997,
        "is_vfr": True,
        "n_frames": 1200,
        "video_start": 0.0333,
        "has_audio": True,
        "audio_codec": "aac",
        "audio_sample_rate": 44100,
        "audio_channels": 2,
        "audio_start": -0.021,
        "label_rows": {"va": 1203, "au": 1197},
        "labeled_frames": 1150,
        "notes": 'va: labels have 1203 rows; "quoted"',
    }
    values.update(changes)
    return ManifestRow(**values)


def test_manifest_round_trip_keeps_every_field(tmp_path: Path) -> None:
    rows = [
        full_row("10-60-1280x720_left"),
        full_row(
            "video5",
            subject_position=None,
            split="train",
            labels={},
            has_audio=False,
            audio_codec=None,
            audio_sample_rate=None,
            audio_channels=None,
            audio_start=None,
            notes="",
        ),
    ]
    path = write_manifest(rows, tmp_path / "out" / "manifest.csv")
    assert read_manifest(path) == rows
    assert path.read_text().splitlines()[0] == ",".join(MANIFEST_COLUMNS)
    assert [p.name for p in path.parent.iterdir()] == ["manifest.csv"]  # no temporary file left behind


def test_manifest_rejects_duplicate_ids(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="duplicate video_id 'a'"):
        write_manifest([full_row("a"), full_row("a")], tmp_path / "m.csv")


def test_reading_a_missing_or_broken_manifest_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "none.csv")
    path = write_manifest([full_row("a"), full_row("b")], tmp_path / "m.csv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1], lines[2].replace(",true,", ",yes,", 1)]) + "\n")
    with pytest.raises(ManifestError, match=r"line 3, column is_vfr: expected true or false"):
        read_manifest(path)
    path.write_text(lines[0].replace(",notes", "") + "\n")
    with pytest.raises(ManifestError, match="missing: notes"):
        read_manifest(path)


def test_failures_round_trip(tmp_path: Path) -> None:
    failures = [
        Failure("/d/a.mp4", FailureStage.PROBE.value, "file is empty (0 bytes)"),
        Failure("/d/va.txt", "labels", "video1: line 3: valence, not a number"),
    ]
    path = write_failures(failures, tmp_path / "failures.csv")
    assert read_failures(path) == failures
    assert read_failures(write_failures([], tmp_path / "none.csv")) == []


def test_manifest_config_paths_must_differ() -> None:
    with pytest.raises(ConfigError, match="must differ"):
        ManifestConfig(path="data/m.csv", failures="data/m.csv")


# --------------------------------------------------------------------------- the stage, end to end


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("manifest_media")
    seconds = N_FRAMES / FPS
    return {
        "av": make_video(folder / "av.mp4", seconds=seconds, fps=FPS, size=(64, 48), sample_rate=16000),
        "silent": make_video(folder / "silent.mp4", seconds=seconds, fps=FPS, size=(64, 48), audio=False),
    }


def va_text(n_rows: int) -> str:
    return "valence,arousal\n" + "".join(f"{i / 100:.2f},{-i / 100:.2f}\n" for i in range(n_rows))


def build_affwild(root: Path, media: dict[str, Path]) -> Path:
    videos, ann = root / "videos" / "batch1", root / "annotations"
    videos.mkdir(parents=True)
    shutil.copyfile(media["av"], videos / "video1.mp4")
    shutil.copyfile(media["silent"], videos / "duo.mp4")
    shutil.copyfile(media["av"], videos / "badlabel.mp4")
    make_empty_file(videos / "empty.mp4")
    make_text_file(videos / "text.mp4")
    train, val = (
        ann / "VA_Estimation_Challenge" / "Train_Set",
        ann / "VA_Estimation_Challenge" / "Validation_Set",
    )
    for folder in (train, val):
        folder.mkdir(parents=True)
    (train / "video1.txt").write_text(va_text(N_FRAMES + 3))  # 3 rows too many
    expr = ann / "EXPR_Recognition_Challenge" / "Train_Set"
    expr.mkdir(parents=True)
    (expr / "video1.txt").write_text(",".join(EXPRESSION_NAMES) + "\n" + "3\n" * (N_FRAMES - 2))  # 2 too few
    (val / "duo_left.txt").write_text(va_text(N_FRAMES))
    (val / "duo_right.txt").write_text(va_text(N_FRAMES))
    (train / "badlabel.txt").write_text("valence,arousal\n0.1,0.1\n0.2,zero\n")
    (train / "empty.txt").write_text(va_text(2))
    (train / "text.txt").write_text(va_text(2))
    return root


def configs(tmp_path: Path, root: Path, adapter: str = "affwild2") -> tuple:
    dataset = DatasetConfig(adapter=adapter, root=str(root))
    manifest = ManifestConfig(
        path=str(tmp_path / "out" / "manifest.csv"), failures=str(tmp_path / "out" / "fail.csv")
    )
    return dataset, manifest, StoreConfig(root=str(tmp_path / "features"))


def test_manifest_stage_on_affwild2_layout(tmp_path: Path, media: dict[str, Path]) -> None:
    root = build_affwild(tmp_path / "affwild2", media)
    dataset, manifest, store_cfg = configs(tmp_path, root)
    report = build_manifest(dataset, manifest, store_cfg)

    rows = {row.video_id: row for row in read_manifest(manifest.path)}
    assert sorted(rows) == ["duo_left", "duo_right", "video1"]
    assert [r.video_id for r in report.rows] == sorted(rows)

    failures = {Path(f.path).name: f for f in read_failures(manifest.failures)}
    assert sorted(failures) == ["badlabel.txt", "empty.mp4", "text.mp4"]
    assert failures["badlabel.txt"].stage == "labels" and "line 3" in failures["badlabel.txt"].reason
    assert failures["empty.mp4"].stage == "probe" and "empty" in failures["empty.mp4"].reason
    assert failures["text.mp4"].stage == "probe" and "text" in failures["text.mp4"].reason

    video1 = rows["video1"]
    info = probe(root / "videos" / "batch1" / "video1.mp4")
    assert Path(video1.media_path).is_absolute() and Path(video1.media_path).is_file()
    assert video1.n_frames == N_FRAMES and video1.width == 64 and video1.height == 48
    assert video1.has_audio and video1.audio_sample_rate == 16000
    assert video1.avg_fps == pytest.approx(info.video.avg_fps) and video1.duration == pytest.approx(
        info.duration
    )
    assert video1.label_rows == {"va": N_FRAMES + 3, "expr": N_FRAMES - 2}
    assert "3 extra rows dropped" in video1.notes and "2 frames without a row left unlabeled" in video1.notes
    assert set(video1.labels) == {"va", "expr"} and all(Path(p).is_absolute() for p in video1.labels.values())
    assert rows["duo_left"].subject_position is SubjectPosition.LEFT and not rows["duo_left"].has_audio
    assert rows["duo_left"].split is Split.VALIDATION and rows["duo_left"].subject == "duo"

    store = FeatureStore(store_cfg.root)
    assert sorted(store.videos(LABELS_EXTRACTOR)) == sorted(rows)
    shard = store.read(LABELS_EXTRACTOR, "video1")
    timeline = video_timeline(video1.media_path)
    np.testing.assert_array_equal(shard.time, timeline.time)
    np.testing.assert_array_equal(shard.frame_index, timeline.frame_index)
    labels = FrameLabels.from_feature_set(shard)
    expected_va = np.array([[i / 100, -i / 100] for i in range(N_FRAMES)], dtype=np.float32)
    np.testing.assert_allclose(labels.valence_arousal, expected_va)
    np.testing.assert_array_equal(labels.expression, [3] * (N_FRAMES - 2) + [-1, -1])
    np.testing.assert_array_equal(shard.mask, np.ones(N_FRAMES))  # VA labels every frame
    assert labels.action_units.shape == (N_FRAMES, len(AU_NAMES))
    assert video1.labeled_frames == N_FRAMES


def test_manifest_stage_skips_stored_labels_and_rewrites_changed_ones(
    tmp_path: Path, media: dict[str, Path]
) -> None:
    root = build_affwild(tmp_path / "affwild2", media)
    dataset, manifest, store_cfg = configs(tmp_path, root)
    first = build_manifest(dataset, manifest, store_cfg)
    assert (first.labels_written, first.labels_skipped) == (3, 0)

    second = build_manifest(dataset, manifest, store_cfg)
    assert (second.labels_written, second.labels_skipped) == (0, 3)

    va_file = root / "annotations" / "VA_Estimation_Challenge" / "Validation_Set" / "duo_left.txt"
    va_file.write_text("valence,arousal\n" + "-5,-5\n" * N_FRAMES)
    third = build_manifest(dataset, manifest, store_cfg)
    assert (third.labels_written, third.labels_skipped) == (1, 2)
    store = FeatureStore(store_cfg.root)
    shard = store.read(LABELS_EXTRACTOR, "duo_left")
    assert np.all(shard.arrays["valence_arousal"] == UNLABELED_VA) and not shard.mask.any()
    duo_left = next(r for r in third.rows if r.video_id == "duo_left")
    assert duo_left.labeled_frames == 0


def test_labels_hash_follows_file_contents(tmp_path: Path, media: dict[str, Path]) -> None:
    from avpipe.pipeline.adapters import create_adapter

    root = build_affwild(tmp_path / "affwild2", media)
    adapter = create_adapter("affwild2", root)
    video1 = next(c for c in adapter.scan().candidates if c.video_id == "video1")
    before = labels_hash(video1)
    assert labels_hash(video1) == before
    video1.labels[next(iter(video1.labels))].write_text(va_text(4))
    assert labels_hash(video1) != before


def test_manifest_stage_on_folder_layout_with_timed_labels(tmp_path: Path, media: dict[str, Path]) -> None:
    root = tmp_path / "clips"
    (root / "s1").mkdir(parents=True)
    shutil.copyfile(media["av"], root / "s1" / "a.mp4")
    shutil.copyfile(media["silent"], root / "b.mp4")
    make_text_file(root / "s1" / "broken.mp4")
    (root / "s1" / "a.csv").write_text("time,valence,arousal\n0.0,0.5,0.5\n0.31,-0.5,0.25\n")
    (root / "splits.csv").write_text("video_id,split\ns1/a,validation\n")
    dataset, manifest, store_cfg = configs(tmp_path, root, adapter="folder")
    report = build_manifest(dataset, manifest, store_cfg)

    assert [r.video_id for r in report.rows] == ["b", "s1/a"]
    assert [Path(f.path).name for f in report.failures] == ["broken.mp4"]
    rows = {r.video_id: r for r in read_manifest(manifest.path)}
    assert rows["s1/a"].split is Split.VALIDATION and rows["b"].split is Split.TRAIN
    store = FeatureStore(store_cfg.root)
    shard = store.read(LABELS_EXTRACTOR, "s1/a")
    # dimensions default to linear interpolation between samples (max gap: 2 x 0.31 s), and the frames
    # within half a sample interval after the last sample take its value
    t = shard.time
    inside = (t >= 0.0) & (t <= 0.31)
    edge = (t > 0.31) & (t <= 0.31 + 0.155)
    expected_valence = 0.5 + t[inside] / 0.31 * (-0.5 - 0.5)
    expected_arousal = 0.5 + t[inside] / 0.31 * (0.25 - 0.5)
    va = shard.arrays["valence_arousal"]
    np.testing.assert_allclose(va[inside], np.stack([expected_valence, expected_arousal], 1), atol=1e-6)
    np.testing.assert_allclose(va[edge], [[-0.5, 0.25]] * int(edge.sum()))
    n_labeled = int(inside.sum() + edge.sum())
    assert int(shard.mask.sum()) == n_labeled and rows["s1/a"].labeled_frames == n_labeled
    between = int(((t > 0.0) & (t < 0.31)).sum())
    assert report.label_actions["valence: interpolated_linear (linear)"] == between
    assert report.label_actions["arousal: edge_frames_held (linear)"] == int(edge.sum())
    assert store.status(LABELS_EXTRACTOR, "b", "whatever") is ShardStatus.STALE
    assert not store.read(LABELS_EXTRACTOR, "b").mask.any()  # no label file: every frame unlabeled


def test_a_second_dataset_does_not_replace_the_labels_of_the_first(
    tmp_path: Path, media: dict[str, Path]
) -> None:
    """Two datasets share a store and the id video1: the second's video1 fails, the first's labels stay."""
    first_root = build_affwild(tmp_path / "first", media)
    dataset, manifest, store_cfg = configs(tmp_path, first_root)
    build_manifest(dataset, manifest, store_cfg)
    store = FeatureStore(store_cfg.root)
    before = store.shard_path(LABELS_EXTRACTOR, "video1").read_bytes()
    assert store.attrs(LABELS_EXTRACTOR, "video1")["dataset"] == str(first_root.resolve())

    second_root = tmp_path / "second"
    videos, va = second_root / "videos", second_root / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    videos.mkdir(parents=True)
    va.mkdir(parents=True)
    shutil.copyfile(media["silent"], videos / "video1.mp4")  # same id, another video and other labels
    (va / "video1.txt").write_text("valence,arousal\n" + "0.5,0.5\n" * N_FRAMES)
    other = DatasetConfig(adapter="affwild2", root=str(second_root))
    report = build_manifest(other, manifest, store_cfg)
    assert report.rows == []
    assert len(report.failures) == 1 and "stored from dataset" in report.failures[0].reason
    assert "replace_other_dataset" in report.failures[0].reason
    assert store.shard_path(LABELS_EXTRACTOR, "video1").read_bytes() == before

    allowed = StoreConfig(root=store_cfg.root, replace_other_dataset=True)
    report = build_manifest(other, manifest, allowed)
    assert [row.video_id for row in report.rows] == ["video1"] and report.labels_written == 1
    assert store.attrs(LABELS_EXTRACTOR, "video1")["dataset"] == str(second_root.resolve())


def test_manifest_command_exits_non_zero_when_every_video_failed(tmp_path: Path, caplog) -> None:
    root = tmp_path / "broken"
    videos, va = root / "videos", root / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    videos.mkdir(parents=True)
    va.mkdir(parents=True)
    for name in ("a", "b", "c"):
        make_text_file(videos / f"{name}.mp4")
        (va / f"{name}.txt").write_text(va_text(2))
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "dataset": {"root": str(root)},
                "manifest": {"path": str(tmp_path / "m.csv"), "failures": str(tmp_path / "f.csv")},
                "store": {"root": str(tmp_path / "features")},
                "results": {"dir": str(tmp_path / "results")},
            }
        )
    )
    assert cli_main(["manifest", "-p", str(params)]) == 1
    assert "manifest: no usable video" in caplog.text and "all 3 failed" in caplog.text
    assert json.loads((tmp_path / "results" / "metrics" / "manifest.json").read_text())["failed"] == 3
