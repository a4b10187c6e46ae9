"""Window throughput of the torch Dataset over the store (avpipe.models.dataset), against baselines.

    .venv/bin/python bench/dataset.py [--videos 16] [--frames 1500] [--window 300] [--batch 32] [--threads 1]

Synthetic videos with the feature sizes of real extractors (fer-minixception 128, logmel 64, egemaps 25)
and labels are written to a temporary store. Reported, in windows/s of standardised windows with masks
and labels:

- building the dataset (timelines checked, labels read) and fitting the statistics, in s per video;
- ``FeatureWindows`` with shards kept open per process (the default) against the same with
  ``max_open_shards=1``, which reopens and re-verifies a shard for every read (the baseline), and with
  ``preload=True`` (every feature read into memory when the dataset is built);
- a DataLoader (batches of ``--batch``, WindowSampler) with 0 and 2 (persistent) workers, after a first
  epoch;
- the trainers' in-memory table gather (models/table.py) for reference: it reads everything into memory
  first, the Dataset reads each window from the store.

Figures are wall-clock and noisy on a shared machine: run it on an idle one for numbers to quote. On a
busy one torch's intra-op threads contend (a batch's torch.stack took 29 ms with 2 threads, 0.9 ms with
1, on a 2-core machine at load 7): hence ``--threads 1`` by default.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from avpipe.models.data import load_videos
from avpipe.models.dataset import FeatureWindows, WindowConfig
from avpipe.models.sampler import WindowSampler
from avpipe.models.stats import compute_stats, fit_store_stats
from avpipe.models.table import FrameTable, WindowBatches
from avpipe.models.tasks import as_specs
from avpipe.pipeline.config.train import FeatureSpec
from avpipe.pipeline.labels import LABELS_EXTRACTOR, FrameLabels
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.types import FeatureSet, MaskValue, Timeline

SIZES = {"fer-minixception": 128, "logmel": 64, "egemaps": 25}
TASKS = ["va", "expr"]  # train.tasks keys: the Dataset and the trainers' table read the same targets


def write_store(root: Path, n_videos: int, n_frames: int) -> tuple[FeatureStore, list[str]]:
    store, rng, ids = FeatureStore(root), np.random.default_rng(0), []
    for v in range(n_videos):
        video_id = f"video{v:03d}"
        timeline = Timeline(time=np.arange(n_frames) / 30.0, frame_index=np.arange(n_frames, dtype=np.int64))
        for extractor, dim in SIZES.items():
            mask = np.where(rng.random(n_frames) < 0.1, MaskValue.MISSING, MaskValue.VALID).astype(np.uint8)
            values = rng.standard_normal((n_frames, dim)).astype(np.float32)
            features = FeatureSet(timeline.time, timeline.frame_index, mask, {"features": values})
            store.write(extractor, video_id, features, extractor_version="1", params_hash="p")
        labels = FrameLabels.unlabeled(n_frames)
        labels.valence_arousal[:] = rng.uniform(-1, 1, (n_frames, 2))
        labels.expression[:] = rng.integers(0, 8, n_frames)
        store.write(
            LABELS_EXTRACTOR,
            video_id,
            labels.to_feature_set(timeline),
            extractor_version="1",
            params_hash="p",
        )
        ids.append(video_id)
    return store, ids


def windows_per_s(data: FeatureWindows, order: np.ndarray) -> float:
    start = time.perf_counter()
    for index in order:
        data[int(index)]
    return len(order) / (time.perf_counter() - start)


def loader_windows_per_s(data: FeatureWindows, batch: int, workers: int, epochs: int = 3) -> float:
    """Windows/s over ``epochs`` epochs after a first one (workers started, their shards open)."""
    loader = DataLoader(
        data,
        batch_size=batch,
        sampler=WindowSampler(data, seed=0),
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    for _ in loader:
        pass
    start, n = time.perf_counter(), 0
    for _ in range(epochs):
        n += sum(len(b["video_id"]) for b in loader)
    return n / (time.perf_counter() - start)


def table_windows_per_s(store: FeatureStore, ids: list[str], window: int, hop: int, batch: int) -> float:
    specs = [FeatureSpec(extractor) for extractor in SIZES]
    videos, _ = load_videos(store, specs, ids)
    table = FrameTable(videos, [spec.key for spec in specs])
    stats = compute_stats(table, ids)
    windows, _ = table.windows(ids, window, hop)
    targets = table.task_targets(as_specs(TASKS), {video.video_id: video.labels for video in videos})
    batches = WindowBatches(stats.view(table), targets, windows, batch, shuffle=True)
    start = time.perf_counter()
    n = sum(b.valid.shape[0] for b in batches)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--window", type=int, default=300)
    parser.add_argument("--hop", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (collate's torch.stack)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store, ids = write_store(Path(tmp), args.videos, args.frames)
        config = WindowConfig(features=list(SIZES), tasks=TASKS, window=args.window, hop=args.hop)
        start = time.perf_counter()
        stats = fit_store_stats(store, config.feature_specs, ids)
        fitted = time.perf_counter()
        data = FeatureWindows(store, config, ids, stats)
        built = time.perf_counter()
        reopening = FeatureWindows(store, config, ids, stats, max_open_shards=1)
        order = np.random.default_rng(0).permutation(len(data))
        print(f"{args.videos} videos x {args.frames} frames, {len(data)} windows of {args.window}")
        print(f"fit_store_stats: {(fitted - start) / len(ids) * 1000:.1f} ms/video")
        print(f"FeatureWindows(...): {(built - fitted) / len(ids) * 1000:.1f} ms/video")
        kept, baseline = windows_per_s(data, order), windows_per_s(reopening, order)
        print(f"items, shards kept open:      {kept:8.0f} windows/s")
        print(f"items, reopened at each read: {baseline:8.0f} windows/s   ratio {kept / baseline:.1f}x")
        start = time.perf_counter()
        preloaded = FeatureWindows(store, config, ids, stats, preload=True)
        loaded = time.perf_counter() - start
        in_memory = windows_per_s(preloaded, order)
        print(
            f"items, preload=True:          {in_memory:8.0f} windows/s   ratio {in_memory / kept:.1f}x"
            f" (built in {loaded / len(ids) * 1000:.1f} ms/video)"
        )
        serial = loader_windows_per_s(data, args.batch, 0)
        parallel = loader_windows_per_s(data, args.batch, 2)
        print(f"DataLoader, 0 workers:        {serial:8.0f} windows/s")
        print(f"DataLoader, 2 workers:        {parallel:8.0f} windows/s   ratio {parallel / serial:.1f}x")
        table = table_windows_per_s(store, ids, args.window, args.hop, args.batch)
        print(f"in-memory table (trainers):   {table:8.0f} windows/s   Dataset/table {serial / table:.2f}")


if __name__ == "__main__":
    main()
