"""Probing media files into :class:`avpipe.pipeline.types.MediaInfo`, in-process with PyAV.

The file is opened once with PyAV (the libavformat calls ffprobe makes), its streams described as
ffprobe would print them, and the video packets listed: their timestamps give the frame count where
the container has none (Matroska, WebM) and decide whether the video is variable frame rate, which
header fields alone cannot tell reliably. The first video frame is decoded for its display matrix
(rotation), which PyAV exposes only on frames.

Starting two ffprobe processes per file cost ~0.15 s of CPU, more than most features of a short
clip. Files PyAV cannot describe (unreadable, corrupt, or failing part-way) go through ffprobe as
before, so bad files get the same errors; ``probe(path, backend="ffprobe")`` forces that path.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import ffmpeg
import numpy as np

from avpipe.pipeline.errors import MediaError
from avpipe.pipeline.tools import ffprobe_binary
from avpipe.pipeline.types import AudioStreamInfo, MediaInfo, VideoStreamInfo

logger = logging.getLogger(__name__)

# Relative spread of frame durations above which a video counts as variable frame rate. One tick of
# timestamp rounding is always tolerated on top (e.g. 33/34 ms steps of a 30 fps Matroska file).
VFR_TOLERANCE = 0.01
_SNIFF_BYTES = 4096

# Leading bytes of container formats; a file that starts like one but cannot be parsed is a broken
# container rather than "not media at all".
_CONTAINER_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", "MP4/QuickTime"),
    (4, b"moov", "MP4/QuickTime"),
    (4, b"mdat", "MP4/QuickTime"),
    (4, b"free", "MP4/QuickTime"),
    (4, b"wide", "MP4/QuickTime"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"RIFF", "RIFF (AVI/WAV)"),
    (0, b"OggS", "Ogg"),
    (0, b"fLaC", "FLAC"),
    (0, b"ID3", "MP3"),
    (0, b"FLV", "FLV"),
    (0, b"\x30\x26\xb2\x75", "ASF/WMV"),
)
_LOG_PREFIX = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")


def check_media_file(path: str | Path) -> Path:
    """Fail with a specific MediaError unless ``path`` is an existing, readable, non-empty file."""
    media_path = Path(path)
    if not media_path.exists():
        raise MediaError(media_path, "file does not exist")
    if not media_path.is_file():
        raise MediaError(media_path, "not a regular file (is it a directory?)")
    if media_path.stat().st_size == 0:
        raise MediaError(media_path, "file is empty (0 bytes)")
    try:
        with media_path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise MediaError(media_path, f"file cannot be read: {exc.strerror or exc}") from exc
    return media_path


def unreadable_reason(path: str | Path, tool_message: str) -> str:
    """Explain why a media library could not open ``path``, from its first bytes and the tool's message."""
    with Path(path).open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if _looks_like_text(head):
        preview = head[:40].decode("utf-8", errors="replace").strip().replace("\n", " ")
        return f"not a media file: it contains plain text ({preview!r}...)"
    container = _sniff_container(head)
    if container is not None:
        return f"truncated or corrupt {container} container ({tool_message})"
    return f"not a recognised media file, or a corrupt one ({tool_message})"


PROBE_BACKENDS = ("pyav", "ffprobe")
_AV_TIME_BASE = 1_000_000


