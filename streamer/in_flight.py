"""Work started now and finished later, in order: the frames a stream has at a remote encoder.

``luvnet serve``'s encoder answers after a round trip through Ray Serve; a stream that waited
for each frame's embedding before taking the next would score one frame per round trip. With
:class:`InOrder` the stream's thread starts a frame's encoder call and goes on to the next
frame, while one thread of its own finishes the frames (head, postprocess, publish) in the
order they were started, so every window is the same as one frame at a time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class InOrder(Generic[T]):
    """At most ``limit`` items started and not yet finished; ``finish`` runs on a thread of
    its own, in the order the items were started, and returns False for an item that failed.

    ``started`` and ``lost`` count items (``started - lost`` is what is finished or in flight
    to be). ``finish`` must not raise: what it cannot finish, it reports and returns False.
    """

    def __init__(self, finish: Callable[[T], bool], limit: int, name: str) -> None:
        if limit < 1:
            raise ValueError(f"limit: expected >= 1, got {limit}")
        self._finish = finish
        self._slots = threading.Semaphore(limit)
        self._queue: queue.Queue[tuple[T] | None] = queue.Queue()
        self.started = 0  # written by the caller's thread only
        self.lost = 0  # written by the finishing thread only
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def start(self, begin: Callable[[], T]) -> None:
        """Wait for a free slot, then ``begin()`` (start the work) and queue what it returns.
        An exception from ``begin`` frees the slot and propagates."""
        self._slots.acquire()
        try:
            item = begin()
        except BaseException:
            self._slots.release()
            raise
        self.started += 1
        self._queue.put((item,))

    def close(self) -> None:
        """Finish every started item, then end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (entry := self._queue.get()) is not None:
            if not self._finish(entry[0]):
                self.lost += 1
            self._slots.release()
