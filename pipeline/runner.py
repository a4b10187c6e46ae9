"""One runner for every stage: per-video tasks on Dask, failures collected instead of raised.

The default is a LocalCluster of worker *processes* (``runner.n_workers`` x ``runner.threads_per_worker``);
``runner.scheduler_address`` connects to an existing cluster instead (``dask scheduler`` +
``dask worker``, or dask-jobqueue on SLURM: docs/SCALING.md). Per-process state that is expensive to
build (an extractor with its model) lives in a Dask ``WorkerPlugin`` so that it is built once per
worker, on the worker, and never shipped with every task.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from pipeline.config import RunnerConfig
from pipeline.errors import AvpipeError

log = logging.getLogger(__name__)


@dataclass
class TaskOutcome:
    """The result of one per-video task: ``result`` when it worked, ``reason`` when it did not."""

    key: str
    result: Any = None
    reason: str | None = None

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
        return "the worker process died while processing this video (out of memory or killed)"
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


def configure_worker_threads(torch_threads: int) -> None:
    """Keep each worker process to its share of the cores (torch, OpenCV and BLAS pools)."""
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


@contextlib.contextmanager
def open_client(cfg: RunnerConfig) -> Iterator[Any]:
    """A Dask client on the configured cluster; a LocalCluster is closed again on exit."""
    from distributed import Client, LocalCluster

    if cfg.scheduler_address:
        try:
            client = Client(cfg.scheduler_address, timeout="30s")
        except OSError as err:
            raise AvpipeError(
                f"runner.scheduler_address: cannot reach the Dask scheduler at {cfg.scheduler_address}: {err}"
            ) from err
        log.info("connected to Dask cluster %s (%d workers)", cfg.scheduler_address, _n_workers(client))
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=cfg.n_workers,
        threads_per_worker=cfg.threads_per_worker,
        processes=True,
        memory_limit=cfg.memory_limit,
        dashboard_address=":0",
    )
    client = Client(cluster)
    log.info("Dask LocalCluster: %d workers, dashboard %s", cfg.n_workers, client.dashboard_link)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _n_workers(client: Any) -> int:
    return len(client.scheduler_info().get("workers", {}))


def run_tasks(
    client: Any,
    fn: Callable[..., Any],
    tasks: Sequence[tuple[str, Any]],
    desc: str,
    on_done: Callable[[TaskOutcome], None] | None = None,
    resources: dict[str, float] | None = None,
) -> list[TaskOutcome]:
    """Run ``fn(payload)`` for every ``(key, payload)`` on the cluster; never raises for a task's error.

    ``on_done`` is called on the driver as each task finishes (in completion order), so the caller
    can record finished work at once: a driver killed later loses nothing already done.
    """
    from distributed import as_completed

    if not tasks:
        return []
    futures = {}
    for key, payload in tasks:
        future = client.submit(fn, payload, key=f"{desc}-{key}-{time.time_ns()}", pure=False, resources=resources)
        futures[future] = key
    outcomes: list[TaskOutcome] = []
    with tqdm(total=len(futures), desc=desc, unit="video") as bar:
        for future in as_completed(futures):
            key = futures[future]
            try:
                outcome = TaskOutcome(key=key, result=future.result())
            except Exception as err:  # noqa: BLE001 - every failure becomes a report row
                log.debug("task %s failed:\n%s", key, "".join(traceback.format_exception(err)))
                outcome = TaskOutcome(key=key, reason=describe_error(err))
                log.warning("%s: %s failed: %s", desc, key, outcome.reason)
            outcomes.append(outcome)
            if on_done is not None:
                on_done(outcome)
            bar.update(1)
    return outcomes


@dataclass
class RunReport:
    """What a stage did: counts, speed, and the failures (docs/SCALING.md)."""

    stage: str
    done: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    seconds: float = 0.0
    workers: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.stage}: {self.done} done, {self.skipped} skipped (already stored), {self.failed} failed; "
            f"{self.frames} frames in {self.seconds:.1f} s ({self.frames_per_second:.1f} frames/s) "
            f"on {self.workers} workers"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "frames_per_second": round(self.frames_per_second, 2),
            "workers": self.workers,
        }
