"""The bad-input battery: each case a real file, through the manifest stage and extraction stages.

Every case gives either correct output or one clear row in the failures report (what, stage, reason),
and every other video completes. ``runner.fail_on_error`` decides the exit code.

Workers import this module to find ``FrameStatsExtractor``: the stage modules (and the demo and
scipy they pull in) are imported inside the tests that need them, to keep that import light.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from avpipe.pipeline.config import RunnerConfig, StoreConfig
from avpipe.pipeline.config.dataset import DatasetConfig
from avpipe.pipeline.config.manifest import ManifestConfig
from avpipe.pipeline.extract import run_extractor, write_report
from avpipe.pipeline.extractors.audio import LogMelConfig
from avpipe.pipeline.labels import LABELS_EXTRACTOR, FrameLabels
from avpipe.pipeline.manifest import ManifestRow, read_failures, write_manifest
from avpipe.pipeline.media import probe
from avpipe.pipeline.registry import Extractor, ExtractorRegistry, InputKind
from avpipe.pipeline.runner import open_client
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.timeline import video_timeline
from avpipe.pipeline.types import FeatureSet, Frame, MaskValue, Timeline, VideoContext
from tests.media_factory import (
    make_audio_only,
    make_empty_file,
    make_text_file,
    make_truncated,
    make_video,
    run_ffmpeg,
)

pytestmark = pytest.mark.timeout(300)

FPS = 25
SIZE = (96, 64)
SECONDS = 2.0
N_FRAMES = int(SECONDS * FPS)
UNICODE_ID = "sub dir/ünï cödé 日本 clip"

# video id -> (manifest failure stage, reason pattern) for the files the manifest must reject.
MANIFEST_REJECTS = {
    "zero-byte": ("probe", r"file is empty \(0 bytes\)"),
    "truncated": ("probe", r"truncated or corrupt MP4"),
    "text named mp4": ("probe", r"not a media file: it contains plain text"),
    "audio-only": ("probe", r"no video stream"),
    "labels nan": ("labels", r"line 4: valence is not finite"),
    "labels out of range": ("labels", r"line 3: arousal 1\.7 is outside \[-1, 1\]"),
}
# Files whose media is fine; extraction must succeed on them.
GOOD = ["plain", "video-only", "vfr", "rotated", "odd size", UNICODE_ID, "labels long", "labels short"]
DECODE_FAILS = "decode fails half-way"


# --------------------------------------------------------------------------- a cheap real FRAMES extractor


@dataclass
class FrameStatsConfig:
    """No parameters: the extractor's output depends on the decoded frames only."""


class FrameStatsExtractor(Extractor):
    """Mean RGB and the decoded picture size of every frame: needs every frame decoded, costs little."""

    name = "frame-stats"
    version = "1"
    input_kind = InputKind.FRAMES
    config_class = FrameStatsConfig

    @property
    def feature_dim(self) -> int:
        return 3

    def extract(self, source: Iterator[Frame], timeline: Timeline, context: VideoContext) -> FeatureSet:
        frames = list(source)
        return FeatureSet(
            time=np.array([f.time for f in frames], np.float64),
            frame_index=np.array([f.index for f in frames], np.int64),
            mask=np.full(len(frames), MaskValue.VALID, np.uint8),
            arrays={
                "features": np.array([f.image.mean(axis=(0, 1)) for f in frames], np.float32).reshape(-1, 3),
                "picture_size": np.array([f.image.shape[:2] for f in frames], np.int64).reshape(-1, 2),
            },
        )


def frame_stats_registry() -> ExtractorRegistry:
    registry = ExtractorRegistry()  # kept out of the global registry: other tests list that one
    registry.add(FrameStatsExtractor, origin=__name__)
    return registry


# --------------------------------------------------------------------------- the battery


def labels_csv(path: Path, rows: list[str]) -> None:
    path.write_text("frame,valence,arousal\n" + "".join(f"{r}\n" for r in rows), encoding="utf-8")


