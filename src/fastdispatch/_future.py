"""A cheaper ``concurrent.futures.Future``: the same class to everyone, built lazily.

The standard ``Future`` builds a ``threading.Condition`` (a Python object with
an ``RLock`` and a deque), a waiter list and a callback list for every
instance, although most futures are never waited on by more than a quick
``result()`` after they are done. Here each future owns one plain lock, taken
wherever the standard library takes its condition, so it is as safe on
free-threaded CPython; the condition (built on that same lock), the waiter
list and the callback list appear only when someone needs them.

It *is* a ``concurrent.futures.Future`` (a subclass) and keeps the standard
attribute protocol that ``concurrent.futures.wait``, ``as_completed`` and
``asyncio.wrap_future`` rely on: ``_state`` holds the standard state strings,
``_condition`` is a condition whose lock guards the state, and ``_waiters``
is the list those functions add their waiters to (under that lock).

One difference is deliberate: that lock is a plain ``Lock``, not the
standard condition's ``RLock`` (cheaper to make and to take). Code that holds
``future._condition`` must therefore not call the future's own methods
meanwhile; ``concurrent.futures`` and ``asyncio`` never do.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, InvalidStateError
from concurrent.futures import TimeoutError as _TimeoutError  # not the builtin before 3.11
from concurrent.futures._base import (
    _STATE_TO_DESCRIPTION_MAP,
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    LOGGER,
    PENDING,
    RUNNING,
)
from typing import Any, TypeVar

__all__ = ["Future"]

_T = TypeVar("_T")

_allocate_lock = threading.Lock
# Serialises the lazy creation of the condition and the lists (brief, taken
# last, never held while other code runs): two threads must never each
# install one of their own, whether or not they hold the future's lock.
_create_lock = threading.Lock()

_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_CANCELLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED))


class Future(concurrent.futures.Future[_T]):
    """A ``concurrent.futures.Future`` whose condition and lists are made on demand.

    Behaves exactly as the standard ``Future`` (same states, same exceptions,
    callbacks run in the completing thread in the order they were added, a
    raising callback is logged on logger ``"concurrent.futures"``); it is only
    cheaper to create and complete when nobody blocks on it.
    """

    # Class-level defaults: a fresh future writes a single attribute (its lock).
    _state: str = PENDING
    _result: Any = None
    _exception: BaseException | None = None
    _cond: threading.Condition | None = None
    _waiter_list: list[Any] | None = None
    _callbacks: list[Callable[[Any], object]] | None = None

    def __init__(self) -> None:
        """Initializes the future. Should not be called by clients."""
        # Deliberately not the base __init__: that builds what we make lazily.
        self._lock = _allocate_lock()

    # -- the standard attribute protocol, made lazily -----------------------
    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is None:
            with _create_lock:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition(self._lock)
        return cond

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        waiters = self._waiter_list
        if waiters is None:
            with _create_lock:
                waiters = self._waiter_list
                if waiters is None:
                    waiters = self._waiter_list = []
        return waiters

    @property
    def _done_callbacks(self) -> list[Callable[[Any], object]]:
        callbacks = self._callbacks
        if callbacks is None:
            with _create_lock:
                callbacks = self._callbacks
                if callbacks is None:
                    callbacks = self._callbacks = []
        return callbacks

    # -- internals ------------------------------------------------------------
    def _invoke_callbacks(self) -> None:
        callbacks = self._callbacks
        if callbacks is None:
            return
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                LOGGER.exception("exception calling callback for %r", self)

    def _describe(self) -> str:
        """The repr, read with the lock held (the lock is not reentrant)."""
        state = self._state
        head = (
            f"<{self.__class__.__name__} at {id(self):#x} state={_STATE_TO_DESCRIPTION_MAP[state]}"
        )
        if state == FINISHED:
            if self._exception:
                return f"{head} raised {self._exception.__class__.__name__}>"
            return f"{head} returned {self._result.__class__.__name__}>"
        return f"{head}>"

    def __repr__(self) -> str:
        with self._lock:
            return self._describe()

    # -- the public API -----------------------------------------------------
    def cancel(self) -> bool:
        """Cancel the future if possible.

        Returns True if the future was cancelled, False otherwise. A future
        cannot be cancelled if it is running or has already completed.
        """
        with self._lock:
            state = self._state
            if state in (RUNNING, FINISHED):
                return False
            if state in _CANCELLED:
                return True
            self._state = CANCELLED
            cond = self._cond
            if cond is not None:
                cond.notify_all()
        self._invoke_callbacks()
        return True

    def cancelled(self) -> bool:
        """Return True if the future was cancelled."""
        with self._lock:
            return self._state in _CANCELLED

    def running(self) -> bool:
        """Return True if the future is currently executing."""
        with self._lock:
            return self._state == RUNNING

    def done(self) -> bool:
        """Return True if the future was cancelled or finished executing."""
        with self._lock:
            return self._state in _DONE

    def add_done_callback(self, fn: Callable[[Future[_T]], object]) -> None:
        """Attach a callable called with this future when it finishes or is cancelled.

        Called at once (in this thread) if the future is already done; else in
        the thread that completes it. Callbacks run in the order they were
        added; one that raises is logged and the others still run.
        """
        with self._lock:
            if self._state not in _DONE:
                self._done_callbacks.append(fn)
                return
        try:
            fn(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)

    def _get_result(self) -> _T:
        """The result, or raise the exception (lock held)."""
        if self._exception:
            try:
                raise self._exception
            finally:
                # Break a reference cycle with the exception's traceback.
                self = None  # type: ignore[assignment]
        return self._result  # type: ignore[no-any-return]

    def result(self, timeout: float | None = None) -> _T:
        """Return the call's result, waiting up to *timeout* seconds.

        Raises ``CancelledError`` if the future was cancelled, ``TimeoutError``
        if it did not finish in time, and the call's exception if it raised.
        """
        try:
            lock = self._lock
            with lock:
                state = self._state
                if state == FINISHED:
                    return self._get_result()
                if state in _CANCELLED:
                    raise CancelledError()
            cond = self._condition
            with cond:
                state = self._state
                if state not in _DONE:
                    cond.wait(timeout)
                    state = self._state
                if state in _CANCELLED:
                    raise CancelledError()
                if state == FINISHED:
                    return self._get_result()
                raise _TimeoutError()
        finally:
            # Break a reference cycle with the exception in self._exception.
            self = None  # type: ignore[assignment]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Return the call's exception (None if it returned), waiting up to *timeout*.

        Raises ``CancelledError`` if the future was cancelled and
        ``TimeoutError`` if it did not finish in time.
        """
        with self._lock:
            state = self._state
            if state == FINISHED:
                return self._exception
            if state in _CANCELLED:
                raise CancelledError()
        cond = self._condition
        with cond:
            state = self._state
            if state not in _DONE:
                cond.wait(timeout)
                state = self._state
            if state in _CANCELLED:
                raise CancelledError()
            if state == FINISHED:
                return self._exception
            raise _TimeoutError()

    def _get_snapshot(self) -> tuple[bool, bool, Any, BaseException | None]:
        """``(done, cancelled, result, exception)`` read at once, under the lock.

        Newer asyncio versions read a finished future through this when they
        copy its state into an asyncio future (``wrap_future``); the inherited
        one would build the condition just for that.
        """
        with self._lock:
            state = self._state
            if state == FINISHED:
                return True, False, self._result, self._exception
            if state in _CANCELLED:
                return True, True, None, None
            return False, False, None, None

    # The following methods should only be used by Executors and in tests.
    def set_running_or_notify_cancel(self) -> bool:
        """Mark the future running (True), or report that it was cancelled (False).

        Executors call it just before running the call, and skip the call on
        False. Raises ``RuntimeError`` if called twice or after the future was
        completed.
        """
        with self._lock:
            state = self._state
            if state == PENDING:
                self._state = RUNNING
                return True
            if state == CANCELLED:
                self._state = CANCELLED_AND_NOTIFIED
                waiters = self._waiter_list
                if waiters:
                    for waiter in waiters:
                        waiter.add_cancelled(self)
                # No notify_all: cancel() already woke everyone blocked.
                return False
            LOGGER.critical("Future %s in unexpected state: %s", id(self), state)
            raise RuntimeError("Future in unexpected state")

    def set_result(self, result: _T) -> None:
        """Set the call's return value; wake waiters and run the callbacks."""
        with self._lock:
            if self._state in _DONE:
                raise InvalidStateError(f"{self._state}: {self._describe()}")
            self._result = result
            self._state = FINISHED
            waiters = self._waiter_list
            if waiters:
                for waiter in waiters:
                    waiter.add_result(self)
            cond = self._cond
            if cond is not None:
                cond.notify_all()
        if self._callbacks is not None:
            self._invoke_callbacks()

    def set_exception(self, exception: BaseException | None) -> None:
        """Set the call's exception; wake waiters and run the callbacks."""
        with self._lock:
            if self._state in _DONE:
                raise InvalidStateError(f"{self._state}: {self._describe()}")
            self._exception = exception
            self._state = FINISHED
            waiters = self._waiter_list
            if waiters:
                for waiter in waiters:
                    waiter.add_exception(self)
            cond = self._cond
            if cond is not None:
                cond.notify_all()
        if self._callbacks is not None:
            self._invoke_callbacks()
