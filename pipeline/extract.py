"""Run one registered extractor over the manifest into the feature store.

This is the plumbing every extraction stage shares: the parameter hash, the skip of videos already
stored with it, one Dask task per video (short ones grouped, ``runner.task_seconds``), decoding the
extractor's input, the atomic shard write on the worker, the index update on the driver as each video
finishes, and the run report with its failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import io
import json
import logging
import resource
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from distributed import WorkerPlugin, get_worker

from avpipe.pipeline import atomic
from avpipe.pipeline.batching import plan_batches
from avpipe.pipeline.config import RunnerConfig, StoreConfig
from avpipe.pipeline.errors import AvpipeError, ExtractorError, MediaError, StoreError
from avpipe.pipeline.fingerprint import library_versions, media_fingerprint, params_hash, params_json
from avpipe.pipeline.labels import LABELS_EXTRACTOR
from avpipe.pipeline.logs import quiet_dask_logs
from avpipe.pipeline.manifest import ManifestRow, printable
from avpipe.pipeline.registry import Extractor, ExtractorRegistry, InputKind, default_registry
from avpipe.pipeline.runner import (
    GPU_RESOURCE,
    ClusterInfo,
    Failure,
    RunReport,
    TaskOutcome,
    cluster_info,
    configure_worker_threads,
    describe_error,
    open_client,
    resolve_device,
    run_tasks,
    worker_device,
)
from avpipe.pipeline.store import FeatureStore, ShardStatus
from avpipe.pipeline.supervise import Supervision
from avpipe.pipeline.types import AudioTrack, FaceCrops, FeatureSet, MediaInfo, Timeline, VideoContext

log = logging.getLogger(__name__)

FACES_EXTRACTOR = "faces"


@dataclass(frozen=True)
class ExtractionJob:
    """Everything a worker needs to process videos with one extractor (pickled with every task).

    ``extractor_class`` travels by reference (module and name), so the workers use exactly the class
    the driver resolved, whichever registry it came from (built-in, plug-in or a caller's own).
    """

    extractor: str
    extractor_class: type[Extractor]
    config: Any
    params_hash: str
    params_json: str
    store: StoreConfig
    fps: float | None
    device: str
    torch_threads: int
    plugin: str  # name of this run's ExtractorPlugin on the workers
    needs_gpu: bool = False  # tasks ask for the GPU resource: only GPU workers load the model
    audio_fps: float | None = None  # timeline rate of files without video (dataset.audio_fps)
    max_pixels: int | None = None  # FRAMES input: refuse videos with larger frames (runner.max_pixels)

    @classmethod
    def create(
        cls,
        name: str,
        extractor_class: type[Extractor],
        config: Any,
        store: StoreConfig,
        fps: float | None = None,
        device: str = "cpu",
        torch_threads: int = 1,
        plugin: str = "in-process",
        audio_fps: float | None = None,
        max_pixels: int | None = None,
    ) -> ExtractionJob:
        """A job whose parameter hash and JSON are derived from ``config`` and ``fps`` (and
        ``audio_fps`` when set: hashes of stores without audio-only files stay as they were)."""
        described = {"config": config, "fps": fps}
        if audio_fps is not None:
            described["audio_fps"] = audio_fps
        return cls(
            extractor=name,
            extractor_class=extractor_class,
            config=config,
            params_hash=params_hash(described, extractor_class.version),
            params_json=params_json(described),
            store=store,
            fps=fps,
            device=device,
            torch_threads=torch_threads,
            plugin=plugin,
            audio_fps=audio_fps,
            max_pixels=max_pixels,
        )


class ExtractorPlugin(WorkerPlugin):
    """Holds one extractor instance per worker process, built (models loaded) when the plugin is
    registered, so that start-up is paid once per worker and on all workers at the same time."""

    def __init__(self, job: ExtractionJob) -> None:
        self.job = job
        self._extractor: Extractor | None = None
        self._worker_name: Any = None
        self._lock: threading.Lock | None = None  # made on the worker: locks do not pickle

    async def setup(self, worker: Any) -> None:
        self._worker_name = worker.name
        self._lock = threading.Lock()
        quiet_dask_logs()  # no heartbeat ERROR from this worker when the cluster closes after a good run
        configure_worker_threads(self.job.torch_threads, import_torch=False)
        if self.job.needs_gpu and not worker.state.total_resources.get(GPU_RESOURCE):
            return  # GPU tasks never come to this worker: load nothing
        try:
            # Off the event loop, which must keep answering the scheduler while a model loads.
            await asyncio.get_running_loop().run_in_executor(None, self.extractor)
        except Exception as err:  # each task will meet the same error and report it per video
            log.warning("worker %s could not set up %s: %s", worker.name, self.job.extractor, err)

    def teardown(self, worker: Any) -> None:
        # A long-lived cluster runs many stages: free this one's model before the next loads its own.
        self._extractor = None
        if "torch" in sys.modules:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def extractor(self) -> Extractor:
        with self._lock or contextlib.nullcontext():
            if self._extractor is None:
                self._extractor = self._build()
            return self._extractor

    def _build(self) -> Extractor:
        extractor = self.job.extractor_class(self.job.config)
        if uses_device(self.job.extractor_class):
            extractor.setup(self._device())
            configure_worker_threads(self.job.torch_threads)  # setup imported torch: size its pool
        else:
            extractor.setup("cpu")
        return extractor

    def _device(self) -> str:
        device = resolve_device(self.job.device)
        if device != "cuda":
            return device
        import torch

        chosen = worker_device(device, self._worker_name, torch.cuda.device_count())
        log.info("worker %s uses %s", self._worker_name, chosen)
        return chosen


def uses_device(cls: type[Extractor]) -> bool:
    """Whether an extractor loads a model onto a device: it overrides ``setup``. Only those ask for
    a GPU, so CPU features (logmel, mfcc, egemaps) never queue behind the GPU workers."""
    return cls.setup is not Extractor.setup


def extract_task(payload: dict[str, Any]) -> Any:
    """Worker task: one video (``extract_video``) or a batch of short ones (``extract_batch``)."""
    return extract_batch(payload) if "batch" in payload else extract_video(payload)


def extract_batch(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Worker task: the videos of a batch one after the other, each as ``extract_video`` would do it.
    A video's error is caught and returned as its own reason, so it fails alone; a worker that dies
    takes the batch with it, and the driver then retries its videos one task each."""
    job: ExtractionJob = payload["job"]
    items = payload["batch"]
    if job.store.videos_per_shard > 1:
        results = []
        for start in range(0, len(items), job.store.videos_per_shard):
            results += _extract_into_pack(job, items[start : start + job.store.videos_per_shard])
        return results
    results = []
    for key, item in items:
        try:
            results.append({"key": key, "result": extract_video({**item, "sync_folder": False})})
        except Exception as err:
            log.debug("%s failed in a batch", key, exc_info=True)
            results.append({"key": key, "reason": describe_error(err)})
    if any("result" in r for r in results):
        open_store(job.store).sync_folder(job.extractor)  # once for the batch's renames
    return results


def _extract_into_pack(job: ExtractionJob, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Videos written into one new multi-video shard; their results carry its index entries. A
    video that fails is left out of the pack; a pack that cannot be committed fails all of them."""
    from avpipe.pipeline.packs import PackWriter

    results = []
    with PackWriter(open_store(job.store), job.extractor) as pack:
        for key, item in items:
            try:
                results.append({"key": key, "result": extract_video({**item, "pack": pack})})
            except Exception as err:
                log.debug("%s failed in a batch", key, exc_info=True)
                results.append({"key": key, "reason": describe_error(err)})
        try:
            entries = pack.commit()
        except Exception as err:
            reason = f"the multi-video shard could not be written: {describe_error(err)}"
            return [{"key": r["key"], "reason": r.get("reason", reason)} for r in results]
    for result in results:
        if "result" in result:
            summary = result["result"]
            summary["index_entry"] = entries[summary["index_entry"]["video_id"]]
    return results


def extract_video(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker task: compute one video's features and write its shard. Returns a small summary."""
    job: ExtractionJob = payload["job"]
    worker = get_worker()
    plugin = worker.plugins.get(job.plugin)
    if plugin is None:
        raise ExtractorError(
            f"worker {worker.address} has no extractor plugin {job.plugin!r} (cluster restarted?)"
        )
    check_paths(job, payload["video"]["media_path"])
    summary = process_video(
        plugin.extractor(),
        job,
        payload["video"],
        payload["fingerprint"],
        payload.get("sync_folder", True),
        pack=payload.get("pack"),
    )
    return {**summary, "worker": worker.address}


def process_video(
    extractor: Extractor,
    job: ExtractionJob,
    video: dict[str, Any],
    fingerprint: str,
    sync_folder: bool = True,
    pack: Any = None,
) -> dict:
    """Decode the input, run the extractor, write the shard atomically. Usable without Dask.
    ``sync_folder=False``: the caller fsyncs the store folder after several videos. ``pack`` (a
    ``PackWriter``): the video goes into that multi-video shard, whose ``commit`` gives its entry."""
    started, cpu_started = time.perf_counter(), process_cpu_seconds()
    store = open_store(job.store)
    computed = video_features(extractor, job, video, lambda vid, size: read_face_crops(store, vid, size))
    timeline, blocks, counts = computed.timeline, computed.blocks, computed.counts
    upsampled = computed.upsampled_audio
    meta = {
        "extractor_version": type(extractor).version,
        "params_hash": job.params_hash,
        "params_json": job.params_json,
        "media_fingerprint": fingerprint,
        "library_versions": library_versions(),
        "dataset": video.get("dataset", ""),
    }
    if pack is not None:
        pack.add(video["video_id"], blocks, len(timeline), **meta)
        entry: dict[str, Any] = {"video_id": video["video_id"]}  # the pack's commit replaces it
    else:
        written = store.write_shard(
            job.extractor, video["video_id"], blocks, len(timeline), sync_folder=sync_folder, **meta
        )
        entry = written.entry
    return {
        "index_entry": entry,
        "n_frames": counts["rows"],
        "valid_frames": counts["valid"],
        "seconds": time.perf_counter() - started,
        "cpu_seconds": process_cpu_seconds() - cpu_started,
        "upsampled_audio": int(upsampled),
    }


@dataclass
class VideoFeatures:
    """One extractor's output for one video before it is stored: ``blocks`` yields the rows (checked
    against ``timeline`` and counted into ``counts`` as they pass), ``upsampled_audio`` whether
    decoding raised the audio's sample rate."""

    timeline: Timeline
    blocks: Iterator[FeatureSet]
    counts: dict[str, int]
    upsampled_audio: bool


def video_features(
    extractor: Extractor,
    job: ExtractionJob,
    video: dict[str, Any],
    face_crops: Callable[[str, int], FaceCrops],
) -> VideoFeatures:
    """Decode ``video``'s input for ``extractor`` and start it: the one code path of the stages
    (``process_video``) and of ``avpipe.extract``. ``face_crops(video_id, crop_size)`` gives the
    aligned crops a FACES extractor reads (from the store in the stages)."""
    from avpipe.pipeline.media import probe
    from avpipe.pipeline.timeline import decode_audio, iter_frames, media_timeline, video_timeline

    path = video["media_path"]
    kind = type(extractor).input_kind
    if kind is InputKind.FACES:
        crops = face_crops(video["video_id"], getattr(job.config, "crop_size", 112))
        info, timeline, source = None, crops.timeline, crops
    elif kind is InputKind.FRAMES:
        info = probe(path)  # the display rotation iter_frames applies, read as the manifest read it
        check_frame_size(info, path, job.max_pixels)
        timeline = video_timeline(path, fps=job.fps, info=info)
        source = iter_frames(path, fps=job.fps, info=info)
    else:
        # No probe here: PyAV finds the streams itself (files without video only with audio_fps,
        # whose grid needs the probe's audio span).
        info = None
        timeline = media_timeline(path, fps=job.fps, audio_fps=job.audio_fps)
        source = decode_audio(path, sample_rate=job.config.sample_rate)
    context = VideoContext(
        video_id=video["video_id"],
        media_path=path,
        info=info,
        subject_position=video.get("subject_position"),
    )
    counts = {"rows": 0, "valid": 0}
    upsampled = audio_upsampled(source, path)
    produced = extractor.extract_blocks(source, timeline, context)
    blocks = checked_blocks(produced, timeline, job.extractor, counts)
    return VideoFeatures(timeline=timeline, blocks=blocks, counts=counts, upsampled_audio=upsampled)


def audio_upsampled(source: Any, path: str) -> bool:
    """Whether decoding raised the audio's sample rate (8 kHz telephone audio to 16 kHz): the features
    then see no content above the source's Nyquist frequency. Warned about and counted in the report."""
    if not isinstance(source, AudioTrack) or not source.source_sample_rate:
        return False
    if source.source_sample_rate >= source.sample_rate:
        return False
    log.warning(
        "%s: audio at %d Hz upsampled to %d Hz: nothing above %d Hz in its features",
        path,
        source.source_sample_rate,
        source.sample_rate,
        source.source_sample_rate // 2,
    )
    return True


def check_frame_size(info: MediaInfo, path: str, max_pixels: int | None) -> None:
    """MediaError for frames too large to decode within a worker's memory (``runner.max_pixels``)."""
    video = info.video
    if max_pixels is None or video is None or video.width * video.height <= max_pixels:
        return
    pixels = video.width * video.height
    raise MediaError(
        path,
        f"frames of {video.width}x{video.height} ({pixels / 1e6:.1f} Mpixels, {pixels * 3 / 2**20:.0f} MiB "
        f"each decoded) exceed runner.max_pixels = {max_pixels} ({max_pixels / 1e6:.1f} Mpixels); "
        "raise it if the workers have the memory",
    )


def check_paths(job: ExtractionJob, media_path: str) -> None:
    """The paths a task carries are absolute and this worker sees the store the driver prepared;
    otherwise the worker would write where the driver never looks (another working folder)."""
    root = Path(job.store.root)
    if not root.is_absolute() or not Path(media_path).is_absolute():
        raise StoreError(f"task paths must be absolute (store {root}, media {media_path}); a driver bug")
    if not (root / job.extractor).is_dir():
        raise StoreError(
            f"{root / job.extractor} does not exist on worker host {socket.gethostname()}: the workers must "
            "see the driver's store.root at the same path (shared storage)"
        )


def process_cpu_seconds() -> float:
    """CPU time of this worker process, its threads (decode-ahead) and its finished child processes
    (ffprobe): what a video costs, whatever else competes for the machine."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def checked_blocks(
    blocks: Iterator[FeatureSet], timeline: Timeline, extractor: str, counts: dict[str, int]
) -> Iterator[FeatureSet]:
    """Pass the blocks on, checking that they follow ``timeline`` row for row; count rows and valid ones.

    An extractor must return its features on the timeline it was given: anything else is a bug (and the
    store refuses a shard whose row count differs from the timeline's).
    """
    for block in blocks:
        start, stop = counts["rows"], counts["rows"] + len(block)
        if stop > len(timeline) or not np.array_equal(block.frame_index, timeline.frame_index[start:stop]):
            raise ExtractorError(
                f"extractor {extractor!r} returned rows {start}..{stop} that are not those of its "
                f"{len(timeline)}-frame timeline"
            )
        counts["rows"] = stop
        counts["valid"] += int(np.count_nonzero(block.mask))
        yield block


def read_face_crops(store: FeatureStore, video_id: str, crop_size: int) -> FaceCrops:
    name = f"crops_{crop_size}"
    try:
        shard = store.read(FACES_EXTRACTOR, video_id, names=[name])
    except StoreError as err:
        raise ExtractorError(
            f"{video_id}: no warped face crops of size {crop_size} in the faces store ({err}); "
            f"run the faces stage first, with {crop_size} in extractors.faces.sizes"
        ) from err
    return FaceCrops(
        time=shard.time, frame_index=shard.frame_index, mask=shard.mask, crops=shard.arrays[name]
    )


def open_store(cfg: StoreConfig) -> FeatureStore:
    return FeatureStore(
        cfg.root,
        compression=cfg.compression.value,
        chunk_frames=cfg.chunk_frames,
        videos_per_shard=cfg.videos_per_shard,
    )


def input_fingerprint(kind: InputKind, store: FeatureStore, row: ManifestRow) -> str:
    """What the extractor's input depends on: the media file, or for FACES the face shard it reads.

    Raises MediaError (unreadable media) or ExtractorError (no faces shard) for a video that cannot run.
    """
    if kind is not InputKind.FACES:
        return media_fingerprint(row.media_path)
    try:
        attrs = store.attrs(FACES_EXTRACTOR, row.video_id)
    except StoreError as err:
        reason = f"{row.video_id}: no usable faces shard, run the faces stage first ({err})"
        raise ExtractorError(reason) from err
    return f"faces:{attrs.get('params_hash')}:{attrs.get('media_fingerprint')}"


def run_extractor(
    name: str,
    config: Any,
    rows: list[ManifestRow],
    store_cfg: StoreConfig,
    runner_cfg: RunnerConfig,
    fps: float | None = None,
    registry: ExtractorRegistry | None = None,
    client: Any = None,
    audio_fps: float | None = None,
) -> RunReport:
    """Extract ``name`` for every manifest row not already stored with the same parameters.

    Runs on ``client`` when given, else on the cluster ``runner_cfg`` describes. Every bad video
    becomes one row of ``report.failures``; the other videos complete. Safe to kill at any moment
    and re-run: finished shards are kept and skipped, unfinished ones are recomputed.
    """
    started = time.perf_counter()
    registry = registry or default_registry()
    cls = registry.get(name)
    cls(config).preflight()
    # Workers may run elsewhere (runner.scheduler_address) in another working folder: they get the
    # store as an absolute path, whose extractor folder exists before any task is sent (check_paths).
    store_cfg = dataclasses.replace(store_cfg, root=str(Path(store_cfg.root).resolve()))
    open_store(store_cfg).folder(name).mkdir(parents=True, exist_ok=True)
    job = ExtractionJob.create(
        name,
        cls,
        config,
        store_cfg,
        fps=fps,
        device=runner_cfg.device,
        torch_threads=runner_cfg.torch_threads,
        plugin=f"avpipe-{name}-{uuid.uuid4().hex[:12]}",
        audio_fps=audio_fps,
        max_pixels=runner_cfg.max_pixels,
    )
    store = open_store(store_cfg)
    store.cleanup_temp(name)
    report = RunReport(stage=name)
    sync_index(store, name, report, verify_data=store_cfg.verify_data)
    tasks = pending_tasks(job, cls.input_kind, store, rows, report)
    log.info("%s: %d videos to extract, %d already stored", name, len(tasks), report.skipped)
    try:
        if tasks:
            own = client is None
            ctx = open_client(runner_cfg, len(tasks)) if own else contextlib.nullcontext(client)
            opening = time.perf_counter()
            with ctx as active:
                report.startup_seconds = time.perf_counter() - opening
                supervision = Supervision(watchdog_s=runner_cfg.watchdog_s)
                run_on_cluster(active, job, tasks, store, report, runner_cfg.task_seconds, supervision)
            store.cleanup_temp(name)  # what workers killed during this run left behind
    finally:
        compact_index(store, name, report)
    report.failures.sort(key=lambda f: (f.video, f.reason))
    report.failed = len(report.failures)
    report.seconds = time.perf_counter() - started
    return report


def sync_index(store: FeatureStore, extractor: str, report: RunReport, verify_data: bool = False) -> None:
    """Start of a stage: index the shards a killed driver never recorded, drop vanished ones.

    A full disk here is not fatal: the index is a cache, and the full ``status`` check still
    decides what to skip; the report counts the failed index write.
    """
    try:
        report.index_synced = store.sync_index(extractor, verify_data=verify_data).added
    except OSError as err:
        report.index_errors += 1
        log.warning("%s: could not update the index at the start of the stage: %s", extractor, err)


def compact_index(store: FeatureStore, extractor: str, report: RunReport) -> None:
    """End of a stage: fold the index log into index.json. A failure (full disk) leaves the log,
    which readers replay, so the index stays valid; the next stage compacts it."""
    try:
        store.compact_index(extractor)
    except OSError as err:
        report.index_errors += 1
        log.warning("%s: could not compact the index (the log keeps every entry): %s", extractor, err)


def pending_tasks(
    job: ExtractionJob, kind: InputKind, store: FeatureStore, rows: list[ManifestRow], report: RunReport
) -> list[tuple[str, dict[str, Any]]]:
    """One task per video not stored yet, longest first; counts the skipped ones in ``report``."""
    tasks = []
    status = store.status_checker(job.extractor, verify_data=job.store.verify_data)
    for row in sorted(rows, key=lambda r: -max(r.duration, 0.0)):
        try:
            fingerprint = input_fingerprint(kind, store, row)
        except AvpipeError as err:
            report.failures.append(Failure(row.video_id, job.extractor, str(err)))
            log.warning("%s: %s failed: %s", job.extractor, row.video_id, err)
            continue
        if status(row.video_id, job.params_hash, fingerprint) is ShardStatus.STORED:
            report.skipped += 1
            continue
        dataset = labels_dataset(store, row.video_id)
        try:
            store.check_dataset(job.extractor, row.video_id, dataset, job.store.replace_other_dataset)
        except AvpipeError as err:
            report.failures.append(Failure(row.video_id, job.extractor, str(err)))
            log.warning("%s: %s failed: %s", job.extractor, row.video_id, err)
            continue
        video = {
            "video_id": row.video_id,
            "media_path": row.media_path,
            "subject_position": row.subject_position,
            "dataset": dataset,
        }
        payload = {"job": job, "video": video, "fingerprint": fingerprint, "seconds": row.duration}
        tasks.append((row.video_id, payload))
    report.skipped_by_index = status.from_index
    return tasks


def labels_dataset(store: FeatureStore, video_id: str) -> str:
    """The dataset the manifest stage recorded for this video ('' when it has no labels shard)."""
    try:
        return str(store.attrs(LABELS_EXTRACTOR, video_id).get("dataset", ""))
    except AvpipeError:
        return ""


def run_on_cluster(
    client: Any,
    job: ExtractionJob,
    tasks: list[tuple[str, dict[str, Any]]],
    store: FeatureStore,
    report: RunReport,
    task_seconds: float = 0.0,
    supervision: Supervision | None = None,
) -> None:
    """Register the extractor plugin, run the tasks (short videos grouped into tasks of about
    ``task_seconds``), record each finished video in the index at once."""
    info = cluster_info(client)
    resources = task_resources(job, info)
    report.workers, report.gpu_workers = info.workers, info.gpu_workers
    report.cluster, report.dashboard = info.address, info.dashboard
    report.device = describe_device(job, resources)
    if resources is not None:
        device = "cuda" if job.device == "auto" else job.device
        job = dataclasses.replace(job, device=device, needs_gpu=True)
        tasks = [(key, {**payload, "job": job}) for key, payload in tasks]

    def on_done(outcome: TaskOutcome) -> None:
        if not outcome.ok:
            report.failures.append(Failure(outcome.key, job.extractor, outcome.reason or "unknown error"))
            return
        try:
            store.record(job.extractor, outcome.key, outcome.result.get("index_entry"))
        except StoreError as err:  # the shard went bad between the write and now: recompute next run
            report.failures.append(Failure(outcome.key, job.extractor, str(err)))
            log.warning("%s: %s failed: %s", job.extractor, outcome.key, err)
            return
        except OSError as err:  # full disk, I/O error: the shard is kept, the next run indexes it
            report.index_errors += 1
            reason = (
                f"shard written but the index could not record it ({err}); the shard is kept and "
                "the next run adds it to the index"
            )
            report.failures.append(Failure(outcome.key, job.extractor, reason))
            return
        result = outcome.result
        report.done += 1
        report.frames += result["n_frames"]
        report.worker_seconds += result["seconds"]
        report.worker_cpu_seconds += result["cpu_seconds"]
        report.upsampled_audio += result.get("upsampled_audio", 0)
        report.videos_per_worker[result["worker"]] = report.videos_per_worker.get(result["worker"], 0) + 1

    batched = batch_tasks(tasks, task_seconds, max(1, info.workers))
    retry_alone: list[tuple[str, dict[str, Any]]] = []

    def on_task_done(outcome: TaskOutcome) -> None:
        batch = batched_payloads.get(outcome.key)
        if batch is None:
            on_done(outcome)
        elif outcome.ok:
            for item in outcome.result:
                on_done(TaskOutcome(key=item["key"], result=item.get("result"), reason=item.get("reason")))
        else:  # the batch as a whole failed (its worker died): each video gets its own chance
            log.warning(
                "%s: a batch of %d videos failed (%s); retrying them one by one",
                job.extractor,
                len(batch),
                outcome.reason,
            )
            retry_alone.extend(batch)

    batched_payloads = {key: payload["batch"] for key, payload in batched if "batch" in payload}
    report.tasks = len(batched)
    registering = time.perf_counter()
    client.register_plugin(ExtractorPlugin(job), name=job.plugin)  # workers import the extractor here
    submitted = time.perf_counter()
    report.startup_seconds += submitted - registering
    try:
        run_tasks(
            client,
            extract_task,
            batched,
            desc=job.extractor,
            on_done=on_task_done,
            resources=resources,
            supervision=supervision,
        )
        if retry_alone:
            report.batches_retried_alone = len(retry_alone)
            report.tasks += len(retry_alone)
            run_tasks(
                client,
                extract_task,
                retry_alone,
                desc=job.extractor,
                on_done=on_done,
                resources=resources,
                supervision=supervision,
            )
    finally:
        report.processing_seconds = time.perf_counter() - submitted
        with contextlib.suppress(Exception):  # best effort: the cluster may be gone already
            client.unregister_worker_plugin(job.plugin)


def batch_tasks(
    tasks: list[tuple[str, dict[str, Any]]], task_seconds: float, workers: int
) -> list[tuple[str, dict[str, Any]]]:
    """Per-video tasks grouped into batch tasks of about ``task_seconds`` of media (docs/SCALING.md).

    The target shrinks for small runs so that every worker still gets about four tasks (load
    balance beats the per-task saving there). A batch of one stays a plain per-video task.
    """
    if task_seconds <= 0 or len(tasks) < 2:
        return list(tasks)
    total = sum(max(0.0, payload.get("seconds") or 0.0) for _, payload in tasks)
    target = min(task_seconds, total / (4 * workers))
    durations = [payload.get("seconds") or 0.0 for _, payload in tasks]
    batched = []
    for number, batch in enumerate(plan_batches(tasks, durations, target)):
        if len(batch) == 1:
            batched.append(batch.items[0])
            continue
        job = batch.items[0][1]["job"]
        items = [(key, payload) for key, payload in batch.items]
        batched.append((f"batch{number}-{len(batch)}-{batch.items[0][0]}", {"job": job, "batch": items}))
    return batched


def task_resources(job: ExtractionJob, info: ClusterInfo) -> dict[str, float] | None:
    """``{"GPU": 1}`` when the extractor runs a model, the device allows a GPU and the cluster has GPU
    workers; None otherwise. Asking for ``cuda`` on a cluster without GPU workers is an error."""
    if not uses_device(job.extractor_class) or job.device == "cpu":
        return None
    if info.gpu_workers:
        return {GPU_RESOURCE: 1}
    if job.device.startswith("cuda"):
        raise AvpipeError(
            f"runner.device is {job.device!r}, but none of the {info.workers} Dask workers advertises a GPU "
            f"(start GPU workers with `dask worker --resources {GPU_RESOURCE}=1`, or set runner.device: auto)"
        )
    return None


def describe_device(job: ExtractionJob, resources: dict[str, float] | None) -> str:
    if not uses_device(job.extractor_class):
        return "cpu"
    if resources is not None:
        return f"{job.device if job.device != 'auto' else 'cuda'} (GPU workers)"
    return job.device


def write_report(report: RunReport, reports_dir: str | Path) -> Path:
    """``<reports>/<stage>.json`` (counts, speed, times) and ``<reports>/<stage>_failures.csv``
    (video, stage, reason; a header only when nothing failed). A full disk raises OutputWriteError."""
    reports_dir = Path(reports_dir)
    path = reports_dir / f"{report.stage}.json"
    atomic.write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["video", "stage", "reason"])
    for f in report.failures:
        writer.writerow([printable(f.video), f.stage, printable(f.reason)])
    atomic.write_text(reports_dir / f"{report.stage}_failures.csv", buffer.getvalue())
    return path
