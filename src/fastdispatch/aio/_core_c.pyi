"""Type stub of the compiled asyncio core; ``_core_py.Core`` is its pure-Python twin.

This stub is the contract between the ``AsyncDispatcher`` layer and either
core: both modules expose exactly these names with these signatures.

Division of labour: the *core* owns the master -> lane map, the lanes'
queues, the ready queue, the worker tasks, the counters, capacity and the
producers waiting for room, the thread-safe intake, the futures of
``submit`` and the call of the handler. The *layer*
(``_dispatcher.AsyncDispatcher``) owns argument checks, handler resolution,
logging, the ``on_error`` policy and the close/wait policy.
"""

import asyncio
from collections.abc import Callable, Hashable
from typing import Any

from fastdispatch._types import DispatcherStats

#: A worker hands a lane back (and yields to the loop) after this many items in a row.
BATCH: int

class Core:
    def __init__(
        self,
        handler: Callable[[Any], Any],
        is_coroutine: bool,
        on_error: Callable[[BaseException, Any, Hashable], object],
        capacity: int | None,
        max_concurrency: int,
    ) -> None:
        """Arguments are already validated by the layer.

        ``handler(work)`` is awaited when *is_coroutine*, else called (a
        coroutine it returns is awaited). ``on_error(exc, work, master)`` is
        called on the loop when the handler raises for a ``dispatch``ed item
        (for ``submit`` the exception goes into the future instead); it must
        not raise. The core binds to the running loop, if any.
        """

    # -- loop affinity ----------------------------------------------------
    def check_loop(self, name: str) -> asyncio.AbstractEventLoop:
        """Return the dispatcher's loop, binding the running one on first use.

        ``RuntimeError`` naming ``AsyncDispatcher.<name>()`` and
        ``dispatch_threadsafe`` when called outside it.
        """
    def in_worker(self) -> bool:
        """Whether the current task is one of this core's worker tasks."""

    # -- intake (the hot path) ----------------------------------------------
    def dispatch_nowait(self, work: Any, master: Hashable) -> None: ...
    def submit_nowait(self, work: Any, master: Hashable) -> asyncio.Future[Any]: ...
    async def dispatch(self, work: Any, master: Hashable, timeout: float | None) -> None:
        """``timeout`` is checked by the layer; ``0`` means do not wait."""
    async def submit(
        self, work: Any, master: Hashable, timeout: float | None
    ) -> asyncio.Future[Any]: ...
    def dispatch_threadsafe(self, work: Any, master: Hashable) -> None:
        """From any thread; no capacity check; one loop wake-up per burst."""

    # -- waiting and closing ------------------------------------------------
    def is_idle(self) -> bool:
        """Nothing queued, running or in the thread-safe intake."""
    async def wait(self, timeout: float | None) -> bool: ...
    def close(self) -> bool:
        """Stop intake, fail the producers waiting for room; whether it was open."""
    def cancel_pending(self) -> list[tuple[Any, Hashable]]:
        """Take out every not-started item (FIFO per master), cancelling futures."""

    # -- introspection ------------------------------------------------------
    @property
    def closed(self) -> bool: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop | None: ...
    def pending(self, master: Hashable) -> int: ...
    def stats(self) -> DispatcherStats: ...
