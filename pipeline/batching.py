"""Grouping short videos into one Dask task (``runner.task_seconds``, docs/SCALING.md).

One task per 2-second clip makes the scheduler's per-task cost (a few ms of scheduler, driver and
worker bookkeeping, plus pickling the job) a large share of the work. Short videos are packed into
tasks of about ``task_seconds`` of media; a video of that length or longer stays alone, so long
videos still spread over the workers one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")

# A task's results travel back in one message; very many tiny videos per task would also make a
# killed worker lose (and redo) much work.
MAX_VIDEOS_PER_TASK = 256


@dataclass(frozen=True)
class Batch(Generic[Item]):
    """The items of one task, in the order given."""

    items: tuple[Item, ...]

    def __len__(self) -> int:
        return len(self.items)


def plan_batches(
    items: Sequence[Item],
    durations: Sequence[float],
    task_seconds: float,
    max_per_task: int = MAX_VIDEOS_PER_TASK,
) -> list[Batch[Item]]:
    """Consecutive ``items`` grouped until their durations reach ``task_seconds``.

    ``task_seconds <= 0``: one item per batch (no grouping). An item as long as ``task_seconds``
    or longer is a batch of its own. Unknown durations (<= 0) count as zero, bounded by
    ``max_per_task``. Order is kept, so items sorted longest first give long tasks first.
    """
    if len(items) != len(durations):
        raise ValueError(f"{len(items)} items but {len(durations)} durations")
    if task_seconds <= 0:
        return [Batch((item,)) for item in items]
    batches: list[Batch[Item]] = []
    current: list[Item] = []
    total = 0.0
    for item, duration in zip(items, durations, strict=True):
        seconds = max(0.0, float(duration))
        if seconds >= task_seconds:
            batches.append(Batch((item,)))
            continue
        current.append(item)
        total += seconds
        if total >= task_seconds or len(current) >= max_per_task:
            batches.append(Batch(tuple(current)))
            current, total = [], 0.0
    if current:
        batches.append(Batch(tuple(current)))
    return batches
