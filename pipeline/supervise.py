"""Driving per-video tasks through worker deaths: suspects retried alone, and a watchdog.

When a worker process dies (over its memory limit, killed), Dask marks every task it held as
suspicious, so a good video that merely shared the worker with a memory hog is charged for its
deaths. Here a task that ends in ``KilledWorker`` is only a *suspect*: after the batch, each suspect
runs again **alone** on the cluster. A suspect that completes was innocent; one that kills its worker
even alone becomes one failure row naming the workers' memory limit.

The watchdog ends a stage that can no longer progress: when no task has finished for
``watchdog_s`` seconds and the cluster has no live worker, every remaining task becomes a failure
row, its future is cancelled, and the driver goes on to write its report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

POLL_S = 0.5
DEFAULT_WATCHDOG_S = 300.0


@dataclass(frozen=True)
class Supervision:
    """How patiently to wait: ``watchdog_s`` without progress or a live worker ends the wait."""

    watchdog_s: float = DEFAULT_WATCHDOG_S
    poll_s: float = POLL_S


def live_workers(client: Any) -> int:
    """Workers the scheduler knows now (asked directly: the client's cached view lags seconds)."""
    try:
        return len(client.run_on_scheduler(_worker_count))
    except Exception:  # a scheduler that cannot answer has no usable worker either
        return 0


def _worker_count(dask_scheduler: Any = None) -> list[str]:
    return list(dask_scheduler.workers)


def memory_limit_text(client: Any) -> str:
    """The workers' memory limit as people read it (``1.5 GiB per worker``), or ``unknown``."""
    try:
        workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
        limits = sorted({int(w.get("memory_limit") or 0) for w in workers})
    except Exception:  # only for a message
        return "unknown"
    limits = [x for x in limits if x > 0]
    if not limits:
        return "no limit set"
    if len(limits) == 1:
        return f"{limits[0] / 2**30:.2f} GiB per worker"
    return f"{limits[0] / 2**30:.2f} to {limits[-1] / 2**30:.2f} GiB per worker"


def drive(
    client: Any,
    submit: Callable[[int, str, Any], Any],
    tasks: Sequence[tuple[str, Any]],
    handle: Callable[[str, Any], None],
    give_up: Callable[[str, str], None],
    supervision: Supervision,
    desc: str,
) -> None:
    """Submit every task, call ``handle(key, future)`` as each finishes (in completion order, ties
    in submission order); ``give_up(key, reason)`` for each task the watchdog abandons."""
    from distributed import wait

    futures = {
        submit(position, key, payload): (position, key) for position, (key, payload) in enumerate(tasks)
    }
    pending = set(futures)
    last_progress = time.monotonic()
    try:
        while pending:
            try:
                done, pending = wait(pending, timeout=supervision.poll_s, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            for future in sorted(done, key=lambda f: futures[f][0]):
                handle(futures[future][1], future)
            if done:
                last_progress = time.monotonic()
                continue
            stalled = time.monotonic() - last_progress
            if stalled >= supervision.watchdog_s and live_workers(client) == 0:
                reason = (
                    f"not run: for {stalled:.0f} s no task finished and no Dask worker was alive (workers "
                    "keep dying or none joined; see the worker logs); the stage gave up on the rest"
                )
                log.error("%s: %s (%d videos)", desc, reason, len(pending))
                client.cancel(list(pending))
                for future in sorted(pending, key=lambda f: futures[f][0]):
                    give_up(futures[future][1], reason)
                pending = set()
    finally:
        # A driver leaving early (Ctrl-C, error) must not leave its tasks running on a shared cluster.
        left = [f for f in futures if not f.done()]
        if left:
            client.cancel(left)
