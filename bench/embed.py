"""Face-embedding throughput: crops per second through the embedding extractors.

Measures the whole ``extract`` path (uint8 112x112 crops -> preprocessing -> network -> float32 rows)
for each backbone. Weights do not change speed, so backbones without shipped weights run randomly
initialised. Target (issue 5): fer-minixception >= 1000 crops/s on a 2-core CPU.

    python bench/embed.py                          # fer-minixception and inception-resnet-v1, auto device
    python bench/embed.py --backbones fer-minixception --processes 1 --threads 2 --json out.json
    python bench/embed.py --backbones timm --timm-model tf_efficientnet_b0   # HSEmotion's architecture

On CPU it runs as the pipeline does: one single-threaded process per core, measuring at the same time,
their rates summed. On a shared machine numbers are noisy: the best of ``--repeats`` runs is reported
next to the median, and the rate per second of CPU time used (one idle core's rate, roughly).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Runnable as `python bench/embed.py` from a checkout without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from avpipe.pipeline.extractors.backbones.registry import create_backbone
from avpipe.pipeline.registry import create_extractor
from avpipe.pipeline.runner import resolve_device
from avpipe.pipeline.types import FaceCrops, VideoContext

log = logging.getLogger("bench.embed")

TARGETS = {"fer-minixception": 1000.0}  # crops/s on a 2-core CPU
# Crops per timed run: a few seconds each on 2 CPU cores.
DEFAULT_CROPS = {"fer-minixception": 2048}
OTHER_CROPS = 256
SHIPPED_WEIGHTS = {"fer-minixception"}  # the others run with random weights here


@dataclass
class Result:
    backbone: str
    device: str
    processes: int
    threads: int
    batch_size: int
    fp16: bool
    channels_last: bool
    crops: int
    best_crops_per_s: float
    median_crops_per_s: float
    # Crops per second of CPU time used by this process (all threads): what one core would do were
    # it not shared; far less sensitive than wall-clock rates to other jobs on the machine.
    crops_per_cpu_s: float
    rates: list[float]  # crops/s of each timed run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["fer-minixception", "inception-resnet-v1"])
    parser.add_argument(
        "--crops",
        type=int,
        default=None,
        help="crops per timed run (default: 2048 for fer-minixception, else 256)",
    )
    parser.add_argument(
        "--timm-model",
        default="tf_efficientnet_b0",
        help="architecture of the timm backbone (default: HSEmotion's EfficientNet-B0, 8 classes)",
    )
    parser.add_argument("--crop-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default 1)")
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="CPU: processes measuring at once, rates summed (default: one per core, as the Dask runner "
        "runs one single-threaded worker per core); CUDA: always 1",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--compare-layouts", action="store_true", help="also run without channels_last (and fp16)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def make_crops(n: int, size: int) -> FaceCrops:
    rng = np.random.default_rng(0)
    return FaceCrops(
        time=np.arange(n) / 25.0,
        frame_index=np.arange(n, dtype=np.int64),
        mask=np.ones(n, np.uint8),
        crops=rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8),
    )


def measure(
    name: str,
    device: str,
    args: argparse.Namespace,
    fp16: bool,
    channels_last: bool,
    barrier: Any = None,
) -> Result:
    """Rates of ``extract`` over ``--repeats`` runs; with ``barrier``, every run starts with the others'."""
    extra = {"model": args.timm_model, "num_classes": 8} if name == "timm" else {}
    extractor = create_extractor(
        name,
        crop_size=args.crop_size,
        batch_size=args.batch_size,
        fp16=fp16,
        channels_last=channels_last,
        **extra,
    )
    if name in SHIPPED_WEIGHTS:
        extractor.setup(device)
    else:
        extractor.use_model(create_backbone(name, random_init=True, **extra), device)
    n_crops = args.crops or (DEFAULT_CROPS.get(name, OTHER_CROPS) * (8 if device.startswith("cuda") else 1))
    faces = make_crops(n_crops, args.crop_size)
    context = VideoContext(video_id="bench", media_path="bench")
    warmup = make_crops(args.batch_size, args.crop_size)
    extractor.extract(warmup, warmup.timeline, context)
    rates, cpu_rates = [], []
    for _ in range(args.repeats):
        if barrier is not None:
            barrier.wait()
        started, cpu_started = time.perf_counter(), time.process_time()
        extractor.extract(faces, faces.timeline, context)
        rates.append(n_crops / (time.perf_counter() - started))
        cpu_rates.append(n_crops / (time.process_time() - cpu_started))
    return Result(
        backbone=name,
        device=device,
        processes=1,
        threads=torch.get_num_threads(),
        batch_size=args.batch_size,
        fp16=extractor.uses_fp16,
        channels_last=channels_last,
        crops=n_crops,
        best_crops_per_s=max(rates),
        median_crops_per_s=statistics.median(rates),
        crops_per_cpu_s=max(cpu_rates),
        rates=rates,
    )


