"""Scale-out benchmark: demo videos through faces + audio on 1 worker process, then on 2 (docs/SCALING.md).

    .venv/bin/python bench/scale.py                       # 8 demo clips, faces logmel mfcc egemaps
    .venv/bin/python bench/scale.py --seconds 8 --size 320x240 --repeats 3   # smaller clips, best of 3
    .venv/bin/python bench/scale.py --workers 1 2 4 --out data/reports/scale.json
    .venv/bin/python bench/scale.py --dataset data/demo    # an existing Aff-Wild2-layout dataset

For each worker count it starts a fresh LocalCluster per stage (as ``avpipe faces`` / ``avpipe extract``
do), runs every extractor into a fresh store, and reports per stage: processing time (first task
submitted to last finished), start-up (cluster + loading the extractor on the workers) and whole-stage
time. The speed-up is over processing time (the part that scales) and over whole-stage time. Every
worker has ``--torch-threads`` threads (default 1), so N workers use N cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avpipe.pipeline.config import DatasetConfig, ManifestConfig, RunnerConfig, StoreConfig  # noqa: E402
from avpipe.pipeline.extract import run_extractor  # noqa: E402
from avpipe.pipeline.manifest import ManifestRow  # noqa: E402
from avpipe.pipeline.registry import default_registry  # noqa: E402
from avpipe.pipeline.runner import RunReport  # noqa: E402

log = logging.getLogger("bench.scale")

DEFAULT_EXTRACTORS = ("faces", "logmel", "mfcc", "egemaps")


@dataclass
class StageTiming:
    stage: str
    workers: int
    frames: int
    processing_s: float
    startup_s: float
    stage_s: float
    worker_s: float
    cpu_s: float
    failed: int
    load: float  # 1-minute load average when the stage ended: other programs competing for the cores

    @classmethod
    def of(cls, report: RunReport, workers: int) -> StageTiming:
        return cls(
            report.stage,
            workers,
            report.frames,
            report.processing_seconds,
            report.startup_seconds,
            report.seconds,
            report.worker_seconds,
            report.worker_cpu_seconds,
            report.failed,
            os.getloadavg()[0],
        )


@dataclass
class Sweep:
    videos: int
    frames_per_video: list[int]
    timings: list[StageTiming] = field(default_factory=list)

    def total(self, workers: int, attr: str) -> float:
        return sum(getattr(t, attr) for t in self.timings if t.workers == workers)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", default=None, help="Aff-Wild2-layout dataset (default: build demo clips)"
    )
    parser.add_argument(
        "--videos", type=int, default=8, help="demo clips to build / videos to use (default 8)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="length of each demo clip (default: the demo's own, 10-16 s)",
    )
    parser.add_argument("--size", default=None, help="demo frame size WxH (default: the demo's own, 480x360)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--extractors", nargs="+", default=list(DEFAULT_EXTRACTORS))
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs per stage and worker count; the fastest is kept (default 1)",
    )
    parser.add_argument("--work-dir", default=None, help="where to build data (default: a temp folder)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    return parser.parse_args(argv)


def build_dataset(args: argparse.Namespace, work: Path) -> Path:
    if args.dataset:
        return Path(args.dataset)
    from avpipe.pipeline.demo import DemoConfig, build_demo_dataset

    shape = {}
    if args.seconds is not None:
        shape.update(min_seconds=args.seconds, max_seconds=args.seconds)
    if args.size is not None:
        width, height = (int(v) for v in args.size.lower().split("x"))
        shape.update(width=width, height=height)
    # The clips `avpipe demo` makes (same generator and defaults); one row per file: 8 files, 8 tasks.
    cfg = DemoConfig(root=str(work / "demo"), n_clips=args.videos, validation_clips=0, **shape)
    return build_demo_dataset(cfg)


def manifest_rows(dataset: Path, work: Path, limit: int) -> list[ManifestRow]:
    from avpipe.pipeline.manifest_builder import build_manifest

    manifest = ManifestConfig(path=str(work / "manifest.csv"), failures=str(work / "manifest_failures.csv"))
    report = build_manifest(
        DatasetConfig(adapter="affwild2", root=str(dataset)), manifest, StoreConfig(root=str(work / "labels"))
    )
    if report.failures:
        log.warning("%d videos failed the manifest: %s", len(report.failures), report.failures)
    # Two-person clips give two rows (left/right) for one file; keep one row per file and `limit` files.
    by_file: dict[str, ManifestRow] = {}
    for row in report.rows:
        by_file.setdefault(row.media_path, row)
    return sorted(by_file.values(), key=lambda r: r.video_id)[:limit]


def run_sweep(args: argparse.Namespace, rows: list[ManifestRow], work: Path) -> Sweep:
    """Each stage on each worker count in turn, so a change in machine load hits every count alike;
    with ``--repeats`` the fastest run of each pair is kept (the one least disturbed by other load)."""
    registry = default_registry()
    sweep = Sweep(videos=len(rows), frames_per_video=[r.n_frames for r in rows])
    for name in args.extractors:
        config = registry.get(name).config_class()
        best: dict[int, StageTiming] = {}
        for _ in range(args.repeats):
            for workers in args.workers:
                runner = RunnerConfig(n_workers=workers, torch_threads=args.torch_threads, device="cpu")
                store_root = work / f"store-{workers}"
                shutil.rmtree(store_root / name, ignore_errors=True)  # recompute, do not skip
                report = run_extractor(
                    name, config, rows, StoreConfig(root=str(store_root)), runner, registry=registry
                )
                log.info("%d workers: %s", workers, report.summary())
                timing = StageTiming.of(report, workers)
                if workers not in best or timing.processing_s < best[workers].processing_s:
                    best[workers] = timing
        sweep.timings.extend(best.values())
    sweep.timings.sort(key=lambda t: (t.workers, args.extractors.index(t.stage)))
    return sweep


def render(sweep: Sweep, workers: list[int]) -> str:
    lines = [
        f"{sweep.videos} videos, {sum(sweep.frames_per_video)} frames "
        f"({min(sweep.frames_per_video)}-{max(sweep.frames_per_video)} per video)",
        f"{'stage':<10} {'workers':>7} {'frames':>7} {'process s':>10} {'startup s':>10} {'stage s':>8} "
        f"{'frames/s':>9} {'busy %':>7} {'cpu ms/frame':>12} {'load':>5} {'failed':>6}",
    ]
    for t in sweep.timings:
        fps = t.frames / t.processing_s if t.processing_s else 0.0
        busy = 100.0 * t.worker_s / (t.processing_s * t.workers) if t.processing_s else 0.0
        cpu_ms = 1000.0 * t.cpu_s / t.frames if t.frames else 0.0
        lines.append(
            f"{t.stage:<10} {t.workers:>7} {t.frames:>7} {t.processing_s:>10.1f} {t.startup_s:>10.1f} "
            f"{t.stage_s:>8.1f} {fps:>9.1f} {busy:>7.0f} {cpu_ms:>12.2f} {t.load:>5.1f} {t.failed:>6}"
        )
    lines.append(
        f"cores: {os.cpu_count()}; load = 1-minute load average after the stage (> cores: shared CPU)"
    )
    base = workers[0]
    for n in workers[1:]:
        process = sweep.total(base, "processing_s") / max(sweep.total(n, "processing_s"), 1e-9)
        whole = sweep.total(base, "stage_s") / max(sweep.total(n, "stage_s"), 1e-9)
        lines.append(
            f"speed-up {n} vs {base} workers: {process:.2f}x on processing time "
            f"({sweep.total(base, 'processing_s'):.1f} s -> {sweep.total(n, 'processing_s'):.1f} s), "
            f"{whole:.2f}x on whole-stage time ({sweep.total(base, 'stage_s'):.1f} s -> "
            f"{sweep.total(n, 'stage_s'):.1f} s)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="avpipe-scale-") as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        dataset = build_dataset(args, work)
        rows = manifest_rows(dataset, work, args.videos)
        log.info("dataset ready: %d videos in %.1f s", len(rows), time.perf_counter() - started)
        sweep = run_sweep(args, rows, work)
    table = render(sweep, args.workers)
    sys.stdout.write(table + "\n")
    if args.out:
        payload = {"videos": sweep.videos, "frames_per_video": sweep.frames_per_video}
        payload["timings"] = [t.__dict__ for t in sweep.timings]
        payload["table"] = table
        Path(args.out).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
