"""Write an mp4 (H.264 yuv420p + AAC) by piping raw RGB frames into an ffmpeg subprocess.

The encoder is pinned to one thread and bit-exact flags so that the same frames and audio give
the same file bytes on a given ffmpeg build.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np
import soundfile

from avpipe.pipeline.errors import MediaError
from avpipe.pipeline.tools import ffmpeg_binary

X264_PRESET = "veryfast"
X264_CRF = "18"
AAC_BITRATE = "96k"


def frame_rate_text(fps: float) -> str:
    """An exact rational for ffmpeg: 25 -> '25/1', 29.97 -> '2997/100'."""
    rate = Fraction(fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


class Mp4Writer:
    """Context manager: ``write(frame)`` each RGB frame; on exit ffmpeg muxes them with the audio."""

    def __init__(
        self, path: Path, size: tuple[int, int], fps: float, audio: np.ndarray, sample_rate: int
    ) -> None:
        self.path = Path(path)
        self.size = size
        self.fps = fps
        self.audio = audio
        self.sample_rate = sample_rate
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._process: subprocess.Popen | None = None
        self._stderr = None

    def __enter__(self) -> Mp4Writer:
        self._scratch = tempfile.TemporaryDirectory(prefix="avpipe-demo-")
        wav = Path(self._scratch.name) / "audio.wav"
        soundfile.write(wav, self.audio, self.sample_rate, subtype="FLOAT")
        # stderr to a file, not a pipe: a full pipe would block ffmpeg while we block on stdin
        self._stderr = open(Path(self._scratch.name) / "stderr.txt", "w+b")
        self._process = subprocess.Popen(
            self._command(wav), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr
        )
        return self

    def _command(self, wav: Path) -> list[str]:
        width, height = self.size
        return [
            ffmpeg_binary(),
            "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-framerate", frame_rate_text(self.fps), "-i", "pipe:0",
            "-i", str(wav),
            "-map", "0:v:0", "-map", "1:a:0",
            "-c:v", "libx264", "-preset", X264_PRESET, "-crf", X264_CRF, "-pix_fmt", "yuv420p",
            "-threads", "1",
            "-c:a", "aac", "-b:a", AAC_BITRATE, "-ac", "1", "-ar", str(self.sample_rate),
            "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
            "-movflags", "+faststart",
            "-f", "mp4", str(self.path),
        ]  # fmt: skip

    def write(self, frame: np.ndarray) -> None:
        width, height = self.size
        if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be ({height}, {width}, 3) uint8, got {frame.shape} {frame.dtype}")
        try:
            self._process.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            self._process.wait()
            raise MediaError(self.path, f"ffmpeg stopped early: {self._stderr_text()}") from None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._process.stdin and not self._process.stdin.closed:
                with contextlib.suppress(BrokenPipeError):  # ffmpeg already gone: reported below
                    self._process.stdin.close()
            if exc_type is not None:
                self._process.kill()
            code = self._process.wait()
            if exc_type is None and code != 0:
                raise MediaError(self.path, f"ffmpeg exited with code {code}: {self._stderr_text()}")
        finally:
            self._stderr.close()
            self._scratch.cleanup()

    def _stderr_text(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip() or "(no message)"