def _measure_in_process(
    name: str, device: str, args: argparse.Namespace, fp16: bool, channels_last: bool, barrier: Any
) -> Result:
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    return measure(name, device, args, fp16, channels_last, barrier)


def measure_parallel(
    name: str, device: str, args: argparse.Namespace, fp16: bool, channels_last: bool, processes: int
) -> Result:
    """``processes`` independent measurements at the same time; their rates add up (one machine's total)."""
    if processes == 1:
        return measure(name, device, args, fp16, channels_last)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(processes, mp_context=context) as pool:
        barrier = manager.Barrier(processes)
        job = (name, device, args, fp16, channels_last, barrier)
        parts = [f.result() for f in [pool.submit(_measure_in_process, *job) for _ in range(processes)]]
    # Run i of every process started together (barrier): the machine's rate in run i is their sum.
    totals = [sum(run) for run in zip(*(p.rates for p in parts), strict=True)]
    return dataclasses.replace(
        parts[0],
        processes=processes,
        rates=totals,
        best_crops_per_s=max(totals),
        median_crops_per_s=statistics.median(totals),
        crops_per_cpu_s=statistics.mean(p.crops_per_cpu_s for p in parts),
    )


def variants(device: str, compare: bool) -> list[tuple[bool, bool]]:
    """(fp16, channels_last) settings to run: the defaults, and with --compare-layouts the others."""
    if not compare:
        return [(True, True)]
    if device.startswith("cuda"):
        return [(True, True), (False, True), (True, False)]
    return [(True, True), (True, False)]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    processes = 1 if gpu else (args.processes or os.cpu_count() or 1)
    log.info(
        "device %s%s: %d process(es) x %d torch threads (%d CPUs)",
        device,
        f" ({gpu})" if gpu else "",
        processes,
        args.threads,
        os.cpu_count(),
    )
    log.info("note: on a shared machine these figures are noisy; best and median of %d runs", args.repeats)
    results = []
    for name in args.backbones:
        for fp16, channels_last in variants(device, args.compare_layouts):
            result = measure_parallel(name, device, args, fp16, channels_last, processes)
            results.append(result)
            target = TARGETS.get(name) if device == "cpu" else None
            verdict = (
                ""
                if target is None
                else (" (target met)" if result.best_crops_per_s >= target else " (BELOW target)")
            )
            log.info(
                "%-20s %-6s fp16=%-5s channels_last=%-5s batch %4d: best %7.0f crops/s, median %7.0f, "
                "%7.0f per CPU-second%s%s",
                name,
                device,
                result.fp16,
                channels_last,
                args.batch_size,
                result.best_crops_per_s,
                result.median_crops_per_s,
                result.crops_per_cpu_s,
                f", target {target:.0f}" if target else "",
                verdict,
            )
    if args.json is not None:
        payload = {
            "device": device,
            "gpu": gpu,
            "cpu_count": os.cpu_count(),
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
