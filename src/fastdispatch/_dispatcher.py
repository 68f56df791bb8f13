"""The ``Dispatcher`` layer, shared by both cores.

The core (compiled or pure Python, see ``_core_c.pyi``) owns the queues, the
counters and the worker loop. This layer owns what is policy rather than
mechanism: argument checking, the worker threads, logging and ``on_error``,
close/wait orchestration, the interpreter-exit drain and fork handling.

Nothing the workers run refers back to the ``Dispatcher`` object, so a
dispatcher nobody references is garbage-collected; its finalizer then closes
intake and the workers drain what was accepted and exit.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from . import _core
from ._control import Retry, Timer
from ._env import env_flag
from ._errors import RETRY_OPTION, UNHASHABLE_MASTER
from ._types import DispatcherStats, Master, Work

__all__ = ["Dispatcher", "NewDispatcher"]

logger = logging.getLogger("fastdispatch")

_CLOSED_REASON = "dispatcher is closed"
_FORK_REASON = "dispatcher was inherited across fork(); create a new one in the child"
_GC_REASON = "dispatcher was garbage-collected"

_D = TypeVar("_D", bound="Dispatcher")

OnError = Callable[[BaseException, Work, Master], object]


# -- argument checks ---------------------------------------------------------


def _resolve_handler(handler: object) -> Callable[[Work], object]:
    """The callable behind *handler*: ``handle``, else ``Handle``, else itself."""
    for name in ("handle", "Handle"):
        method = getattr(handler, name, None)
        if callable(method):
            if isinstance(handler, type):
                raise TypeError(
                    f"handler must be a handler object, got the class {handler.__qualname__}; "
                    f"pass an instance, e.g. {handler.__qualname__}()"
                )
            return method  # type: ignore[no-any-return]
    if callable(handler):
        return handler
    raise TypeError(
        "handler must be an object with a callable handle(work) method (or Go-style "
        f"Handle(work)) or a callable taking one argument, got {handler!r}"
    )


def _check_int(name: str, value: object, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if value.__class__ is bool or not isinstance(value, int):
        expected = "None or an int" if optional else "an int"
        raise TypeError(f"{name} must be {expected} >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def _check_bool(name: str, value: object) -> bool:
    if value.__class__ is not bool:
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value is True


def _check_timeout(timeout: object) -> None:
    if timeout is None:
        return
    if timeout.__class__ is bool or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be None or a number of seconds, got {timeout!r}")
    if math.isnan(timeout):
        raise ValueError("timeout must not be NaN")
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0, got {timeout!r}")


def _check_master(master: object) -> None:
    try:
        hash(master)
    except TypeError as exc:
        raise TypeError(
            UNHASHABLE_MASTER.format(master=master, kind=type(master).__name__)
        ) from exc


def _default_max_workers() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


# -- logging -----------------------------------------------------------------


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted.

    Like ``logging.lastResort``: redirecting or capturing stderr after the
    handler was attached still works.
    """

    _fastdispatch_debug = True  # marks the one handler debug mode attaches

    def __init__(self) -> None:
        logging.Handler.__init__(self)
        self.setFormatter(
            logging.Formatter("%(asctime)s %(name)s [%(threadName)s] %(levelname)s: %(message)s")
        )

    @property
    def stream(self) -> Any:
        return sys.stderr


_logging_lock = threading.Lock()


def _enable_debug_logging() -> None:
    """Attach the one stderr handler (never two) and let DEBUG records through."""
    with _logging_lock:
        if not any(getattr(h, "_fastdispatch_debug", False) for h in logger.handlers):
            logger.addHandler(_StderrHandler())
        logger.setLevel(logging.DEBUG)


def _log_failure(exc: BaseException, work: Work, master: Master) -> None:
    """The default ``on_error``: errors are never silent."""
    logger.error("handler raised for work %r of master %r", work, master, exc_info=exc)


