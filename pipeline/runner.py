"""One runner for every stage: per-video tasks on Dask, failures collected instead of raised.

The default is a LocalCluster of worker *processes* (``runner.n_workers`` x ``runner.threads_per_worker``);
``runner.scheduler_address`` connects to an existing cluster instead (``dask scheduler`` +
``dask worker``, or dask-jobqueue on SLURM: docs/SCALING.md). Per-process state that is expensive to
build (an extractor with its model) lives in a Dask ``WorkerPlugin`` so that it is built once per
worker, on the worker, and never shipped with every task.

GPUs are Dask *resources*: a worker started with ``--resources GPU=1`` (or a LocalCluster worker on a
machine with visible GPUs) advertises one, and a task that needs a GPU asks for ``{"GPU": 1}``, so each
GPU runs one such task at a time while CPU-only tasks go to any worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from avpipe.pipeline.config import RunnerConfig
from avpipe.pipeline.errors import AvpipeError
from avpipe.pipeline.supervise import Supervision, drive, memory_limit_text

log = logging.getLogger(__name__)

GPU_RESOURCE = "GPU"
# Thread pools sized before a worker process imports numpy/torch/OpenCV (dask's own default is 1).
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
NVIDIA_GPU_FOLDER = Path("/proc/driver/nvidia/gpus")
CONNECT_TIMEOUT = "30s"


@dataclass
class TaskOutcome:
    """The result of one per-video task: ``result`` when it worked, ``reason`` when it did not."""

    key: str
    result: Any = None
    reason: str | None = None
    worker_died: bool = False  # Dask gave up after the worker running it died (KilledWorker)

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass
class Failure:
    """One row of a stage's failures report."""

    video: str
    stage: str
    reason: str


def describe_error(err: BaseException) -> str:
    """A one-line reason for the failures report: our own errors as they are, others with their type."""
    if isinstance(err, AvpipeError):
        return str(err)
    name = type(err).__name__
    if name == "KilledWorker":
        return (
            "the worker process died each time it processed this video (out of memory or killed); "
            "see the worker logs"
        )
    return f"{name}: {err}"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``. Other values pass through."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def worker_device(requested: str, worker_name: Any, gpu_count: int) -> str:
    """The device one worker process uses for ``runner.device`` (``auto`` already resolved).

    A bare ``cuda`` on a machine with several GPUs spreads LocalCluster workers (named 0, 1, ...)
    over them; workers of other clusters see the GPUs their launcher gave them (CUDA_VISIBLE_DEVICES).
    """
    if requested != "cuda" or gpu_count < 2:
        return requested
    try:
        index = int(worker_name)
    except (TypeError, ValueError):
        return requested
    return f"cuda:{index % gpu_count}"


