"""The shard: a Ray actor that runs one local ``Dispatcher`` for its masters.

The driver sends numbered batches; the shard applies them in number order
whatever order Ray delivers them in (a threaded actor runs calls
concurrently, and a retried call may arrive twice), so per-master order does
not rest on Ray's delivery order. Completions are collected in an outbox the
driver drains with ``poll``.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
from collections.abc import Callable
from typing import Any

from .._dispatcher import Dispatcher, _guarded, _log_failure, _resolve_handler
from .._errors import DispatcherClosed

__all__ = ["FAILED", "Shard"]

#: Status of a completion record that is not a plain success.
FAILED = 1
CANCELLED = 2

logger = logging.getLogger("fastdispatch")

# One item on the wire: (item id, master, work, whether the driver wants the result).
Item = tuple[int, Any, Any, bool]


def _dumps(value: object) -> None:
    """Pickle *value* as Ray will; raises when it cannot travel back to the driver."""
    try:
        from ray import cloudpickle
    except ImportError:  # pragma: no cover - a shard always runs under Ray
        pickle.dumps(value)
    else:
        cloudpickle.dumps(value)


def _portable(exc: BaseException) -> BaseException:
    """*exc*, or a RuntimeError describing it when it cannot travel back by pickle."""
    try:
        _dumps(exc)
    except Exception as why:
        return RuntimeError(f"{type(exc).__qualname__}: {exc} (not picklable: {why})")
    return exc


class Shard:
    """Runs the user's handler for the masters routed to this shard."""

    def __init__(
        self,
        handler: object,
        on_error: Callable[[BaseException, Any, Any], object] | None,
        workers: int | None,
        capacity: int | None,
        index: int,
    ) -> None:
        self._handle = _resolve_handler(handler)
        self._on_error = _log_failure if on_error is None else _guarded(on_error)
        self._apply = threading.Lock()  # serialises batches in sequence order
        self._out = threading.Condition()
        self._ok: list[int] = []
        self._other: list[tuple[int, int, Any]] = []
        self._next = 0
        self._early: dict[int, list[Item]] = {}
        self._cancelling = False
        self._cancel_ids: list[int] | None = None
        self._dispatcher = Dispatcher(
            self._run,
            max_workers=workers,
            capacity=capacity,
            thread_name_prefix=f"fastdispatch-shard{index}",
        )

    # -- runs in the local dispatcher's workers ---------------------------
    def _run(self, item: Item) -> None:
        item_id, master, work, want = item
        try:
            result = self._handle(work)
        except BaseException as exc:
            record: tuple[int, int, BaseException | None]
            if want:
                record = (item_id, FAILED, _portable(exc))
            else:
                self._on_error(exc, work, master)
                record = (item_id, FAILED, None)
            with self._out:
                self._other.append(record)
                self._out.notify()
            return
        if want:
            # one unpicklable result must not fail the whole poll reply (and the shard)
            try:
                _dumps(result)
            except Exception as why:
                error = TypeError(f"the handler's result {result!r} cannot be pickled: {why}")
                with self._out:
                    self._other.append((item_id, FAILED, error))
                    self._out.notify()
                return
        with self._out:
            if want:
                self._other.append((item_id, 0, result))
            else:
                self._ok.append(item_id)
            self._out.notify()

    def _cancelled(self, ids: list[int]) -> None:
        with self._out:
            if self._cancel_ids is not None:
                self._cancel_ids.extend(ids)
            else:
                self._other.extend((i, CANCELLED, None) for i in ids)
            self._out.notify_all()

    # -- remote methods -----------------------------------------------------
    def push(self, seq: int, items: list[Item]) -> int:
        """Accept batch *seq*; returns once it (and every batch before it) is queued."""
        with self._apply:
            if seq < self._next or seq in self._early:
                return seq  # delivered twice: already accepted
            self._early[seq] = items
            while self._next in self._early:
                batch = self._early.pop(self._next)
                self._next += 1
                self._queue(batch)
        with self._out:
            self._out.notify_all()  # cancel() may wait for this batch
        return seq

    def _queue(self, batch: list[Item]) -> None:
        dispatch = self._dispatcher.dispatch
        for n, item in enumerate(batch):
            if self._cancelling:
                self._cancelled([i[0] for i in batch[n:]])
                return
            try:
                dispatch(item, item[1])  # blocks while the master is at capacity
            except DispatcherClosed:
                self._cancelled([i[0] for i in batch[n:]])
                return

    def poll(self, timeout: float) -> tuple[list[int], list[tuple[int, int, Any]]]:
        """Completions since the last poll: (ids done without result, other records)."""
        with self._out:
            if not self._ok and not self._other:
                self._out.wait(timeout)
            ok, other = self._ok, self._other
            self._ok, self._other = [], []
        return ok, other

    def cancel(self, sent: int, timeout: float) -> list[int]:
        """Cancel every item not started, including batches up to *sent* still on the way."""
        with self._out:
            self._cancel_ids = []
        self._cancelling = True
        taken = self._dispatcher.close(wait=False, cancel_pending=True)
        self._cancelled([item[0] for item, _master in taken])
        with self._out:
            # batches already sent by the driver are cancelled as they arrive
            self._out.wait_for(lambda: self._next >= sent, timeout)
            ids, self._cancel_ids = self._cancel_ids, None
        return ids

    def stats(self) -> tuple[int, ...]:
        return tuple(self._dispatcher.stats())

    def pid(self) -> int:
        return os.getpid()
