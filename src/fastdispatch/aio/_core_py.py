"""The pure-Python asyncio core; ``_core_c.pyx`` is its compiled twin (same algorithm).

Everything but the thread-safe intake runs on the dispatcher's event loop, so
the loop itself serialises the state: no locks on the hot path.

* ``lanes``: master -> ``_Lane`` (its queued items, FIFO), only for masters
  with queued or running work or a producer waiting for room. A master with
  exactly one queued item and no lane yet maps to that item itself (any value
  that is not a ``_Lane``): a million one-off masters then cost a dict entry
  each, not a lane and a list; the lane is made when a second item arrives or
  a worker takes the item.
* ``ready``: lanes with work and no worker, in the order they became ready; an
  entry that is not a ``_Lane`` is the master of such an inline item.
* Workers: at most ``max_concurrency`` tasks, started on demand, each taking
  one lane at a time from ``ready`` and running its items in order; a worker
  exits when ``ready`` is empty. One task per busy worker, never per item.
* The intake of ``dispatch_threadsafe``: a list under a lock, drained on the
  loop by one callback per burst (``armed`` says one is scheduled).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Hashable
from types import CoroutineType
from typing import Any

from .._errors import DispatcherClosed, QueueFull
from .._types import DispatcherStats

__all__ = ["BATCH", "Core"]

#: A worker hands a lane back (and yields to the loop) after this many items in a row.
BATCH = 1024

_IDLE, _QUEUED, _RUNNING = 0, 1, 2
# A lane's list is compacted once this many consumed slots lead it.
_COMPACT = 64

#: ``lanes.get`` default: a queued item may be None.
_MISSING: Any = object()

_CancelledError = asyncio.CancelledError
# Returns None outside a loop (asyncio.get_running_loop raises). Not per item: on
# CPython <= 3.11 it makes a getpid() system call each time.
_get_running_loop = asyncio.events._get_running_loop
_current_task = asyncio.current_task
_sleep = asyncio.sleep
_get_ident = threading.get_ident
#: Seconds a parked worker waits for work before its task ends.
_IDLE_EXIT = 1.0


class _Call:
    """A ``submit``ted item: the work and the future of its result."""

    __slots__ = ("future", "work")

    def __init__(self, work: Any, future: asyncio.Future[Any]) -> None:
        self.work = work
        self.future = future


class _Lane:
    """One master's queue; lives only while the master has work or waiting producers."""

    __slots__ = ("head", "items", "master", "reserved", "state", "waiters")

    def __init__(self, master: Hashable) -> None:
        self.master = master
        # items[head:] are queued, FIFO. A list and an index, not a deque: a deque
        # costs ~600 bytes even when it holds one item, and most lanes hold few.
        # Non-empty exactly when something is queued (_pop clears it at the end).
        self.items: list[Any] = []
        self.head = 0
        self.state = _IDLE
        # Room promised to woken producers that have not resumed yet.
        self.reserved = 0
        self.waiters: deque[asyncio.Future[None]] | None = None  # made on first need


def _size(lane: _Lane) -> int:
    return len(lane.items) - lane.head


def _pop(lane: _Lane) -> Any:
    items = lane.items
    head = lane.head
    item = items[head]
    head += 1
    if head == len(items):
        items.clear()
        head = 0
    elif head >= _COMPACT and head * 2 >= len(items):
        del items[:head]
        head = 0
    else:
        items[head - 1] = None  # drop the reference now, not at compaction
    lane.head = head
    return item


def _unhashable(master: object, exc: TypeError) -> TypeError:
    error = TypeError(f"master must be hashable, got {master!r} ({exc})")
    error.__cause__ = exc
    return error


