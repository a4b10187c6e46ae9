"""Fault battery, names and skipped files: every byte-string file name is a valid media path, stem
collisions get distinct ids, and everything passed over is a failures row with its reason."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from avpipe.pipeline.config import StoreConfig
from avpipe.pipeline.config.dataset import DatasetConfig
from avpipe.pipeline.config.manifest import ManifestConfig
from avpipe.pipeline.manifest import read_failures, read_manifest
from avpipe.pipeline.manifest_builder import build_manifest
from tests.media_factory import make_audio_only, make_video

pytestmark = pytest.mark.timeout(180)

BAD_BYTES = b"caf\xe9 \xff clip"  # Latin-1 bytes: not UTF-8


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=1.0, fps=10, size=(48, 32))


def _build(root: Path, tmp_path: Path):
    manifest = ManifestConfig(path=str(tmp_path / "manifest.csv"), failures=str(tmp_path / "failures.csv"))
    report = build_manifest(
        DatasetConfig(adapter="folder", root=str(root)), manifest, StoreConfig(root=str(tmp_path / "store"))
    )
    return report, manifest


def test_non_utf8_file_name_is_a_valid_media_path(clip: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(clip, root / "good.mp4")
    bad = os.path.join(os.fsencode(root), BAD_BYTES + b".mp4")
    shutil.copy(clip, bad)
    not_media = os.path.join(os.fsencode(root), b"broken \xfe.mp4")
    Path(os.fsdecode(not_media)).write_text("not a video\n")
    _, manifest = _build(root, tmp_path)
    rows = {row.video_id: row for row in read_manifest(manifest.path)}
    assert sorted(rows) == ["caf\\xe9 \\xff clip", "good"]
    # The manifest keeps the exact bytes, so later stages open the very file.
    assert os.fsencode(rows["caf\\xe9 \\xff clip"].media_path) == bad
    assert rows["caf\\xe9 \\xff clip"].n_frames == rows["good"].n_frames == 10
    # The failures report is valid UTF-8, the undecodable bytes escaped.
    text = Path(manifest.failures).read_bytes().decode("utf-8")
    assert "broken \\xfe.mp4" in text
    (failure,) = read_failures(manifest.failures)
    assert failure.stage == "probe" and "plain text" in failure.reason


def test_stem_collisions_get_distinct_ids_and_nothing_stops(clip: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    for name in ("clip.mp4", "clip.mkv", "other.mp4"):
        shutil.copy(clip, root / name)
    report, manifest = _build(root, tmp_path)
    rows = {row.video_id: row for row in read_manifest(manifest.path)}
    assert sorted(rows) == ["clip.mkv", "clip.mp4", "other"]
    assert rows["clip.mkv"].media_path.endswith("clip.mkv") and rows["clip.mp4"].media_path.endswith(
        "clip.mp4"
    )
    assert "shared by 2 files" in rows["clip.mp4"].notes
    assert report.renamed_ids == 2 and not report.failures


def test_skipped_files_become_rows_with_reasons(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    locked = root / "locked"
    locked.mkdir(parents=True)
    shutil.copy(clip, root / "good.mp4")
    shutil.copy(clip, locked / "hidden from us.mp4")
    (root / "dangling.mp4").symlink_to(root / "gone.mp4")
    make_audio_only(root / "speech.m4a", seconds=1.0)
    make_audio_only(root / "speech.wav", seconds=1.0, codec="pcm")
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads any folder: the kernel's refusal, injected
        real_scandir = os.scandir

        def scandir(path: object = ".") -> object:
            if os.fspath(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(locked))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        _, manifest = _build(root, tmp_path)
    finally:
        locked.chmod(0o755)
    assert [row.video_id for row in read_manifest(manifest.path)] == ["good"]
    reasons = {Path(f.path).name: (f.stage, f.reason) for f in read_failures(manifest.failures)}
    assert reasons["locked"][0] == "discover" and "cannot be listed" in reasons["locked"][1]
    assert "broken symbolic link" in reasons["dangling.mp4"][1]
    assert "audio-only file" in reasons["speech.m4a"][1] and "audio-only file" in reasons["speech.wav"][1]
    assert len(reasons) == 4


def test_8khz_audio_upsampled_to_16khz_is_counted_in_the_report(tmp_path: Path) -> None:
    from avpipe.pipeline.config import RunnerConfig
    from avpipe.pipeline.extract import run_extractor
    from avpipe.pipeline.extractors.audio import LogMelConfig
    from avpipe.pipeline.manifest import ManifestRow

    rows = []
    for name, rate in (("phone", 8000), ("studio", 48000)):
        path = make_video(tmp_path / f"{name}.mkv", seconds=1.0, fps=10, size=(32, 32), sample_rate=rate)
        rows.append(ManifestRow(video_id=name, media_path=str(path), duration=1.0))
    store = StoreConfig(root=str(tmp_path / "features"))
    report = run_extractor("logmel", LogMelConfig(), rows, store, RunnerConfig(n_workers=1, device="cpu"))
    assert report.done == 2 and report.upsampled_audio == 1
    assert report.to_dict()["upsampled_audio"] == 1 and "1 videos with audio upsampled" in report.summary()
