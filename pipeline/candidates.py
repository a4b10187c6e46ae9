"""Running a per-file function over many dataset candidates: threads for a few, the cluster for many.

The manifest's work per file (probe, frame listing, labels shard) is ~5-10 ms of CPU, much of it
under the GIL or h5py's global lock, so threads of one process use about one core. Corpora of
thousands of clips go to the Dask cluster instead, in batches (the per-task cost stays small), which
uses every worker's core. A batch whose worker died is retried one candidate per task, so a file that
kills its worker fails alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

from tqdm.auto import tqdm

from avpipe.pipeline.config import RunnerConfig
from avpipe.pipeline.runner import TaskOutcome, cluster_info, open_client, run_tasks

log = logging.getLogger(__name__)

Candidate = TypeVar("Candidate")
Outcome = TypeVar("Outcome")

# Below this many files the cluster's start (seconds) costs more than threads lose.
CLUSTER_MIN_CANDIDATES = 500
MAX_BATCH = 64
MAX_THREADS = 8


def _run_batch(payload: dict[str, Any]) -> list[Any]:
    """Worker task: ``fn(*args, candidate)`` for each candidate of the batch, in order."""
    fn, args = payload["fn"], payload["args"]
    return [fn(*args, candidate) for candidate in payload["candidates"]]


def map_candidates(
    fn: Callable[..., Outcome],
    args: tuple[Any, ...],
    candidates: Sequence[Candidate],
    on_outcome: Callable[[Outcome], None],
    on_lost: Callable[[Candidate, str], None],
    runner: RunnerConfig | None,
    desc: str,
) -> str:
    """Call ``fn(*args, candidate)`` for every candidate (it must not raise for bad input) and hand
    each result to ``on_outcome`` on this thread as it comes. ``on_lost`` gets a candidate whose
    worker died each time. Returns where it ran ("threads" or the cluster's address)."""
    use_cluster = runner is not None and (
        runner.scheduler_address is not None or len(candidates) >= CLUSTER_MIN_CANDIDATES
    )
    if not use_cluster:
        _map_in_threads(fn, args, candidates, on_outcome, runner, desc)
        return "threads"
    with open_client(runner, len(candidates)) as client:
        info = cluster_info(client)
        workers = max(1, info.workers)
        size = max(1, min(MAX_BATCH, math.ceil(len(candidates) / (4 * workers))))
        batches = [candidates[i : i + size] for i in range(0, len(candidates), size)]
        failed: list[Candidate] = []

        def on_batch(outcome: TaskOutcome, batch_of: dict[str, Sequence[Candidate]]) -> None:
            if outcome.ok:
                for result in outcome.result:
                    on_outcome(result)
            else:
                failed.extend(batch_of[outcome.key])

        _run_batches(client, fn, args, batches, on_batch, desc)
        if failed:
            log.warning(
                "%s: %d file(s) lost with their worker; retrying them one per task", desc, len(failed)
            )
            retry = [[candidate] for candidate in failed]
            lost: list[tuple[Candidate, str]] = []

            def on_single(outcome: TaskOutcome, batch_of: dict[str, Sequence[Candidate]]) -> None:
                if outcome.ok:
                    on_outcome(outcome.result[0])
                else:
                    lost.append((batch_of[outcome.key][0], outcome.reason or "unknown error"))

            _run_batches(client, fn, args, retry, on_single, desc)
            for candidate, reason in lost:
                on_lost(candidate, reason)
        return info.address


def _run_batches(
    client: Any,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    batches: list[Sequence[Candidate]],
    on_batch: Callable[[TaskOutcome, dict[str, Sequence[Candidate]]], None],
    desc: str,
) -> None:
    batch_of = {f"batch{number}": batch for number, batch in enumerate(batches)}
    tasks = [(key, {"fn": fn, "args": args, "candidates": list(batch)}) for key, batch in batch_of.items()]
    run_tasks(client, _run_batch, tasks, desc=desc, on_done=lambda outcome: on_batch(outcome, batch_of))


def _map_in_threads(
    fn: Callable[..., Outcome],
    args: tuple[Any, ...],
    candidates: Sequence[Candidate],
    on_outcome: Callable[[Outcome], None],
    runner: RunnerConfig | None,
    desc: str,
) -> None:
    threads = 4 if runner is None else max(1, min(MAX_THREADS, runner.n_workers * runner.threads_per_worker))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(fn, *args, candidate) for candidate in candidates]
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="video", disable=None):
            on_outcome(future.result())
