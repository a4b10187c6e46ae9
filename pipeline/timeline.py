"""The frames a stage works on, and streaming decode of video frames and audio with PyAV.

Every time here is on the container clock: ``pts * time_base - format_start_time`` (see
``pipeline/types.py``). ``video_timeline`` reads packet timestamps only (no decoding) and
``iter_frames`` decodes the same frames, matching each decoded picture to its timeline entry by
pts, so both always give the same ``time`` and ``frame_index``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.container import InputContainer

from avpipe.pipeline.errors import MediaError
from avpipe.pipeline.media import check_media_file, probe, unreadable_reason
from avpipe.pipeline.types import AudioTrack, Frame, MediaInfo, Timeline

logger = logging.getLogger(__name__)

# A grid time that equals a frame time up to float rounding (t0 + k/fps against pts * time_base)
# must pick that frame, not the one before it.
GRID_TOLERANCE = 1e-6
# swresample's timestamp sync: pad timestamp gaps (and trim overlaps) longer than min_hard_comp
# seconds with silence, so samples stay on the container clock; shorter jitter is left alone.
_AUDIO_GAP_FILL = {"async": "1", "min_hard_comp": "0.02"}
# Open-GOP starts and damaged packets can leave a few frames without a picture; those show a
# neighbouring picture. More frames than this missing means decoding failed.
MAX_HELD_FRACTION = 0.02
MIN_HELD_ALLOWANCE = 4
_AV_TIME_BASE = 1_000_000  # PyAV gives the container start time in microseconds


@dataclass(frozen=True)
class _Clock:
    """Converts a stream's pts ticks to seconds on the container clock."""

    time_base: Fraction
    origin: float  # container start, seconds

    def seconds(self, pts: np.ndarray | int) -> np.ndarray | float:
        return pts * self.time_base.numerator / self.time_base.denominator - self.origin


@dataclass(frozen=True)
class _NativeFrames:
    pts: np.ndarray  # (N,) int64 presentation timestamps, ascending
    time: np.ndarray  # (N,) float64 seconds, container clock
    end: float  # when the last frame stops being displayed, container clock


def video_timeline(path: str | Path, fps: float | None = None, info: MediaInfo | None = None) -> Timeline:
    """Times and source indices of the frames a stage works on, read from packets without decoding.

    ``fps`` None: every frame at its presentation time. ``fps`` given: a grid ``t0 + k / fps`` over
    the video's span, each grid time taking the source frame on display then.
    """
    media_path = Path(path)
    _require_video(media_path, info)
    native = _read_native_frames(media_path)
    return _timeline_of(native, fps)


def iter_frames(path: str | Path, fps: float | None = None, info: MediaInfo | None = None) -> Iterator[Frame]:
    """Decoded upright RGB uint8 frames with exactly the times and indices of ``video_timeline``.

    Streams: one decoded picture is held at a time. When ``fps`` repeats a source frame, each
    repeat gets its own copy of the image. Raises MediaError when decoding fails part-way.
    """
    media_path = Path(path)
    if info is None:
        info = probe(media_path)
    _require_video(media_path, info)
    native = _read_native_frames(media_path)
    timeline = _timeline_of(native, fps)
    rotation = info.video.rotation if info.video is not None else 0
    with _open_container(media_path) as container:
        stream = _video_stream(container, media_path)
        stream.thread_type = "AUTO"  # frame + slice threads: decoding is the face stage's bottleneck
        decoded = _decoded_pictures(container, stream, media_path)
        yield from _frames_on_timeline(media_path, decoded, native, timeline, rotation)


