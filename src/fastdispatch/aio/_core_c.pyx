"""The compiled asyncio core (contract: ``_core_c.pyi``; pure twin: ``_core_py.py``).

Same algorithm as the pure core. Everything but the thread-safe intake runs
on the dispatcher's event loop, which serialises that state by itself. What
the compilation buys is the per-item path: C fields instead of instance
dicts, a lane queue that is a list plus a head index (``PyList_Append`` and an
indexed load instead of ``deque`` method calls), and a worker coroutine whose
frame is a C struct.

The one state shared with other threads, the intake of
``dispatch_threadsafe``, is guarded by a ``cython.pymutex`` (``PyMutex`` on
3.13+, also on free-threaded builds); nothing that can run Python code or
start a garbage collection happens while it is held.
"""

cimport cython
from cpython.pythread cimport PyThread_get_thread_ident

import asyncio
from collections import deque
from types import CoroutineType

from fastdispatch._errors import DispatcherClosed, QueueFull
from fastdispatch._types import DispatcherStats

#: A worker hands a lane back (and yields to the loop) after this many items in a row.
BATCH = 1024

cdef enum:
    _BATCH = 1024
    # A lane's list is compacted once this many consumed slots lead it.
    _COMPACT = 64
    # Lane states.
    _IDLE = 0
    _QUEUED = 1
    _RUNNING = 2

# ``lanes.get`` default: a queued item may be None.
cdef object _MISSING = object()
cdef object _CancelledError = asyncio.CancelledError
# Returns None outside a loop (asyncio.get_running_loop raises). Not per item: on
# CPython <= 3.11 it makes a getpid() system call each time.
cdef object _get_running_loop = asyncio.events._get_running_loop
cdef object _current_task = asyncio.current_task
cdef object _sleep = asyncio.sleep
cdef object _CoroutineType = CoroutineType
#: Seconds a parked worker waits for work before its task ends.
cdef double _IDLE_EXIT = 1.0


@cython.final
cdef class _Call:
    """A ``submit``ted item: the work and the future of its result."""

    cdef readonly object work
    cdef readonly object future

    def __cinit__(self, object work, object future):
        self.work = work
        self.future = future


@cython.final
cdef class _Lane:
    """One master's queue; lives only while the master has work or waiting producers."""

    cdef object master
    cdef list items  # items[head:] are queued, FIFO
    cdef Py_ssize_t head
    cdef int state
    # Room promised to woken producers that have not resumed yet.
    cdef Py_ssize_t reserved
    cdef object waiters  # deque of producer futures, created on first need

    def __cinit__(self, object master):
        self.master = master
        self.items = []
        self.head = 0
        self.state = _IDLE
        self.reserved = 0
        self.waiters = None

    cdef inline Py_ssize_t size(self):
        return len(self.items) - self.head

    cdef inline object pop(self):
        cdef list items = self.items
        cdef Py_ssize_t head = self.head
        item = items[head]
        head += 1
        if head == len(items):
            del items[:]
            head = 0
        elif head >= _COMPACT and head * 2 >= len(items):
            del items[:head]
            head = 0
        else:
            items[head - 1] = None  # drop the reference now, not at compaction
        self.head = head
        return item

    cdef inline bint has_waiters(self):
        return self.waiters is not None and len(self.waiters) > 0


cdef object _unhashable(object master, object exc):
    error = TypeError(f"master must be hashable, got {master!r} ({exc})")
    error.__cause__ = exc
    return error


def _resolve_false(waiter):
    if not waiter.done():
        waiter.set_result(False)


