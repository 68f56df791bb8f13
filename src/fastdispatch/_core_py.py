"""The pure-Python core: same algorithm and contract as the compiled ``_core_c``.

One ``_Mailbox`` per active master holds that master's queued items. A mailbox
is either on the ready queue or in exactly one worker's hands, never both:
that alone guarantees per-master order and mutual exclusion. A worker takes a
mailbox, handles at most ``BATCH`` of its items, then puts it at the back of
the ready queue (fairness) or, when it is empty, frees it (memory follows
activity).

All shared state is guarded by one ``threading.Lock`` (plus conditions built
on it), never by the GIL, so the core is also correct on free-threaded
CPython. The hot path takes that lock once per dispatch and once per handled
item; conditions are only touched when someone actually sleeps.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from contextlib import suppress
from time import monotonic
from typing import Any, NamedTuple, cast

from . import _errors as errors
from ._control import Retry
from ._errors import DispatcherClosed
from ._future import Future  # cheap to create when nobody waits on it

__all__ = ["BATCH", "IDLE_KEEP", "Core"]

#: A worker hands a master back after at most this many items (fairness).
BATCH = 1024

#: Emptied mailboxes kept for their masters' next items: none here, a drained
#: mailbox (a deque) is freed at once; under this core's one lock a new one
#: costs little next to the lock itself.
IDLE_KEEP = 0

# How many items dispatch_many enqueues per lock acquisition.
_MANY_CHUNK = 64

_get_ident = threading.get_ident

# What a failed run means for its master's mailbox (besides "failed"): the
# item waits for another run, or the master pauses. Either way the worker
# lets go of the mailbox.
_RETRY = object()
_PAUSE = object()


class _Mailbox(deque):  # type: ignore[type-arg]
    """The queued items of one active master (the deque itself, one allocation).

    A mailbox is in the master map exactly while it is scheduled: on the ready
    queue or in one worker's hands. It is freed (removed from the map) when a
    worker finds it empty, so an idle master costs nothing.
    """

    __slots__ = ("master",)
    master: Hashable


class _Blocked:
    """Producers waiting for room in one mailbox."""

    __slots__ = ("count", "space")

    def __init__(self, lock: threading.Lock) -> None:
        self.count = 0
        self.space = threading.Condition(lock)


class _Slot:
    """One worker's counters. Only that worker writes them (no lock needed);
    others read them under the core lock, summing over all workers."""

    __slots__ = ("busy", "cancelled", "completed", "failed")

    def __init__(self) -> None:
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.busy = 0  # 1 while an item taken from a mailbox is being handled


class _Job:
    """An item from ``submit``: the work and the future that gets its outcome."""

    __slots__ = ("future", "work")

    def __init__(self, work: Any, future: Future[Any]) -> None:
        self.work = work
        self.future = future


class _UnraisableArgs(NamedTuple):
    """Duck-typed ``sys.UnraisableHookArgs`` (that type cannot be built from Python)."""

    exc_type: type[BaseException]
    exc_value: BaseException
    exc_traceback: Any
    err_msg: str | None
    object: Any


def _report_unraisable(exc: BaseException, err_msg: str, obj: object) -> None:
    """Report an exception nobody can catch, as ``PyErr_WriteUnraisable`` does."""
    try:
        hook = sys.unraisablehook
        if hook is sys.__unraisablehook__:
            # The built-in hook only accepts its own C struct; print like it does.
            stream = sys.stderr
            if stream is None:
                return
            stream.write(f"{err_msg}: {errors.describe(obj)}\n")
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
            stream.flush()
        else:
            hook(_UnraisableArgs(type(exc), exc, exc.__traceback__, err_msg, obj))  # type: ignore[arg-type]
    except BaseException:
        pass  # the reporter of last resort must not raise


def _check_block(block: object) -> None:
    if block.__class__ is not bool:
        raise errors.bad_block(block)


def _check_timeout(timeout: object) -> float | None:
    """Validate a timeout in seconds; None (also for inf) means no timeout."""
    if timeout is None:
        return None
    if timeout.__class__ is bool or not isinstance(timeout, (int, float)):
        raise errors.bad_timeout(timeout)
    if timeout != timeout:
        raise errors.nan_timeout()
    if timeout < 0:
        raise errors.negative_timeout(timeout)
    if timeout >= threading.TIMEOUT_MAX:
        # inf, or so long that the platform cannot wait for it: no timeout.
        return None
    return float(timeout)


def _pair(pair: object) -> tuple[Any, Hashable]:
    """Unpack one ``(work, master)`` item of ``dispatch_many``."""
    if pair.__class__ is tuple and len(pair) == 2:
        return cast("tuple[Any, Hashable]", pair)
    if (
        isinstance(pair, Sequence)
        and not isinstance(pair, (str, bytes, bytearray))
        and len(pair) == 2
    ):
        return pair[0], pair[1]
    raise errors.bad_pair(pair)


class Core:
    """Master -> mailbox map, ready queue, worker loop and counters (pure Python)."""

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
        """Arguments are already validated by the layer (see ``_core_c.pyi``)."""
        self._handler = handler
        self._on_error = on_error
        self._spawn = spawn
        self._capacity = capacity
        self._max_workers = max_workers
        self._retry = retry
        self._pause_on_error = pause_on_error
        self._timer_schedule = schedule
        self._init_sync()
        self._closed = False
        self._reason = ""
        self._masters: dict[Hashable, _Mailbox] = {}
        # Mailboxes with work that no worker holds, oldest first.
        self._ready: deque[_Mailbox] = deque()
        # id(mailbox) -> producers waiting for room in it (they keep it alive).
        self._blocked: dict[int, _Blocked] = {}
        self._worker_idents: set[int] = set()
        self._live = 0  # live worker threads, counted from the spawn request
        self._parked = 0  # workers asleep on _ready_cond and not yet notified
        self._idle_waiters = 0  # threads in wait()
        self._held = 0  # mailboxes in workers' hands
        # Counters. Workers count what they handle in their own _Slot; the
        # fields here hold cancel_pending's count and the tallies of workers
        # that exited. unfinished = dispatched - completed - failed - cancelled
        # and pending = unfinished - running are derived.
        self._slots: list[_Slot] = []
        self._dispatched = 0
        self._completed = 0
        self._failed = 0
        self._cancelled = 0
        self._retried = 0
        # id(mailbox) -> (item, runs so far): an item between two runs. It
        # counts as running; its mailbox is with the timer, then on the ready
        # queue, and the worker that takes it runs this item first.
        self._retries: dict[int, tuple[Any, int]] = {}
        # Each worker's own _Slot, for the failure path (which is not passed it).
        self._own_slot = threading.local()
        # Paused masters' mailboxes: in the map (later items join them), but
        # neither ready nor held, so nothing runs them until resume().
        self._paused: dict[Hashable, _Mailbox] = {}
        # Items of masters that failed after close(): cancelled by their
        # worker (nobody could resume them), returned by cancel_paused().
        self._late: list[tuple[Any, Hashable]] = []

    def _init_sync(self) -> None:
        self._lock = threading.Lock()
        self._ready_cond = threading.Condition(self._lock)
        self._idle_cond = threading.Condition(self._lock)

    # -- intake (the hot path) ------------------------------------------
    def dispatch(
        self, work: Any, master: Hashable, *, block: bool = True, timeout: float | None = None
    ) -> None:
        """Queue *work* for *master*; it runs after the master's earlier items."""
        if block.__class__ is not bool:
            _check_block(block)
        if timeout is not None:
            timeout = _check_timeout(timeout)
        # acquire/release, not `with`: half the cost on the hot path.
        lock = self._lock
        lock.acquire()
        try:
            if self._closed:
                raise DispatcherClosed(self._reason)
            try:
                mb = self._masters.get(master)
            except TypeError as exc:
                raise errors.unhashable_master(master, exc) from exc
            if mb is not None:
                # Active master: its mailbox is already scheduled, just append.
                if self._capacity is None or len(mb) < self._capacity:
                    mb.append(work)
                    self._dispatched += 1
                    return
                mb = self._wait_for_space(mb, master, block, _deadline(timeout))
                if mb is not None:
                    mb.append(work)
                    self._dispatched += 1
                    return
            mb = self._masters[master] = _Mailbox()
            mb.master = master
            mb.append(work)
            self._dispatched += 1
            self._ready.append(mb)
            if self._parked:
                self._parked -= 1
                self._ready_cond.notify()
                return
            if self._live >= self._max_workers:
                return
            self._live += 1
        finally:
            lock.release()
        self._start_worker()

    def submit(
        self, work: Any, master: Hashable, *, block: bool = True, timeout: float | None = None
    ) -> Future[Any]:
        """Like ``dispatch``; the returned future receives the handler's outcome."""
        _check_block(block)
        deadline = _deadline(_check_timeout(timeout))
        future: Future[Any] = Future()
        with self._lock:
            spawn = self._put(_Job(work, future), master, block, deadline)
        if spawn:
            self._start_worker()
        return future

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
        accepted = 0
        try:
            _check_block(block)
            deadline = _deadline(_check_timeout(timeout))
            it = iter(pairs)
            while True:
                # Collect a chunk outside the lock: the iterator and
                # Sequence.__getitem__ are user code. What was collected before
                # an error is still dispatched, as one call per item would.
                chunk: list[tuple[Any, Hashable]] = []
                error: BaseException | None = None
                exhausted = False
                try:
                    for pair in it:
                        chunk.append(_pair(pair))
                        if len(chunk) == _MANY_CHUNK:
                            break
                    else:
                        exhausted = True
                except BaseException as exc:
                    error = exc
                i, n = 0, len(chunk)
                while i < n:
                    spawn = False
                    with self._lock:
                        while i < n and not spawn:
                            work, master = chunk[i]
                            spawn = self._put(work, master, block, deadline)
                            i += 1
                            accepted += 1
                    if spawn:
                        self._start_worker()
                if error is not None:
                    raise error
                if exhausted:
                    return accepted
        except BaseException as exc:
            exc.accepted = accepted  # type: ignore[attr-defined]
            raise

    def _put(self, item: Any, master: Hashable, block: bool, deadline: float | None) -> bool:
        """Enqueue one item (lock held); return whether a worker must be spawned."""
        if self._closed:
            raise DispatcherClosed(self._reason)
        try:
            mb = self._masters.get(master)
        except TypeError as exc:
            raise errors.unhashable_master(master, exc) from exc
        if mb is not None and self._capacity is not None and len(mb) >= self._capacity:
            mb = self._wait_for_space(mb, master, block, deadline)
        if mb is not None:
            mb.append(item)
            self._dispatched += 1
            return False
        mb = self._masters[master] = _Mailbox()
        mb.master = master
        mb.append(item)
        self._dispatched += 1
        return self._make_ready(mb)

    def _make_ready(self, mb: _Mailbox) -> bool:
        """Queue *mb* on the ready queue (lock held) and wake a parked worker;
        with none parked, claim a new one: True when the caller (after
        releasing the lock) must call ``_start_worker``."""
        self._ready.append(mb)
        if self._parked:
            self._parked -= 1
            self._ready_cond.notify()
            return False
        if self._live >= self._max_workers:
            return False
        self._live += 1
        return True

    def _wait_for_space(
        self, mb: _Mailbox, master: Hashable, block: bool, deadline: float | None
    ) -> _Mailbox | None:
        """Wait (lock held) for room in *master*'s full mailbox *mb*.

        Returns the master's live mailbox, now with room, or None when it was
        freed meanwhile (the caller then starts a new one).
        """
        capacity = self._capacity
        assert capacity is not None
        if not block:
            raise errors.queue_full(master, capacity)
        if _get_ident() in self._worker_idents:
            raise errors.queue_full(master, capacity, "worker")
        while True:
            key = id(mb)
            waiting = self._blocked.get(key)
            if waiting is None:
                waiting = self._blocked[key] = _Blocked(self._lock)
            waiting.count += 1
            try:
                if deadline is None:
                    waiting.space.wait()
                else:
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        raise errors.queue_full(master, capacity, "timeout")
                    waiting.space.wait(remaining)
            finally:
                waiting.count -= 1
                if not waiting.count and self._blocked.get(key) is waiting:
                    del self._blocked[key]
            if self._closed:
                raise DispatcherClosed(self._reason)
            live = self._masters.get(master)
            if live is None:
                return None  # drained and freed while we slept
            mb = live
            if len(mb) < capacity:
                return mb
            # Still full (another producer took the room): wait again, the
            # deadline check above raises QueueFull once time is up.

    def _wake_producer(self, mb: _Mailbox) -> None:
        """One item left *mb* (lock held): let one waiting producer in."""
        waiting = self._blocked.get(id(mb))
        if waiting is not None:
            waiting.space.notify()

    def _start_worker(self) -> None:
        """Call ``spawn`` (lock not held); on failure take the count back and
        re-raise, unless other workers are alive to serve the accepted item."""
        try:
            self._spawn()
        except BaseException as exc:
            with self._lock:
                self._live -= 1
                alive = self._live > 0
                orphaned = not alive and bool(self._ready)
            if alive:
                # The item is accepted either way and sits on the ready queue, which
                # live workers drain before they park; the pool just did not grow (3.12+
                # refuses new threads at interpreter shutdown). As the compiled core.
                return
            if orphaned:
                note = (
                    "fastdispatch: could not start a worker thread; the work was accepted but "
                    "no worker is running: it runs once a worker starts (the next dispatch "
                    "to an idle master tries again)"
                )
                if hasattr(exc, "add_note"):
                    exc.add_note(note)
                else:  # Python 3.10 has no add_note (nor displays notes)
                    notes = [*getattr(exc, "__notes__", ()), note]
                    exc.__dict__["__notes__"] = notes
            raise

    # -- workers ----------------------------------------------------------
    def run_worker(self) -> None:
        """Body of one worker thread; returns when closed and drained."""
        ident = _get_ident()
        slot = _Slot()
        self._own_slot.slot = slot
        lock = self._lock
        with lock:
            self._worker_idents.add(ident)
            self._slots.append(slot)
        try:
            self._run_mailbox(lock, slot)
        finally:
            with lock:
                self._worker_idents.discard(ident)
                self._live -= 1
                self._slots.remove(slot)
                self._completed += slot.completed
                self._failed += slot.failed
                self._cancelled += slot.cancelled
                if slot.busy:  # only on a bug in _run_mailbox: the item is lost
                    self._cancelled += 1

    def _run_mailbox(self, lock: threading.Lock, slot: _Slot) -> None:
        """Take a mailbox, handle up to BATCH of its items, hand it back; repeat.

        Without ``capacity`` items are popped without the lock: a producer
        only appends to a mailbox it found in the map under the lock, and a
        mailbox leaves the map only under the lock after this worker saw it
        empty, so no item can be stranded. ``cancel_pending`` pops from the
        other end, and deque pops are atomic, so each item goes to exactly one
        side and what is cancelled is a suffix. With ``capacity`` each pop
        takes the lock, so that a producer about to wait for room cannot miss
        its wake-up. The counts go to this worker's own ``_Slot``.
        """
        handler = self._handler
        ready = self._ready
        masters = self._masters
        retries = self._retries
        job_type = _Job
        batch = BATCH
        bounded = self._capacity is not None
        lock.acquire()
        try:
            mb = self._next_mailbox()
        finally:
            lock.release()
        while mb is not None:
            stop = None  # _RETRY or _PAUSE: the mailbox leaves this worker's hands
            try:
                if retries and id(mb) in retries:
                    stop = self._run_retry(mb, slot)
                for _ in range(batch if stop is None else 0):
                    if bounded:
                        with lock:
                            if not mb:
                                break
                            item = mb.popleft()
                            if self._blocked:
                                self._wake_producer(mb)
                    else:
                        if not mb:  # cheaper than the IndexError on a drained mailbox
                            break
                        try:
                            item = mb.popleft()
                        except IndexError:  # cancel_pending emptied it meanwhile
                            break
                    slot.busy = 1
                    if item.__class__ is job_type:
                        outcome = self._run_job(item, mb)
                    else:
                        try:
                            handler(item)
                            outcome = True
                        except BaseException as exc:
                            outcome = self._failure(exc, item, mb, 1)
                    item = None  # the work must not outlive its handling
                    # busy drops first: a reader never counts an item twice.
                    slot.busy = 0
                    if outcome is True:
                        slot.completed += 1
                    elif outcome is None:
                        slot.cancelled += 1
                    else:
                        if outcome is not _RETRY:
                            slot.failed += 1
                        if outcome is not False:
                            stop = outcome
                            break
            except BaseException:
                # Only on a bug (or MemoryError) in this loop itself: never
                # strand a master's items in a dying worker's hands.
                with lock:
                    self._hand_back(mb)
                    if self._ready and self._parked:  # nobody takes the head now
                        self._parked -= 1
                        self._ready_cond.notify()
                raise
            if stop is not None:
                self._let_go(mb, stop)
                mb = None  # a parked worker must not keep a master alive
                lock.acquire()
                try:
                    mb = self._next_mailbox()
                finally:
                    lock.release()
                continue
            # Hand the mailbox back and take the next one in one critical
            # section. The common cases of _hand_back/_retire/_next_mailbox are
            # inlined: with many short-lived masters this runs once per item.
            lock.acquire()
            try:
                if mb or self._blocked or self._closed or self._idle_waiters:
                    self._hand_back(mb)
                else:
                    self._held -= 1
                    masters.pop(mb.master, None)
                mb = None
                if ready and ready[0]:
                    mb = ready.popleft()
                    self._held += 1
                else:
                    mb = self._next_mailbox()
            finally:
                lock.release()

    def _run_retry(self, mb: _Mailbox, slot: _Slot) -> object:
        """Run *mb*'s item that is between runs; return its outcome's stop
        (``_RETRY``/``_PAUSE``) or None when the mailbox's queue goes on."""
        with self._lock:
            item, runs = self._retries.pop(id(mb))
            slot.busy = 1  # with the pop: the item never stops counting as running
        job = item if item.__class__ is _Job else None
        try:
            result = self._handler(item if job is None else job.work)
        except BaseException as exc:
            outcome: object = self._failure(exc, item, mb, runs + 1)
        else:
            if job is not None:
                _settle(job.future.set_result, result)
            outcome = True
        item = job = result = None
        slot.busy = 0
        if outcome is True:
            slot.completed += 1
            return None
        if outcome is not _RETRY:
            slot.failed += 1
        return None if outcome is False else outcome

    def _failure(self, exc: BaseException, item: Any, mb: _Mailbox, runs: int) -> object:
        """*item* failed in its run number *runs*: retry it, or report it
        (to its future or ``on_error``). Returns ``_RETRY``, ``_PAUSE`` or False."""
        retry = self._retry
        if retry is not None and runs < retry.attempts and isinstance(exc, retry.retry_on):
            with self._lock:
                self._retries[id(mb)] = (item, runs)
                self._retried += 1
                # Now counted running as a retry: stop counting it as the
                # worker's busy item in the same step, or stats() sees it twice.
                self._own_slot.slot.busy = 0
            return _RETRY
        if item.__class__ is _Job:
            _settle(item.future.set_exception, exc)
        else:
            self._report(exc, item, mb.master)
        return _PAUSE if self._pause_on_error else False

    def _let_go(self, mb: _Mailbox, stop: object) -> None:
        """The worker stops serving *mb*: it waits for a retry, or pauses."""
        futures: list[Future[Any]] = []
        if stop is _RETRY:
            runs = self._retries[id(mb)][1]  # only this worker touches it now
            with self._lock:
                self._held -= 1
            assert self._retry is not None and self._timer_schedule is not None
            self._timer_schedule(self._retry.delay(runs - 1), self._retry_due, mb)
            return
        with self._lock:
            self._held -= 1
            if self._closed:
                # Nobody may resume a master after close(): its items are
                # cancelled now, and the next close() returns them.
                master = mb.master
                self._late.extend((work, master) for work in self._take(mb, futures))
                self._retire(mb)
                if self._quiet():
                    self._on_drained()
            else:
                self._paused[mb.master] = mb
                if self._idle_waiters:
                    self._idle_cond.notify_all()  # wait() does not wait for it
        for future in futures:  # outside the lock: done-callbacks run user code
            future.cancel()

    def _retry_due(self, mb: _Mailbox) -> None:
        """The timer: *mb*'s wait before its next run is over, queue it again."""
        with self._lock:
            if not self._make_ready(mb):
                return
        self._start_worker()

    def _take(self, mb: _Mailbox, futures: list[Future[Any]]) -> list[Any]:
        """Take *mb*'s queued items out (lock held), FIFO, counted cancelled;
        their futures go to *futures*, to be cancelled outside the lock."""
        # Pop from the right: a worker may pop the head concurrently (without
        # the lock), so what is taken is always a suffix of the queue.
        tail: list[Any] = []
        while True:
            try:
                tail.append(mb.pop())
            except IndexError:
                break
        works: list[Any] = []
        for item in reversed(tail):
            if item.__class__ is _Job:
                futures.append(item.future)
                works.append(item.work)
            else:
                works.append(item)
        self._cancelled += len(works)
        waiting = self._blocked.get(id(mb))
        if waiting is not None:
            waiting.space.notify_all()
        return works

    def _hand_back(self, mb: _Mailbox) -> None:
        """A worker is done with *mb* (lock held): requeue it at the back, or free it."""
        self._held -= 1
        ready = self._ready
        if mb:
            # Fairness: back of the line. The caller takes the head next, so
            # wake a sleeper only if more than that one mailbox is waiting.
            ready.append(mb)
            if self._parked and len(ready) > 1:
                self._parked -= 1
                self._ready_cond.notify()
        else:
            self._retire(mb)
        if (self._idle_waiters or self._closed) and self._quiet():
            self._on_drained()

    def _next_mailbox(self) -> _Mailbox | None:
        """Pop a ready mailbox (lock held), parking while there is none.

        None means: closed and nothing left to run, so the worker exits.
        """
        ready = self._ready
        while True:
            while ready:
                mb = ready.popleft()
                if mb or (self._retries and id(mb) in self._retries):
                    self._held += 1
                    return mb
                self._retire(mb)  # emptied by cancel_pending while it waited
            if self._closed and self._quiet():
                return None
            self._parked += 1
            self._ready_cond.wait()  # whoever notifies us decrements _parked

    def _retire(self, mb: _Mailbox) -> None:
        """Free an empty mailbox (lock held): an idle master costs nothing."""
        self._masters.pop(mb.master, None)
        if self._blocked:
            waiting = self._blocked.get(id(mb))
            if waiting is not None:
                waiting.space.notify_all()  # they start a new mailbox
        if self._idle_waiters:
            self._idle_cond.notify_all()  # wait(master=...) waits for this

    def _quiet(self) -> bool:
        """Nothing queued, running or held (lock held): what wait() waits for.

        Items held by paused masters do not count: they wait for resume().
        """
        if self._held:
            return False
        unfinished = self._unfinished()
        if unfinished and self._paused:
            unfinished -= sum(len(mb) for mb in self._paused.values())
        return not unfinished

    def _master_quiet(self, master: Hashable) -> bool:
        """*master* has nothing queued or running, or is paused (lock held)."""
        mb = self._masters.get(master)
        return mb is None or self._paused.get(master) is mb

    def _unfinished(self) -> int:
        """Accepted and not finished (lock held; O(workers))."""
        done = self._completed + self._failed + self._cancelled
        for slot in self._slots:
            done += slot.completed + slot.failed + slot.cancelled
        return self._dispatched - done

    def _on_drained(self) -> None:
        """Nothing is pending or running (lock held): wake wait() and, if closed, workers."""
        if self._idle_waiters:
            self._idle_cond.notify_all()
        if self._closed and self._parked:
            self._parked = 0
            self._ready_cond.notify_all()

    def _run_job(self, job: _Job, mb: _Mailbox) -> object:
        future = job.future
        try:
            if not future.set_running_or_notify_cancel():
                return None
        except RuntimeError:
            # The caller resolved the future themselves: nothing left to run.
            return None
        try:
            result = self._handler(job.work)
        except BaseException as exc:
            # The traceback keeps this frame: a local reference to the future
            # would close a cycle (future -> exc -> frame -> future) that keeps
            # the work alive until the garbage collector runs.
            future = None  # type: ignore[assignment]
            outcome = self._failure(exc, job, mb, 1)
            job = None  # type: ignore[assignment]
            return outcome
        _settle(future.set_result, result)
        return True

    def _report(self, exc: BaseException, work: Any, master: Hashable) -> None:
        try:
            self._on_error(exc, work, master)
        except BaseException as error:
            _report_unraisable(
                error, "Exception ignored in fastdispatch on_error for master", master
            )

    def is_worker_thread(self) -> bool:
        """Whether the calling thread is one of this core's workers."""
        return _get_ident() in self._worker_idents

    # -- shutdown ---------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether intake is stopped."""
        return self._closed

    def close_intake(self, reason: str) -> bool:
        """Stop intake: later dispatches (and blocked ones) raise
        ``DispatcherClosed(reason)``. Returns once no producer is still
        mid-enqueue; True only for the call that closed it."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._reason = reason
            for waiting in self._blocked.values():
                waiting.space.notify_all()
            if self._quiet():
                self._on_drained()
            return True

    def cancel_pending(self) -> list[tuple[Any, Hashable]]:
        """Take every queued, not yet started item out: count it as
        cancelled, cancel its future, return ``(work, master)`` pairs (FIFO
        within a master)."""
        taken: list[tuple[Any, Hashable]] = []
        futures: list[Future[Any]] = []
        with self._lock:
            for mb in self._masters.values():
                master = mb.master
                # Pop from the right: a worker may pop the head concurrently
                # (without the lock), so the two sides meet in the middle and
                # what is cancelled is always a suffix of the master's queue.
                tail: list[Any] = []
                while True:
                    try:
                        tail.append(mb.pop())
                    except IndexError:
                        break
                for item in reversed(tail):
                    if item.__class__ is _Job:
                        futures.append(item.future)
                        taken.append((item.work, master))
                    else:
                        taken.append((item, master))
            for waiting in self._blocked.values():
                waiting.space.notify_all()
            # Waiting mailboxes are empty now: free them. One in a worker's
            # hands is freed by that worker when its current item ends.
            kept = [mb for mb in self._ready if self._retries and id(mb) in self._retries]
            while self._ready:
                mb = self._ready.popleft()
                if not kept or all(mb is not k for k in kept):
                    self._retire(mb)
            self._ready.extend(kept)  # their item between runs still runs
            self._cancelled += len(taken)
            if self._quiet():
                self._on_drained()
        for future in futures:  # outside the lock: done-callbacks run user code
            future.cancel()
        return taken

    def cancel_paused(self) -> list[tuple[Any, Hashable]]:
        """Take the queued items of every paused master out (they never run
        after close), and unpause it; also return what workers cancelled for
        masters that failed after close. Pairs as ``cancel_pending``."""
        taken: list[tuple[Any, Hashable]] = []
        futures: list[Future[Any]] = []
        with self._lock:
            for master, mb in self._paused.items():
                taken.extend((work, master) for work in self._take(mb, futures))
                self._retire(mb)
            self._paused.clear()
            taken.extend(self._late)
            self._late = []
            if self._quiet():
                self._on_drained()
        for future in futures:  # outside the lock: done-callbacks run user code
            future.cancel()
        return taken

    # -- per-master control ---------------------------------------------
    def cancel(self, master: Hashable) -> list[Any]:
        """Take *master*'s queued, not started items out (FIFO), counted
        cancelled, their futures cancelled; the running item is left alone."""
        futures: list[Future[Any]] = []
        with self._lock:
            mb = self._masters.get(master)
            if mb is None:
                return []
            works = self._take(mb, futures)
            if not mb and self._paused.get(master) is not mb:
                # Emptied while waiting on the ready queue: free it now, so
                # that wait(master=...) does not wait for a worker to do it.
                ready = self._ready
                for i, waiting in enumerate(ready):
                    if waiting is mb:
                        if id(mb) not in self._retries:
                            del ready[i]
                            self._retire(mb)
                        break
            if self._idle_waiters:
                self._idle_cond.notify_all()
        for future in futures:  # outside the lock: done-callbacks run user code
            future.cancel()
        return works

    def resume(self, master: Hashable) -> None:
        """Let a paused *master* run again (nothing if it is not paused)."""
        with self._lock:
            mb = self._paused.pop(master, None)
            if mb is None:
                return
            if not mb:
                self._retire(mb)  # nothing held: free it like any drained mailbox
                return
            if not self._make_ready(mb):
                return
        self._start_worker()

    def paused(self) -> frozenset[Hashable]:
        """The masters paused by a failure and not yet resumed."""
        with self._lock:
            return frozenset(self._paused)

    def wait(self, timeout: float | None = None, master: Hashable = None) -> bool:
        """Block until every accepted item (of *master*, if not None) has
        finished, paused masters' items aside; False on timeout."""
        deadline = _deadline(_check_timeout(timeout))
        with self._lock:
            self._idle_waiters += 1
            try:
                while not (self._quiet() if master is None else self._master_quiet(master)):
                    if deadline is None:
                        self._idle_cond.wait()
                    else:
                        remaining = deadline - monotonic()
                        if remaining <= 0:
                            return False
                        self._idle_cond.wait(remaining)
                return True
            finally:
                self._idle_waiters -= 1

    def after_fork_in_child(self, reason: str) -> None:
        """Make the copy inherited by a forked child closed and inert."""
        # The parent's lock may have been held by a thread that does not exist here.
        self._init_sync()
        self._closed = True
        self._reason = reason
        # The parent runs what it had accepted; here it never will.
        for slot in self._slots:
            self._completed += slot.completed
            self._failed += slot.failed
        self._slots = []
        self._cancelled = self._dispatched - self._completed - self._failed
        self._masters = {}
        self._ready = deque()
        self._blocked = {}
        self._worker_idents = set()
        self._live = 0
        self._parked = 0
        self._idle_waiters = 0
        self._held = 0
        self._retries = {}
        self._paused = {}
        self._late = []

    # -- introspection ----------------------------------------------------
    def pending(self, master: Hashable) -> int:
        """How many items of *master* are queued (not counting a running one)."""
        with self._lock:
            try:
                mb = self._masters.get(master)
            except TypeError as exc:
                raise errors.unhashable_master(master, exc) from exc
            return 0 if mb is None else len(mb)

    def stats(self) -> tuple[int, int, int, int, int, int, int, int, int, int]:
        """``(dispatched, completed, failed, cancelled, pending, running,
        active_masters, workers, retried, paused_masters)``."""
        with self._lock:
            completed, failed, cancelled = self._completed, self._failed, self._cancelled
            running = len(self._retries)  # items between two runs
            for slot in self._slots:
                # Read the counts before busy (the worker writes busy first):
                # an item in transit is then counted once or as pending, never twice.
                completed += slot.completed
                failed += slot.failed
                cancelled += slot.cancelled
                running += slot.busy
            pending = self._dispatched - completed - failed - cancelled - running
            return (
                self._dispatched,
                completed,
                failed,
                cancelled,
                pending,
                running,
                len(self._masters),
                self._live,
                self._retried,
                len(self._paused),
            )


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else monotonic() + timeout


def _settle(setter: Callable[[Any], None], value: Any) -> None:
    # InvalidStateError: the caller resolved the future first; theirs stands.
    with suppress(Exception):
        setter(value)