def audio_only_timeline(
    path: str | Path, audio_fps: float, fps: float | None = None, info: MediaInfo | None = None
) -> Timeline:
    """The timeline of a file without a video stream (``dataset.audio_fps``, docs/ARCHITECTURE.md).

    Its "native frames" are a grid ``t0 + k / audio_fps`` over the audio stream's span (``t0`` its
    start on the container clock), ``frame_index`` = ``k``; ``fps`` resamples it as it would a
    video's native frames. The span comes from ``probe``, so the manifest and every stage get the
    same grid.
    """
    media_path = Path(path)
    if info is None:
        info = probe(media_path)
    if info.audio is None:
        raise MediaError(media_path, "no video and no audio stream")
    start, end = info.audio.start_time, info.audio.start_time + info.audio.duration
    native = fixed_rate_timeline(start, end, audio_fps)
    if len(native) == 0:
        raise MediaError(media_path, f"audio stream is empty (duration {info.audio.duration:.3f}s)")
    return native if fps is None else resampled_timeline(native.time, end, fps)


def media_timeline(
    path: str | Path, fps: float | None = None, audio_fps: float | None = None, info: MediaInfo | None = None
) -> Timeline:
    """``video_timeline`` for files with a video stream; with ``audio_fps`` set, files without
    one get ``audio_only_timeline`` instead (without it they are a MediaError, as before)."""
    if audio_fps is None:
        return video_timeline(path, fps=fps, info=info)
    if info is None:
        info = probe(path)
    if info.video is None:
        return audio_only_timeline(path, audio_fps, fps=fps, info=info)
    return video_timeline(path, fps=fps, info=info)


def fixed_rate_timeline(start: float, end: float, rate: float) -> Timeline:
    """Grid ``start + k / rate`` over ``[start, end)``, ``frame_index`` = ``k``."""
    if not np.isfinite(rate) or rate <= 0:
        raise ValueError(f"rate must be a positive number, got {rate!r}")
    count = max(0, int(np.ceil((end - start) * rate - GRID_TOLERANCE)))
    grid = start + np.arange(count, dtype=np.float64) / rate
    return Timeline(time=grid, frame_index=np.arange(count, dtype=np.int64))


def resampled_timeline(frame_time: np.ndarray, end: float, fps: float) -> Timeline:
    """Grid ``t0 + k / fps`` over ``[frame_time[0], end)``; each grid time takes the latest frame
    whose time is <= it. ``frame_time`` must be ascending (the native timeline's times)."""
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if frame_time.size == 0:
        return Timeline(time=np.zeros(0, np.float64), frame_index=np.zeros(0, np.int64))
    start = float(frame_time[0])
    count = max(1, int(np.ceil((end - start) * fps - GRID_TOLERANCE)))
    grid = start + np.arange(count, dtype=np.float64) / fps
    chosen = np.searchsorted(frame_time, grid + GRID_TOLERANCE, side="right") - 1
    return Timeline(time=grid, frame_index=chosen.astype(np.int64))


