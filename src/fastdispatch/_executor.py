"""``KeyedExecutor``: a ``concurrent.futures.Executor`` whose calls can carry a key.

Calls submitted with the same key run one at a time, in submit order; calls
with different keys, and unkeyed calls, run in parallel. It is a thin layer
over ``Dispatcher``: every call is one ``Dispatcher.submit`` of the call
itself, to the key as the master. Unkeyed calls each get a fresh master of
their own (an ``object()``, equal to nothing else), so they run as
``ThreadPoolExecutor`` runs them.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, ClassVar, TypeVar

from ._dispatcher import _CLOSED_REASON, Dispatcher
from ._errors import DispatcherClosed

__all__ = ["KeyedExecutor"]

_T = TypeVar("_T")

_SHUTDOWN = "cannot schedule new futures after shutdown"


def _call(call: tuple[Any, ...]) -> Any:
    """The dispatcher's handler: run one submitted call, ``(fn, args[, kwargs])``."""
    if len(call) == 2:
        fn, args = call
        return fn(*args)
    fn, args, kwargs = call
    return fn(*args, **kwargs)


def _not_callable(fn: object) -> TypeError:
    return TypeError(f"fn must be callable, got {fn!r}")


def _unhashable_key(key: object) -> TypeError:
    return TypeError(f"key must be hashable, got {key!r} (unhashable type {type(key).__name__!r})")


def _closed(exc: DispatcherClosed) -> RuntimeError:
    # The executor's words for a plain shutdown; any other reason (fork) is kept.
    reason = str(exc)
    return RuntimeError(_SHUTDOWN if reason == _CLOSED_REASON else f"{_SHUTDOWN} ({reason})")


def _result_or_cancel(future: Future[_T], timeout: float | None = None) -> _T:
    """As ``Executor.map``: a future whose result is abandoned is cancelled."""
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()
    finally:
        del future  # break a reference cycle through the exception's traceback


class KeyedExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` with keys, on fastdispatch's ``Dispatcher``.

    ``submit(fn, *args, **kwargs)`` runs like ``ThreadPoolExecutor.submit``;
    ``submit_keyed(key, fn, *args, **kwargs)`` runs calls that share a key one
    at a time, in submit order, never two at once. Calls with different keys
    run in parallel on up to ``max_workers`` threads, started on demand.

    Args:
        max_workers: most worker threads; default
            ``min(32, os.cpu_count() + 4)``, as ``ThreadPoolExecutor``.
        thread_name_prefix: worker threads are named ``f"{prefix}_{n}"``.
        capacity: most calls queued per key (``None``: unbounded). A full key
            blocks ``submit_keyed`` until there is room (a call from one of
            this executor's own workers gets ``fastdispatch.QueueFull``
            instead, as waiting would deadlock). Unkeyed calls never wait.
    """

    #: The dispatcher class; the test-suite swaps it in a subclass to test each core.
    _Dispatcher: ClassVar[type[Dispatcher]] = Dispatcher

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "fastdispatch",
        *,
        capacity: int | None = None,
    ) -> None:
        dispatcher = type(self)._Dispatcher(
            _call,
            max_workers=max_workers,
            capacity=capacity,
            thread_name_prefix=thread_name_prefix,
        )
        self._dispatcher = dispatcher
        # The dispatcher's own submit (the core's method): no layer in between.
        self._submit = dispatcher.submit

    # -- submitting ---------------------------------------------------------
    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Schedule ``fn(*args, **kwargs)`` with no key; return its future.

        Unkeyed calls are not ordered with anything: they run as soon as a
        worker is free, like ``ThreadPoolExecutor.submit``. Raises
        ``RuntimeError`` after ``shutdown``.
        """
        if not callable(fn):
            raise _not_callable(fn)
        try:
            return self._submit((fn, args, kwargs) if kwargs else (fn, args), object())
        except DispatcherClosed as exc:
            raise _closed(exc) from exc

    def submit_keyed(
        self, key: Hashable, fn: Callable[..., _T], /, *args: Any, **kwargs: Any
    ) -> Future[_T]:
        """Schedule ``fn(*args, **kwargs)`` under *key*; return its future.

        Calls with the same key run one at a time, in the order their
        ``submit_keyed`` calls returned. Every keyword argument, ``key``
        included, goes to *fn*. Raises ``TypeError`` for an unhashable key and
        ``RuntimeError`` after ``shutdown``; with ``capacity`` set, waits
        while *key* has that many calls queued.
        """
        if not callable(fn):
            raise _not_callable(fn)
        try:
            # Without keywords the empty dict is dropped: one object less per queued call.
            return self._submit((fn, args, kwargs) if kwargs else (fn, args), key)
        except DispatcherClosed as exc:
            raise _closed(exc) from exc
        except TypeError as exc:
            raise _unhashable_key(key) from exc

    def for_key(self, key: Hashable) -> concurrent.futures.Executor:
        """An ``Executor`` view whose ``submit`` and ``map`` run under *key*.

        For APIs that take an executor, e.g.
        ``loop.run_in_executor(ex.for_key(key), fn, *args)``. The view's
        ``shutdown`` shuts nothing down: the executor stays open.
        """
        try:
            hash(key)
        except TypeError as exc:
            raise _unhashable_key(key) from exc
        return _KeyView(self, key)

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        key: Callable[..., Hashable] | None = None,
    ) -> Iterator[_T]:
        """``fn`` over the iterables' items, as ``Executor.map``; results in input order.

        Every call is submitted before this returns. With *key*, the call for
        arguments ``args`` runs under ``key(*args)`` (calls with equal keys
        run one at a time, in input order); without, calls are unkeyed.
        *timeout* bounds the whole iteration (``TimeoutError``); *chunksize*
        is accepted for compatibility and has no effect, as for
        ``ThreadPoolExecutor``.
        """
        if not callable(fn):
            raise _not_callable(fn)
        if key is not None and not callable(key):
            raise TypeError(f"key must be None or a callable returning a key, got {key!r}")
        if chunksize.__class__ is bool or not isinstance(chunksize, int):
            raise TypeError(f"chunksize must be an int >= 1, got {chunksize!r}")
        if chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, got {chunksize!r}")
        end_time = None if timeout is None else timeout + time.monotonic()
        futures: list[Future[_T]] = []
        try:
            if key is None:
                for args in zip(*iterables, strict=False):
                    futures.append(self.submit(fn, *args))
            else:
                for args in zip(*iterables, strict=False):
                    futures.append(self.submit_keyed(key(*args), fn, *args))
        except BaseException:
            # Nobody will iterate: do not leave the calls already made running unseen.
            for future in futures:
                future.cancel()
            raise
        return _results(futures, end_time)

    # -- shutting down ------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls; with *wait*, wait until every accepted call has run.

        With ``cancel_futures=True`` the calls that have not started are
        cancelled (their futures too) instead of run. Calling it again is
        harmless. ``shutdown(wait=True)`` from one of this executor's own
        calls raises ``RuntimeError`` (it would wait for itself) and changes
        nothing.
        """
        # Truthiness, as ThreadPoolExecutor.shutdown takes them.
        wait, cancel_futures = bool(wait), bool(cancel_futures)
        try:
            self._dispatcher.close(wait=wait, cancel_pending=cancel_futures)
        except RuntimeError as exc:
            if not wait:
                raise
            raise RuntimeError(
                "shutdown(wait=True) called from one of this executor's own calls would "
                "wait for itself; use shutdown(wait=False) there"
            ) from exc

    @property
    def capacity(self) -> int | None:
        """Most calls queued per key (``None``: unbounded)."""
        return self._dispatcher._capacity

    def __repr__(self) -> str:
        s = self._dispatcher.stats()
        state = "shut down" if self._dispatcher.closed else "open"
        return (
            f"<{type(self).__name__} {state} workers={s.workers}/"
            f"{self._dispatcher._max_workers} capacity={self.capacity} "
            f"pending={s.pending} running={s.running}>"
        )


def _results(futures: list[Future[_T]], end_time: float | None) -> Iterator[_T]:
    """``map``'s iterator: results in order; what is left is cancelled if abandoned."""
    # A generator of its own, so that map() has submitted every call before the
    # first result is asked for, as Executor.map does.
    try:
        futures.reverse()
        while futures:
            if end_time is None:
                yield _result_or_cancel(futures.pop())
            else:
                yield _result_or_cancel(futures.pop(), end_time - time.monotonic())
    finally:
        for future in futures:
            future.cancel()


class _KeyView(concurrent.futures.Executor):
    """``KeyedExecutor.for_key(key)``: an ``Executor`` whose every call runs under *key*."""

    __slots__ = ("_executor", "_key")

    def __init__(self, executor: KeyedExecutor, key: Hashable) -> None:
        self._executor = executor
        self._key = key

    @property
    def key(self) -> Hashable:
        """The key every call through this view runs under."""
        return self._key

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """``submit_keyed(key, fn, *args, **kwargs)`` on the executor."""
        return self._executor.submit_keyed(self._key, fn, *args, **kwargs)

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[_T]:
        """``Executor.map`` with every call under the view's key (so in input order)."""
        key = self._key
        return self._executor.map(
            fn, *iterables, timeout=timeout, chunksize=chunksize, key=lambda *_: key
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Does nothing: a view does not own the executor."""

    def __repr__(self) -> str:
        return f"<KeyedExecutor view key={self._key!r} of {self._executor!r}>"
