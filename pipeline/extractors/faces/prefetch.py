"""Decode ahead on a background thread, so that decoding overlaps detection and warping.

PyAV and OpenCV release the GIL while they work, so a producer thread that pulls frames from the
decoder keeps a second core busy while the main thread runs the networks. The queue is bounded:
memory stays at ``depth`` frames whatever the video's length.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")

_POLL_S = 0.1


class _End:
    """Marks the end of the stream; carries the producer's exception, if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def prefetched(items: Iterable[Item], depth: int) -> Iterator[Item]:
    """Yield ``items`` in order, produced up to ``depth`` ahead on a thread (inline when depth is 0).

    An exception raised by the producer is raised here, at the point the consumer reaches it. A
    consumer that stops early (break, exception, garbage collection) stops the producer too.
    """
    if depth <= 0:
        yield from items
        return
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(
        target=_produce, args=(iter(items), buffer, stop), name="avpipe-decode", daemon=True
    )
    thread.start()
    try:
        while True:
            item = buffer.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def _produce(items: Iterator[object], buffer: queue.Queue[object], stop: threading.Event) -> None:
    end = _End()
    try:
        for item in items:
            if not _put(buffer, item, stop):
                return
    except BaseException as err:  # handed to the consumer, raised there
        end = _End(err)
    finally:
        close = getattr(items, "close", None)
        if close is not None and stop.is_set():
            close()
    _put(buffer, end, stop)


def _put(buffer: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            buffer.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False
