"""Run one registered extractor over the manifest into the feature store.

This is the plumbing every extraction stage shares: the parameter hash, the skip of videos already
stored with it, one Dask task per video, decoding the extractor's input, the atomic shard write on the
worker, the index update on the driver as each video finishes, and the run report with its failures.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from distributed import WorkerPlugin, get_worker

from pipeline.config import RunnerConfig, StoreConfig
from pipeline.errors import ExtractorError, MediaError, StoreError
from pipeline.fingerprint import library_versions, media_fingerprint, params_hash, params_json
from pipeline.manifest import ManifestRow
from pipeline.registry import Extractor, ExtractorRegistry, InputKind, default_registry
from pipeline.runner import Failure, RunReport, TaskOutcome, configure_worker_threads, open_client, resolve_device, run_tasks
from pipeline.store import FeatureStore, ShardStatus
from pipeline.types import FaceCrops, FeatureSet, Timeline, VideoContext

log = logging.getLogger(__name__)

FACES_EXTRACTOR = "faces"


@dataclass(frozen=True)
class ExtractionJob:
    """Everything a worker needs to process videos with one extractor (pickled once per run)."""

    extractor: str
    config: Any
    params_hash: str
    params_json: str
    store: StoreConfig
    fps: float | None
    device: str
    torch_threads: int


class ExtractorPlugin(WorkerPlugin):
    """Holds one extractor instance per worker process; its models load on first use."""

    def __init__(self, job: ExtractionJob) -> None:
        self.job = job
        self._extractor: Extractor | None = None

    def setup(self, worker: Any) -> None:
        configure_worker_threads(self.job.torch_threads)

    def extractor(self) -> Extractor:
        if self._extractor is None:
            cls = default_registry().get(self.job.extractor)
            extractor = cls(self.job.config)
            extractor.setup(resolve_device(self.job.device))
            self._extractor = extractor
        return self._extractor


def plugin_name(job: ExtractionJob) -> str:
    return f"avpipe-{job.extractor}-{job.params_hash}"


def extract_video(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker task: compute one video's features and write its shard. Returns a small summary."""
    job: ExtractionJob = payload["job"]
    plugin = get_worker().plugins[plugin_name(job)]
    return process_video(plugin.extractor(), job, payload["video"], payload["fingerprint"])


def process_video(extractor: Extractor, job: ExtractionJob, video: dict[str, Any], fingerprint: str) -> dict:
    """Decode the input, run the extractor, write the shard atomically. Usable without Dask."""
    from pipeline.media import probe
    from pipeline.timeline import decode_audio, iter_frames, video_timeline

    started = time.perf_counter()
    store = open_store(job.store)
    path = video["media_path"]
    kind = type(extractor).input_kind
    if kind is InputKind.FACES:
        crops = read_face_crops(store, video["video_id"], getattr(job.config, "crop_size", 112))
        info, timeline, source = None, crops.timeline, crops
    else:
        info = probe(path)
        timeline = video_timeline(path, fps=job.fps, info=info)
        if kind is InputKind.FRAMES:
            source = iter_frames(path, fps=job.fps, info=info)
        else:
            source = decode_audio(path, sample_rate=job.config.sample_rate, info=info)
    context = VideoContext(
        video_id=video["video_id"],
        media_path=path,
        info=info,
        subject_position=video.get("subject_position"),
    )
    features = extractor.extract(source, timeline, context)
    check_on_timeline(features, timeline, job.extractor, video["video_id"])
    store.write(
        job.extractor,
        video["video_id"],
        features,
        extractor_version=type(extractor).version,
        params_hash=job.params_hash,
        params_json=job.params_json,
        media_fingerprint=fingerprint,
        library_versions=library_versions(),
    )
    valid = int(np.count_nonzero(features.mask))
    return {
        "n_frames": len(features),
        "valid_frames": valid,
        "seconds": time.perf_counter() - started,
    }


def check_on_timeline(features: FeatureSet, timeline: Timeline, extractor: str, video_id: str) -> None:
    """An extractor must return its features on the timeline it was given: anything else is a bug."""
    if len(features) != len(timeline) or not np.array_equal(features.frame_index, timeline.frame_index):
        raise ExtractorError(
            f"extractor {extractor!r} returned {len(features)} frames for {video_id!r}, "
            f"not the {len(timeline)} frames of its timeline"
        )