cdef class Core:
    """See ``_core_c.pyi`` for the contract."""

    cdef object _handler
    cdef bint _is_coroutine
    cdef object _on_error
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _max
    cdef object _loop
    # The loop's thread: the per-item affinity test compares thread idents; the
    # loop itself is checked when a lane is created and in every other method.
    cdef unsigned long _thread
    # master -> _Lane; or master -> its one queued item (anything but a _Lane)
    # while it has no lane: a million one-off masters then cost a dict entry
    # each, not a lane and a list. The lane is made when a second item arrives
    # or a worker takes the item.
    cdef dict _lanes
    cdef object _ready  # deque of _Lane, or of the master of an inline item
    cdef set _tasks
    # Workers created or woken that have not taken a lane yet: while there is
    # one, new lanes need no other worker (it takes them, or starts another).
    cdef Py_ssize_t _starting
    # The one idle worker kept parked (its future), so that work arriving at a
    # quiet dispatcher wakes a task instead of creating one; it ends after
    # _IDLE_EXIT seconds with no wake-up (_wakes did not move).
    cdef object _parked
    cdef object _park_timer
    cdef Py_ssize_t _wakes
    cdef list _idle_waiters
    cdef bint _closed
    cdef cython.pymutex _lock
    cdef list _intake  # work, master, work, master, ...
    cdef bint _armed
    cdef Py_ssize_t _dispatched
    cdef Py_ssize_t _completed
    cdef Py_ssize_t _failed
    cdef Py_ssize_t _cancelled
    cdef Py_ssize_t _pending
    cdef Py_ssize_t _running

    def __init__(self, handler, bint is_coroutine, on_error, capacity, Py_ssize_t max_concurrency):
        self._handler = handler
        self._is_coroutine = is_coroutine
        self._on_error = on_error
        self._capacity = 0 if capacity is None else capacity
        self._max = max_concurrency
        self._loop = _get_running_loop()
        self._thread = PyThread_get_thread_ident() if self._loop is not None else 0
        self._lanes = {}
        self._ready = deque()
        self._tasks = set()
        self._starting = 0
        self._parked = None
        self._park_timer = None
        self._wakes = 0
        self._idle_waiters = []
        self._closed = False
        self._intake = []
        self._armed = False
        self._dispatched = self._completed = self._failed = self._cancelled = 0
        self._pending = self._running = 0

    # -- loop affinity ------------------------------------------------------
    def check_loop(self, str name):
        """The dispatcher's loop, binding it on first use; RuntimeError off it."""
        loop = _get_running_loop()
        if loop is self._loop and loop is not None:
            return loop
        if self._loop is None and loop is not None:
            with self._lock:  # dispatch_threadsafe reads it from other threads
                self._loop = loop
            self._thread = PyThread_get_thread_ident()
            return loop
        where = "outside any event loop" if loop is None else "on another event loop"
        raise RuntimeError(
            f"AsyncDispatcher.{name}() was called {where}; an AsyncDispatcher belongs to the "
            "event loop it was created on (or first used on). From other threads use "
            "dispatch_threadsafe()"
        )

    def in_worker(self):
        """Whether the current task is one of this dispatcher's workers."""
        return _current_task() in self._tasks

    # -- intake on the loop -------------------------------------------------
    def dispatch_nowait(self, work, master):
        if self._thread == 0 or PyThread_get_thread_ident() != self._thread:
            self.check_loop("dispatch_nowait")
        self._put(work, master, False, "dispatch_nowait")

    def submit_nowait(self, work, master):
        if self._thread == 0 or PyThread_get_thread_ident() != self._thread:
            self.check_loop("submit_nowait")
        loop = self._loop
        future = loop.create_future()
        self._put(_Call(work, future), master, False, "submit_nowait")
        return future

    async def dispatch(self, work, master, timeout):
        if self._thread == 0 or PyThread_get_thread_ident() != self._thread:
            self.check_loop("dispatch")
        lane = self._put(work, master, timeout != 0, "dispatch")
        if lane is not None:
            await self._put_waiting(work, <_Lane>lane, timeout)

    async def submit(self, work, master, timeout):
        if self._thread == 0 or PyThread_get_thread_ident() != self._thread:
            self.check_loop("submit")
        loop = self._loop
        call = _Call(work, loop.create_future())
        lane = self._put(call, master, timeout != 0, "submit")
        if lane is not None:
            await self._put_waiting(call, <_Lane>lane, timeout)
        return call.future

    cdef object _put(self, object item, object master, bint can_wait, str name):
        """Queue *item*, or return the full lane when the caller *can_wait* for room."""
        cdef _Lane lane
        if self._closed:
            raise DispatcherClosed("dispatcher is closed")
        try:
            found = self._lanes.get(master, _MISSING)
        except TypeError as exc:
            raise _unhashable(master, exc) from None
        if found is _MISSING:
            self._add(master, item, name)
            return None
        if type(found) is _Lane:
            lane = <_Lane>found
        else:
            lane = self._inflate(master, found)
        if self._capacity and (
            lane.has_waiters() or lane.size() + lane.reserved >= self._capacity
        ):
            return self._full(lane, can_wait)
        self._append(lane, item, name)
        return None

    cdef _Lane _full(self, _Lane lane, bint can_wait):
        # No waiting: *_nowait, a zero timeout, or a worker of this dispatcher
        # (waiting for its own queue to drain could deadlock).
        if not can_wait or self.in_worker():
            raise QueueFull(f"the queue of master {lane.master!r} is full")
        return lane

    cdef inline void _add(self, object master, object item, str name) except *:
        """Queue *item* inline for a *master* that has no lane."""
        # Find the item a worker first: the step that can fail (a wrong event
        # loop) fails before anything changed.
        if self._starting == 0 and not self._wake() and len(self._tasks) < self._max:
            self._spawn(name)
        self._lanes[master] = item
        self._ready.append(master)
        self._dispatched += 1
        self._pending += 1

    cdef _Lane _inflate(self, object master, object item):
        """Give a *master* whose one queued *item* is inline a lane holding it."""
        cdef _Lane lane = _Lane(master)
        lane.items.append(item)
        lane.state = _QUEUED  # its master's entry in ready stands for it
        self._lanes[master] = lane
        return lane

    cdef _Lane _take(self, object entry):
        """The lane a worker runs for a ``ready`` *entry*; None for a stale entry."""
        cdef _Lane lane
        if type(entry) is _Lane:
            return <_Lane>entry
        found = self._lanes.get(entry, _MISSING)
        if found is _MISSING:
            return None
        if type(found) is _Lane:
            lane = <_Lane>found
            return lane if lane.state == _QUEUED else None
        lane = _Lane(entry)
        lane.items.append(found)
        self._lanes[entry] = lane
        return lane

    cdef bint _still_ready(self, object entry) except -1:
        if type(entry) is not _Lane:
            entry = self._lanes.get(entry, _MISSING)
            if entry is _MISSING:
                return False
            if type(entry) is not _Lane:
                return True
        return (<_Lane>entry).state == _QUEUED

    cdef inline void _append(self, _Lane lane, object item, str name) except *:
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

    async def _put_waiting(self, item, _Lane lane, timeout):
        """Wait for room in *lane* (FIFO among waiting producers), then queue *item*."""
        loop = self._loop
        waiter = loop.create_future()
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
                try:
                    lane.waiters.remove(waiter)
                except ValueError:
                    pass
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

    def _expire(self, _Lane lane, waiter):
        if not waiter.done():
            waiter.set_exception(QueueFull(f"the queue of master {lane.master!r} is full"))

    cdef void _grant(self, _Lane lane) except *:
        """Promise the room now free in *lane* to the producers waiting longest."""
        waiters = lane.waiters
        if waiters is None:
            return
        while waiters and lane.size() + lane.reserved < self._capacity:
            waiter = waiters.popleft()
            if not waiter.done():
                lane.reserved += 1
                waiter.set_result(None)

    cdef void _drop_if_dead(self, _Lane lane) except *:
        if (
            lane.state == _IDLE
            and lane.size() == 0
            and lane.reserved == 0
            and not lane.has_waiters()
            and self._lanes.get(lane.master) is lane
        ):
            del self._lanes[lane.master]

    # -- intake from other threads -----------------------------------------
    def dispatch_threadsafe(self, work, master):
        cdef bint wake = False
        cdef Py_ssize_t i
        try:
            hash(master)
        except TypeError as exc:
            raise _unhashable(master, exc) from None
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

    def _drain_intake(self):
        cdef list batch
        cdef list fresh = []  # allocated before the lock is taken
        cdef Py_ssize_t i, n
        cdef _Lane lane
        with self._lock:
            batch = self._intake
            if batch:
                self._intake = fresh
            self._armed = False
        n = len(batch)
        if n == 0:
            return
        lanes = self._lanes
        for i in range(0, n, 2):
            master = batch[i + 1]
            found = lanes.get(master, _MISSING)
            # Accepted by the producer already: capacity does not apply here.
            if found is _MISSING:
                self._add(master, batch[i], "dispatch_threadsafe")
                continue
            if type(found) is _Lane:
                lane = <_Lane>found
            else:
                lane = self._inflate(master, found)
            self._append(lane, batch[i], "dispatch_threadsafe")

    # -- workers --------------------------------------------------------------
    cdef void _spawn(self, str name) except *:
        # The full loop test (the per-item one compares threads only): a task
        # made for another loop would never run.
        loop = self.check_loop(name)
        task = loop.create_task(self._work())
        self._tasks.add(task)
        self._starting += 1

    cdef bint _wake(self) except -1:
        """Wake the parked worker, if there is one that can still run."""
        waiter = self._parked
        if waiter is None or waiter.done():  # done: cancelled, the loop is ending
            return False
        self._parked = None
        self._wakes += 1
        self._starting += 1
        waiter.set_result(True)
        return True

    def _idle_check(self, Py_ssize_t wakes):
        self._park_timer = None
        waiter = self._parked
        if waiter is None:
            return
        if wakes == self._wakes:  # parked all along: end the task
            self._parked = None
            if not waiter.done():
                waiter.set_result(False)
        else:
            self._park_timer = self._loop.call_later(_IDLE_EXIT, self._idle_check, self._wakes)

    async def _work(self):
        cdef _Lane lane = None
        cdef Py_ssize_t n, in_row = 0
        cdef bint is_coroutine = self._is_coroutine
        self._starting -= 1
        task = _current_task()
        ready = self._ready
        handler = self._handler
        waiter = None
        try:
            while True:
                while ready:
                    lane = self._take(ready.popleft())
                    if lane is None:
                        continue
                    lane.state = _RUNNING
                    if ready and self._starting == 0 and len(self._tasks) < self._max:
                        # More lanes wait: one more worker (it will do the same).
                        self._tasks.add(self._loop.create_task(self._work()))
                        self._starting += 1
                    n = 0
                    while lane.size():
                        item = lane.pop()
                        self._pending -= 1
                        if lane.waiters is not None and lane.waiters:
                            self._grant(lane)
                        if type(item) is _Call:
                            future = (<_Call>item).future
                            if future.cancelled():
                                self._cancelled += 1
                                continue
                            work = (<_Call>item).work
                        else:
                            future = None
                            work = item
                        self._running += 1
                        try:
                            if is_coroutine:
                                result = await handler(work)
                            else:
                                result = handler(work)
                                if type(result) is _CoroutineType:
                                    result = await result
                        except BaseException as exc:
                            self._running -= 1
                            self._failed += 1
                            if (
                                type(exc) is _CancelledError
                                and getattr(task, "cancelling", None) is not None
                                and task.cancelling()
                            ):
                                # The worker itself is cancelled (the loop is shutting
                                # down): the item counts as failed, the lane waits for a
                                # worker, the cancellation goes on.
                                if future is not None:
                                    future.cancel()
                                self._requeue(lane, True)
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
                        if in_row >= _BATCH:
                            # Never hold the loop for long: other tasks run now.
                            in_row = 0
                            if lane.size():
                                self._requeue(lane, False)
                                lane = None
                            await _sleep(0)
                            break
                        if n >= _BATCH and lane.size():
                            self._requeue(lane, False)
                            lane = None
                            break
                    if lane is not None:
                        if lane.size():  # refilled while this worker yielded
                            self._requeue(lane, False)
                        else:
                            lane.state = _IDLE
                            self._drop_if_dead(lane)
                            if self._pending == 0 and self._running == 0:
                                self._notify_if_idle()
                        lane = None
                # Nothing ready: one worker parks, any other ends.
                if self._parked is not None or self._closed:
                    break
                waiter = self._loop.create_future()
                self._parked = waiter
                if self._park_timer is None:
                    self._park_timer = self._loop.call_later(
                        _IDLE_EXIT, self._idle_check, self._wakes
                    )
                try:
                    woken = await waiter
                except BaseException:
                    if self._parked is waiter:
                        self._parked = None
                    elif waiter.done() and not waiter.cancelled() and waiter.result():
                        self._starting -= 1  # woken, then cancelled: another must start
                    raise
                waiter = None
                if not woken:
                    break
                self._starting -= 1
        finally:
            self._tasks.discard(task)
            if lane is not None:  # left by an exception of our own: not lost
                self._requeue(lane, True)

    cdef void _requeue(self, _Lane lane, bint front) except *:
        lane.state = _QUEUED
        if front:
            self._ready.appendleft(lane)
        else:
            self._ready.append(lane)

    cdef void _report(self, exc, work, master, future) except *:
        if future is None:
            self._on_error(exc, work, master)
        elif not future.done():
            if isinstance(exc, _CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)

    # -- waiting and closing ---------------------------------------------------
    def is_idle(self):
        return self._pending == 0 and self._running == 0 and not self._intake

    cdef void _notify_if_idle(self) except *:
        if self._idle_waiters and self.is_idle():
            waiters = self._idle_waiters
            self._idle_waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(True)

    async def wait(self, timeout):
        loop = self.check_loop("wait")
        self._drain_intake()
        if self.is_idle():
            return True
        if timeout == 0:
            return False
        waiter = loop.create_future()
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

    def close(self):
        """Stop intake; fail the producers waiting for room. Return whether it was open."""
        cdef _Lane lane
        with self._lock:
            if self._closed:
                return False
            self._closed = True
        waiter = self._parked
        if waiter is not None:
            self._parked = None
            if not waiter.done():
                waiter.set_result(False)
        for found in list(self._lanes.values()):
            if type(found) is not _Lane:
                continue
            lane = <_Lane>found
            if lane.waiters is not None:
                for waiter in lane.waiters:
                    if not waiter.done():
                        waiter.set_exception(DispatcherClosed("dispatcher is closed"))
                lane.waiters.clear()
            self._drop_if_dead(lane)
        return True

    def cancel_pending(self):
        """Take every not-started item out, FIFO per master; cancel their futures."""
        cdef _Lane lane
        self._drain_intake()
        taken = []
        for master, found in list(self._lanes.items()):
            if type(found) is not _Lane:
                del self._lanes[master]
                self._pending -= 1
                self._cancelled += 1
                if type(found) is _Call:
                    (<_Call>found).future.cancel()
                    taken.append(((<_Call>found).work, master))
                else:
                    taken.append((found, master))
                continue
            lane = <_Lane>found
            while lane.size():
                item = lane.pop()
                self._pending -= 1
                self._cancelled += 1
                if type(item) is _Call:
                    (<_Call>item).future.cancel()
                    taken.append(((<_Call>item).work, lane.master))
                else:
                    taken.append((item, lane.master))
            if lane.state == _QUEUED:
                lane.state = _IDLE
            self._drop_if_dead(lane)
        # In place: the workers hold this deque.
        kept = []
        for found in self._ready:
            if self._still_ready(found):
                kept.append(found)
        self._ready.clear()
        self._ready.extend(kept)
        self._notify_if_idle()
        return taken

    # -- introspection ---------------------------------------------------------
    @property
    def closed(self):
        return self._closed

    @property
    def loop(self):
        return self._loop

    def pending(self, master):
        try:
            found = self._lanes.get(master, _MISSING)
        except TypeError as exc:
            raise _unhashable(master, exc) from None
        if found is _MISSING:
            return 0
        return (<_Lane>found).size() if type(found) is _Lane else 1

    def stats(self):
        cdef Py_ssize_t active = 0
        cdef _Lane lane
        for found in self._lanes.values():
            if type(found) is not _Lane:
                active += 1
                continue
            lane = <_Lane>found
            if lane.size() or lane.state == _RUNNING:
                active += 1
        return DispatcherStats(
            dispatched=self._dispatched,
            completed=self._completed,
            failed=self._failed,
            cancelled=self._cancelled,
            pending=self._pending,
            running=self._running,
            active_masters=active,
            workers=self._running,
        )
