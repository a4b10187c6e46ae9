"""Many-clip benchmark: the manifest and one audio feature over N short clips (docs/SCALING.md).

    .venv/bin/python bench/scale_many.py                        # 1,000 and 10,000 two-second clips
    .venv/bin/python bench/scale_many.py --sizes 200 2000       # smaller corpora on a busy machine
    .venv/bin/python bench/scale_many.py --sizes 500 --workers 2 --task-seconds 0 --out scale_many.json

Clips are 128x128 H.264 + AAC of about 2 s (``--variants`` distinct encodes, written once with
ffmpeg and copied under new names, so generating 10,000 clips takes seconds, not an hour). For each
size it runs, in this process as the ``avpipe`` commands do:

1. the manifest stage (folder adapter, labels shards): per-clip time, files created, index bytes;
2. ``logmel`` end to end (cluster start included): per-clip time, files, index bytes;
3. ``logmel`` again with everything stored: the time to decide "skip" for every clip;

and prints the per-clip ratio between the largest and the smallest size (1.00 = linear), the
driver's peak RSS, and the load average (the machine is shared: compare ratios from one run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avpipe.pipeline.config import DatasetConfig, ManifestConfig, RunnerConfig, StoreConfig  # noqa: E402
from avpipe.pipeline.extract import run_extractor  # noqa: E402
from avpipe.pipeline.extractors.audio import LogMelConfig  # noqa: E402
from avpipe.pipeline.manifest import read_manifest  # noqa: E402
from avpipe.pipeline.manifest_builder import build_manifest  # noqa: E402
from avpipe.pipeline.tools import ffmpeg_binary  # noqa: E402

log = logging.getLogger("bench.scale_many")

TARGET_MS_PER_CLIP = 15.0
TARGET_FLATNESS = 1.10
TARGET_SKIP_S_PER_10K = 5.0


@dataclass
class StageFigures:
    stage: str
    clips: int
    seconds: float
    files_created: int
    index_bytes_written: int
    load: float
    cpu_seconds: float  # this process and its finished children (the LocalCluster's workers)

    @property
    def ms_per_clip(self) -> float:
        return 1000.0 * self.seconds / max(1, self.clips)

    @property
    def cpu_ms_per_clip(self) -> float:
        return 1000.0 * self.cpu_seconds / max(1, self.clips)


@dataclass
class SizeFigures:
    clips: int
    manifest: StageFigures
    logmel: StageFigures
    skip_seconds: float
    driver_peak_rss_mb: float


def make_variants(folder: Path, count: int, seconds: float) -> list[Path]:
    """``count`` distinct 128x128 H.264 + AAC clips around ``seconds`` long (tone and length vary)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        length = seconds * (0.9 + 0.2 * index / max(1, count - 1))
        path = folder / f"variant{index:02d}.mp4"
        command = [
            ffmpeg_binary(), "-v", "error", "-y",
            "-f", "lavfi", "-t", f"{length:.3f}", "-i", "testsrc2=size=128x128:rate=25",
            "-f", "lavfi", "-t", f"{length:.3f}",
            "-i", f"sine=frequency={220 + 40 * index}:sample_rate=48000",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
            str(path),
        ]  # fmt: skip
        subprocess.run(command, check=True)
        paths.append(path)
    return paths


def make_corpus(root: Path, variants: list[Path], clips: int) -> None:
    """``clips`` files in folders of 1,000 (as corpora ship them), copies of the variants in turn."""
    for index in range(clips):
        target = root / f"spk{index // 1000:03d}" / f"clip{index:06d}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(variants[index % len(variants)], target)