def decode_audio(
    path: str | Path, sample_rate: int = 16000, info: MediaInfo | None = None
) -> AudioTrack | None:
    """The first audio stream as mono float32 at ``sample_rate``, or None if the file has no audio.

    ``start`` is the time of the first decoded sample on the container clock. Gaps in the audio
    timestamps are filled with silence so that sample ``i`` is always at ``start + i / sample_rate``.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
    media_path = Path(path)
    if info is not None and info.audio is None:
        return None
    with _open_container(media_path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        clock = _clock(container, stream)
        return _decode_audio_stream(container, stream, media_path, clock, sample_rate)


def _require_video(path: Path, info: MediaInfo | None) -> None:
    if info is not None and info.video is None:
        raise MediaError(path, "no video stream (audio-only file)")


@contextmanager
def _open_container(path: Path) -> Iterator[InputContainer]:
    check_media_file(path)
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise MediaError(path, unreadable_reason(path, f"PyAV: {_describe(exc)}")) from exc
    try:
        yield container
    finally:
        container.close()


def _video_stream(container: InputContainer, path: Path) -> av.VideoStream:
    for stream in container.streams.video:
        # Cover art is a one-picture "video" stream; probe() skips it too.
        if av.stream.Disposition.attached_pic not in stream.disposition:
            return stream
    raise MediaError(path, "no video stream (audio-only file)")


def _clock(container: InputContainer, stream: av.stream.Stream) -> _Clock:
    origin = (container.start_time or 0) / _AV_TIME_BASE
    return _Clock(time_base=Fraction(stream.time_base), origin=origin)


def _read_native_frames(path: Path) -> _NativeFrames:
    with _open_container(path) as container:
        stream = _video_stream(container, path)
        clock = _clock(container, stream)
        scan = _scan_packets(container, stream, path)
        declared = stream.frames if container.format.name.startswith("mov,") else 0
    order = np.argsort(scan.pts, kind="stable")
    pts = scan.pts[order]
    time = np.asarray(clock.seconds(pts), dtype=np.float64)
    # MP4's sample table lists every frame, so fewer packets than listed means the data was cut off.
    if scan.last_is_partial or 0 < scan.packets < declared:
        listed = f", {scan.packets} of the {declared} listed frames present" if declared else ""
        raise MediaError(path, f"file is truncated: video data stops at t={time[-1]:.3f}s{listed}")
    # Packet durations are decode-order steps, not display times, once B-frames reorder; the last
    # frame is shown for a typical frame step instead.
    end = float(clock.seconds(int(pts[-1]) + _typical_frame_ticks(pts, stream)))
    return _NativeFrames(pts=pts, time=time, end=end)


@dataclass(frozen=True)
class _PacketScan:
    pts: np.ndarray  # (N,) int64, decode order, shown frames only
    packets: int  # every data packet, including ones an edit list hides
    last_is_partial: bool  # the demuxer hit end of file inside the last packet


def _scan_packets(container: InputContainer, stream: av.VideoStream, path: Path) -> _PacketScan:
    pts_list: list[int] = []
    packets = 0
    last_is_partial = False
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # flush packet at end of stream
                continue
            packets += 1
            last_is_partial = packet.is_corrupt
            if packet.is_discard:  # before an edit list's start: never shown
                continue
            timestamp = packet.pts if packet.pts is not None else packet.dts
            if timestamp is None:
                raise MediaError(path, f"video packet {packets} carries no timestamp")
            pts_list.append(timestamp)
    except av.FFmpegError as exc:
        raise MediaError(
            path, f"reading video packets failed after {len(pts_list)} frames: {_describe(exc)}"
        ) from exc
    if not pts_list:
        raise MediaError(path, "video stream contains no frames")
    return _PacketScan(
        pts=np.asarray(pts_list, dtype=np.int64),
        packets=packets,
        last_is_partial=last_is_partial,
    )


def _typical_frame_ticks(pts: np.ndarray, stream: av.VideoStream) -> int:
    if pts.size > 1:
        return int(np.median(np.diff(pts)))
    rate = stream.average_rate or stream.base_rate
    if rate:
        return max(1, round(1 / (float(rate) * float(stream.time_base))))
    return 0


def _timeline_of(native: _NativeFrames, fps: float | None) -> Timeline:
    if fps is None:
        return Timeline(time=native.time, frame_index=np.arange(native.time.size, dtype=np.int64))
    return resampled_timeline(native.time, native.end, fps)


def _decoded_pictures(
    container: InputContainer, stream: av.VideoStream, path: Path
) -> Iterator[av.VideoFrame]:
    clock = _clock(container, stream)
    where = float(clock.seconds(stream.start_time or 0))
    try:
        for packet in container.demux(stream):
            if packet.pts is not None:
                where = float(clock.seconds(packet.pts))
            yield from packet.decode()
    except av.FFmpegError as exc:
        raise MediaError(path, f"video decoding failed near t={where:.3f}s: {_describe(exc)}") from exc


def _frames_on_timeline(
    path: Path,
    decoded: Iterator[av.VideoFrame],
    native: _NativeFrames,
    timeline: Timeline,
    rotation: int,
) -> Iterator[Frame]:
    n_native = native.pts.size
    # Timeline rows of source frame i are first_row[i]:first_row[i + 1] (frame_index is ascending).
    first_row = np.searchsorted(timeline.frame_index, np.arange(n_native + 1), side="left")
    allowance = max(MIN_HELD_ALLOWANCE, int(MAX_HELD_FRACTION * n_native))

    def rows_of(index: int, picture: av.VideoFrame) -> Iterator[Frame]:
        rows = range(int(first_row[index]), int(first_row[index + 1]))
        if not rows:
            return  # not on the timeline (fps downsampling): skip the RGB conversion
        image = _upright_rgb(picture, rotation)
        for repeat, row in enumerate(rows):
            yield Frame(
                index=index, time=float(timeline.time[row]), image=image if repeat == 0 else image.copy()
            )

    def held_rows(missing: range, neighbour: av.VideoFrame) -> Iterator[Frame]:
        nonlocal held
        held += len(missing)
        if held > allowance:
            where = native.time[missing.start]
            reason = f"the decoder produced no picture for {held} of {n_native} frames"
            raise MediaError(path, f"video decoding failed near t={where:.3f}s: {reason}")
        for index in missing:
            yield from rows_of(index, neighbour)

    held = 0
    next_index = 0
    previous: av.VideoFrame | None = None
    for picture in decoded:
        index = _match_picture(native.pts, picture.pts, next_index)
        if index is None:
            logger.debug("%s: decoded picture with pts %s is not on the timeline", path, picture.pts)
            continue
        yield from held_rows(range(next_index, index), previous if previous is not None else picture)
        yield from rows_of(index, picture)
        previous, next_index = picture, index + 1
    if previous is None:
        raise MediaError(path, "no video frame could be decoded")
    yield from held_rows(range(next_index, n_native), previous)
    if held:
        logger.warning("%s: the decoder produced no picture for %d frames; a neighbour is shown", path, held)


def _match_picture(native_pts: np.ndarray, picture_pts: int | None, expected: int) -> int | None:
    if expected >= native_pts.size:
        return None
    if picture_pts is None or native_pts[expected] == picture_pts:
        return expected
    position = expected + int(np.searchsorted(native_pts[expected:], picture_pts, side="left"))
    if position < native_pts.size and native_pts[position] == picture_pts:
        return position
    return None


def _upright_rgb(picture: av.VideoFrame, rotation: int) -> np.ndarray:
    image = picture.to_ndarray(format="rgb24")
    if rotation == 0:
        return image
    # np.rot90 turns counter-clockwise for positive k; the probe's rotation is clockwise.
    return np.ascontiguousarray(np.rot90(image, k=-(rotation // 90)))


def _decode_audio_stream(
    container: InputContainer, stream: av.AudioStream, path: Path, clock: _Clock, sample_rate: int
) -> AudioTrack:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate, options=_AUDIO_GAP_FILL)
    chunks: list[np.ndarray] = []
    start: float | None = None
    where = 0.0
    try:
        for packet in container.demux(stream):
            if packet.pts is not None:
                where = float(clock.seconds(packet.pts))
            for frame in packet.decode():
                if start is None:
                    start = where if frame.pts is None else float(clock.seconds(frame.pts))
                chunks.extend(chunk.to_ndarray().reshape(-1) for chunk in resampler.resample(frame))
        chunks.extend(chunk.to_ndarray().reshape(-1) for chunk in resampler.resample(None))
    except av.FFmpegError as exc:
        raise MediaError(path, f"audio decoding failed near t={where:.3f}s: {_describe(exc)}") from exc
    if start is None or not chunks:
        raise MediaError(path, "audio stream contains no decodable samples")
    samples = np.clip(np.concatenate(chunks).astype(np.float32, copy=False), -1.0, 1.0)
    source_rate = stream.codec_context.sample_rate or stream.sample_rate or None
    return AudioTrack(samples=samples, sample_rate=sample_rate, start=start, source_sample_rate=source_rate)


def _describe(exc: av.FFmpegError) -> str:
    # FFmpeg's own message, without PyAV's errno and repeated file name.
    return str(exc.strerror or exc)