def probe(path: str | Path, backend: str = "pyav") -> MediaInfo:
    """Describe a media file: container, duration, size, first video and first audio stream.

    ``backend`` "pyav" (in-process; files it cannot describe fall back to ffprobe) or "ffprobe"
    (two ffprobe processes). Both give the same MediaInfo. Raises MediaError for a missing, empty,
    non-media, corrupt or stream-less file.
    """
    if backend not in PROBE_BACKENDS:
        raise ValueError(f"probe backend must be one of {PROBE_BACKENDS}, got {backend!r}")
    media_path = check_media_file(path)
    described = _describe_in_process(media_path) if backend == "pyav" else None
    if described is None:
        data, packets = _run_ffprobe(media_path), None
    else:
        data, packets = described
    fmt = data.get("format", {})
    origin = _float(fmt.get("start_time")) or 0.0
    video_stream = _first_stream(data, "video")
    audio_stream = _first_stream(data, "audio")
    if video_stream is None and audio_stream is None:
        kinds = sorted({s.get("codec_type", "unknown") for s in data.get("streams", [])})
        found = ", ".join(kinds) if kinds else "none"
        raise MediaError(media_path, f"no video and no audio stream (streams found: {found})")
    video = _video_info(media_path, video_stream, fmt, origin, packets) if video_stream else None
    audio = _audio_info(audio_stream, fmt, origin) if audio_stream else None
    duration = _float(fmt.get("duration"))
    if duration is None:
        duration = max(s.duration for s in (video, audio) if s is not None)
    return MediaInfo(
        path=str(media_path),
        container=str(fmt.get("format_name", "unknown")),
        duration=duration,
        size_bytes=int(fmt.get("size") or media_path.stat().st_size),
        video=video,
        audio=audio,
    )