def _guarded(on_error: OnError) -> OnError:
    """Wrap the user's ``on_error`` so that its own failure is logged, not raised."""

    def report(exc: BaseException, work: Work, master: Master) -> None:
        try:
            on_error(exc, work, master)
        except BaseException:
            logger.exception(
                "on_error %r raised while reporting %r for work %r of master %r",
                on_error,
                exc,
                work,
                master,
            )

    return report


def _debug_handler(handle: Callable[[Work], object]) -> Callable[[Work], object]:
    def handler(work: Work) -> object:
        logger.debug("handle %r", work)
        result = handle(work)
        logger.debug("handled %r", work)
        return result

    return handler


def _debug_worker(run: Callable[[], None]) -> Callable[[], None]:
    def worker() -> None:
        logger.debug("worker %s started", threading.current_thread().name)
        try:
            run()
        finally:
            logger.debug("worker %s stopped", threading.current_thread().name)

    return worker


# -- threads -------------------------------------------------------------------


class _Threads:
    """Starts and joins one dispatcher's workers; holds no reference to it."""

    __slots__ = ("_lock", "_prefix", "_started", "_threads", "target")

    def __init__(self, prefix: str) -> None:
        self._lock = threading.Lock()
        self._prefix = prefix
        self._started = 0
        self._threads: list[threading.Thread] = []
        self.target: Callable[[], None] | None = None

    def spawn(self) -> None:
        """Start one worker thread (the core's ``spawn``)."""
        with self._lock:
            self._started += 1
            thread = threading.Thread(
                target=self.target, name=f"{self._prefix}_{self._started}", daemon=False
            )
            # Started under the lock so that join() never sees an unstarted thread.
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def join(self) -> None:
        """Join every worker (the core has been told to let them exit)."""
        current = threading.current_thread()
        while True:
            with self._lock:
                threads = [t for t in self._threads if t.is_alive() and t is not current]
            if not threads:
                return
            for thread in threads:
                thread.join()

    def after_fork_in_child(self) -> None:
        # The parent's threads do not exist here; its lock may be held.
        self._lock = threading.Lock()
        self._threads = []


# -- the dispatcher ------------------------------------------------------------


