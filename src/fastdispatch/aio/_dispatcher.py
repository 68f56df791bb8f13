"""``AsyncDispatcher``: the keyed contract for asyncio, over the core of ``_core``.

The core (compiled or pure, see ``_core_c.pyi``) owns the lanes, the workers
and the counters; this layer checks arguments, resolves the handler, owns
logging, ``on_error`` and the close/wait policy.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from .._dispatcher import (
    OnError,
    _check_int,
    _check_timeout,
    _enable_debug_logging,
    _guarded,
    _log_failure,
    _resolve_handler,
)
from .._env import env_flag
from .._types import DispatcherStats, Master, Work
from . import _core

__all__ = ["AsyncDispatcher"]

logger = logging.getLogger("fastdispatch")

_A = TypeVar("_A", bound="AsyncDispatcher")


def _is_coroutine_function(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    # An object whose __call__ is a coroutine function (not a function itself).
    if inspect.isfunction(fn) or inspect.ismethod(fn) or not callable(fn):
        return False
    return inspect.iscoroutinefunction(type(fn).__call__)


def _debug_handler(handle: Callable[[Work], Any], is_coroutine: bool) -> Callable[[Work], Any]:
    if is_coroutine:

        async def handler_async(work: Work) -> object:
            logger.debug("handle %r", work)
            result = await handle(work)
            logger.debug("handled %r", work)
            return result

        return handler_async

    def handler(work: Work) -> object:
        logger.debug("handle %r", work)
        result = handle(work)
        logger.debug("handled %r", work)
        return result

    return handler


class AsyncDispatcher:
    """Run work on an asyncio event loop, one item at a time per *master*.

    Items for one master are handled one at a time, in dispatch order; items
    for different masters run concurrently, at most ``max_concurrency``
    masters at once. There is no task per item: a master with queued work is
    served by one lane that lives only while the master has work.

    The dispatcher belongs to the event loop it was created on (or, if created
    outside a loop, the one it is first used on). Its methods raise
    ``RuntimeError`` when called from another thread or loop; producer threads
    use ``dispatch_threadsafe``.

    Args:
        handler: a coroutine function, an object whose ``handle`` (or Go-style
            ``Handle``) is one, or a plain callable, called on the loop (it
            must not block; a coroutine it returns is awaited).
        max_concurrency: most masters with a handler in flight at once.
        capacity: most items queued per master (``None``: unbounded);
            ``dispatch`` waits for room, ``dispatch_nowait`` raises ``QueueFull``.
        on_error: ``on_error(exc, work, master)``, called on the loop when the
            handler raises for a ``dispatch``ed item; the default logs the
            traceback at ERROR on logger ``"fastdispatch"``.
        debug: log every item at DEBUG to stderr; ``None`` reads the
            ``FASTDISPATCH_DEBUG`` environment switch.
    """

    #: The core class; the test-suite swaps it in a subclass to test each core.
    _Core: ClassVar[type[Any]] = _core.Core

    def __init__(
        self,
        handler: object,
        *,
        max_concurrency: int = 100,
        capacity: int | None = None,
        on_error: OnError | None = None,
        debug: bool | None = None,
    ) -> None:
        handle = _resolve_handler(handler)
        is_coroutine = _is_coroutine_function(handle)
        limit = _check_int("max_concurrency", max_concurrency, optional=False)
        assert limit is not None
        capacity = _check_int("capacity", capacity, optional=True)
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be None or a callable, got {on_error!r}")
        if debug is None:
            debug = env_flag("FASTDISPATCH_DEBUG")
        elif debug.__class__ is not bool:
            raise TypeError(f"debug must be None or a bool, got {debug!r}")
        if debug:
            _enable_debug_logging()
            handle = _debug_handler(handle, is_coroutine)
        core = type(self)._Core(
            handle,
            is_coroutine,
            _log_failure if on_error is None else _guarded(on_error),
            capacity,
            limit,
        )
        self._core = core
        self._handler = handler
        self._max_concurrency = limit
        self._capacity = capacity
        self._debug = debug
        # The hot path goes straight to the core, with no frame of this layer
        # in between (unless a subclass overrides it or debug mode is on).
        if not debug and type(self).dispatch_nowait is AsyncDispatcher.dispatch_nowait:
            self.dispatch_nowait = core.dispatch_nowait  # type: ignore[method-assign]
        if not debug and type(self).dispatch_threadsafe is AsyncDispatcher.dispatch_threadsafe:
            self.dispatch_threadsafe = core.dispatch_threadsafe  # type: ignore[method-assign]
        if debug:
            logger.debug("created %r", self)

    def __repr__(self) -> str:
        state = "closed" if self._core.closed else "open"
        return (
            f"<{type(self).__name__} {state} handler={self._handler!r} "
            f"max_concurrency={self._max_concurrency} capacity={self._capacity}>"
        )

    # -- intake -------------------------------------------------------------
    async def dispatch(self, work: Work, master: Master, *, timeout: float | None = None) -> None:
        """Queue *work* for *master*; wait only while the master's queue is full.

        Items of one master are handled in the order their ``dispatch`` calls
        returned. With ``capacity`` set and the queue full, waits for room (at
        most *timeout* seconds, then ``QueueFull``); a call cancelled while it
        waits queues nothing. A handler of this dispatcher meeting a full queue
        gets ``QueueFull`` at once (waiting could deadlock). Raises
        ``DispatcherClosed`` after ``close()``, also while waiting;
        ``TypeError`` for an unhashable *master*.
        """
        _check_timeout(timeout)
        if self._debug:
            logger.debug("dispatch %r to master %r", work, master)
        await self._core.dispatch(work, master, timeout)

    def dispatch_nowait(self, work: Work, master: Master) -> None:
        """Queue *work* for *master* now; ``QueueFull`` at once if its queue is full."""
        if self._debug:
            logger.debug("dispatch %r to master %r", work, master)
        self._core.dispatch_nowait(work, master)

    async def submit(
        self, work: Work, master: Master, *, timeout: float | None = None
    ) -> asyncio.Future[Any]:
        """Queue *work* like ``dispatch``; return a future of the handler's result.

        The future gets the handler's return value or exception (``on_error``
        is not called for it). Cancelling it before the item starts skips the
        item (counted as cancelled).
        """
        _check_timeout(timeout)
        if self._debug:
            logger.debug("submit %r to master %r", work, master)
        return await self._core.submit(work, master, timeout)  # type: ignore[no-any-return]

    def submit_nowait(self, work: Work, master: Master) -> asyncio.Future[Any]:
        """``submit`` without waiting: ``QueueFull`` at once if the queue is full."""
        if self._debug:
            logger.debug("submit %r to master %r", work, master)
        return self._core.submit_nowait(work, master)  # type: ignore[no-any-return]

    def dispatch_threadsafe(self, work: Work, master: Master) -> None:
        """Queue *work* for *master* from any thread.

        The item is accepted at once (``capacity`` does not apply: a producer
        thread is never blocked by the loop) and handed to the loop with the
        others of its burst: the loop is woken once per burst, not per item.
        Items from one thread keep their order. Raises ``DispatcherClosed``
        after ``close()``, ``TypeError`` for an unhashable *master*, and
        ``RuntimeError`` while the dispatcher has no event loop yet.
        """
        if self._debug:
            logger.debug("dispatch_threadsafe %r to master %r", work, master)
        self._core.dispatch_threadsafe(work, master)

    # -- waiting and closing ---------------------------------------------------
    def _not_in_handler(self, name: str) -> None:
        if self._core.in_worker():
            raise RuntimeError(
                f"AsyncDispatcher.{name}() called from the dispatcher's own handler would "
                "wait for that handler to finish: it would never return"
            )

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until everything accepted so far is handled; ``False`` on timeout.

        Cancelling the wait changes nothing in the dispatcher.
        """
        _check_timeout(timeout)
        self._core.check_loop("wait")
        self._not_in_handler("wait")
        return await self._core.wait(timeout)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop intake now; accepted items still run (``aclose`` waits for them).

        Later ``dispatch`` calls, and those waiting for room, raise
        ``DispatcherClosed``.
        """
        if self._core.loop is not None:
            self._core.check_loop("close")
        if self._core.close() and self._debug:
            logger.debug("closed %r", self)

    async def aclose(self, *, cancel_pending: bool = False) -> list[tuple[Work, Master]]:
        """Stop intake, then wait for the accepted items and the handlers in flight.

        With ``cancel_pending=True`` the items not started yet are not run:
        they are returned as ``(work, master)`` pairs (FIFO per master) and
        their futures cancelled. A later call returns ``[]`` (or, with
        ``cancel_pending=True``, what has not started since).
        """
        if cancel_pending.__class__ is not bool:
            raise TypeError(f"cancel_pending must be a bool, got {cancel_pending!r}")
        self._core.check_loop("aclose")
        self._not_in_handler("aclose")
        self.close()
        taken = self._core.cancel_pending() if cancel_pending else []
        await self._core.wait(None)
        if self._debug and taken:
            logger.debug("aclose of %r cancelled %d items", self, len(taken))
        return taken

    async def __aenter__(self: _A) -> _A:
        self._core.check_loop("__aenter__")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- introspection ---------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether ``close()`` (or ``aclose()``) was called."""
        return self._core.closed  # type: ignore[no-any-return]

    def pending(self, master: Master) -> int:
        """How many items of *master* are queued (not counting the running one)."""
        return self._core.pending(master)  # type: ignore[no-any-return]

    def stats(self) -> DispatcherStats:
        """A snapshot of the counters; ``workers`` counts the handlers in flight.

        Items from ``dispatch_threadsafe`` count once the loop has taken them in.
        """
        return self._core.stats()  # type: ignore[no-any-return]