def corrupt_middle(src: Path, dst: Path) -> Path:
    """Zero 15 % of the media data in the middle of the file: the container still lists every packet,
    but the decoder meets garbage half-way."""
    data = bytearray(src.read_bytes())
    box = data.find(b"mdat")
    size = int.from_bytes(data[box - 4 : box], "big")
    start, stop = box + 4 + int(0.45 * (size - 8)), box + 4 + int(0.60 * (size - 8))
    data[start:stop] = bytes(stop - start)
    dst.write_bytes(bytes(data))
    return dst


def make_odd_size(path: Path) -> Path:
    # yuv420p cannot hold odd sizes; 4:4:4 H.264 can, as some screen recorders write it. (testsrc2
    # rounds its size down to even numbers, testsrc does not.)
    video = ["-f", "lavfi", "-t", str(SECONDS), "-i", f"testsrc=size=177x143:rate={FPS}"]
    audio = ["-f", "lavfi", "-t", str(SECONDS), "-i", "sine=frequency=300:sample_rate=44100"]
    run_ffmpeg([*video, *audio, "-c:v", "libx264", "-pix_fmt", "yuv444p", "-c:a", "aac", str(path)])
    return path


@pytest.fixture(scope="module")
def battery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("battery")
    plain = make_video(root / "plain.mp4", seconds=SECONDS, fps=FPS, size=SIZE)
    labels_csv(root / "plain.csv", [f"{i},0.1,-0.2" for i in range(N_FRAMES)])
    make_empty_file(root / "zero-byte.mp4")
    make_truncated(plain, root / "truncated.mp4")
    make_text_file(root / "text named mp4.mp4")
    make_audio_only(root / "audio-only.mp4", seconds=SECONDS, codec="aac")
    make_video(root / "video-only.mp4", seconds=SECONDS, fps=FPS, size=SIZE, audio=False)
    make_video(root / "vfr.mp4", seconds=SECONDS, fps=FPS, size=SIZE, vfr=True)
    make_video(root / "rotated.mp4", seconds=SECONDS, fps=FPS, size=SIZE, rotate=90)
    make_odd_size(root / "odd size.mp4")
    (root / "sub dir").mkdir()
    make_video(root / f"{UNICODE_ID}.mp4", seconds=SECONDS, fps=FPS, size=SIZE)
    for name, rows in {
        "labels long": [f"{i},0.5,0.5" for i in range(N_FRAMES + 7)],
        "labels short": [f"{i},0.5,0.5" for i in range(N_FRAMES - 12)],
        "labels nan": ["0,0.1,0.1", "1,0.2,0.2", "2,nan,0.3"],
        "labels out of range": ["0,0.1,0.1", "1,0.2,1.7"],
    }.items():
        make_video(root / f"{name}.mp4", seconds=SECONDS, fps=FPS, size=SIZE)
        labels_csv(root / f"{name}.csv", rows)
    big = make_video(root.parent / "big.mp4", seconds=4.0, fps=FPS, size=(160, 120))
    corrupt_middle(big, root / f"{DECODE_FAILS}.mp4")
    return root


@pytest.fixture(scope="module")
def manifest(battery: Path, tmp_path_factory: pytest.TempPathFactory):
    from avpipe.pipeline.manifest_builder import build_manifest

    out = tmp_path_factory.mktemp("manifest_out")
    manifest_cfg = ManifestConfig(path=str(out / "manifest.csv"), failures=str(out / "failures.csv"))
    store_cfg = StoreConfig(root=str(out / "features"))
    dataset = DatasetConfig(adapter="folder", root=str(battery))
    report = build_manifest(dataset, manifest_cfg, store_cfg)
    return report, manifest_cfg, store_cfg


@pytest.fixture(scope="module")
def client():
    with open_client(RunnerConfig(n_workers=2)) as active:
        yield active


def all_rows(battery: Path) -> list[ManifestRow]:
    """A row for every file, bad ones included (as if files went bad after the manifest was built)."""
    return [
        ManifestRow(video_id=p.relative_to(battery).with_suffix("").as_posix(), media_path=str(p))
        for p in sorted(battery.rglob("*.mp4"))
    ]


# --------------------------------------------------------------------------- manifest stage


