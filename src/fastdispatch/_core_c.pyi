"""Type stub of the compiled core; ``_core_py.Core`` is its pure-Python twin.

This stub is the contract between the ``Dispatcher`` layer and either core:
both modules expose exactly these names with these signatures.

Division of labour: the *core* owns the master -> mailbox map, the per-master
queues, the ready queue, worker parking, the counters, capacity/backpressure,
futures of ``submit`` and the call of the handler. The *layer*
(``_dispatcher.Dispatcher``) owns the threads (``spawn``), logging, the
``on_error`` policy, close/wait orchestration, atexit and fork.
"""

from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future
from typing import Any

from ._control import Retry

#: A worker hands a master back after at most this many items (fairness).
BATCH: int
#: Emptied mailboxes kept for their masters' next items before a sweep frees them.
IDLE_KEEP: int

class Core:
    def __init__(
        self,
        handler: Callable[[Any], object],
        on_error: Callable[[BaseException, Any, Hashable], object],
        spawn: Callable[[], object],
        capacity: int | None,
        max_workers: int,
        retry: Retry | None = None,
        pause_on_error: bool = False,
        schedule: Callable[[float, Callable[[Any], object], Any], object] | None = None,
    ) -> None:
        """Arguments are already validated by the layer.

        ``handler(work)`` handles one item. ``on_error(exc, work, master)`` is
        called in the worker when ``handler`` raises for a ``dispatch``ed item
        (for ``submit`` the exception goes into the future instead); if it
        raises anyway, the core reports it with ``sys.unraisablehook``.
        ``spawn()`` is called (in a producer's thread) when the core wants one
        more worker thread; the layer must start a thread running
        ``run_worker()``. The core only asks while fewer than ``max_workers``
        are live and no worker is parked; if ``spawn`` raises, the core takes
        its count back and re-raises.

        ``retry``: a failing item whose exception matches ``retry.retry_on``
        is kept (counted running) and its mailbox handed to
        ``schedule(delay, fn, arg)``, which must call ``fn(arg)`` after
        ``delay`` seconds on some thread (the layer's timer); the item then
        runs before the master's next one. ``pause_on_error``: an item's
        final failure pauses its master until ``resume``.
        """

    # -- intake (the hot path) ------------------------------------------
    def dispatch(
        self, work: Any, master: Hashable, *, block: bool = True, timeout: float | None = None
    ) -> None: ...
    def submit(
        self, work: Any, master: Hashable, *, block: bool = True, timeout: float | None = None
    ) -> Future[Any]: ...
    def dispatch_many(
        self,
        pairs: Iterable[tuple[Any, Hashable]],
        *,
        block: bool = True,
        timeout: float | None = None,
    ) -> int:
        """Dispatch each ``(work, master)``; return how many were accepted.

        ``timeout`` covers the whole call. If it stops part-way, the exception
        carries ``.accepted``.
        """

    # -- workers ----------------------------------------------------------
    def run_worker(self) -> None:
        """Body of one worker thread; returns when closed and drained."""

    def is_worker_thread(self) -> bool:
        """Whether the calling thread is one of this core's workers."""

    # -- shutdown ---------------------------------------------------------
    @property
    def closed(self) -> bool: ...
    def close_intake(self, reason: str) -> bool:
        """Stop intake: later dispatches (and blocked ones) raise
        ``DispatcherClosed(reason)``. Returns once no producer is still
        mid-enqueue; True only for the call that closed it."""

    def cancel_pending(self) -> list[tuple[Any, Hashable]]:
        """Take every queued, not yet started item out: count it as
        cancelled, cancel its future, return ``(work, master)`` pairs (FIFO
        within a master)."""

    def cancel_paused(self) -> list[tuple[Any, Hashable]]:
        """Take the queued items of every paused master out (they never run
        after close) and retire its mailbox; also return what workers
        cancelled for masters that failed after close. Pairs as
        ``cancel_pending``."""

    def wait(self, timeout: float | None = None, master: Hashable = None) -> bool:
        """Block until every accepted item (of master, unless None) has
        finished, paused masters' items aside; False on timeout."""

    def after_fork_in_child(self, reason: str) -> None:
        """Make the copy inherited by a forked child closed and inert."""

    # -- per-master control (masters already checked hashable) -----------
    def cancel(self, master: Hashable) -> list[Any]:
        """Take master's queued, not started items out (FIFO), counted
        cancelled, futures cancelled; never the running item."""

    def resume(self, master: Hashable) -> None:
        """A paused master runs again; any other master is left alone."""

    def paused(self) -> frozenset[Hashable]:
        """The masters paused and not resumed."""

    # -- introspection ----------------------------------------------------
    def pending(self, master: Hashable) -> int: ...
    def stats(self) -> tuple[int, int, int, int, int, int, int, int, int, int]:
        """``(dispatched, completed, failed, cancelled, pending, running,
        active_masters, workers, retried, paused_masters)``."""
