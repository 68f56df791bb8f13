"""Per-master control shared by both cores: the ``Retry`` policy and the backoff timer."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any

from ._errors import RETRY_ATTEMPTS, RETRY_ON, RETRY_SECONDS

__all__ = ["Retry", "Timer"]

logger = logging.getLogger("fastdispatch")


def _seconds(name: str, value: object) -> float:
    if value.__class__ is bool or not isinstance(value, (int, float)):
        raise TypeError(RETRY_SECONDS.format(name=name, value=value))
    if math.isnan(value) or value < 0 or math.isinf(value):
        raise ValueError(RETRY_SECONDS.format(name=name, value=value))
    return float(value)


def _exception_classes(value: object) -> tuple[type[BaseException], ...]:
    classes = value if isinstance(value, tuple) else (value,)
    if not classes or not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in classes
    ):
        raise TypeError(RETRY_ON.format(value=value))
    return classes  # type: ignore[return-value]


class Retry:
    """Run a failing item again before its master's next item.

    Args:
        attempts: runs in all, the first included (``1``: no retry).
        backoff: seconds the master waits before the second run; each later
            wait doubles (``backoff * 2**k``).
        max_backoff: the longest wait, in seconds.
        retry_on: the exception class(es) worth another run; any other
            failure is final at once.

    Between runs the master's worker thread serves other masters: a timer
    hands the master back when its wait is over. Immutable and hashable.
    """

    # A plain class rather than a dataclass: importing dataclasses (and
    # inspect) would add milliseconds to every ``import fastdispatch``.
    __slots__ = ("attempts", "backoff", "max_backoff", "retry_on")

    attempts: int
    backoff: float
    max_backoff: float
    retry_on: tuple[type[BaseException], ...]

    def __init__(
        self,
        attempts: int = 3,
        backoff: float = 0.05,
        max_backoff: float = 5.0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        if attempts.__class__ is bool or not isinstance(attempts, int):
            raise TypeError(RETRY_ATTEMPTS.format(value=attempts))
        if attempts < 1:
            raise ValueError(RETRY_ATTEMPTS.format(value=attempts))
        values = (
            int(attempts),
            _seconds("backoff", backoff),
            _seconds("max_backoff", max_backoff),
            _exception_classes(retry_on),
        )
        for name, value in zip(self.__slots__, values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Retry is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Retry is immutable: cannot delete {name!r}")

    def _key(self) -> tuple[int, float, float, tuple[type[BaseException], ...]]:
        return (self.attempts, self.backoff, self.max_backoff, self.retry_on)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Retry:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Retry(attempts={self.attempts!r}, backoff={self.backoff!r}, "
            f"max_backoff={self.max_backoff!r}, retry_on={self.retry_on!r})"
        )

    def delay(self, k: int) -> float:
        """Seconds to wait before run ``k + 2`` (``k = 0`` after the first run)."""
        if k >= 64:  # 2**k would only overflow towards the cap anyway
            return self.max_backoff
        return min(self.backoff * (1 << k), self.max_backoff)


class Timer:
    """Calls ``fn(arg)`` after a delay, on one thread started when needed.

    The thread exits as soon as nothing is scheduled, so an idle dispatcher
    keeps no timer thread; ``join`` waits for it (``close`` uses it).
    """

    __slots__ = ("_cond", "_heap", "_name", "_seq", "_thread")

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Callable[[Any], object], Any]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, fn: Callable[[Any], object], arg: Any) -> None:
        """Call ``fn(arg)`` in ``delay`` seconds (at once if no thread can be had)."""
        with self._cond:
            heapq.heappush(self._heap, (monotonic() + delay, next(self._seq), fn, arg))
            if self._thread is not None:
                self._cond.notify()
                return
            thread = threading.Thread(target=self._run, name=self._name, daemon=False)
            try:
                thread.start()
            except RuntimeError:
                # No new threads (interpreter shutdown): hand the work back
                # now rather than never.
                heapq.heappop(self._heap)
            else:
                self._thread = thread
                return
        fn(arg)

    def _run(self) -> None:
        cond = self._cond
        heap = self._heap
        while True:
            with cond:
                while True:
                    if not heap:
                        self._thread = None
                        cond.notify_all()  # join() waits for this
                        return
                    remaining = heap[0][0] - monotonic()
                    if remaining <= 0:
                        _, _, fn, arg = heapq.heappop(heap)
                        break
                    cond.wait(remaining)
            try:
                fn(arg)
            except BaseException:
                # The timer must outlive one bad hand-back, or every later
                # backoff would wait forever.
                logger.exception("fastdispatch timer: %r(%r) raised", fn, arg)
            del fn, arg  # the item must not outlive its hand-back while the timer waits

    def join(self) -> None:
        """Wait until everything scheduled has been called and the thread is gone."""
        with self._cond:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def after_fork_in_child(self) -> None:
        # The parent's thread does not exist here; its lock may be held.
        self._cond = threading.Condition(threading.Lock())
        self._heap = []
        self._thread = None