def test_manifest_rejects_each_bad_file_with_its_reason(manifest, battery) -> None:
    report, manifest_cfg, _ = manifest
    failures = {Path(f.path).relative_to(battery).with_suffix("").as_posix(): f for f in report.failures}
    assert set(failures) == set(MANIFEST_REJECTS)
    for video_id, (stage, reason) in MANIFEST_REJECTS.items():
        assert failures[video_id].stage == stage, failures[video_id]
        assert re.search(reason, failures[video_id].reason), failures[video_id]
    on_disk = read_failures(manifest_cfg.failures)
    assert sorted((f.path, f.stage, f.reason) for f in on_disk) == sorted(
        (f.path, f.stage, f.reason) for f in report.failures
    )
    assert sorted(r.video_id for r in report.rows) == sorted([*GOOD, DECODE_FAILS])


def test_manifest_rows_describe_odd_rotated_vfr_and_unicode_files(manifest) -> None:
    report, _, _ = manifest
    rows = {r.video_id: r for r in report.rows}
    assert (rows["rotated"].rotation, rows["rotated"].width, rows["rotated"].height) == (90, SIZE[1], SIZE[0])
    assert (rows["odd size"].width, rows["odd size"].height) == (177, 143)
    assert rows["vfr"].is_vfr and not rows["plain"].is_vfr
    assert not rows["video-only"].has_audio and rows["plain"].has_audio
    assert Path(rows[UNICODE_ID].media_path).is_file() and rows[UNICODE_ID].n_frames == N_FRAMES


def test_labels_longer_or_shorter_than_the_video_are_aligned_and_noted(manifest) -> None:
    report, _, store_cfg = manifest
    rows = {r.video_id: r for r in report.rows}
    store = FeatureStore(store_cfg.root)
    expected = {"plain": (N_FRAMES, ""), "labels long": (N_FRAMES, "7 extra rows dropped")}
    expected["labels short"] = (N_FRAMES - 12, "12 frames without a row left unlabeled")
    for video_id, (labeled, note) in expected.items():
        row = rows[video_id]
        labels = FrameLabels.from_feature_set(store.read(LABELS_EXTRACTOR, video_id))
        assert len(labels) == row.n_frames == N_FRAMES
        assert row.labeled_frames == int(labels.labeled().sum()) == labeled
        assert (note in row.notes) if note else row.notes == ""


# --------------------------------------------------------------------------- extraction stages


@pytest.fixture(scope="module")
def frame_stats(battery, client, tmp_path_factory):
    store_cfg = StoreConfig(root=str(tmp_path_factory.mktemp("frame_stats")))
    report = run_extractor(
        "frame-stats",
        FrameStatsConfig(),
        all_rows(battery),
        store_cfg,
        RunnerConfig(),
        registry=frame_stats_registry(),
        client=client,
    )
    return report, FeatureStore(store_cfg.root)


def test_frames_extraction_fails_only_the_bad_videos(frame_stats, tmp_path) -> None:
    report, _ = frame_stats
    reasons = {f.video: f.reason for f in report.failures}
    expected = {
        "zero-byte": r"zero-byte\.mp4: file is empty",
        "truncated": r"truncated\.mp4: truncated or corrupt MP4",
        "text named mp4": r"text named mp4\.mp4: not a media file",
        "audio-only": r"audio-only\.mp4: no video stream",
        DECODE_FAILS: rf"{DECODE_FAILS}\.mp4: video decoding failed near t=\d",
    }
    assert set(reasons) == set(expected)
    for video_id, pattern in expected.items():
        assert re.search(pattern, reasons[video_id]), reasons[video_id]
    n_ok = len(GOOD) + len(["labels nan", "labels out of range"])  # their media is fine
    assert (report.done, report.failed, report.skipped) == (n_ok, len(expected), 0)

    write_report(report, tmp_path)
    with (tmp_path / "frame-stats_failures.csv").open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert {r["video"]: (r["stage"], r["reason"]) for r in table} == {
        v: ("frame-stats", reason) for v, reason in reasons.items()
    }


