"""Helpers shared by the test suite: the one WAIT, recording handlers, threads with results."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any

#: Seconds to wait for anything that should happen promptly; generous so a
#: loaded CI machine does not flake, small enough that a hang fails fast.
WAIT = 10.0


class Blocker:
    """A handler that holds the work ``"block"`` until *gate* is set.

    ``started`` is set when ``"block"`` begins; ``handled`` lists every work
    handled, in order (``"block"`` once it is let go).
    """

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.started = threading.Event()
        self.handled: list[Any] = []

    def __call__(self, work: Any) -> None:
        if work == "block":
            self.started.set()
            assert self.gate.wait(WAIT)
        self.handled.append(work)


class Recorder:
    """A handler for works shaped ``(master, seq, ...)``.

    Records the global handling order and the order per master, and notices
    two workers on one master at once (``overlaps``) and how many handlers
    were in flight at most. Masters are compared with dict semantics, like
    the dispatcher's own map. *action(work)*, if given, runs inside the
    handler (to block on a gate, raise, dispatch more...).
    """

    def __init__(self, action: Callable[[Any], Any] | None = None) -> None:
        self.lock = threading.Lock()
        self.action = action
        self.active: dict[Hashable, int] = defaultdict(int)
        self.overlaps: list[Any] = []
        self.order: list[Any] = []
        self.by_master: dict[Hashable, list[Any]] = defaultdict(list)
        self.threads: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0

    def handle(self, work: Any) -> Any:
        master = work[0]
        with self.lock:
            if self.active[master]:
                self.overlaps.append(work)
            self.active[master] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.order.append(work)
            self.by_master[master].append(work[1])
            self.threads.add(threading.current_thread().name)
        try:
            if self.action is not None:
                return self.action(work)
            return work
        finally:
            with self.lock:
                self.active[master] -= 1
                self.in_flight -= 1

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.order)


class Call(threading.Thread):
    """Run ``fn()`` in a thread; keep its result or exception."""

    def __init__(self, fn: Callable[[], Any], name: str = "test-call") -> None:
        super().__init__(name=name, daemon=True)
        self.fn = fn
        self.result: Any = None
        self.exc: BaseException | None = None
        self.started_call = threading.Event()
        self.start()

    def run(self) -> None:
        self.started_call.set()
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.exc = exc

    def finish(self, timeout: float = WAIT) -> Any:
        """Join; fail if still running; re-raise its exception, else return."""
        self.join(timeout)
        assert not self.is_alive(), f"{self.fn!r} still running after {timeout}s"
        if self.exc is not None:
            raise self.exc
        return self.result


def threads_named(prefix: str) -> list[threading.Thread]:
    """Live threads whose name starts with *prefix*."""
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def join_threads(prefix: str, timeout: float = WAIT) -> None:
    """Join every live thread named *prefix*...; fail if one survives."""
    for t in threads_named(prefix):
        t.join(timeout)
    alive = threads_named(prefix)
    assert not alive, f"threads still alive: {alive}"


def assert_identity(stats: Any) -> None:
    """The accounting identity (docs/design.md), at a quiet moment."""
    assert stats.dispatched == (
        stats.completed + stats.failed + stats.cancelled + stats.pending + stats.running
    ), stats


def wait_ok(d: Any, timeout: float = WAIT) -> None:
    assert d.wait(timeout=timeout) is True, f"dispatcher did not drain in {timeout}s: {d.stats()}"


def until(cond: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    """Poll *cond* until true; fail after *timeout*. For states with no event."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout}s"
        time.sleep(0.001)
