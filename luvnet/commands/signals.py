"""SIGINT and SIGTERM as a stop request: the one place a command installs signal handlers.

A long-running command (stream, listen, record, soak) runs its loop inside
:class:`StopOnSignal`; a signal sets :attr:`StopOnSignal.stop`, the loop notices it within one
iteration, cleans up and reports, and the previous handlers come back when the block ends.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Self

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(BaseException):
    """Raised by a signal during start-up (``interrupt_until_started``).

    A BaseException, so that no ``except Exception`` on the way (a backend falling back to the
    next one) swallows it. ``signum`` is the signal that came.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopOnSignal:
    """Within the block, SIGINT and SIGTERM set :attr:`stop` instead of killing the process.

    Args:
        interrupt_until_started: until :meth:`started` is called, a signal also raises
            :class:`StopRequested`, which unwinds start-up work that never looks at the flag
            (a model load, a CPU compile that takes minutes, a wait for a subscriber).

    Signals can only be caught in the main thread; elsewhere (a command run from a test
    thread) the handlers are not installed and only :attr:`stop` is there to set.
    """

    def __init__(self, *, interrupt_until_started: bool = False) -> None:
        self.stop = threading.Event()
        self.signum: int | None = None  # the first signal that came
        self._starting = interrupt_until_started
        self._previous: dict[int, object] = {}

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

    @property
    def by_user(self) -> bool:
        """True when the stop came from Ctrl-C (SIGINT) rather than SIGTERM."""
        return self.signum == signal.SIGINT

    def started(self) -> None:
        """Start-up is over: from now on a signal only sets the flag."""
        self._starting = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        self.stop.set()
        if self._starting:
            self._starting = False  # a second signal must not interrupt the unwinding
            raise StopRequested(signum)

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