class Dispatcher:
    """Dispatch work to worker threads, serialised per *master*.

    Items for one master are handled one at a time, in dispatch order; items
    for different masters run concurrently on up to ``max_workers`` threads.

    Args:
        handler: an object with a ``handle(work)`` method (or Go-style
            ``Handle(work)``), or a callable taking the work item.
        max_workers: most worker threads, started on demand; default
            ``min(32, os.cpu_count() + 4)``.
        capacity: most items queued per master (``None``: unbounded); a
            producer meeting a full queue blocks, see ``dispatch``.
        debug: log every step at DEBUG to stderr; ``None`` reads the
            ``FASTDISPATCH_DEBUG`` environment switch.
        on_error: ``on_error(exc, work, master)``, called in the worker when
            the handler raises; the default logs the traceback at ERROR on
            logger ``"fastdispatch"``.
        thread_name_prefix: worker threads are named ``f"{prefix}_{n}"``.
        retry: a ``Retry``: a failing item runs again, up to
            ``retry.attempts`` runs, before its master's next item; between
            runs the master waits (backoff) without holding a worker thread.
            Only the last failure reaches ``on_error`` or the future.
        pause_on_error: an item's final failure pauses its master: its later
            items stay queued until ``resume(master)`` (or ``cancel``).
    """

    #: The core class; the test-suite swaps it in a subclass to test each core.
    _Core: ClassVar[type[Any]] = _core.Core

    def __init__(
        self,
        handler: object,
        *,
        max_workers: int | None = None,
        capacity: int | None = None,
        debug: bool | None = None,
        on_error: OnError | None = None,
        thread_name_prefix: str = "fastdispatch",
        retry: Retry | None = None,
        pause_on_error: bool = False,
    ) -> None:
        handle = _resolve_handler(handler)
        workers = (
            _default_max_workers()
            if max_workers is None
            else _check_int("max_workers", max_workers, optional=False)
        )
        assert workers is not None
        capacity = _check_int("capacity", capacity, optional=True)
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be None or a callable, got {on_error!r}")
        if not isinstance(thread_name_prefix, str):
            raise TypeError(f"thread_name_prefix must be a str, got {thread_name_prefix!r}")
        if debug is None:
            debug = env_flag("FASTDISPATCH_DEBUG")
        elif debug.__class__ is not bool:
            raise TypeError(f"debug must be None or a bool, got {debug!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(RETRY_OPTION.format(value=retry))
        _check_bool("pause_on_error", pause_on_error)

        if debug:
            _enable_debug_logging()
            handle = _debug_handler(handle)
        threads = _Threads(thread_name_prefix)
        # The backoff timer's thread exists only while a retry waits.
        timer = Timer(f"{thread_name_prefix}_timer") if retry is not None else None
        core = type(self)._Core(
            handle,
            _log_failure if on_error is None else _guarded(on_error),
            threads.spawn,
            capacity,
            workers,
            retry,
            pause_on_error,
            None if timer is None else timer.schedule,
        )
        threads.target = _debug_worker(core.run_worker) if debug else core.run_worker
        self._core = core
        self._threads = threads
        self._timer = timer
        self._handler = handler
        self._max_workers = workers
        self._capacity = capacity
        self._debug = debug

        # The hot path: the core's own methods, with no layer frame in between
        # (unless a subclass overrides them or debug mode wraps them).
        cls = type(self)
        if cls.dispatch is Dispatcher.dispatch:
            self.dispatch = _debug_dispatch(core.dispatch) if debug else core.dispatch  # type: ignore[method-assign]
        if cls.submit is Dispatcher.submit:
            self.submit = _debug_submit(core.submit) if debug else core.submit  # type: ignore[method-assign]
        if cls.dispatch_many is Dispatcher.dispatch_many:
            self.dispatch_many = (  # type: ignore[method-assign]
                _debug_dispatch_many(core.dispatch_many) if debug else core.dispatch_many
            )
        if cls.Dispatch is Dispatcher.Dispatch:
            self.Dispatch = self.dispatch  # type: ignore[method-assign]

        _live.add(self)
        # Collected without close(): stop intake so the workers drain and exit.
        finalizer = weakref.finalize(self, core.close_intake, _GC_REASON)
        finalizer.atexit = False  # _python_exit drains live dispatchers instead
        if debug:
            logger.debug("created %r", self)

    # -- intake -----------------------------------------------------------
    def dispatch(
        self, work: Work, master: Master, *, block: bool = True, timeout: float | None = None
    ) -> None:
        """Queue *work* for *master*.

        It is handled after every item dispatched to *master* before it, never
        concurrently with them. Raises ``DispatcherClosed`` after ``close()``;
        ``TypeError`` when *master* is unhashable. With ``capacity`` set and
        the master's queue full: waits for room (at most *timeout* seconds,
        then ``QueueFull``), or with ``block=False`` raises ``QueueFull`` at
        once, as it does in a worker of this dispatcher (waiting would
        deadlock).
        """
        self._core.dispatch(work, master, block=block, timeout=timeout)

    def submit(
        self, work: Work, master: Master, *, block: bool = True, timeout: float | None = None
    ) -> Future[Any]:
        """Like ``dispatch``, returning a future of the handler's result.

        The handler's exception goes into the future (``on_error`` is not
        called). Cancelling the future before the item starts skips it.
        """
        future: Future[Any] = self._core.submit(work, master, block=block, timeout=timeout)
        return future

    def dispatch_many(
        self,
        pairs: Iterable[tuple[Work, Master]],
        *,
        block: bool = True,
        timeout: float | None = None,
    ) -> int:
        """Dispatch every ``(work, master)`` pair in order; return how many.

        *timeout* covers the whole call. If it stops part-way (closed, full,
        a bad pair), the exception has ``.accepted``: how many of the pairs
        were accepted (those will run).
        """
        return self._core.dispatch_many(pairs, block=block, timeout=timeout)  # type: ignore[no-any-return]

    # -- shutdown ---------------------------------------------------------
    def close(
        self, wait: bool = True, *, cancel_pending: bool = False
    ) -> list[tuple[Work, Master]]:
        """Stop intake; with *wait*, handle everything accepted and join the workers.

        From then on ``dispatch`` (and producers blocked on a full queue)
        raise ``DispatcherClosed``. With ``cancel_pending=True`` the items not
        yet started are taken out, their futures cancelled, and returned as
        ``(work, master)`` pairs (FIFO within a master); otherwise returns
        ``[]``. Paused masters' items are never run after close: they are
        cancelled and returned whatever *cancel_pending* says.
        ``close(wait=False)`` returns at once and lets the workers drain.
        Calling ``close(wait=True)`` from this dispatcher's own handler raises
        ``RuntimeError`` (it would wait for itself) and changes nothing.
        """
        _check_bool("wait", wait)
        _check_bool("cancel_pending", cancel_pending)
        core = self._core
        if wait and core.is_worker_thread():
            raise RuntimeError(
                "close(wait=True) called from one of this dispatcher's own workers would "
                "wait for itself; use close(wait=False) there"
            )
        first = core.close_intake(_CLOSED_REASON)
        taken: list[tuple[Work, Master]] = core.cancel_pending() if cancel_pending else []
        # Paused masters' items never run after close: always returned.
        taken += core.cancel_paused()
        if self._debug and (first or taken):
            logger.debug("closing %r (wait=%s, cancelled %d)", self, wait, len(taken))
        if wait:
            core.wait(None)
            # Masters paused while the rest drained (wait() skips their items).
            taken += core.cancel_paused()
            self._threads.join()
            if self._timer is not None:
                self._timer.join()
            if self._debug and first:
                logger.debug("closed %r", self)
        return taken

    @property
    def closed(self) -> bool:
        """Whether intake has stopped (``close()`` was called, or inherited via fork)."""
        return bool(self._core.closed)

    def wait(self, timeout: float | None = None, *, master: Master = None) -> bool:
        """Block until every accepted item has been handled; False on timeout.

        With *master* (not None), only that master's accepted items. Items
        held by a paused master are not waited for (they wait for
        ``resume``). Does not stop intake. Raises ``RuntimeError`` when called
        from this dispatcher's own handler (it would wait for itself).
        """
        _check_timeout(timeout)
        if master is not None:
            _check_master(master)
        if self._core.is_worker_thread():
            raise RuntimeError(
                "wait() called from one of this dispatcher's own workers would wait for itself"
            )
        return bool(self._core.wait(timeout, master))

    # -- per-master control -------------------------------------------------
    def cancel(self, master: Master) -> list[Work]:
        """Take *master*'s queued, not yet started items out and return them (FIFO).

        Their futures are cancelled and they count in ``stats().cancelled``.
        The item running (or waiting for a retry) is left alone, and a paused
        master stays paused. Unknown or idle master: ``[]``.
        """
        _check_master(master)
        return list(self._core.cancel(master))

    def resume(self, master: Master) -> None:
        """Let a master paused by ``pause_on_error`` run its queued items again.

        A master that is not paused is left as it is.
        """
        _check_master(master)
        self._core.resume(master)

    def paused(self) -> frozenset[Master]:
        """The masters paused by a failure (``pause_on_error``) and not resumed."""
        return frozenset(self._core.paused())

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(wait=True)

    # -- introspection ----------------------------------------------------
    def pending(self, master: Master) -> int:
        """How many items of *master* are queued (the running one not counted)."""
        return int(self._core.pending(master))

    def stats(self) -> DispatcherStats:
        """A snapshot of the counters; see ``DispatcherStats``."""
        return DispatcherStats(*self._core.stats())

    def __repr__(self) -> str:
        s = self.stats()
        module = type(self._core).__module__
        impl = "cython" if module.endswith("_core_c") else "python"
        return (
            f"<{type(self).__name__} {'closed' if self.closed else 'open'} core={impl} "
            f"handler={self._handler!r} workers={s.workers}/{self._max_workers} "
            f"capacity={self._capacity} active_masters={s.active_masters} "
            f"pending={s.pending} running={s.running} dispatched={s.dispatched} "
            f"completed={s.completed} failed={s.failed} cancelled={s.cancelled}>"
        )

    # -- Go-style names (godispatch's shape) --------------------------------
    #: Alias of ``dispatch`` (godispatch's ``Dispatch``).
    Dispatch = dispatch
    #: Alias of ``close`` (godispatch's ``Close``).
    Close = close


def NewDispatcher(handler: object, debug: bool = False, **options: Any) -> Dispatcher:
    """Go-style constructor (godispatch's ``NewDispatcher(handler, debug)``).

    Same as ``Dispatcher(handler, debug=debug, **options)``.
    """
    return Dispatcher(handler, debug=debug, **options)


# -- debug-mode intake wrappers (never used when debug is off) ---------------


def _debug_dispatch(dispatch: Callable[..., None]) -> Callable[..., None]:
    def debug_dispatch(
        work: Work, master: Master, *, block: bool = True, timeout: float | None = None
    ) -> None:
        logger.debug("dispatch %r to master %r", work, master)
        dispatch(work, master, block=block, timeout=timeout)

    debug_dispatch.__doc__ = Dispatcher.dispatch.__doc__
    return debug_dispatch


def _debug_submit(submit: Callable[..., Future[Any]]) -> Callable[..., Future[Any]]:
    def debug_submit(
        work: Work, master: Master, *, block: bool = True, timeout: float | None = None
    ) -> Future[Any]:
        logger.debug("submit %r to master %r", work, master)
        return submit(work, master, block=block, timeout=timeout)

    debug_submit.__doc__ = Dispatcher.submit.__doc__
    return debug_submit


def _debug_dispatch_many(dispatch_many: Callable[..., int]) -> Callable[..., int]:
    def debug_dispatch_many(
        pairs: Iterable[tuple[Work, Hashable]],
        *,
        block: bool = True,
        timeout: float | None = None,
    ) -> int:
        accepted = dispatch_many(pairs, block=block, timeout=timeout)
        logger.debug("dispatch_many accepted %d items", accepted)
        return accepted

    debug_dispatch_many.__doc__ = Dispatcher.dispatch_many.__doc__
    return debug_dispatch_many


# -- process life cycle --------------------------------------------------------

_live: weakref.WeakSet[Dispatcher] = weakref.WeakSet()


def _python_exit() -> None:
    """At interpreter exit drain and join every open dispatcher (as concurrent.futures)."""
    for dispatcher in list(_live):
        try:
            dispatcher.close(wait=True)
        except Exception:
            logger.exception("could not close %r at interpreter exit", dispatcher)


def _after_fork_in_child() -> None:
    """Inherited dispatchers are closed and inert: their workers stayed in the parent."""
    global _logging_lock
    _logging_lock = threading.Lock()
    for dispatcher in list(_live):
        dispatcher._core.after_fork_in_child(_FORK_REASON)
        dispatcher._threads.after_fork_in_child()
        if dispatcher._timer is not None:
            dispatcher._timer.after_fork_in_child()


# threading's hook runs before non-daemon threads are joined, like
# concurrent.futures.thread; plain atexit would run after, too late.
_register_atexit: Callable[[Callable[[], None]], None] = (
    getattr(threading, "_register_atexit", None) or __import__("atexit").register
)
_register_atexit(_python_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