class Core:
    """See ``_core_c.pyi`` for the contract."""

    def __init__(
        self,
        handler: Callable[[Any], Any],
        is_coroutine: bool,
        on_error: Callable[[BaseException, Any, Hashable], object],
        capacity: int | None,
        max_concurrency: int,
    ) -> None:
        self._handler = handler
        self._is_coroutine = is_coroutine
        self._on_error = on_error
        self._capacity = 0 if capacity is None else capacity
        self._max = max_concurrency
        self._loop: asyncio.AbstractEventLoop | None = _get_running_loop()
        # The loop's thread: the per-item affinity test compares thread idents; the
        # loop itself is checked when a lane is created and in every other method.
        self._thread = 0 if self._loop is None else _get_ident()
        self._lanes: dict[Hashable, _Lane] = {}
        self._ready: deque[Any] = deque()  # _Lane, or the master of an inline item
        self._tasks: set[asyncio.Task[None]] = set()
        # Workers created or woken that have not taken a lane yet: while there is
        # one, new lanes need no other worker (it takes them, or starts another).
        self._starting = 0
        # The one idle worker kept parked (its future), so that work arriving at a
        # quiet dispatcher wakes a task instead of creating one; it ends after
        # _IDLE_EXIT seconds with no wake-up (_wakes did not move).
        self._parked: asyncio.Future[bool] | None = None
        self._park_timer: asyncio.TimerHandle | None = None
        self._wakes = 0
        self._idle_waiters: list[asyncio.Future[bool]] = []
        self._closed = False
        self._lock = threading.Lock()
        self._intake: list[Any] = []
        self._armed = False
        self._dispatched = 0
        self._completed = 0
        self._failed = 0
        self._cancelled = 0
        self._pending = 0
        self._running = 0

    # -- loop affinity ------------------------------------------------------
    def check_loop(self, name: str) -> asyncio.AbstractEventLoop:
        """The dispatcher's loop, binding it on first use; RuntimeError off it."""
        loop = _get_running_loop()
        if loop is self._loop and loop is not None:
            return loop
        if self._loop is None and loop is not None:
            with self._lock:  # dispatch_threadsafe reads it from other threads
                self._loop = loop
            self._thread = _get_ident()
            return loop
        where = "outside any event loop" if loop is None else "on another event loop"
        raise RuntimeError(
            f"AsyncDispatcher.{name}() was called {where}; an AsyncDispatcher belongs to the "
            "event loop it was created on (or first used on). From other threads use "
            "dispatch_threadsafe()"
        )

    def in_worker(self) -> bool:
        """Whether the current task is one of this dispatcher's workers."""
        return _current_task() in self._tasks

    # -- intake on the loop -------------------------------------------------
    def dispatch_nowait(self, work: Any, master: Hashable) -> None:
        if self._thread == 0 or _get_ident() != self._thread:
            self.check_loop("dispatch_nowait")
        self._put(work, master, False, "dispatch_nowait")

    def submit_nowait(self, work: Any, master: Hashable) -> asyncio.Future[Any]:
        if self._thread == 0 or _get_ident() != self._thread:
            self.check_loop("submit_nowait")
        loop = self._loop
        assert loop is not None
        future = loop.create_future()
        self._put(_Call(work, future), master, False, "submit_nowait")
        return future

    async def dispatch(self, work: Any, master: Hashable, timeout: float | None) -> None:
        if self._thread == 0 or _get_ident() != self._thread:
            self.check_loop("dispatch")
        lane = self._put(work, master, timeout != 0, "dispatch")
        if lane is not None:
            await self._put_waiting(work, master, lane, timeout)

    async def submit(
        self, work: Any, master: Hashable, timeout: float | None
    ) -> asyncio.Future[Any]:
        if self._thread == 0 or _get_ident() != self._thread:
            self.check_loop("submit")
        loop = self._loop
        assert loop is not None
        call = _Call(work, loop.create_future())
        lane = self._put(call, master, timeout != 0, "submit")
        if lane is not None:
            await self._put_waiting(call, master, lane, timeout)
        return call.future

    def _put(self, item: Any, master: Hashable, can_wait: bool, name: str) -> _Lane | None:
        """Queue *item*, or return the full lane when the caller *can_wait* for room."""
        if self._closed:
            raise DispatcherClosed("dispatcher is closed")
        try:
            found = self._lanes.get(master, _MISSING)
        except TypeError as exc:
            raise _unhashable(master, exc) from None
        if found is _MISSING:
            self._add(master, item, name)
            return None
        lane = found if found.__class__ is _Lane else self._inflate(master, found)
        if self._capacity and (lane.waiters or _size(lane) + lane.reserved >= self._capacity):
            return self._full(lane, can_wait)
        self._append(lane, item, name)
        return None

    def _full(self, lane: _Lane, can_wait: bool) -> _Lane:
        # No waiting: *_nowait, a zero timeout, or a worker of this dispatcher
        # (waiting for its own queue to drain could deadlock).
        if not can_wait or self.in_worker():
            raise QueueFull(f"the queue of master {lane.master!r} is full")
        return lane

    def _add(self, master: Hashable, item: Any, name: str) -> None:
        """Queue *item* inline for a *master* that has no lane."""
        # Find the item a worker first: the step that can fail (a wrong event
        # loop) fails before anything changed.
        if self._starting == 0 and not self._wake() and len(self._tasks) < self._max:
            self._spawn(name)
        self._lanes[master] = item
        self._ready.append(master)
        self._dispatched += 1
        self._pending += 1

    def _inflate(self, master: Hashable, item: Any) -> _Lane:
        """Give a *master* whose one queued *item* is inline a lane holding it."""
        lane = _Lane(master)
        lane.items.append(item)
        lane.state = _QUEUED  # its master's entry in ready stands for it
        self._lanes[master] = lane
        return lane

    def _take(self, entry: Any) -> _Lane | None:
        """The lane a worker runs for a ``ready`` *entry*; None for a stale entry."""
        if entry.__class__ is _Lane:
            return entry  # type: ignore[no-any-return]
        found = self._lanes.get(entry, _MISSING)
        if found is _MISSING:
            return None
        if found.__class__ is _Lane:
            return found if found.state == _QUEUED else None  # type: ignore[no-any-return]
        lane = _Lane(entry)
        lane.items.append(found)
        self._lanes[entry] = lane
        return lane

    def _append(self, lane: _Lane, item: Any, name: str) -> None:
        if lane.state == _IDLE:
            # Find the lane a worker first: this is the step that can fail (a
            # wrong event loop), and it fails before anything changed.
            if self._starting == 0 and not self._wake() and len(self._tasks) < self._max:
                self._spawn(name)
            lane.state = _QUEUED
            self._ready.append(lane)
        lane.items.append(item)
        self._dispatched += 1
        self._pending += 1

    async def _put_waiting(
        self, item: Any, master: Hashable, lane: _Lane, timeout: float | None
    ) -> None:
        """Wait for room in *lane* (FIFO among waiting producers), then queue *item*."""
        loop = self._loop
        assert loop is not None
        waiter: asyncio.Future[None] = loop.create_future()
        if lane.waiters is None:
            lane.waiters = deque()
        lane.waiters.append(waiter)
        timer = None
        if timeout is not None and timeout != float("inf"):
            timer = loop.call_later(timeout, self._expire, lane, waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Room was granted but the producer was cancelled before it resumed:
                # pass the room on, queue nothing.
                lane.reserved -= 1
                self._grant(lane)
            else:
                self._forget_waiter(lane, waiter)
            self._drop_if_dead(lane)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        lane.reserved -= 1
        if self._closed:
            self._grant(lane)
            self._drop_if_dead(lane)
            raise DispatcherClosed("dispatcher is closed")
        self._append(lane, item, "dispatch")

    def _expire(self, lane: _Lane, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(QueueFull(f"the queue of master {lane.master!r} is full"))

    def _forget_waiter(self, lane: _Lane, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError, AttributeError):
            lane.waiters.remove(waiter)  # type: ignore[union-attr]

    def _grant(self, lane: _Lane) -> None:
        """Promise the room now free in *lane* to the producers waiting longest."""
        waiters = lane.waiters
        while waiters and _size(lane) + lane.reserved < self._capacity:
            waiter = waiters.popleft()
            if not waiter.done():
                lane.reserved += 1
                waiter.set_result(None)

    def _drop_if_dead(self, lane: _Lane) -> None:
        if (
            lane.state == _IDLE
            and not lane.items
            and not lane.reserved
            and not lane.waiters
            and self._lanes.get(lane.master) is lane
        ):
            del self._lanes[lane.master]

    # -- intake from other threads -----------------------------------------
    def dispatch_threadsafe(self, work: Any, master: Hashable) -> None:
        try:
            hash(master)
        except TypeError as exc:
            raise _unhashable(master, exc) from None
        wake = False
        with self._lock:
            closed = self._closed
            loop = self._loop
            if not closed and loop is not None:
                # list.append only reallocates: no GC, no Python code under the lock.
                self._intake.append(work)
                self._intake.append(master)
                if not self._armed:
                    self._armed = wake = True
        if closed:
            raise DispatcherClosed("dispatcher is closed")
        if loop is None:
            raise RuntimeError(
                "AsyncDispatcher.dispatch_threadsafe() needs the dispatcher's event "
                "loop, and it has none yet: create the dispatcher inside the loop "
                "(or use it there once) before other threads dispatch"
            )
        if wake:
            # One wake-up per burst, not per item; outside the lock (it allocates).
            try:
                loop.call_soon_threadsafe(self._drain_intake)
            except BaseException:
                # The loop is closed: take the item back, so nothing is accepted.
                with self._lock:
                    intake = self._intake
                    for i in range(len(intake) - 2, -1, -2):
                        if intake[i] is work and intake[i + 1] is master:
                            del intake[i : i + 2]
                            break
                    self._armed = False
                raise

    def _drain_intake(self) -> None:
        fresh: list[Any] = []  # allocated before the lock is taken
        with self._lock:
            batch = self._intake
            if batch:
                self._intake = fresh
            self._armed = False
        if not batch:
            return
        lanes = self._lanes
        for i in range(0, len(batch), 2):
            master = batch[i + 1]
            found = lanes.get(master, _MISSING)
            # Accepted by the producer already: capacity does not apply here.
            if found is _MISSING:
                self._add(master, batch[i], "dispatch_threadsafe")
            else:
                lane = found if found.__class__ is _Lane else self._inflate(master, found)
                self._append(lane, batch[i], "dispatch_threadsafe")

    # -- workers --------------------------------------------------------------
    def _spawn(self, name: str) -> None:
        # The full loop test (the per-item one compares threads only): a task
        # made for another loop would never run.
        loop = self.check_loop(name)
        task = loop.create_task(self._work())
        self._tasks.add(task)
        self._starting += 1

    def _wake(self) -> bool:
        """Wake the parked worker, if there is one that can still run."""
        waiter = self._parked
        if waiter is None or waiter.done():  # done: cancelled, the loop is ending
            return False
        self._parked = None
        self._wakes += 1
        self._starting += 1
        waiter.set_result(True)
        return True

    def _idle_check(self, wakes: int) -> None:
        self._park_timer = None
        waiter = self._parked
        if waiter is None:
            return
        if wakes == self._wakes:  # parked all along: end the task
            self._parked = None
            if not waiter.done():
                waiter.set_result(False)
        else:
            assert self._loop is not None
            self._park_timer = self._loop.call_later(_IDLE_EXIT, self._idle_check, self._wakes)

    async def _work(self) -> None:
        self._starting -= 1
        task = _current_task()
        loop = self._loop
        assert loop is not None
        ready = self._ready
        handler = self._handler
        is_coroutine = self._is_coroutine
        in_row = 0
        lane: _Lane | None = None
        try:
            while True:
                while ready:
                    lane = self._take(ready.popleft())
                    if lane is None:
                        continue
                    lane.state = _RUNNING
                    if ready and self._starting == 0 and len(self._tasks) < self._max:
                        # More lanes wait: one more worker (it will do the same).
                        self._tasks.add(loop.create_task(self._work()))
                        self._starting += 1
                    items = lane.items
                    n = 0
                    while items:
                        item = _pop(lane)
                        self._pending -= 1
                        if lane.waiters:
                            self._grant(lane)
                        if item.__class__ is _Call:
                            future = item.future
                            if future.cancelled():
                                self._cancelled += 1
                                continue
                            work = item.work
                        else:
                            future = None
                            work = item
                        self._running += 1
                        try:
                            if is_coroutine:
                                result = await handler(work)
                            else:
                                result = handler(work)
                                if result.__class__ is CoroutineType:
                                    result = await result
                        except BaseException as exc:
                            self._running -= 1
                            self._failed += 1
                            if (
                                exc.__class__ is _CancelledError
                                and getattr(task, "cancelling", None) is not None
                                and task.cancelling()  # type: ignore[union-attr]
                            ):
                                # The worker itself is cancelled (the loop is shutting
                                # down): the item counts as failed, the lane waits for a
                                # worker, the cancellation goes on.
                                if future is not None:
                                    future.cancel()
                                self._requeue(lane, front=True)
                                lane = None
                                raise
                            self._report(exc, work, lane.master, future)
                        else:
                            self._running -= 1
                            self._completed += 1
                            if future is not None and not future.done():
                                future.set_result(result)
                        n += 1
                        in_row += 1
                        if in_row >= BATCH:
                            # Never hold the loop for long: other tasks run now.
                            in_row = 0
                            if items:
                                self._requeue(lane, front=False)
                                lane = None
                            await _sleep(0)
                            break
                        if n >= BATCH and items:
                            self._requeue(lane, front=False)
                            lane = None
                            break
                    if lane is not None:
                        if lane.items:  # refilled while this worker yielded
                            self._requeue(lane, front=False)
                        else:
                            lane.state = _IDLE
                            self._drop_if_dead(lane)
                            if not self._pending and not self._running:
                                self._notify_if_idle()
                        lane = None
                # Nothing ready: one worker parks, any other ends.
                if self._parked is not None or self._closed:
                    break
                waiter: asyncio.Future[bool] = loop.create_future()
                self._parked = waiter
                if self._park_timer is None:
                    self._park_timer = loop.call_later(_IDLE_EXIT, self._idle_check, self._wakes)
                try:
                    woken = await waiter
                except BaseException:
                    if self._parked is waiter:
                        self._parked = None
                    elif waiter.done() and not waiter.cancelled() and waiter.result():
                        self._starting -= 1  # woken, then cancelled: another must start
                    raise
                if not woken:
                    break
                self._starting -= 1
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            if lane is not None:  # left by an exception of our own: not lost
                self._requeue(lane, front=True)

    def _requeue(self, lane: _Lane, *, front: bool) -> None:
        lane.state = _QUEUED
        if front:
            self._ready.appendleft(lane)
        else:
            self._ready.append(lane)

    def _report(
        self,
        exc: BaseException,
        work: Any,
        master: Hashable,
        future: asyncio.Future[Any] | None,
    ) -> None:
        if future is None:
            self._on_error(exc, work, master)
        elif not future.done():
            if isinstance(exc, _CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)

    # -- waiting and closing ---------------------------------------------------
    def is_idle(self) -> bool:
        return not self._pending and not self._running and not self._intake

    def _notify_if_idle(self) -> None:
        if self._idle_waiters and self.is_idle():
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(True)

    async def wait(self, timeout: float | None) -> bool:
        loop = self.check_loop("wait")
        self._drain_intake()
        if self.is_idle():
            return True
        if timeout == 0:
            return False
        waiter: asyncio.Future[bool] = loop.create_future()
        self._idle_waiters.append(waiter)
        timer = None
        if timeout is not None and timeout != float("inf"):
            timer = loop.call_later(timeout, _resolve_false, waiter)
        try:
            return await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._idle_waiters:
                self._idle_waiters.remove(waiter)

    def close(self) -> bool:
        """Stop intake; fail the producers waiting for room. Return whether it was open."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
        parked = self._parked
        if parked is not None:
            self._parked = None
            if not parked.done():
                parked.set_result(False)
        for lane in list(self._lanes.values()):
            if lane.__class__ is not _Lane:
                continue
            for waiter in lane.waiters or ():
                if not waiter.done():
                    waiter.set_exception(DispatcherClosed("dispatcher is closed"))
            lane.waiters = None
            self._drop_if_dead(lane)
        return True

    def cancel_pending(self) -> list[tuple[Any, Hashable]]:
        """Take every not-started item out, FIFO per master; cancel their futures."""
        self._drain_intake()
        taken: list[tuple[Any, Hashable]] = []
        for master, lane in list(self._lanes.items()):
            if lane.__class__ is not _Lane:
                del self._lanes[master]
                self._pending -= 1
                self._cancelled += 1
                if lane.__class__ is _Call:
                    lane.future.cancel()
                    taken.append((lane.work, master))
                else:
                    taken.append((lane, master))
                continue
            items = lane.items
            while items:
                item = _pop(lane)
                self._pending -= 1
                self._cancelled += 1
                if item.__class__ is _Call:
                    item.future.cancel()
                    taken.append((item.work, lane.master))
                else:
                    taken.append((item, lane.master))
            if lane.state == _QUEUED:
                lane.state = _IDLE
            self._drop_if_dead(lane)
        # In place: the workers hold this deque.
        kept = [entry for entry in self._ready if self._still_ready(entry)]
        self._ready.clear()
        self._ready.extend(kept)
        self._notify_if_idle()
        return taken

    def _still_ready(self, entry: Any) -> bool:
        if entry.__class__ is not _Lane:
            entry = self._lanes.get(entry, _MISSING)
            if entry is _MISSING:
                return False
            if entry.__class__ is not _Lane:
                return True
        return entry.state == _QUEUED  # type: ignore[no-any-return]

    # -- introspection ---------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def pending(self, master: Hashable) -> int:
        try:
            found = self._lanes.get(master, _MISSING)
        except TypeError as exc:
            raise _unhashable(master, exc) from None
        if found is _MISSING:
            return 0
        return _size(found) if found.__class__ is _Lane else 1

    def stats(self) -> DispatcherStats:
        return DispatcherStats(
            dispatched=self._dispatched,
            completed=self._completed,
            failed=self._failed,
            cancelled=self._cancelled,
            pending=self._pending,
            running=self._running,
            active_masters=sum(
                1
                for lane in self._lanes.values()
                if lane.__class__ is not _Lane or lane.items or lane.state == _RUNNING
            ),
            workers=self._running,
        )


def _resolve_false(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