@pytest.mark.parametrize("video_id", ["plain", "vfr", "rotated", "odd size", UNICODE_ID, "video-only"])
def test_frames_extraction_output_is_right_for_awkward_files(frame_stats, battery, video_id) -> None:
    _, store = frame_stats
    stored = store.read("frame-stats", video_id)
    path = battery / f"{video_id}.mp4"
    timeline = video_timeline(path)
    assert np.array_equal(stored.time, timeline.time) and np.array_equal(
        stored.frame_index, timeline.frame_index
    )
    video = probe(path).video
    assert video is not None
    # Pictures come upright at their display size (a 90-degree display matrix swaps the sides).
    assert np.all(stored.arrays["picture_size"] == [video.height, video.width])
    if video_id == "vfr":
        steps = np.diff(stored.time)
        assert steps.min() > 0 and steps.max() - steps.min() > 0.5 / FPS  # real timestamps, not index / fps
    # testsrc2 is colourful: a frame mean far from black and white shows real pictures were decoded.
    assert np.all((stored.arrays["features"] > 5) & (stored.arrays["features"] < 250).any(axis=1)[:, None])


def test_audio_extraction_on_the_battery(battery, client, tmp_path) -> None:
    store_cfg = StoreConfig(root=str(tmp_path / "features"))
    report = run_extractor(
        "logmel", LogMelConfig(), all_rows(battery), store_cfg, RunnerConfig(), client=client
    )
    failed = {f.video for f in report.failures}
    assert {"zero-byte", "truncated", "text named mp4", "audio-only"} <= failed
    assert failed <= {"zero-byte", "truncated", "text named mp4", "audio-only", DECODE_FAILS}
    assert report.done + report.failed == len(all_rows(battery))
    store = FeatureStore(store_cfg.root)
    silent = store.read("logmel", "video-only")
    assert len(silent) == N_FRAMES and np.all(silent.mask == MaskValue.MISSING)  # no audio: all missing
    plain = store.read("logmel", "plain")
    assert np.all(plain.mask == MaskValue.VALID) and np.isfinite(plain.arrays["features"]).all()
    assert store.read("logmel", UNICODE_ID).arrays["features"].shape == (N_FRAMES, LogMelConfig().n_mels)


# --------------------------------------------------------------------------- exit codes


def write_params(folder: Path, scheduler: str, fail_on_error: bool) -> Path:
    params = {
        "dataset": {"adapter": "folder", "root": str(folder / "data")},
        "manifest": {"path": str(folder / "manifest.csv"), "failures": str(folder / "manifest_failures.csv")},
        "store": {"root": str(folder / "features")},
        "results": {"dir": str(folder / "results")},
        "runner": {
            "reports": str(folder / "reports"),
            "scheduler_address": scheduler,
            "fail_on_error": fail_on_error,
        },
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


@pytest.mark.parametrize("fail_on_error", [False, True])
def test_fail_on_error_decides_the_exit_code(battery, client, tmp_path, caplog, fail_on_error) -> None:
    from avpipe.pipeline.config import load_params
    from avpipe.stages import extract as extract_stage
    from avpipe.stages import manifest as manifest_stage

    (tmp_path / "data").mkdir()
    shutil.copy(battery / "plain.mp4", tmp_path / "data" / "plain.mp4")
    shutil.copy(battery / "zero-byte.mp4", tmp_path / "data" / "zero-byte.mp4")
    params = load_params(write_params(tmp_path, client.scheduler.address, fail_on_error))
    assert manifest_stage.run(params) == int(fail_on_error)  # zero-byte.mp4 is a manifest failure
    # A manifest written before two files went bad: the extraction stage meets them.
    rows = {r.video_id: r for r in all_rows(battery)}
    write_manifest([rows[v] for v in ("plain", "truncated", "text named mp4")], params.manifest.path)
    with caplog.at_level(logging.INFO):
        code = extract_stage.run(params, "logmel")
    assert code == int(fail_on_error)
    report = yaml.safe_load((tmp_path / "reports" / "logmel.json").read_text(encoding="utf-8"))
    assert (report["done"], report["failed"], report["skipped"]) == (1, 2, 0)
    with (tmp_path / "reports" / "logmel_failures.csv").open(newline="", encoding="utf-8") as fh:
        assert sorted(r["video"] for r in csv.DictReader(fh)) == ["text named mp4", "truncated"]
    assert any("logmel: 1 done, 0 skipped (already stored), 2 failed" in m for m in caplog.messages)
