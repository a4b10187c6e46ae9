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

POLL_S = 0.05  # how often the driver looks for finished tasks (each look is cheap, in memory)
WORKER_CHECK_S = 1.0  # how often a stalled driver asks the scheduler for live workers
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
    from distributed import as_completed

    futures = {
        submit(position, key, payload): (position, key) for position, (key, payload) in enumerate(tasks)
    }
    # as_completed waits on the futures' own client (distributed.wait would use the default client,
    # which may be another one on another event loop when the caller runs in a thread).
    finished = as_completed(futures)
    handled: set[Any] = set()
    last_progress = last_check = time.monotonic()
    try:
        while not finished.is_empty():
            batch = finished.next_batch(block=False)
            if batch:
                for future in sorted(batch, key=lambda f: futures[f][0]):
                    handled.add(future)
                    handle(futures[future][1], future)
                last_progress = time.monotonic()
                continue
            time.sleep(supervision.poll_s)
            now = time.monotonic()
            if now - last_progress < supervision.watchdog_s or now - last_check < WORKER_CHECK_S:
                continue
            last_check = now
            if live_workers(client) == 0:
                if finished.has_ready():  # one finished while we asked: not stalled after all
                    continue
                _abandon(client, futures, handled, handle, give_up, now - last_progress, desc)
                return
    finally:
        # A driver leaving early (Ctrl-C, error) must not leave its tasks running on a shared cluster.
        left = [f for f in futures if not f.done()]
        if left:
            client.cancel(left)


def _abandon(
    client: Any,
    futures: dict[Any, tuple[int, str]],
    handled: set[Any],
    handle: Callable[[str, Any], None],
    give_up: Callable[[str, str], None],
    stalled: float,
    desc: str,
) -> None:
    """Cancel what has not run; a task that finished meanwhile is still handled as done."""
    left = sorted((f for f in futures if f not in handled), key=lambda f: futures[f][0])
    client.cancel([f for f in left if not f.done()])
    abandoned = [f for f in left if f.status not in ("finished", "error")]
    reason = (
        f"not run: for {stalled:.0f} s no task finished and no Dask worker was alive (workers keep dying "
        "or none joined; see the worker logs); the stage gave up on the rest"
    )
    log.error("%s: %s (%d videos)", desc, reason, len(abandoned))
    for future in left:
        if future in abandoned:
            give_up(futures[future][1], reason)
        else:
            handle(futures[future][1], future)