class FolderWatch:
    """Counts files created under a folder and bytes written to index files, from before/after scans."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = self._files()

    def _files(self) -> dict[str, int]:
        found = {}
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    found[path] = os.stat(path).st_size
                except FileNotFoundError:
                    continue
        return found

    def created(self) -> int:
        return len(set(self._files()) - set(self.files))


def index_bytes_written(run: callable) -> tuple[object, int]:
    """Run ``run()`` counting the bytes the index module writes (log appends and snapshots)."""
    from avpipe.pipeline import index as index_module

    real = index_module._write_all
    written = [0]

    def counting(fd: int, data: bytes) -> None:
        written[0] += len(data)
        real(fd, data)

    index_module._write_all = counting
    try:
        result = run()
    finally:
        index_module._write_all = real
    return result, written[0]


def load_average() -> float:
    return os.getloadavg()[0]


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (a LocalCluster's nannies and
    workers end with their stage): what the work cost, whatever else competes for the cores."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure_size(
    work: Path, variants: list[Path], clips: int, runner: RunnerConfig, videos_per_shard: int = 1
) -> SizeFigures:
    media = work / f"media{clips}"
    if not media.is_dir():
        make_corpus(media, variants, clips)
    store_cfg = StoreConfig(
        root=str(work / f"features{clips}-{videos_per_shard}"), videos_per_shard=videos_per_shard
    )
    dataset = DatasetConfig(adapter="folder", root=str(media))
    manifest_cfg = ManifestConfig(
        path=str(work / f"manifest{clips}-{videos_per_shard}.csv"),
        failures=str(work / f"failures{clips}-{videos_per_shard}.csv"),
    )
    Path(store_cfg.root).mkdir(parents=True, exist_ok=True)

    watch = FolderWatch(Path(store_cfg.root))
    started, cpu = time.perf_counter(), cpu_seconds()
    report, index_bytes = index_bytes_written(
        lambda: build_manifest(dataset, manifest_cfg, store_cfg, runner)
    )
    manifest = StageFigures(
        "manifest",
        clips,
        time.perf_counter() - started,
        watch.created(),
        index_bytes,
        load_average(),
        cpu_seconds() - cpu,
    )
    if report.failures:
        raise SystemExit(f"manifest failed for {len(report.failures)} clips: {report.failures[:3]}")
    rows = read_manifest(manifest_cfg.path)

    watch = FolderWatch(Path(store_cfg.root))
    started, cpu = time.perf_counter(), cpu_seconds()
    run = lambda: run_extractor("logmel", LogMelConfig(), rows, store_cfg, runner)  # noqa: E731
    extracted, index_bytes = index_bytes_written(run)
    logmel = StageFigures(
        "logmel",
        clips,
        time.perf_counter() - started,
        watch.created(),
        index_bytes,
        load_average(),
        cpu_seconds() - cpu,
    )
    if extracted.failures:
        raise SystemExit(f"logmel failed for {len(extracted.failures)} clips: {extracted.failures[:3]}")

    started = time.perf_counter()
    again = run_extractor("logmel", LogMelConfig(), rows, store_cfg, runner)
    skip_seconds = time.perf_counter() - started
    assert again.skipped == clips and again.done == 0, again.summary()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return SizeFigures(clips, manifest, logmel, skip_seconds, rss)


def print_figures(figures: list[SizeFigures]) -> None:
    lines = [
        f"{'clips':>7} {'stage':>9} {'ms/clip':>8} {'CPU ms/clip':>11} {'files':>7} "
        f"{'index KiB':>10} {'load':>5}",
    ]
    for size in figures:
        for stage in (size.manifest, size.logmel):
            lines.append(
                f"{size.clips:>7} {stage.stage:>9} {stage.ms_per_clip:>8.2f} {stage.cpu_ms_per_clip:>11.2f} "
                f"{stage.files_created:>7} "
                f"{stage.index_bytes_written / 1024:>10.1f} {stage.load:>5.2f}"
            )
        lines.append(
            f"{size.clips:>7} {'skip':>9} {1000 * size.skip_seconds / size.clips:>8.3f}   "
            f"(all stored: {size.skip_seconds:.2f} s; driver peak RSS {size.driver_peak_rss_mb:.0f} MiB)"
        )
    small, large = figures[0], figures[-1]
    for stage in ("manifest", "logmel"):
        a, b = getattr(small, stage), getattr(large, stage)
        ratio = b.ms_per_clip / a.ms_per_clip
        lines.append(
            f"{stage}: {b.ms_per_clip:.2f} ms/clip at {large.clips} "
            f"({'met' if b.ms_per_clip <= TARGET_MS_PER_CLIP else 'NOT met'}: <= {TARGET_MS_PER_CLIP} ms); "
            f"{large.clips} vs {small.clips} clips: x{ratio:.3f} per clip "
            f"({'met' if ratio <= TARGET_FLATNESS else 'NOT met'}: <= {TARGET_FLATNESS})"
        )
    skip_10k = large.skip_seconds * 10000 / large.clips
    lines.append(
        f"skip decision, all stored: {large.skip_seconds:.2f} s for {large.clips} clips "
        f"= {skip_10k:.2f} s per 10,000 ({'met' if skip_10k <= TARGET_SKIP_S_PER_10K else 'NOT met'}: "
        f"<= {TARGET_SKIP_S_PER_10K} s)"
    )
    sys.stdout.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="corpus sizes (clips)")
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length")
    parser.add_argument("--variants", type=int, default=16, help="distinct encodes the clips copy")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    parser.add_argument("--videos-per-shard", type=int, default=1, help="store.videos_per_shard")
    parser.add_argument(
        "--task-seconds", type=float, default=None, help="runner.task_seconds (0: one task per clip)"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for clips and stores (default: a temp folder)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    runner_options = {"n_workers": args.workers}
    if args.task_seconds is not None:
        runner_options["task_seconds"] = args.task_seconds
    runner = RunnerConfig(**runner_options)
    work = args.work or Path(tempfile.mkdtemp(prefix="scale_many_"))
    try:
        variants = make_variants(work / "variants", args.variants, args.seconds)
        figures = []
        for clips in sorted(args.sizes):
            figures.append(measure_size(work, variants, clips, runner, args.videos_per_shard))
            sys.stdout.write(f"{clips} clips done (load {load_average():.2f})\n")
            sys.stdout.flush()
        print_figures(figures)
        if args.out is not None:
            args.out.write_text(json.dumps([asdict(f) for f in figures], indent=1) + "\n", encoding="utf-8")
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