def visible_gpu_count() -> int:
    """NVIDIA GPUs this process may use, without importing torch (the driver stays light)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if not NVIDIA_GPU_FOLDER.is_dir():
        return 0
    return sum(1 for _ in NVIDIA_GPU_FOLDER.iterdir())


def configure_worker_threads(torch_threads: int, import_torch: bool = True) -> None:
    """Keep each worker process to its share of the cores (torch, OpenCV and BLAS pools).

    With ``import_torch=False`` torch is only configured when something already imported it, so a
    worker that never needs torch does not pay its import.
    """
    if import_torch or "torch" in sys.modules:
        try:
            import torch

            torch.set_num_threads(torch_threads)
        except ImportError:
            pass
    try:
        import cv2

        cv2.setNumThreads(torch_threads)
    except ImportError:
        pass


@dataclass(frozen=True)
class ClusterInfo:
    """What the driver knows about the cluster it runs on."""

    address: str
    workers: int
    gpu_workers: int
    dashboard: str | None


def cluster_info(client: Any) -> ClusterInfo:
    """Workers, GPU workers (those advertising the ``GPU`` resource) and the dashboard link."""
    info = client.scheduler_info(n_workers=-1)
    workers = info.get("workers", {})
    gpu_workers = sum(1 for w in workers.values() if w.get("resources", {}).get(GPU_RESOURCE, 0) > 0)
    return ClusterInfo(
        address=str(info.get("address", "")),
        workers=len(workers),
        gpu_workers=gpu_workers,
        dashboard=_dashboard_link(client),
    )


def _dashboard_link(client: Any) -> str | None:
    try:
        return client.dashboard_link
    except (KeyError, AttributeError):
        return None


@contextlib.contextmanager
def open_client(cfg: RunnerConfig, max_workers: int | None = None) -> Iterator[Any]:
    """A Dask client on the configured cluster; a LocalCluster is closed again on exit.

    ``max_workers`` caps the LocalCluster (no point starting 8 processes for 3 videos).
    """
    if cfg.scheduler_address:
        with _remote_client(cfg.scheduler_address) as client:
            yield client
        return
    with _local_client(cfg, max_workers) as client:
        yield client


@contextlib.contextmanager
def _remote_client(address: str) -> Iterator[Any]:
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        raise AvpipeError(
            f"runner.scheduler_address: cannot reach the Dask scheduler at {address}: {err}"
        ) from err
    try:
        info = cluster_info(client)
        if info.workers == 0:
            log.warning("the Dask cluster at %s has no workers yet; tasks wait until one joins", address)
        log.info(
            "connected to Dask cluster %s: %d workers (%d with a GPU), dashboard %s",
            address,
            info.workers,
            info.gpu_workers,
            info.dashboard or "not available",
        )
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def _local_client(cfg: RunnerConfig, max_workers: int | None) -> Iterator[Any]:
    import dask
    from distributed import Client, LocalCluster

    n_workers = cfg.n_workers if max_workers is None else max(1, min(cfg.n_workers, max_workers))
    gpus = visible_gpu_count() if cfg.device != "cpu" else 0
    threads = {name: str(cfg.torch_threads) for name in THREAD_ENV_VARS}
    # pre-spawn-environ reaches the worker before it imports numpy/torch; nanny.environ would be too late.
    # Only the thread counts: Dask's default MALLOC_TRIM_THRESHOLD_=65536 is left out on purpose. Trimming
    # after every freed 720p frame halved the face stage's speed (108 -> 55 frames/s), and without it the
    # peak RSS still levels off (1.61 GB after 1 min of 720p, 1.63 GB after 10 min: bench/faces.py --long).
    settings = {
        "distributed.nanny.pre-spawn-environ": threads,
        # The nannies hand the driver's Dask config to the worker processes they start.
        "distributed.worker.profile.enabled": cfg.worker_profile,
        # Few deaths before Dask gives up on a task: run_tasks then retries it alone (supervise.py).
        "distributed.scheduler.allowed-failures": cfg.allowed_worker_deaths,
    }
    with dask.config.set(settings):
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=cfg.threads_per_worker,
            processes=True,
            memory_limit=cfg.memory_limit,
            dashboard_address=cfg.dashboard_address,
            resources={GPU_RESOURCE: 1} if gpus else None,
            # Also as the nanny's own env, which wins over any distributed.nanny.environ setting.
            env=threads,
        )
    client = Client(cluster)
    try:
        log.info(
            "Dask LocalCluster: %d worker processes x %d threads, %d torch threads each%s; dashboard %s%s",
            n_workers,
            cfg.threads_per_worker,
            cfg.torch_threads,
            f", sharing {gpus} GPUs" if gpus else "",
            client.dashboard_link,
            "" if importlib.util.find_spec("bokeh") else " (install bokeh>=3.1 to serve it)",
        )
        yield client
    finally:
        client.close()
        cluster.close()


def run_tasks(
    client: Any,
    fn: Callable[..., Any],
    tasks: Sequence[tuple[str, Any]],
    desc: str,
    on_done: Callable[[TaskOutcome], None] | None = None,
    resources: dict[str, float] | None = None,
    supervision: Supervision | None = None,
) -> list[TaskOutcome]:
    """Run ``fn(payload)`` for every ``(key, payload)`` on the cluster; never raises for a task's error.

    Tasks start in the order given (the caller puts long videos first so that the last ones to finish
    are short). ``on_done`` is called on the driver as each task finishes (in completion order), so
    the caller can record finished work at once: a driver killed later loses nothing already done.
    A task whose worker died is retried alone after the others (pipeline/supervise.py): only a task
    that kills its worker even alone fails, with the workers' memory limit in its reason. The
    watchdog turns the remaining tasks into failures when nothing progresses and no worker lives.
    Losing the cluster itself (scheduler gone) is not a per-video failure: it raises AvpipeError.
    """
    if not tasks:
        return []
    supervision = supervision or Supervision()
    run_id = time.time_ns()
    payloads = dict(tasks)
    outcomes: list[TaskOutcome] = []
    suspects: list[str] = []
    memory = memory_limit_text(client)  # now, while workers live: a dead one reports no limit

    def submit(position: int, key: str, payload: Any, attempt: str = "") -> Any:
        return client.submit(
            fn,
            payload,
            key=f"{desc}-{key}-{run_id}{attempt}",
            pure=False,
            resources=resources,
            priority=len(tasks) - position,
        )

    with tqdm(total=len(tasks), desc=desc, unit="video", disable=None) as bar:

        def finish(outcome: TaskOutcome) -> None:
            outcomes.append(outcome)
            if on_done is not None:
                on_done(outcome)
            bar.update(1)
            if not outcome.ok:
                bar.set_postfix(failed=sum(1 for o in outcomes if not o.ok))

        def first_try(key: str, future: Any) -> None:
            outcome = _outcome(key, future, desc)
            if outcome.worker_died:
                suspects.append(key)  # perhaps only a neighbour of the video that killed the worker
            else:
                finish(outcome)

        def alone(key: str, future: Any) -> None:
            outcome = _outcome(key, future, desc)
            if outcome.worker_died:
                outcome.reason = (
                    "the worker process died each time it processed this video, also when it ran alone: "
                    f"it most likely needs more memory than the workers have ({memory}, "
                    "runner.memory_limit); raise it, or lower runner.max_pixels to refuse such frames"
                )
                log.warning("%s: %s failed: %s", desc, key, outcome.reason)
            finish(outcome)

        def give_up(key: str, reason: str) -> None:
            finish(TaskOutcome(key=key, reason=reason))

        drive(client, submit, tasks, first_try, give_up, supervision, desc)
        if suspects:
            log.warning("%s: %d videos were on a worker that died; retrying each alone", desc, len(suspects))
        for key in suspects:
            solo = [(key, payloads[key])]
            drive(client, lambda p, k, x: submit(p, k, x, "-alone"), solo, alone, give_up, supervision, desc)
    return outcomes


def _outcome(key: str, future: Any, desc: str) -> TaskOutcome:
    try:
        return TaskOutcome(key=key, result=future.result())
    except (asyncio.CancelledError, concurrent.futures.CancelledError) as err:
        raise AvpipeError(
            f"{desc}: the Dask cluster cancelled the task of {key!r} (scheduler lost or shut down): {err}"
        ) from err
    except Exception as err:  # every failure becomes a report row
        log.debug("task %s failed:\n%s", key, "".join(traceback.format_exception(err)))
        outcome = TaskOutcome(
            key=key, reason=describe_error(err), worker_died=type(err).__name__ == "KilledWorker"
        )
        if not outcome.worker_died:
            log.warning("%s: %s failed: %s", desc, key, outcome.reason)
        return outcome


@dataclass
class RunReport:
    """What a stage did: counts, speed, time, and the failures (docs/SCALING.md).

    ``seconds`` is the whole stage (checks, cluster start, tasks); ``processing_seconds`` the span from
    the first task submitted to the last one finished, which ``frames_per_second`` is measured over.
    ``worker_seconds`` sums the time workers spent inside tasks (compare with ``processing_seconds``
    x ``workers`` to see how busy the workers were); ``worker_cpu_seconds`` the CPU time they used
    meanwhile (below ``worker_seconds`` when other programs compete for the cores, or a GPU works).
    """

    stage: str
    done: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    seconds: float = 0.0
    processing_seconds: float = 0.0
    startup_seconds: float = 0.0
    worker_seconds: float = 0.0
    worker_cpu_seconds: float = 0.0
    workers: int = 0
    gpu_workers: int = 0
    device: str = ""
    cluster: str = ""
    dashboard: str | None = None
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    videos_per_worker: dict[str, int] = field(default_factory=dict)
    upsampled_audio: int = 0  # videos whose audio was decoded at a higher rate than it was recorded
    failures: list[Failure] = field(default_factory=list)
    # Index upkeep (docs/FORMAT.md): shards the index learnt at the start (written but never
    # recorded, e.g. by a killed driver), and index writes that failed (full disk) during the run.
    index_synced: int = 0
    index_errors: int = 0
    # Skipped videos decided from the index entry and one stat of the shard (the rest were opened).
    skipped_by_index: int = 0
    # Dask tasks submitted (short videos share one, runner.task_seconds) and videos of failed
    # batches that were retried one task each.
    tasks: int = 0
    batches_retried_alone: int = 0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.processing_seconds if self.processing_seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.stage}: {self.done} done, {self.skipped} skipped (already stored), "
            f"{self.failed} failed; {self.frames} frames in {self.processing_seconds:.1f} s "
            f"({self.frames_per_second:.1f} frames/s) on {self.workers} workers; "
            f"stage took {self.seconds:.1f} s"
            + (f"; {self.upsampled_audio} videos with audio upsampled" if self.upsampled_audio else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "frames": self.frames,
            "frames_per_second": round(self.frames_per_second, 2),
            "seconds": round(self.seconds, 3),
            "processing_seconds": round(self.processing_seconds, 3),
            "startup_seconds": round(self.startup_seconds, 3),
            "worker_seconds": round(self.worker_seconds, 3),
            "worker_cpu_seconds": round(self.worker_cpu_seconds, 3),
            "workers": self.workers,
            "gpu_workers": self.gpu_workers,
            "device": self.device,
            "cluster": self.cluster,
            "dashboard": self.dashboard,
            "started": self.started,
            "videos_per_worker": dict(sorted(self.videos_per_worker.items())),
            "index_synced": self.index_synced,
            "index_errors": self.index_errors,
            "skipped_by_index": self.skipped_by_index,
            "tasks": self.tasks,
            "batches_retried_alone": self.batches_retried_alone,
            "upsampled_audio": self.upsampled_audio,
        }
