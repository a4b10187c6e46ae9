"""Training throughput: the window loader against the models' training steps (issue 6 target).

    .venv/bin/python bench/train.py [--videos 40] [--frames 1500] [--steps 5] [--threads N] [--device auto]

Synthetic videos with the feature sizes of the real extractors (fer-minixception 128 + 7 logits, mfcc 39,
vggish 128, egemaps 25, logmel 64) are written to a temporary feature store and loaded the way the train
stage loads them. Reported, at window 300 and batch 32:

- store load: frames/s of reading every feature and label shard once per run;
- loader: windows/s of the in-memory window gather (shuffled batches, standardised inputs, torch tensors);
- training step (forward, masked losses, backward, optimizer step) windows/s of each preset's model, as
  configured in presets/ (demo-sized) and abaw2-lfan's paper variant (its sizes, one model per emotion,
  the per-window CCC loss) on the demo inputs;
- the ratio loader / lfan step (target >= 20 on a 2-core CPU).

With ``--affwild2`` it measures instead the larger-than-memory path at Aff-Wild2 size (2.8 M frames,
``--total-frames``): synthetic videos with a WavLM hidden state (1024-d) and a face embedding (768-d)
streamed into an fp16 table on disk (``train.table_cache``), statistics by blocks, and shuffled batches
standardised as they are read. It prints the peak resident memory against what the in-memory float32
table and its standardised copy would need, and the loader / wavlm-jca training step ratio (>= 20).

Figures are wall-clock and noisy on a shared machine: run it on an idle one for numbers to quote.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avpipe.models.data import load_videos, resolve_inputs
from avpipe.models.inference import device_for
from avpipe.models.losses import MultiTaskLoss
from avpipe.models.registry import create_model
from avpipe.models.stats import compute_stats
from avpipe.models.table import FrameTable, WindowBatches
from avpipe.models.tasks import TaskSpec, data_tasks, resolve_tasks
from avpipe.models.trainer import build_optimizer
from avpipe.pipeline.config import build_dataclass
from avpipe.pipeline.config.train import TrainConfig, resolve_train_section
from avpipe.pipeline.labels import LABELS_EXTRACTOR, FrameLabels
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.types import FeatureSet, MaskValue, Timeline

log = logging.getLogger("bench.train")

REPO = Path(__file__).resolve().parents[1]
PRESETS = ("abaw2-lfan", "jca", "abaw4-mtl", "lstm-fusion")
FEATURE_ARRAYS = {  # extractor -> {array: size}, the sizes of the real extractors
    "fer-minixception": {"features": 128, "logits": 7},
    "mfcc": {"features": 39},
    "vggish": {"features": 128},
    "egemaps": {"features": 25},
    "logmel": {"features": 64},
}
WINDOW, HOP, BATCH = 300, 200, 32


def write_store(root: Path, n_videos: int, n_frames: int, seed: int = 0) -> list[str]:
    """Random features and labels of ``n_videos`` videos of ``n_frames`` frames in a feature store."""
    rng = np.random.default_rng(seed)
    store = FeatureStore(root)
    ids = []
    for i in range(n_videos):
        video_id = f"bench{i:03d}"
        timeline = Timeline(time=np.arange(n_frames) / 25.0, frame_index=np.arange(n_frames))
        mask = np.full(n_frames, MaskValue.VALID, dtype=np.uint8)
        for extractor, arrays in FEATURE_ARRAYS.items():
            values = {
                name: rng.standard_normal((n_frames, dim)).astype(np.float32) for name, dim in arrays.items()
            }
            features = FeatureSet(timeline.time, timeline.frame_index, mask, values)
            store.write(extractor, video_id, features, extractor_version="bench", params_hash="bench")
        labels = FrameLabels.unlabeled(n_frames)
        labels.valence_arousal[:] = rng.uniform(-1, 1, (n_frames, 2))
        labels.expression[:] = rng.integers(0, 8, n_frames)
        labels.action_units[:] = rng.integers(0, 2, (n_frames, 12))
        store.write(
            LABELS_EXTRACTOR,
            video_id,
            labels.to_feature_set(timeline),
            extractor_version="1",
            params_hash="b",
        )
        ids.append(video_id)
    return ids


def preset_config(name: str) -> TrainConfig:
    return build_dataclass(TrainConfig, resolve_train_section({"preset": name}, REPO), "train")


@dataclass
class Targets:
    """The trained tasks of a config and their per-row targets, as the train stage resolves and builds
    them (models/experiment.py: data_tasks + resolve_tasks over the videos' labels, then
    FrameTable.task_targets)."""

    tasks: list[TaskSpec]
    arrays: dict[str, np.ndarray]


def trainer_targets(config: TrainConfig, table: FrameTable, labels: Mapping[str, FrameLabels]) -> Targets:
    catalogue = data_tasks(labels.items())
    tasks = resolve_tasks(config.tasks, catalogue, "the bench store")
    return Targets(tasks, table.task_targets(tasks, labels))


def loader_rate(
    table: FrameTable, config: TrainConfig, targets: Targets, video_ids: list[str], min_seconds: float
) -> float:
    """Windows/s of shuffled batch gathering over every window of ``video_ids``."""
    keys = [spec.key for spec in config.feature_specs]
    inputs = compute_stats(table, video_ids).apply(table)
    inputs = {key: inputs[key] for key in keys}
    windows, _ = table.windows(video_ids, WINDOW, HOP)
    batches = WindowBatches(inputs, targets.arrays, windows, BATCH, shuffle=True)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        for batch in batches:
            count += batch.valid.shape[0]
    return count / (time.perf_counter() - started)


def step_rate(
    config: TrainConfig,
    table: FrameTable,
    targets: Targets,
    video_ids: list[str],
    inputs_spec: list,
    device: torch.device,
    steps: int,
    standardised: dict | None = None,
) -> float:
    """Windows/s of full training steps of the config's model at batch 32 (fewer when there are fewer
    windows), window 300."""
    model = create_model(
        config.model.name,
        inputs=inputs_spec,
        tasks=targets.tasks,
        window=WINDOW,
        separate_va=config.model.separate_va,
        **config.model.config,
    ).to(device)
    optimizer = build_optimizer(model, config)
    loss_fn = MultiTaskLoss(targets.tasks, config.loss)
    windows, _ = table.windows(video_ids, WINDOW, HOP)
    source = standardised if standardised is not None else table.features
    inputs = {spec.key: source[spec.key] for spec in inputs_spec}
    batches = WindowBatches(inputs, targets.arrays, windows, BATCH, shuffle=True)
    batch = batches.gather(np.arange(min(BATCH, windows.shape[0]))).to(device)

    def one_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = loss_fn(model(batch.inputs, batch.valid), batch.targets)
        loss.backward()
        optimizer.step()

    one_step()  # warm-up: allocations, cuDNN autotuning
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        one_step()
    _synchronize(device)
    return steps * batch.valid.shape[0] / (time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


AFFWILD2_INPUTS = {"timm": 768, "hf-speech": 1024}  # face embedding, one WavLM-large hidden state


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_videos(n_videos: int, n_frames: int, kept: dict[str, FrameLabels], seed: int = 0):
    """VideoData with random features and labels, one at a time (only the labels kept, in ``kept``, as
    the train stage keeps them): a block of random rows generated once is rolled per video, because
    content does not matter to throughput."""
    from avpipe.models.data import VideoData

    rng = np.random.default_rng(seed)
    blocks = {
        key: rng.standard_normal((n_frames, dim), dtype=np.float32) for key, dim in AFFWILD2_INPUTS.items()
    }
    for i in range(n_videos):
        labels = FrameLabels.unlabeled(n_frames)
        labels.valence_arousal[:] = rng.uniform(-1, 1, (n_frames, 2))
        features = {key: np.roll(block, i * 97, axis=0) for key, block in blocks.items()}
        valid = {key: np.ones(n_frames, dtype=bool) for key in blocks}
        video_id = f"aw{i:04d}"
        kept[video_id] = labels
        yield VideoData(video_id, np.arange(n_frames) / 30.0, np.arange(n_frames), features, valid, labels)


def affwild2(args: argparse.Namespace) -> dict[str, object]:
    """The larger-than-memory path at Aff-Wild2 size; see the module docstring."""
    from avpipe.models.base import InputSpec
    from avpipe.pipeline.config.train import Modality

    n_videos = max(1, round(args.total_frames / args.frames))
    n_rows = n_videos * args.frames
    dim = sum(AFFWILD2_INPUTS.values())
    keys = list(AFFWILD2_INPUTS)
    ids = [f"aw{i:04d}" for i in range(n_videos)]
    results: dict[str, object] = {"frames": n_rows, "values_per_frame": dim, "rss_start_mb": peak_rss_mb()}
    with tempfile.TemporaryDirectory(dir=args.cache_dir) as tmp:
        started = time.perf_counter()
        labels: dict[str, FrameLabels] = {}
        table = FrameTable(
            synthetic_videos(n_videos, args.frames, labels), keys, dtype=np.float16, cache_dir=Path(tmp)
        )
        results["table_build_s"] = time.perf_counter() - started
        results["table_on_disk_gb"] = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 1e9
        started = time.perf_counter()
        stats = compute_stats(table, ids)
        results["stats_s"] = time.perf_counter() - started
        config = preset_config("wavlm-jca")
        targets = trainer_targets(config, table, labels)
        windows, _ = table.windows(ids, WINDOW, HOP)
        batches = WindowBatches(stats.view(table), targets.arrays, windows, BATCH, shuffle=True)
        count, started = 0, time.perf_counter()
        for batch in batches:
            count += batch.valid.shape[0]
            if time.perf_counter() - started > args.loader_seconds:
                break
        loader = count / (time.perf_counter() - started)
        results["loader_windows_per_s"] = loader
        specs = [
            InputSpec(key="timm", dim=768, modality=Modality.VISUAL),
            InputSpec(key="hf-speech", dim=1024, modality=Modality.AUDIO),
        ]
        device = torch.device("cpu") if args.device == "auto" else device_for(args.device)
        step = step_rate(config, table, targets, ids[:4], specs, device, args.steps, stats.view(table))
        results["wavlm_jca_step_windows_per_s"] = step
        results["loader_over_step"] = loader / step
        results["peak_rss_mb"] = peak_rss_mb()
        results["float32_table_and_copy_gb"] = n_rows * dim * 4 * 2 / 1e9
        table.features.clear()  # close the row files before the folder goes
    log.info(
        "affwild2 size: %d frames x %d values: fp16 table on disk %.1f GB (built in %.0fs, stats %.0fs); "
        "in-memory float32 + standardised copy would be %.1f GB",
        n_rows,
        dim,
        results["table_on_disk_gb"],
        results["table_build_s"],
        results["stats_s"],
        results["float32_table_and_copy_gb"],
    )
    log.info(
        "peak RSS %.0f MB (%.0f MB after imports); loader %.0f windows/s, "
        "wavlm-jca step (%s) %.1f windows/s: loader / step = %.0fx (target >= 20x)",
        results["peak_rss_mb"],
        results["rss_start_mb"],
        loader,
        device.type,
        step,
        results["loader_over_step"],
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--loader-seconds", type=float, default=2.0)
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda (auto adds CUDA figures when present)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--affwild2", action="store_true", help="the larger-than-memory path at Aff-Wild2 size"
    )
    parser.add_argument("--total-frames", type=int, default=2_800_000, help="--affwild2: frames in all")
    parser.add_argument("--cache-dir", default=None, help="--affwild2: where the fp16 table goes (temporary)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.affwild2:
        if args.frames == 1500:
            args.frames = 5000  # Aff-Wild2's videos average ~5000 frames
        results = affwild2(args)
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        return
    devices = [torch.device("cpu")]
    if args.device == "auto" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif args.device != "auto":
        devices = [device_for(args.device)]
    results: dict[str, object] = {"window": WINDOW, "batch": BATCH, "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(Path(tmp) / "store")
        ids = write_store(store.root, args.videos, args.frames)
        lfan = preset_config("abaw2-lfan")
        all_specs = [spec for name in PRESETS for spec in preset_config(name).feature_specs]
        unique = list({spec.key: spec for spec in all_specs}.values())
        started = time.perf_counter()
        videos, _ = load_videos(store, unique, ids)
        load_seconds = time.perf_counter() - started
        inputs_spec = {spec.key: spec for spec in resolve_inputs(store, unique, ids[0])}
        table = FrameTable(videos, list(inputs_spec))
        labels = {video.video_id: video.labels for video in videos}
    n_frames = args.videos * args.frames
    results["store_load_frames_per_s"] = n_frames / load_seconds
    log.info(
        "store load: %d videos x %d frames, %d inputs: %.0f frames/s",
        args.videos,
        args.frames,
        len(unique),
        n_frames / load_seconds,
    )
    loader = loader_rate(table, lfan, trainer_targets(lfan, table, labels), ids, args.loader_seconds)
    results["loader_windows_per_s"] = loader
    log.info("loader (abaw2-lfan inputs): %.0f windows/s", loader)
    for device in devices:
        rates = {}
        for name in PRESETS:
            config = preset_config(name)
            specs = [inputs_spec[spec.key] for spec in config.feature_specs]
            targets = trainer_targets(config, table, labels)
            rates[name] = step_rate(config, table, targets, ids, specs, device, args.steps)
            log.info("[%s] %s training step: %.1f windows/s", device.type, name, rates[name])
        # the paper variant's model and loss (presets/abaw2-lfan.yaml) on the demo variant's inputs
        section = {"preset": "abaw2-lfan", "variant": "paper", "features": lfan.features, "window": WINDOW}
        paper = build_dataclass(TrainConfig, resolve_train_section(section, REPO), "train")
        specs = [inputs_spec[spec.key] for spec in paper.feature_specs]
        rates["abaw2-lfan (paper sizes)"] = step_rate(
            paper, table, trainer_targets(paper, table, labels), ids, specs, device, max(1, args.steps // 2)
        )
        log.info(
            "[%s] abaw2-lfan with paper sizes: %.1f windows/s", device.type, rates["abaw2-lfan (paper sizes)"]
        )
        ratio = loader / rates["abaw2-lfan"]
        log.info("[%s] loader / lfan step = %.0fx (target >= 20x)", device.type, ratio)
        results[device.type] = {"step_windows_per_s": rates, "loader_over_lfan": ratio}
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
