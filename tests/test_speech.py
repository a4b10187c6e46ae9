"""The ``speech`` extractor (Silero VAD from the silero-vad wheel) on espeak-ng speech with known pauses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.extractors.audio.speech import SpeechConfig, SpeechExtractor
from avpipe.pipeline.registry import create_extractor
from avpipe.pipeline.timeline import decode_audio, video_timeline
from avpipe.pipeline.types import AudioTrack, Timeline, VideoContext
from tests.media_factory import espeak_binary, run_ffmpeg

FPS = 25
RATE = 16000
UTTERANCES = (
    "The weather is lovely today and everybody seems happy about it",
    "We walked along the river and watched the boats go by",
)
LEAD, GAP, TAIL = 1.0, 1.4, 1.0  # seconds of digital silence before, between and after the utterances


def espeak_utterance(espeak: str, text: str, path: Path) -> np.ndarray:
    """The utterance at RATE, with espeak's own leading and trailing silence cut off."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    subprocess.run([espeak, "-w", str(path), text], check=True, capture_output=True)
    rate, samples = wavfile.read(path)
    samples = resample_poly(samples.astype(np.float64) / 32768.0, RATE, rate)
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return samples[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def speech_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    """A video whose audio is silence, utterance, silence, utterance, silence; and the speech spans."""
    espeak = espeak_binary()
    from scipy.io import wavfile

    folder = tmp_path_factory.mktemp("speech")
    parts, spans, t = [np.zeros(int(LEAD * RATE))], [], LEAD
    for i, text in enumerate(UTTERANCES):
        utterance = espeak_utterance(espeak, text, folder / f"u{i}.wav")
        spans.append((t, t + utterance.size / RATE))
        t += utterance.size / RATE + (GAP if i == 0 else TAIL)
        parts += [utterance, np.zeros(int((GAP if i == 0 else TAIL) * RATE))]
    audio = np.concatenate(parts)
    wav = folder / "speech.wav"
    wavfile.write(wav, RATE, (audio * 32767).astype(np.int16))
    video = folder / "speech.mp4"
    run_ffmpeg(
        [
            *["-f", "lavfi", "-i", f"color=c=gray:s=64x48:r={FPS}:d={audio.size / RATE:.3f}", "-i", str(wav)],
            *["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"],
            str(video),
        ]
    )
    return video, spans


def runs_of_ones(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[first, last]`` frame of each run of ones."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def test_speech_found_within_two_frames_of_the_known_edges(speech_clip) -> None:
    path, spans = speech_clip
    timeline = video_timeline(path)
    track = decode_audio(path, RATE)
    fs = SpeechExtractor().extract(track, timeline, VideoContext(video_id="v", media_path=str(path)))

    assert fs.arrays["features"].shape == (len(timeline), 1)
    assert fs.attrs["segments"] == len(UTTERANCES) and fs.attrs["model"].startswith("silero-vad")
    runs = runs_of_ones(fs.arrays["speech"])
    assert len(runs) == len(UTTERANCES), runs
    frame_time = np.asarray(timeline.time)
    for (first, last), (onset, offset) in zip(runs, spans, strict=True):
        expected_first = int(np.searchsorted(frame_time, onset))  # first frame at or after the onset
        expected_last = int(np.searchsorted(frame_time, offset)) - 1  # last frame before the offset
        assert abs(first - expected_first) <= 2, (first, expected_first)
        # Silero's probability stays high for ~3 windows (~100 ms) after the voice stops (a causal
        # recurrent model) and its segments end at the first window below neg_threshold plus 30 ms of
        # padding: measured +2 frames after "it", +4 after a decaying vowel ("by"). docs/AUDIO.md says so.
        assert -2 <= last - expected_last <= 4, (last, expected_last)
    probability = fs.arrays["features"][:, 0]
    speech = fs.arrays["speech"] == 1
    assert probability[speech].mean() > 0.7 and probability[~speech].mean() < 0.2
    assert fs.attrs["speech_frames"] == int(speech.sum())


def test_no_audio_gives_masked_zeros_and_config_errors(speech_clip) -> None:
    path, _ = speech_clip
    timeline = video_timeline(path)
    fs = SpeechExtractor().extract(None, timeline, VideoContext(video_id="v", media_path=str(path)))
    assert not fs.mask.any() and not fs.arrays["speech"].any() and not fs.arrays["features"].any()
    with pytest.raises(ConfigError, match=r"extractors\.speech\.sample_rate"):
        SpeechConfig(sample_rate=22050)
    with pytest.raises(ConfigError, match=r"extractors\.speech\.neg_threshold"):
        SpeechConfig(threshold=0.4, neg_threshold=0.6)


def test_silero_import_keeps_the_torch_thread_count() -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        extractor = create_extractor("speech")
        track = AudioTrack(samples=np.zeros(RATE, np.float32), sample_rate=RATE, start=0.0)
        timeline = Timeline(time=np.arange(25) / 25.0, frame_index=np.arange(25))
        fs = extractor.extract(track, timeline, VideoContext(video_id="s", media_path="silence"))
        assert torch.get_num_threads() == 2
        assert fs.attrs["segments"] == 0 and fs.mask.all()  # silence is audio: valid, not speech
        short = AudioTrack(samples=np.full(100, 0.1, np.float32), sample_rate=RATE, start=0.52)  # 6 ms
        fs = extractor.extract(short, timeline, VideoContext(video_id="s", media_path="short"))
        assert np.flatnonzero(fs.mask).tolist() == [13]  # the one frame (0.52 s) inside its 6 ms
    finally:
        torch.set_num_threads(before)


def test_mask_audio_by_speech_masks_only_audio_inputs_without_speech(tmp_path) -> None:
    from avpipe.models.data import load_videos
    from avpipe.pipeline.config import build_dataclass
    from avpipe.pipeline.config.train import TrainConfig
    from avpipe.pipeline.store import FeatureStore
    from avpipe.pipeline.types import FeatureSet

    store = FeatureStore(tmp_path / "store")
    frames = np.arange(8)

    def write(name: str, arrays: dict, index: np.ndarray = frames) -> None:
        fs = FeatureSet(index / 25.0, index, np.ones(len(index), np.uint8), arrays)
        store.write(name, "v", fs, extractor_version="1", params_hash="p")

    write("mfcc", {"features": np.arange(8, dtype=np.float32)[:, None] + 1})
    write("fer-minixception", {"features": np.full((8, 2), 5.0, np.float32)})
    speaking = np.array([0, 1, 1, 1, 0, 0, 1], np.uint8)  # the speech shard lacks frame 7
    write("speech", {"features": speaking[:, None].astype(np.float32), "speech": speaking}, frames[:7])
    config = build_dataclass(
        TrainConfig,
        {"features": ["fer-minixception", "mfcc", "speech"], "mask_audio_by_speech": True},
        "train",
    )
    (video,), skipped = load_videos(
        store, config.feature_specs, ["v"], with_labels=False, mask_audio_by_speech=True
    )
    assert not skipped
    assert video.valid["mfcc"].tolist() == [False, True, True, True, False, False, True, False]
    assert video.features["mfcc"][:, 0].tolist() == [0, 2, 3, 4, 0, 0, 7, 0]
    assert video.valid["fer-minixception"].all()  # visual inputs are left alone
    assert video.speech_masked == 4
    (plain,), _ = load_videos(store, config.feature_specs, ["v"], with_labels=False)
    assert plain.valid["mfcc"].all() and plain.speech_masked == 0