def _describe_in_process(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """ffprobe's ``-show_format -show_streams`` JSON and the first video stream's packet list, from
    one PyAV open; None when PyAV fails anywhere (the caller then asks ffprobe, for its errors)."""
    try:
        with av.open(str(path), mode="r") as container:
            streams = [_stream_fields(stream) for stream in container.streams]
            fmt = {
                "format_name": container.format.name,
                "start_time": _av_seconds(container.start_time),
                "duration": _av_seconds(container.duration),
                "size": path.stat().st_size,
            }
            data = {"format": fmt, "streams": streams}
            video = _first_stream(data, "video")
            packets = []
            if video is not None:
                stream = container.streams[video["index"]]
                packets, rotation = _packet_fields(container, stream)
                # ffprobe reads these from its opened decoder, as we now have one.
                context = stream.codec_context
                if context.coded_width > 0 and context.coded_height > 0:
                    video.update(coded_width=context.coded_width, coded_height=context.coded_height)
                if rotation:
                    video["side_data_list"] = [{"rotation": rotation}]
    except (av.FFmpegError, OSError, ValueError, RuntimeError) as exc:
        logger.debug("%s: PyAV could not probe it (%s); asking ffprobe", path, exc)
        return None
    return data, packets


def _stream_fields(stream: av.stream.Stream) -> dict[str, Any]:
    """One stream as ffprobe's JSON has it (the fields probe() reads; absent when unknown)."""
    context = stream.codec_context
    tb = stream.time_base
    fields: dict[str, Any] = {
        "index": stream.index,
        "codec_type": stream.type,
        "codec_name": context.codec.canonical_name if context is not None else "unknown",
        "disposition": {"attached_pic": int(av.stream.Disposition.attached_pic in stream.disposition)},
        "tags": dict(stream.metadata),
    }
    if tb is not None:
        fields["time_base"] = f"{tb.numerator}/{tb.denominator}"
        fields["start_time"] = _ticks_seconds(stream.start_time, tb)
        fields["duration"] = _ticks_seconds(stream.duration, tb)
    if stream.type == "video":
        fields.update(
            width=context.width,
            height=context.height,
            avg_frame_rate=_fraction_text(stream.average_rate),
            r_frame_rate=_fraction_text(stream.base_rate),
            nb_frames=stream.frames,
        )
    elif stream.type == "audio":
        fields.update(sample_rate=context.sample_rate, channels=context.channels)
    return {key: value for key, value in fields.items() if value is not None}


def _packet_fields(container: Any, stream: av.stream.Stream) -> tuple[list[dict[str, Any]], float]:
    """``-show_entries packet=pts,dts,flags`` of one stream (flush packets left out, "D" for
    discard), and the display matrix's rotation in ffprobe's sign (counter-clockwise degrees).

    PyAV shows a stream's display matrix only on decoded frames, so packets are decoded until the
    first picture comes out (a few ms); a stream with no decodable picture raises, and ffprobe
    answers instead."""
    packets = []
    rotation = None
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        fields: dict[str, Any] = {"flags": "D" if packet.is_discard else ""}
        if packet.pts is not None:
            fields["pts"] = packet.pts
        if packet.dts is not None:
            fields["dts"] = packet.dts
        packets.append(fields)
        if rotation is None:
            pictures = stream.codec_context.decode(packet)
            if pictures:
                rotation = float(pictures[0].rotation)
    if rotation is None:
        pictures = stream.codec_context.decode(None)  # drain the decoder's delay
        if not pictures:
            raise ValueError("no decodable video frame")
        rotation = float(pictures[0].rotation)
    return packets, rotation


def _av_seconds(value: int | None) -> str | None:
    return None if value is None else _ffprobe_time(value / _AV_TIME_BASE)


def _ticks_seconds(value: int | None, time_base: Fraction) -> str | None:
    return None if value is None else _ffprobe_time(value * (time_base.numerator / time_base.denominator))


def _ffprobe_time(seconds: float) -> str:
    return f"{seconds:f}"  # ffprobe prints times with printf("%f"): the same rounding, same floats


def _fraction_text(value: Fraction | None) -> str:
    return "0/0" if value is None else f"{value.numerator}/{value.denominator}"


def stream_rotation(stream: dict[str, Any]) -> int:
    """Degrees (0/90/180/270) an ffprobe stream's decoded picture must turn clockwise to be upright.

    ffprobe reports a display matrix as a counter-clockwise angle; the legacy ``rotate`` tag of older
    muxers is already clockwise.
    """
    for side_data in stream.get("side_data_list", []):
        if "rotation" in side_data:
            return _quarter_turns(-float(side_data["rotation"]))
    tags = {key.lower(): value for key, value in stream.get("tags", {}).items()}
    if "rotate" in tags:
        return _quarter_turns(float(tags["rotate"]))
    return 0


def _run_ffprobe(path: Path, **options: Any) -> dict[str, Any]:
    try:
        return ffmpeg.probe(str(path), cmd=ffprobe_binary(), v="error", **options)
    except ffmpeg.Error as exc:
        message = _last_stderr_lines(path, exc.stderr)
        raise MediaError(path, unreadable_reason(path, f"ffprobe: {message}")) from exc
    except ValueError as exc:  # ffprobe exited 0 but printed something that is not JSON
        raise MediaError(path, f"ffprobe printed unreadable output: {exc}") from exc


def _last_stderr_lines(path: Path, stderr: bytes | None, count: int = 2) -> str:
    # Drop ffmpeg's "[demuxer @ 0x...]" and "<path>: " prefixes: the MediaError names the file already.
    text = (stderr or b"").decode(errors="replace").replace(f"{path}: ", "")
    lines = [_LOG_PREFIX.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    return "; ".join(lines[-count:]) if lines else "no error message"


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * len(text)


def _sniff_container(head: bytes) -> str | None:
    for offset, magic, name in _CONTAINER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "MPEG audio"
    if len(head) >= 1 and head[0] == 0x47 and len(head) > 188 and head[188] == 0x47:
        return "MPEG-TS"
    return None


def _first_stream(data: dict[str, Any], codec_type: str) -> dict[str, Any] | None:
    for stream in data.get("streams", []):
        if stream.get("codec_type") != codec_type:
            continue
        # Cover art in MP3/M4A files shows up as a one-picture "video" stream; it is not the video.
        if stream.get("disposition", {}).get("attached_pic"):
            continue
        return stream
    return None


@dataclass(frozen=True)
class _PacketStats:
    count: int
    is_vfr: bool | None  # None when there are too few timestamps to tell
    span: float | None  # seconds from the first frame to the end of the last one


def _video_info(
    path: Path,
    stream: dict[str, Any],
    fmt: dict[str, Any],
    origin: float,
    packets: list[dict[str, Any]] | None = None,
) -> VideoStreamInfo:
    stats = _video_packet_stats(path, stream, packets)
    rotation = stream_rotation(stream)
    width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    display_width, display_height = (height, width) if rotation in (90, 270) else (width, height)
    avg_fps = _rate(stream.get("avg_frame_rate"))
    real_fps = _rate(stream.get("r_frame_rate"))
    duration = _stream_duration(stream, fmt, stats.span)
    if avg_fps == 0.0 and stats.count > 1 and duration > 0:
        avg_fps = stats.count / duration
    is_vfr = stats.is_vfr
    if is_vfr is None:  # no usable timestamps: fall back to the header's two rates
        is_vfr = avg_fps > 0 and real_fps > 0 and abs(avg_fps - real_fps) > VFR_TOLERANCE * real_fps
    header_frames = int(stream.get("nb_frames") or 0)
    return VideoStreamInfo(
        codec=str(stream.get("codec_name", "unknown")),
        width=display_width,
        height=display_height,
        coded_width=int(stream.get("coded_width") or width),
        coded_height=int(stream.get("coded_height") or height),
        rotation=rotation,
        avg_fps=avg_fps,
        real_fps=real_fps,
        is_vfr=is_vfr,
        n_frames=header_frames if header_frames > 0 else stats.count,
        start_time=_stream_start(stream, origin),
        duration=duration,
    )


def _audio_info(stream: dict[str, Any], fmt: dict[str, Any], origin: float) -> AudioStreamInfo:
    return AudioStreamInfo(
        codec=str(stream.get("codec_name", "unknown")),
        sample_rate=int(stream.get("sample_rate") or 0),
        channels=int(stream.get("channels") or 0),
        start_time=_stream_start(stream, origin),
        duration=_stream_duration(stream, fmt, None),
    )


def _video_packet_stats(
    path: Path, stream: dict[str, Any], listed: list[dict[str, Any]] | None = None
) -> _PacketStats:
    if listed is None:
        entries = "packet=pts,dts,flags"
        listed = _run_ffprobe(path, select_streams=str(stream["index"]), show_entries=entries).get(
            "packets", []
        )
    packets = [p for p in listed if "D" not in p.get("flags", "")]
    timed = [p for p in packets if p.get("pts", p.get("dts")) is not None]
    if len(timed) < 2:
        return _PacketStats(count=len(packets), is_vfr=None, span=None)
    pts = np.sort(np.array([p.get("pts", p.get("dts")) for p in timed], dtype=np.int64))
    deltas = np.diff(pts).astype(np.float64)
    # The last frame counts for a typical step, as in avpipe.pipeline.timeline (packet durations are
    # decode-order steps once B-frames reorder).
    span = float((pts[-1] - pts[0] + np.median(deltas)) * Fraction(stream.get("time_base", "1/1")))
    if pts.size < 3 or deltas.mean() <= 0:
        return _PacketStats(count=len(packets), is_vfr=None, span=span)
    spread = deltas.std() / deltas.mean()
    one_tick = 1.0 / deltas.mean()
    return _PacketStats(count=len(packets), is_vfr=bool(spread > max(VFR_TOLERANCE, one_tick)), span=span)


def _stream_start(stream: dict[str, Any], origin: float) -> float:
    start = _float(stream.get("start_time"))
    return 0.0 if start is None else start - origin


def _stream_duration(stream: dict[str, Any], fmt: dict[str, Any], packet_span: float | None) -> float:
    duration = _float(stream.get("duration"))
    if duration is None:
        tags = {key.lower(): value for key, value in stream.get("tags", {}).items()}
        duration = _clock_seconds(tags.get("duration"))  # Matroska keeps it in a tag
    if duration is None:
        duration = packet_span
    if duration is None:
        duration = _float(fmt.get("duration"))
    return duration or 0.0


def _clock_seconds(value: str | None) -> float | None:
    if not value:
        return None
    match = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", value.strip())
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _quarter_turns(degrees: float) -> int:
    return round(degrees / 90.0) % 4 * 90


def _rate(value: str | None) -> float:
    if not value or value in ("0/0", "N/A"):
        return 0.0
    try:
        return float(Fraction(value))
    except (ValueError, ZeroDivisionError):
        return 0.0


def _float(value: Any) -> float | None:
    if value in (None, "", "N/A"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
