"""Audio-only corpora (dataset.audio_fps): speech files without a video stream get a fixed-rate timeline
in the manifest, the labels shard and every audio feature."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.config import RunnerConfig, StoreConfig
from avpipe.pipeline.config.dataset import DatasetConfig
from avpipe.pipeline.config.manifest import ManifestConfig
from avpipe.pipeline.extract import ExtractionJob, run_extractor
from avpipe.pipeline.extractors.audio import LogMelConfig, LogMelExtractor
from avpipe.pipeline.fingerprint import params_hash
from avpipe.pipeline.manifest import read_manifest
from avpipe.pipeline.manifest_builder import build_manifest
from avpipe.pipeline.store import FeatureStore
from tests.media_factory import espeak_binary, run_ffmpeg

pytestmark = pytest.mark.timeout(180)

AUDIO_FPS = 25.0


@pytest.fixture(scope="module")
def speech_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    espeak = espeak_binary()
    root = tmp_path_factory.mktemp("speech_corpus")
    text = "The weather is lovely today, and everybody seems happy about it."
    subprocess.run([espeak, "-w", str(root / "utt1.wav"), text], check=True, capture_output=True)
    run_ffmpeg(["-i", str(root / "utt1.wav"), "-c:a", "aac", str(root / "utt2.m4a")])
    return root


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as handle:
        return handle.getnframes() / handle.getframerate()


def manifest_of(root: Path, out: Path, audio_fps: float | None):
    dataset = DatasetConfig(
        adapter="folder", root=str(root), audio_fps=audio_fps, video_extensions=[".wav", ".m4a"]
    )
    manifest = ManifestConfig(path=str(out / "manifest.csv"), failures=str(out / "failures.csv"))
    return build_manifest(dataset, manifest, StoreConfig(root=str(out / "features")), RunnerConfig())


def test_audio_only_files_are_refused_without_audio_fps(speech_corpus: Path, tmp_path: Path) -> None:
    report = manifest_of(speech_corpus, tmp_path, audio_fps=None)
    assert report.rows == [] and len(report.failures) == 2
    assert all("set dataset.audio_fps" in f.reason for f in report.failures)


def test_audio_only_corpus_on_a_fixed_rate_timeline(speech_corpus: Path, tmp_path: Path) -> None:
    report = manifest_of(speech_corpus, tmp_path, audio_fps=AUDIO_FPS)
    assert report.failures == []
    rows = {row.video_id: row for row in read_manifest(tmp_path / "manifest.csv")}
    wav = rows["utt1"]
    # From the equations: a grid t0 + k / fps over the audio, t0 = 0 for a WAV file.
    expected_frames = int(np.ceil(wav_seconds(speech_corpus / "utt1.wav") * AUDIO_FPS - 1e-6))
    assert (wav.n_frames, wav.avg_fps, wav.video_codec, wav.has_audio) == (
        expected_frames,
        AUDIO_FPS,
        "",
        True,
    )
    store = FeatureStore(tmp_path / "features")
    labels = store.read("labels", "utt1")
    np.testing.assert_allclose(labels.time, np.arange(expected_frames) / AUDIO_FPS, atol=1e-9)
    np.testing.assert_array_equal(labels.frame_index, np.arange(expected_frames))

    store_cfg = StoreConfig(root=str(tmp_path / "features"))
    extracted = run_extractor(
        "logmel",
        LogMelConfig(),
        list(rows.values()),
        store_cfg,
        RunnerConfig(n_workers=1),
        audio_fps=AUDIO_FPS,
    )
    assert (extracted.done, extracted.failed) == (2, 0)
    for video_id, row in rows.items():
        logmel = store.read("logmel", video_id)
        assert len(logmel) == row.n_frames == len(store.read("labels", video_id))
        np.testing.assert_allclose(np.diff(logmel.time), 1 / AUDIO_FPS, atol=1e-9)
        assert logmel.time[0] == pytest.approx(row.audio_start, abs=1e-9)
        energy = logmel.arrays["features"].mean(axis=1)
        assert energy.max() - energy.min() > 3.0  # speech and pauses, not a flat or empty signal


def test_audio_fps_leaves_the_parameter_hash_of_other_stores_alone() -> None:
    config = LogMelConfig()
    store = StoreConfig(root="unused")
    plain = ExtractionJob.create("logmel", LogMelExtractor, config, store)
    assert plain.params_hash == params_hash({"config": config, "fps": None}, LogMelExtractor.version)
    with_rate = ExtractionJob.create("logmel", LogMelExtractor, config, store, audio_fps=AUDIO_FPS)
    assert with_rate.params_hash != plain.params_hash