def read_face_crops(store: FeatureStore, video_id: str, crop_size: int) -> FaceCrops:
    name = f"crops_{crop_size}"
    try:
        shard = store.read(FACES_EXTRACTOR, video_id, names=[name])
    except StoreError as err:
        raise ExtractorError(
            f"{video_id}: no aligned face crops of size {crop_size} in the faces store ({err}); run the faces "
            f"stage first, with {crop_size} in extractors.faces.sizes"
        ) from err
    return FaceCrops(time=shard.time, frame_index=shard.frame_index, mask=shard.mask, crops=shard.arrays[name])


def open_store(cfg: StoreConfig) -> FeatureStore:
    return FeatureStore(cfg.root, compression=cfg.compression.value, chunk_frames=cfg.chunk_frames)


def input_fingerprint(kind: InputKind, store: FeatureStore, row: ManifestRow) -> str:
    """What the extractor's input depends on: the media file, or for FACES the face shard it reads."""
    if kind is InputKind.FACES:
        try:
            attrs = store.attrs(FACES_EXTRACTOR, row.video_id)
        except StoreError:
            return "no-faces-shard"
        return f"faces:{attrs.get('params_hash')}:{attrs.get('media_fingerprint')}"
    return media_fingerprint(row.media_path)


def run_extractor(
    name: str,
    config: Any,
    rows: list[ManifestRow],
    store_cfg: StoreConfig,
    runner_cfg: RunnerConfig,
    fps: float | None = None,
    registry: ExtractorRegistry | None = None,
    client: Any = None,
) -> RunReport:
    """Extract ``name`` for every manifest row not already stored with the same parameters."""
    registry = registry or default_registry()
    cls = registry.get(name)
    cls(config).preflight()
    job = ExtractionJob(
        extractor=name,
        config=config,
        params_hash=params_hash({"config": config, "fps": fps}, cls.version),
        params_json=params_json({"config": config, "fps": fps}),
        store=store_cfg,
        fps=fps,
        device=runner_cfg.device,
        torch_threads=runner_cfg.torch_threads,
    )
    store = open_store(store_cfg)
    store.cleanup_temp(name)
    report = RunReport(stage=name)
    tasks = []
    for row in rows:
        try:
            fingerprint = input_fingerprint(cls.input_kind, store, row)
        except MediaError as err:
            report.failures.append(Failure(row.video_id, name, str(err)))
            continue
        if store.status(name, row.video_id, job.params_hash, fingerprint) is ShardStatus.STORED:
            report.skipped += 1
            continue
        video = {"video_id": row.video_id, "media_path": row.media_path, "subject_position": row.subject_position}
        tasks.append((row.video_id, {"job": job, "video": video, "fingerprint": fingerprint}))
    log.info("%s: %d videos to extract, %d already stored", name, len(tasks), report.skipped)

    def on_done(outcome: TaskOutcome) -> None:
        if outcome.ok:
            store.record(name, outcome.key)
            report.done += 1
            report.frames += outcome.result["n_frames"]
        else:
            report.failures.append(Failure(outcome.key, name, outcome.reason or "unknown error"))

    started = time.perf_counter()
    if tasks:
        ctx = contextlib.nullcontext(client) if client is not None else open_client(runner_cfg)
        with ctx as active:
            active.register_plugin(ExtractorPlugin(job), name=plugin_name(job))
            report.workers = len(active.scheduler_info().get("workers", {}))
            run_tasks(active, extract_video, tasks, desc=name, on_done=on_done)
    report.seconds = time.perf_counter() - started
    report.failed = len(report.failures)
    return report


def write_report(report: RunReport, reports_dir: str | Path) -> Path:
    """``<reports>/<stage>.json`` (counts, speed) and ``<reports>/<stage>_failures.csv`` (video, stage, reason)."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"{report.stage}.json"
    _write_atomic(path, json.dumps(report.to_dict(), indent=2) + "\n")
    failures = reports_dir / f"{report.stage}_failures.csv"
    tmp = failures.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video", "stage", "reason"])
        for f in report.failures:
            writer.writerow([f.video, f.stage, f.reason])
    os.replace(tmp, failures)
    return path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
