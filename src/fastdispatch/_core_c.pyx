"""The compiled core of fastdispatch (contract: ``_core_c.pyi``).

Data structures, all reached without the GIL's help (atomics in _atomic.h):

* One ``_Mailbox`` per master with work. Its queue is a chain of ring chunks
  addressed by sequence number: producers reserve the next number with one
  CAS on the mailbox word (items ever reserved and state IDLE / SCHEDULED /
  DEAD, so capacity and "was it idle?" are one decision), find its chunk from
  the tail pointer they read before the CAS and publish the item with a
  release store. No mutex on the producer path and no other atomic RMW. The
  consumer counts what it took in a word of its own (queued = reserved -
  taken), so taking an item is a load and a store. The worker that owns the
  mailbox is its only consumer; a tiny spin lock on the consumer side lets
  ``cancel_pending`` take items out without racing it.
* A ready queue of mailboxes (Vyukov's intrusive MPSC list; the consumer end
  is a mutex shared by the workers only). A mailbox is put on it by the
  producer that moved it from IDLE to SCHEDULED, or by its worker handing it
  back after ``BATCH`` items: it is on the queue or in one worker's hands,
  never both, which is the ordering guarantee. A worker that empties a
  mailbox leaves it IDLE in the map, so the master's next item costs one
  CAS and a trip through the ready queue, not a new mailbox and two writes
  to the map (with the GIL gone, producers used to find a mailbox half
  freed after nearly every item and wait for it). Idle mailboxes are freed
  by wait(), close(), or a sweep once the map holds more than ``IDLE_KEEP``
  and half of it went idle since the last sweep.
* The intake word: CLOSED bit, producers mid-enqueue, unfinished items. One
  RMW to enter (and count the item unfinished), one to leave; close() waits
  for the mid-enqueue count to drain; workers exit when the word reads
  "closed, nothing in flight, nothing unfinished". A worker takes its
  batch's items off the unfinished count in one RMW at the end of the batch.
* Per-worker counters (one cache line each, plain stores) hold outcomes and
  the items not yet taken off the unfinished count; ``dispatched`` is derived
  from them and the intake word, so no shared counter is written per item.
* Idle workers park on an event count and are woken only when one is parked.

Chunks that the consumer has passed are freed only when no producer is mid
enqueue anywhere (a producer may still hold a stale tail pointer until it
leaves the intake), or with the mailbox.
"""

cimport cython
from cpython.mem cimport PyMem_RawCalloc, PyMem_RawFree, PyMem_RawMalloc
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_INCREF, Py_XDECREF, Py_XINCREF, PyObject
from libc.stdint cimport int64_t

from fastdispatch._atomic cimport (
    fd_load,
    fd_load_relaxed,
    fd_store,
    fd_fetch_add,
    fd_fetch_or,
    fd_cas,
    fd_load_ptr,
    fd_store_ptr,
    fd_exchange_ptr,
    fd_cas_ptr,
    fd_backoff,
    fd_thread_yield,
    fd_spin_lock,
    fd_spin_unlock,
    fd_fence,
    fd_spin_pause,
    fd_event,
    fd_event_init,
    fd_event_destroy,
    fd_event_prepare,
    fd_event_cancel,
    fd_event_wait,
    fd_event_take_token,
    fd_event_notify_one,
    fd_event_notify_all,
    fd_event_try_spin,
    fd_event_stop_spin,
    fd_event_spinning,
    fd_mutex,
    fd_mutex_init,
    fd_mutex_destroy,
    fd_mutex_lock,
    fd_mutex_unlock,
)

import sys
import threading
import time

from fastdispatch import _errors as errors
from fastdispatch._errors import DispatcherClosed
from fastdispatch._future import Future  # cheap to create when nobody waits on it


cdef extern from "_pycompat.h":
    # No "except" clauses: the callers check for -1 / NULL themselves, which
    # keeps the hot path free of Cython's try/except bookkeeping.
    int fd_dict_get_ref(dict d, object key, PyObject **result)
    int fd_dict_setdefault_ref(dict d, object key, object dflt, PyObject **result)
    PyObject *fd_take_exception()
    PyObject *fd_call1(object callable, object arg)


#: A worker hands a master back after at most this many items (fairness).
BATCH = 1024
cdef int64_t C_BATCH = 1024

# Mailbox word: (items ever reserved << 2) | state.
cdef enum:
    IDLE = 0
    SCHEDULED = 1
    DEAD = 2
    PAUSED = 3         # held by pause_on_error: producers append, nobody schedules it
    STATE_MASK = 3
    COUNT_ONE = 4

# Intake word: CLOSED | producers mid-enqueue << 1 | unfinished << 21.
cdef int64_t CLOSED = 1
cdef int64_t INFLIGHT_ONE = 2
cdef int64_t INFLIGHT_MASK = ((1 << 20) - 1) << 1
cdef int64_t UNF_SHIFT = 21
cdef int64_t UNF_ONE = 1 << 21

cdef enum:
    PUT_OK = 0
    PUT_CLOSED = 1
    PUT_FULL = 2
    PUT_DEAD = 3

# What one run of an item leaves for its mailbox.
cdef enum:
    RUN_OK = 0         # finished (or failed for good): go on with the queue
    RUN_RETRY = 1      # failed, runs again after a backoff: the timer takes the mailbox
    RUN_PAUSE = 2      # failed for good under pause_on_error: the master pauses

#: Emptied mailboxes kept for their masters' next items before a sweep
#: frees them (more while as many masters have work; see _rest).
IDLE_KEEP = 4096
cdef int64_t C_IDLE_KEEP = 4096

cdef enum:
    FIRST_CHUNK = 4  # most masters hold few items: small first (inside the mailbox), doubling
cdef int64_t MAX_CHUNK = 1024

# The spinner's budget, in fd_spin_pause steps (each well under a
# microsecond, or a yield of the CPU), adaptive between these bounds: a spin
# that finds work doubles it, one that comes up empty takes a quarter off.
# While producers keep up (the spinner finds the next item in microseconds)
# it stays long; a worker that waits in vain (a producer slower than the
# window, or descheduled on a busy machine) is soon back to parking almost at
# once, so the spinner does not hold a CPU that a producer needs.
cdef enum:
    SPIN_MIN = 4
    SPIN_MAX = 64


# -- nogil data structures ------------------------------------------------

include "_ring.pxi"
include "_ready_queue.pxi"
include "_slots.pxi"


# -- Python-level objects -----------------------------------------------------

# Neither class can close a reference cycle that the collector must break:
# a _Job or a _Mailbox is referenced only from the ring / ready queue (raw
# pointers the collector cannot see anyway) and the masters dict, whose
# key already holds the master. Untracked, they cost the collector nothing
# (S1 spent ~9% of its samples collecting mailboxes made and freed per drain).
@cython.final
@cython.no_gc
cdef class _Job:
    """A ``submit``ted item: the work and its future."""
    cdef object work
    cdef object future


@cython.final
@cython.no_gc
cdef class _Mailbox:
    """One active master's queue."""
    cdef object master
    cdef Ring r
    # An item between two runs under retry (runs > 0: it ran that many
    # times): the worker that takes the mailbox next runs it first.
    cdef object retry_item
    cdef int64_t runs
    # Most mailboxes live and die within their first few items (S1, S3):
    # their only chunk comes with the object, not from a separate allocation.
    cdef Chunk first
    cdef PyObject *first_slots[FIRST_CHUNK]

    def __cinit__(self):
        # The object's memory arrives zeroed: slots empty, next NULL, base 0.
        self.first.size = FIRST_CHUNK
        self.first.embedded = 1
        self.first.slots = self.first_slots
        self.r.tail = &self.first
        self.r.head = &self.first
        self.r.oldest = &self.first
        self.r.node.owner = <PyObject *>self

    def __dealloc__(self):
        # Normally empty (DEAD means drained); after fork the child drops
        # the inherited items here. Taking an item clears its slot, so every
        # slot still set holds a reference.
        cdef Chunk *c = self.r.oldest
        cdef Chunk *n
        cdef int64_t i
        while c != NULL:
            for i in range(c.size):
                Py_XDECREF(c.slots[i])
                c.slots[i] = NULL
            n = c.next
            chunk_free(c)
            c = n


def _gil_enabled():
    """Whether the GIL is on right now (always before 3.13; on a free-threaded
    build unless PYTHON_GIL=1 or an extension turned it back on)."""
    probe = getattr(sys, "_is_gil_enabled", None)
    return True if probe is None else bool(probe())


cdef double _parse_timeout(object timeout) except -2.0:
    """-1.0 for "no limit", else seconds >= 0."""
    if timeout is None:
        return -1.0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise errors.bad_timeout(timeout)
    cdef double t = timeout
    if t != t:
        raise errors.nan_timeout()
    if t < 0:
        raise errors.negative_timeout(timeout)
    if t == float("inf"):
        return -1.0
    return t


cdef inline int _check_block(object block) except -1:
    if block is not True and block is not False:
        raise errors.bad_block(block)
    return 0


@cython.final
cdef class Core:
    """The master -> mailbox map, the queues, the workers' loop and counters."""

    cdef object _handler
    cdef object _on_error
    cdef object _spawn
    cdef int64_t _capacity
    cdef int64_t _max_workers
    cdef dict _masters
    cdef int64_t _intake
    cdef int64_t _cancelled
    cdef int64_t _live
    cdef int64_t _shutdown
    cdef int64_t _idle_waiters
    cdef int64_t _spin_budget  # atomic: see SPIN_MIN; written by the spinner only
    cdef int64_t _keep_idle    # atomic: workers leave drained mailboxes IDLE (see _rest)
    cdef int64_t _producer     # atomic: the one thread seen dispatching, until a second
    cdef int64_t _rested       # atomic: mailboxes left IDLE since the last sweep (big maps only)
    cdef int64_t _sweeping     # atomic: a sweep by _rest is under way
    cdef bint _spin  # whether idle workers spin at all (not with the GIL)
    cdef Slot *_slots
    cdef ReadyQueue _rq
    cdef fd_event _event
    cdef object _space_cond
    cdef object _idle_cond
    cdef set _worker_idents
    cdef object _reason
    # Per-master control. The options cost nothing unless an item fails.
    cdef object _retry
    cdef int64_t _retry_attempts
    cdef object _retry_on
    cdef bint _pause_on_error
    cdef object _timer_schedule
    cdef int64_t _backoff      # atomic: items between two runs (count as running)
    cdef int64_t _retried      # atomic
    cdef int64_t _npaused      # atomic: len(_paused), for readers without the lock
    cdef object _control       # lock of _paused and _late
    cdef dict _paused          # master -> its PAUSED mailbox
    cdef list _late            # (work, master) cancelled by a failure after close

    def __cinit__(self):
        rq_init(&self._rq)
        self._spin_budget = SPIN_MIN
        if fd_mutex_init(&self._rq.lock) != 0 or fd_event_init(&self._event) != 0:
            raise MemoryError("cannot initialise the dispatcher's locks")

    def __init__(self, handler, on_error, spawn, capacity, max_workers,
                 retry=None, pause_on_error=False, schedule=None):
        self._retry = retry
        if retry is not None:
            self._retry_attempts = retry.attempts
            self._retry_on = retry.retry_on
        self._pause_on_error = pause_on_error
        self._timer_schedule = schedule
        self._control = threading.Lock()
        self._paused = {}
        self._late = []
        self._handler = handler
        self._on_error = on_error
        self._spawn = spawn
        self._capacity = -1 if capacity is None else capacity
        self._max_workers = max_workers
        # With the GIL a producer and a worker never run at once: a spinner
        # would find the next item only after the producer drops the GIL,
        # and would then wait for the GIL anyway.
        self._spin = not _gil_enabled()
        self._keep_idle = not self._spin
        self._slots = <Slot *>PyMem_RawCalloc(<size_t>max_workers, sizeof(Slot))
        if self._slots == NULL:
            raise MemoryError()
        self._masters = {}
        self._space_cond = threading.Condition()
        self._idle_cond = threading.Condition()
        self._worker_idents = set()
        self._reason = "dispatcher is closed"

    def __dealloc__(self):
        cdef Node *n = rq_pop(&self._rq)
        while n != NULL:
            Py_XDECREF(n.owner)
            n = rq_pop(&self._rq)
        fd_event_destroy(&self._event)
        fd_mutex_destroy(&self._rq.lock)
        PyMem_RawFree(self._slots)

    # -- intake ------------------------------------------------------------

    @cython.binding(False)
    def dispatch(self, work, master, *, block=True, timeout=None):
        """Queue ``work`` for ``master``; see ``Dispatcher.dispatch``."""
        cdef double deadline = -1.0
        _check_block(block)
        if timeout is not None:
            deadline = self._deadline(timeout)
        self._put(work, master, block, deadline)

    @cython.binding(False)
    def submit(self, work, master, *, block=True, timeout=None):
        """Queue ``work`` for ``master`` and return a Future of its result."""
        cdef double deadline = -1.0
        cdef _Job job
        _check_block(block)
        if timeout is not None:
            deadline = self._deadline(timeout)
        future = Future()
        job = _Job.__new__(_Job)
        job.work = work
        job.future = future
        self._put(job, master, block, deadline)
        return future

    @cython.binding(False)
    def dispatch_many(self, pairs, *, block=True, timeout=None):
        """Dispatch each ``(work, master)`` pair; return how many were accepted."""
        cdef double deadline = -1.0
        cdef Py_ssize_t accepted = 0
        _check_block(block)
        if timeout is not None:
            deadline = self._deadline(timeout)
        try:
            for pair in pairs:
                if type(pair) is tuple and len(<tuple>pair) == 2:
                    work, master = <tuple>pair
                else:
                    work, master = _unpack_pair(pair)
                self._put(work, master, block, deadline)
                accepted += 1
                if (accepted & 1023) == 0:
                    # A C loop never yields the GIL on its own: let the workers
                    # drain now and then, or a long iterable piles up in memory.
                    with nogil:
                        fd_thread_yield()
        except BaseException as exc:
            try:
                exc.accepted = accepted
            except AttributeError:
                pass
            raise
        return accepted

    cdef double _deadline(self, object timeout) except -2.0:
        cdef double t = _parse_timeout(timeout)
        if t < 0:
            return -1.0
        return time.monotonic() + t

    cdef _Mailbox _mailbox_for(self, object master):
        cdef PyObject *p = self._mailbox_ref(master)
        mb = <_Mailbox>p
        Py_XDECREF(p)
        return mb

    cdef PyObject *_mailbox_ref(self, object master) except NULL:
        """master's mailbox, made if need be: a new reference."""
        cdef PyObject *p = NULL
        cdef _Mailbox fresh
        cdef int found = fd_dict_get_ref(self._masters, master, &p)
        if found == 0:
            fresh = _Mailbox.__new__(_Mailbox)
            fresh.master = master
            found = fd_dict_setdefault_ref(self._masters, master, fresh, &p)
        if found < 0:
            _raise_unhashable(master)
        return p

    cdef int _put(self, object item, object master, bint block, double deadline) except -1:
        cdef int64_t me, seen = 0
        cdef PyObject *p
        cdef int status
        if not fd_load_relaxed(&self._keep_idle):
            me = <int64_t>PyThread_get_thread_ident()
            if fd_load_relaxed(&self._producer) != me and not fd_cas(&self._producer, &seen, me):
                fd_store(&self._keep_idle, 1)  # a second producer: see _rest
        # The mailbox is held by a raw reference, not a typed variable: each
        # count on it is an atomic write to a line other threads write too
        # (several producers, its worker), and a typed local costs two more.
        p = self._mailbox_ref(master)
        try:
            status = self._try_put(p, item)
            if status == PUT_OK:
                return 0
            return self._put_slow(item, master, <_Mailbox>p, status, block, deadline)
        finally:
            Py_XDECREF(p)

    cdef int _try_put(self, PyObject *mbp, object item) except -1:
        """Queue item in the mailbox mbp (borrowed)."""
        cdef Ring *r = &(<_Mailbox>mbp).r
        cdef int64_t old
        cdef Chunk *tail
        # The item counts as unfinished from the start: a worker may pop and
        # finish it before this producer leaves, and the count must never dip
        # below the truth (a wait() would sleep through the item's finish).
        cdef int64_t w = fd_fetch_add(&self._intake, INFLIGHT_ONE + UNF_ONE)
        if w & CLOSED:
            self._leave_rejected()
            # A mailbox made for this call and never used must not linger.
            if ring_try_kill(r, IDLE):
                self._forget(<_Mailbox>mbp)
            return PUT_CLOSED
        # Read inside the intake (so not freed under us) and before the
        # reservation (so at or before the reserved number's chunk).
        tail = <Chunk *>fd_load_ptr(<void **>&r.tail)
        old = ring_reserve(r, self._capacity)
        if old < 0:
            self._leave_rejected()
            return PUT_DEAD if old == -1 else PUT_FULL
        Py_INCREF(item)
        ring_push(r, tail, old >> 2, <PyObject *>item)
        fd_fetch_add(&self._intake, -INFLIGHT_ONE)
        if (old & STATE_MASK) == IDLE:
            self._schedule_ref(mbp)
        elif (old & STATE_MASK) == PAUSED:
            self._wake_idle_waiters()  # a wait() skips this item: tell it it came
        return PUT_OK

    cdef inline void _leave_rejected(self) noexcept:
        cdef int64_t w = fd_fetch_add(&self._intake, -(INFLIGHT_ONE + UNF_ONE))
        if (w >> UNF_SHIFT) == 1 or fd_load(&self._npaused) > 0:
            # The count this attempt held is back to 0, or to what paused
            # masters hold (which wait() does not wait for).
            self._wake_idle_waiters()
        if w & CLOSED:
            # Workers may be waiting for the last producer to leave.
            fd_event_notify_all(&self._event)

    cdef int _schedule(self, _Mailbox mb) except -1:
        return self._schedule_ref(<PyObject *>mb)

    cdef int _schedule_ref(self, PyObject *mbp) except -1:
        """Put the mailbox mbp (borrowed) on the ready queue; wake or start a worker."""
        cdef int64_t n
        Py_XINCREF(mbp)  # the ready queue's reference
        rq_push(&self._rq, &(<_Mailbox>mbp).r.node)
        if self._spin and fd_event_spinning(&self._event):
            return 0  # the spinner takes it: no wake-up, no new thread
        # Wake an idle worker if one is left unclaimed, else grow the pool.
        if fd_event_take_token(&self._event):
            fd_event_notify_one(&self._event)
            return 0
        n = fd_load(&self._live)
        while n < self._max_workers:
            if fd_cas(&self._live, &n, n + 1):
                try:
                    self._spawn()
                except BaseException:
                    # The item is accepted either way. With workers alive
                    # (e.g. a thread refused at interpreter shutdown) one of
                    # them serves it and the pool just did not grow; with
                    # none, the caller must hear that nothing will run it.
                    if fd_fetch_add(&self._live, -1) > 1:
                        fd_event_notify_one(&self._event)
                        return 0
                    raise
                return 0
        # At the cap: tokens undercount parked workers (a worker that found
        # work on its own gives back any token), so wake whoever is parked.
        fd_event_notify_one(&self._event)
        return 0

    cdef int _put_slow(self, object item, object master, _Mailbox mb, int status,
                       bint block, double deadline) except -1:
        while True:
            if status == PUT_CLOSED:
                raise DispatcherClosed(self._reason)
            if status == PUT_DEAD:
                # Its worker is removing it from the map right now.
                with nogil:
                    fd_thread_yield()
                mb = self._mailbox_for(master)
                status = self._try_put(<PyObject *>mb, item)
                if status == PUT_OK:
                    return 0
                continue
            if not block:
                raise errors.queue_full(master, self._capacity)
            if threading.get_ident() in self._worker_idents:
                raise errors.queue_full(master, self._capacity, "worker")
            return self._put_blocking(item, master, deadline)

    cdef int _put_blocking(self, object item, object master, double deadline) except -1:
        cdef _Mailbox mb
        cdef int status
        cdef double remaining
        cond = self._space_cond
        with cond:
            while True:
                mb = self._mailbox_for(master)
                fd_fetch_add(&mb.r.blocked, 1)
                # Pairs with the fence in _wake_blocked.
                fd_fence()
                try:
                    status = self._try_put(<PyObject *>mb, item)
                    if status == PUT_OK:
                        return 0
                    if status == PUT_CLOSED:
                        raise DispatcherClosed(self._reason)
                    if status == PUT_DEAD:
                        with nogil:
                            fd_thread_yield()
                        continue
                    if deadline < 0:
                        cond.wait()
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise errors.queue_full(master, self._capacity, "timeout")
                        cond.wait(remaining)
                finally:
                    fd_fetch_add(&mb.r.blocked, -1)

    cdef void _forget(self, _Mailbox mb) noexcept:
        # The entry is still this mailbox: only a DEAD mailbox's killer
        # deletes it, and setdefault never replaces an entry.
        try:
            del self._masters[mb.master]
        except KeyError:
            pass
        self._wake_idle_waiters()  # wait(master=...) waits for this

    cdef inline void _wake_idle_waiters(self) noexcept:
        if fd_load(&self._idle_waiters) > 0:
            self._notify(self._idle_cond)

    # -- workers -----------------------------------------------------------

    def run_worker(self):
        """Body of one worker thread; returns when closed and drained."""
        cdef Slot *slot = self._claim_slot()
        cdef Node *n
        cdef _Mailbox mb
        ident = threading.get_ident()
        self._worker_idents.add(ident)
        try:
            while True:
                with nogil:
                    n = self._next_node()
                if n == NULL:
                    self._retire_idle()  # closed: nothing can revive them
                    break
                while n != NULL:
                    mb = <_Mailbox>n.owner
                    if not self._run_mailbox(mb, slot):
                        Py_XDECREF(<PyObject *>mb)  # the ready queue's reference
                    n = rq_pop(&self._rq)
                mb = None  # a parked worker must not keep a master alive
        finally:
            self._worker_idents.discard(ident)
            fd_store(&slot.used, 0)
            fd_fetch_add(&self._live, -1)
            # Others may be parked waiting to see the last worker leave.
            fd_event_notify_all(&self._event)

    cdef Slot *_claim_slot(self) except NULL:
        cdef int64_t i, expected
        cdef int spins = 0
        while True:
            for i in range(self._max_workers):
                expected = 0
                if fd_cas(&self._slots[i].used, &expected, 1):
                    return &self._slots[i]
            # A worker that is leaving still holds its slot for an instant.
            with nogil:
                fd_backoff(&spins)

    cdef inline bint _should_exit(self) noexcept nogil:
        return fd_load(&self._intake) == CLOSED or fd_load(&self._shutdown) != 0

    cdef Node *_next_node(self) noexcept nogil:
        cdef Node *n
        cdef int64_t key
        while True:
            n = rq_pop(&self._rq)
            if n != NULL:
                return n
            if self._should_exit():
                return NULL
            if self._spin and fd_event_try_spin(&self._event):
                n = self._spin_for_work()
                if n != NULL:
                    return n
            key = fd_event_prepare(&self._event)
            n = rq_pop(&self._rq)
            if n != NULL:
                fd_event_cancel(&self._event)
                return n
            if self._should_exit():
                fd_event_cancel(&self._event)
                return NULL
            fd_event_wait(&self._event, key)

    cdef Node *_spin_for_work(self) noexcept nogil:
        """As the spinner: poll the ready queue for a bounded while, then
        stop spinning and take a mailbox if there is one."""
        cdef Node *n
        cdef int step = 0
        cdef int budget = <int>fd_load_relaxed(&self._spin_budget)
        while step < budget:
            if rq_peek(&self._rq) or self._should_exit():
                break
            fd_spin_pause(step)
            step += 1
        self._adapt_spin(step, budget)
        fd_event_stop_spin(&self._event)
        n = rq_pop(&self._rq)
        if n != NULL and rq_peek(&self._rq):
            # Producers skipped their wake-ups while this worker spun: the
            # rest of the queue goes to a parked worker, if there is one.
            if fd_event_take_token(&self._event):
                fd_event_notify_one(&self._event)
        return n

    cdef bint _linger(self, Ring *r) noexcept:
        """The mailbox r just ran dry: as the spinner, keep it a few
        microseconds; True if an item for it arrived meanwhile.

        A producer that feeds one master as fast as the worker drains it
        would otherwise find the mailbox freed after nearly every item and
        pay for a new one, a ready-queue trip and a wake-up."""
        cdef bint got
        if not self._spin or not fd_event_try_spin(&self._event):
            return False
        with nogil:
            got = self._linger_spin(r)
        return got

    cdef inline void _adapt_spin(self, int steps, int budget) noexcept nogil:
        """By the spinner, before it stops: a spin of `steps` out of `budget`."""
        if steps < budget:
            budget = 2 * budget
        else:
            budget -= budget // 4
        if budget < SPIN_MIN:
            budget = SPIN_MIN
        elif budget > SPIN_MAX:
            budget = SPIN_MAX
        fd_store(&self._spin_budget, budget)

    cdef bint _linger_spin(self, Ring *r) noexcept nogil:
        cdef int step = 0
        cdef bint got = False
        cdef int budget = <int>fd_load_relaxed(&self._spin_budget)
        while step < budget:
            if ring_queued(r) > 0:
                got = True
                break
            if rq_peek(&self._rq) or (fd_load(&self._intake) & CLOSED):
                break  # other masters are waiting: do not sit on this one
            fd_spin_pause(step)
            step += 1
        self._adapt_spin(step, budget)
        fd_event_stop_spin(&self._event)
        if not got and ring_queued(r) == 0:
            return False  # this worker goes on to the ready queue itself
        if rq_peek(&self._rq) and fd_event_take_token(&self._event):
            # Producers skipped their wake-ups while this worker spun, and it
            # stays with this master: a parked worker serves the others.
            fd_event_notify_one(&self._event)
        return True

    cdef bint _run_mailbox(self, _Mailbox mb, Slot *slot) noexcept:
        """Handle up to BATCH items; True if mb went back on the ready queue
        (keeping the queue's reference).

        The batch's items are counted finished together, once the mailbox's
        fate after them is settled (freed or requeued), so whoever wait()s
        sees the dispatcher idle with its mailboxes already gone, and the
        shared intake word takes one write per batch instead of per item.
        """
        cdef Ring *r = &mb.r
        cdef PyObject *p
        cdef int64_t done = 0  # items taken and run in this batch
        cdef bint requeued = False
        cdef int rc = RUN_OK
        if mb.runs:
            # An item back from its backoff runs before the queue (r.running
            # stayed 1 all along: it is the master's running item).
            done = 1
            rc = self._run_retry(mb, slot)
            if rc == RUN_OK:
                fd_store(&r.running, 0)
        while rc == RUN_OK:
            if done >= C_BATCH:
                if not self._rest(mb) and (fd_load(&r.word) & STATE_MASK) != DEAD:
                    # Fairness: hand the master back and serve the others first.
                    rq_push(&self._rq, &r.node)
                    fd_event_notify_one(&self._event)
                    requeued = True
                break
            fd_spin_lock(&r.lock)
            p = ring_pop(r)
            if p != NULL:
                # Under the lock, so _retire_idle never sees "nothing queued,
                # nothing running" between this pop and the handler call.
                fd_store(&r.running, 1)
            if r.oldest != r.head and (fd_load(&self._intake) & INFLIGHT_MASK) == 0:
                ring_reclaim(r)
            fd_spin_unlock(&r.lock)
            if p == NULL:
                if self._linger(r):
                    continue  # the master's next item came while we held on
                if self._rest(mb):
                    break
                if (fd_load(&r.word) & STATE_MASK) == DEAD:
                    break  # cancel_pending retired it (after close)
                continue  # a producer reserved a place just now
            done += 1
            if self._capacity >= 0:  # only a bounded queue has producers to wake
                self._wake_blocked(r)
            item = <object>p
            Py_XDECREF(p)  # the ring's reference; `item` holds its own
            rc = self._run_item(mb, item, slot)
            # Otherwise the master stays "running" until _let_go has parked
            # it: neither cancel() nor close() may retire it in between.
            if rc == RUN_OK:
                fd_store(&r.running, 0)
            item = None
        if rc == RUN_RETRY:
            done -= 1  # not finished: it runs again
        if rc != RUN_OK:
            # Before the batch counts finished: a wait() that sees the
            # failed item done must also see its master paused.
            requeued = self._let_go(mb, rc)
        if done:
            # Cleared first: in between, stats() over-count rather than
            # under-count, and a wait() returns only after the RMW.
            fd_store(&slot.owed, 0)
            self._finish(done)
        return requeued

    cdef bint _rest(self, _Mailbox mb) noexcept:
        """mb ran dry in this worker's hands: leave it IDLE in the map for
        its master's next item (False if an item came meanwhile).

        Without the GIL, and until a second thread dispatches, it is freed
        instead: a lone producer that revives a mailbox a worker has just
        written to pays cache misses and shared reference counts on it
        (S1 on 3.13t: ~25 % slower), while one that makes a new mailbox
        writes only memory of its own. Several producers, though, would
        find freed mailboxes half deleted and wait for them (S6: 3.5x).

        A map of more than IDLE_KEEP entries is swept once half as many
        mailboxes went idle since the last sweep: each sweep is paid for by
        as many rests as it looks at, and small maps (the common case, where
        the same masters come back) never pay for a shared counter."""
        cdef int64_t expected = 0
        cdef Py_ssize_t n
        if not fd_load_relaxed(&self._keep_idle):
            if not ring_try_kill(&mb.r, SCHEDULED):
                return False
            self._forget(mb)
            return True
        if not ring_try_idle(&mb.r):
            return False
        self._wake_idle_waiters()  # a wait(master=...) waits for this
        n = len(self._masters)
        if (n > C_IDLE_KEEP and 2 * (fd_fetch_add(&self._rested, 1) + 1) >= n
                and fd_cas(&self._sweeping, &expected, 1)):
            fd_store(&self._rested, 0)
            self._sweep()
            fd_store(&self._sweeping, 0)
        return True

    cdef void _sweep(self) noexcept:
        """Free every IDLE mailbox (nothing queued, nothing running, no
        worker holds it). Safe with producers about: the kill is one CAS
        that a reservation makes fail, and only its winner forgets."""
        cdef _Mailbox mb
        for mb in list(self._masters.values()):
            if ring_try_kill(&mb.r, IDLE):
                self._forget(mb)

    cdef int _run_item(self, _Mailbox mb, object item, Slot *slot) noexcept:
        cdef PyObject *res
        if type(item) is _Job:
            return self._run_job(mb, <_Job>item, slot)
        fd_store(&slot.running, 1)
        # Called through vectorcall, errors checked by hand: no try/except
        # bookkeeping on the path every item takes.
        res = fd_call1(self._handler, item)
        if res != NULL:
            Py_XDECREF(res)
            slot_done(slot, &slot.completed)
            fd_store(&slot.running, 0)
            return RUN_OK
        return self._handler_failed(mb, item, slot)

    cdef int _handler_failed(self, _Mailbox mb, object item, Slot *slot) noexcept:
        """With the handler's exception set: retry, or report it."""
        cdef PyObject *p = fd_take_exception()
        exc = <object>p
        Py_XDECREF(p)
        return self._failed_run(mb, item, exc, slot)

    cdef int _failed_run(self, _Mailbox mb, object item, object exc, Slot *slot) noexcept:
        """A run of *item* (plain or ``_Job``) raised *exc*: keep it for
        another run (RUN_RETRY), or count it failed and report it (to its
        future or on_error; RUN_PAUSE under pause_on_error)."""
        cdef int64_t runs = mb.runs + 1
        if self._retry is not None and runs < self._retry_attempts:
            try:
                retry = isinstance(exc, self._retry_on)
            except BaseException:
                retry = False  # a metaclass __instancecheck__ failed: the failure stands
            if retry:
                mb.retry_item = item
                mb.runs = runs
                fd_fetch_add(&self._retried, 1)
                # Counted running between runs, before the slot lets go of it.
                fd_fetch_add(&self._backoff, 1)
                fd_store(&slot.running, 0)
                return RUN_RETRY
        mb.runs = 0
        # Counted before the outcome is reported: whoever sees the future
        # done (or on_error called) also sees the count.
        slot_done(slot, &slot.failed)
        fd_store(&slot.running, 0)
        if type(item) is _Job:
            try:
                (<_Job>item).future.set_exception(exc)
            except BaseException:
                pass  # the caller resolved the future first; theirs stands
        else:
            self._report(exc, item, mb.master)
        return RUN_PAUSE if self._pause_on_error else RUN_OK

    cdef int _run_job(self, _Mailbox mb, _Job job, Slot *slot) noexcept:
        """A submitted item: its result or exception goes to its future."""
        fd_store(&slot.running, 1)
        try:
            if not job.future.set_running_or_notify_cancel():
                slot_done(slot, &slot.cancelled)
                return RUN_OK
            try:
                result = self._handler(job.work)
            except BaseException as exc:
                return self._failed_run(mb, job, exc, slot)
            else:
                slot_done(slot, &slot.completed)
                fd_store(&slot.running, 0)
                job.future.set_result(result)
        finally:
            fd_store(&slot.running, 0)
        return RUN_OK

    cdef int _run_retry(self, _Mailbox mb, Slot *slot) noexcept:
        """Run again the item *mb* kept for another run."""
        item = mb.retry_item
        mb.retry_item = None
        fd_store(&slot.running, 1)
        fd_fetch_add(&self._backoff, -1)  # after the slot counts it: never 0 running between
        work = (<_Job>item).work if type(item) is _Job else item
        try:
            result = self._handler(work)
        except BaseException as exc:
            return self._failed_run(mb, item, exc, slot)
        mb.runs = 0
        slot_done(slot, &slot.completed)
        fd_store(&slot.running, 0)
        if type(item) is _Job:
            try:
                (<_Job>item).future.set_result(result)
            except BaseException:
                pass  # the caller resolved the future first; theirs stands
        return RUN_OK

    cdef bint _let_go(self, _Mailbox mb, int rc) noexcept:
        """The worker stops serving *mb*: it waits for a retry (the timer
        hands it back) or pauses. True if it went back on the ready queue."""
        cdef list futures
        cdef list works
        cdef bint paused = False
        if rc == RUN_RETRY:
            # r.running stays 1: the item between runs is the master's running item.
            self._timer_schedule(self._retry.delay(mb.runs - 1), self._retry_due, mb)
            return False
        with self._control:
            if not (fd_load(&self._intake) & CLOSED):
                # SCHEDULED for sure: nobody retires a mailbox whose item runs.
                paused = ring_try_state(&mb.r, SCHEDULED, PAUSED)
                if paused:
                    self._paused[mb.master] = mb
                    fd_fetch_add(&self._npaused, 1)
        fd_store(&mb.r.running, 0)
        if paused:
            self._wake_idle_waiters()  # wait() does not wait for a paused master
            return False
        # After close nobody could resume the master: its items are
        # cancelled now (the next close() returns them), and the mailbox
        # goes round once more so that a worker retires it as usual.
        futures = []
        works = self._take(mb, futures)
        with self._control:
            for work in works:
                self._late.append((work, mb.master))
        for future in futures:
            future.cancel()
        if works:
            self._finish(len(works))
        rq_push(&self._rq, &mb.r.node)
        fd_event_notify_one(&self._event)
        return True

    def _retry_due(self, _Mailbox mb):
        """The timer: *mb*'s backoff is over, queue it again."""
        self._schedule(mb)

    cdef list _take(self, _Mailbox mb, list futures):
        """Take mb's queued items out (FIFO), counted cancelled; their
        futures go to *futures* (the caller cancels them, then _finish)."""
        cdef Ring *r = &mb.r
        cdef PyObject **buf
        cdef int64_t n = ring_queued(r), i
        cdef list works = []
        if n == 0:
            return works
        buf = <PyObject **>PyMem_RawMalloc(<size_t>n * sizeof(PyObject *))
        if buf == NULL:
            raise MemoryError()
        # No Python code may run under the spin lock (a worker spinning
        # on it may hold the GIL), so the items are collected first.
        fd_spin_lock(&r.lock)
        i = 0
        while i < n:
            buf[i] = ring_pop(r)
            if buf[i] == NULL:
                break
            i += 1
        fd_spin_unlock(&r.lock)
        n = i
        for i in range(n):
            item = <object>buf[i]
            Py_XDECREF(buf[i])
            if type(item) is _Job:
                futures.append((<_Job>item).future)
                works.append((<_Job>item).work)
            else:
                works.append(item)
        PyMem_RawFree(buf)
        item = None
        fd_fetch_add(&self._cancelled, n)
        self._wake_blocked(r)
        return works

    cdef void _report(self, exc, work, master) noexcept:
        # If on_error itself raises, Cython reports it as unraisable.
        self._on_error(exc, work, master)

    cdef void _finish(self, int64_t n) noexcept:
        cdef int64_t w = fd_fetch_add(&self._intake, -n * UNF_ONE)
        if (w >> UNF_SHIFT) == n:
            if fd_load(&self._idle_waiters) > 0:
                self._notify(self._idle_cond)
            if w & CLOSED:
                fd_event_notify_all(&self._event)
        elif fd_load(&self._npaused) > 0:
            # wait() does not wait for paused masters' items: this may be
            # the last item it does wait for.
            self._wake_idle_waiters()

    cdef inline void _wake_blocked(self, Ring *r) noexcept:
        """After taking items out of r: wake the producers waiting for room."""
        # The fence orders the store of `taken` before the read of `blocked`;
        # with the one in _put_blocking, either the producer sees the room or
        # this sees the producer.
        fd_fence()
        if fd_load(&r.blocked) > 0:
            self._notify(self._space_cond)

    cdef void _notify(self, cond) noexcept:
        with cond:
            cond.notify_all()

    def is_worker_thread(self):
        """Whether the calling thread is one of this core's workers."""
        return threading.get_ident() in self._worker_idents

    # -- shutdown ------------------------------------------------------------

    @property
    def closed(self):
        return (fd_load(&self._intake) & CLOSED) != 0

    def close_intake(self, reason):
        """Stop intake; return True for the call that closed it."""
        cdef int64_t old
        cdef int spins = 0
        # The reason is written before CLOSED is set and never after, so
        # producers that see CLOSED read a settled field (no GIL needed);
        # the lock keeps two racing closers from writing it together.
        with self._space_cond:
            if not (fd_load(&self._intake) & CLOSED):
                self._reason = reason
            old = fd_fetch_or(&self._intake, CLOSED)
        with nogil:
            while fd_load(&self._intake) & INFLIGHT_MASK:
                fd_backoff(&spins)
        self._notify(self._space_cond)
        fd_event_notify_all(&self._event)
        return not (old & CLOSED)

    def cancel_pending(self):
        """Take every queued, not started item out; return (work, master) pairs."""
        cdef list out = []
        cdef list futures = []
        cdef _Mailbox mb
        cdef int64_t total = 0
        for mb in list(self._masters.values()):
            for work in self._take(mb, futures):
                out.append((work, mb.master))
        total = len(out)
        self._retire_idle()
        if total:
            for future in futures:
                future.cancel()
            self._finish(total)
        return out

    def cancel_paused(self):
        """Take the queued items of every paused master out (they never run
        after close) and retire its mailbox; also return what workers
        cancelled for masters that failed after close. Pairs as
        ``cancel_pending``."""
        cdef list out = []
        cdef list futures = []
        cdef _Mailbox mb
        with self._control:
            paused = list(self._paused.values())
            self._paused.clear()
            fd_store(&self._npaused, 0)
            # Emptied in place, not replaced: the field is read under this
            # lock by workers, and a lock built on PyMutex (3.13t) is not
            # one ThreadSanitizer can see.
            late = self._late[:]
            self._late.clear()
        for mb in paused:
            for work in self._take(mb, futures):
                out.append((work, mb.master))
            # Called after close_intake: no producer can reserve any more.
            if ring_try_kill(&mb.r, PAUSED):
                self._forget(mb)
            elif ring_try_state(&mb.r, PAUSED, SCHEDULED):
                self._schedule(mb)
        if out:
            for future in futures:
                future.cancel()
            self._finish(len(out))
        out.extend(late)
        return out

    # -- per-master control --------------------------------------------------

    def cancel(self, master):
        """Take master's queued, not started items out (FIFO), counted
        cancelled, futures cancelled; never the running item."""
        cdef PyObject *p = NULL
        cdef _Mailbox mb
        cdef list futures = []
        cdef bint retired
        cdef int found = fd_dict_get_ref(self._masters, master, &p)
        if found < 0:
            _raise_unhashable(master)
        if found == 0:
            return []
        mb = <_Mailbox>p
        Py_XDECREF(p)  # mb holds its own reference
        works = self._take(mb, futures)
        # Nothing queued or running any more: free the mailbox now (its
        # worker, if one holds it between two items, sees it DEAD and lets
        # go), so that active_masters counts only masters with work.
        fd_spin_lock(&mb.r.lock)
        retired = fd_load(&mb.r.running) == 0 and ring_try_kill(&mb.r, SCHEDULED)
        fd_spin_unlock(&mb.r.lock)
        if retired:
            self._forget(mb)
        for future in futures:
            future.cancel()
        if works:
            self._finish(len(works))
            self._wake_idle_waiters()  # a wait(master=...) may wait for nothing now
        return works

    def resume(self, master):
        """A paused master runs again; any other master is left alone."""
        cdef _Mailbox mb
        with self._control:
            found = self._paused.pop(master, None)
            if found is None:
                return
            mb = <_Mailbox>found
            fd_fetch_add(&self._npaused, -1)
            # Nothing held: free it now, as a worker frees a drained mailbox
            # (a producer reserving meanwhile makes the kill fail).
            if ring_try_kill(&mb.r, PAUSED):
                mb = None
            else:
                ring_try_state(&mb.r, PAUSED, SCHEDULED)
        if mb is None:
            self._forget(<_Mailbox>found)
        else:
            self._schedule(mb)

    def paused(self):
        """The masters paused and not resumed."""
        with self._control:
            return frozenset(self._paused)

    cdef void _retire_idle(self) noexcept:
        """After close and cancel: free the mailboxes left with nothing queued
        or running (they may still sit on the ready queue; a worker that pops
        one drops it), so active_masters counts only masters with work."""
        cdef _Mailbox mb
        cdef bint retired
        if not (fd_load(&self._intake) & CLOSED):
            return  # with producers about, only a mailbox's owner may retire it
        for mb in list(self._masters.values()):
            fd_spin_lock(&mb.r.lock)
            retired = ring_try_kill(&mb.r, IDLE) or (
                fd_load(&mb.r.running) == 0 and ring_try_kill(&mb.r, SCHEDULED))
            fd_spin_unlock(&mb.r.lock)
            if retired:
                self._forget(mb)

    cdef bint _quiet(self, object master) except -1:
        """Nothing unfinished (of master, unless None), paused masters' items aside."""
        cdef PyObject *p = NULL
        cdef int64_t state, unfinished, held = 0
        cdef bint idle
        cdef _Mailbox mb
        cdef int found
        if master is None:
            unfinished = fd_load(&self._intake) >> UNF_SHIFT
            if unfinished == 0:
                return True
            if fd_load(&self._npaused) == 0:
                return False
            with self._control:
                for mb in self._paused.values():
                    held += ring_queued(&mb.r)
            return unfinished == held
        found = fd_dict_get_ref(self._masters, master, &p)
        if found < 0:
            _raise_unhashable(master)
        if found == 0:
            return True
        mb = <_Mailbox>p
        Py_XDECREF(p)
        state = fd_load(&mb.r.word) & STATE_MASK
        if state == DEAD or state == PAUSED:
            return True
        # Under the lock: a worker takes an item and marks it running in one step.
        fd_spin_lock(&mb.r.lock)
        idle = ring_queued(&mb.r) == 0 and fd_load(&mb.r.running) == 0
        fd_spin_unlock(&mb.r.lock)
        return idle

    def wait(self, timeout=None, master=None):
        """Block until every accepted item (of master, unless None) has
        finished, paused masters' items aside; False on timeout."""
        cdef double deadline = self._deadline(timeout)
        cdef double remaining
        if not self._quiet(master):
            fd_fetch_add(&self._idle_waiters, 1)
            try:
                with self._idle_cond:
                    while not self._quiet(master):
                        if deadline < 0:
                            self._idle_cond.wait()
                        else:
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                return False
                            self._idle_cond.wait(remaining)
            finally:
                fd_fetch_add(&self._idle_waiters, -1)
        # What was waited for is done: its masters' idle mailboxes go too.
        if master is None:
            self._sweep()
        else:
            self._retire_if_idle(master)
        return True

    cdef void _retire_if_idle(self, object master) noexcept:
        cdef PyObject *p = NULL
        cdef _Mailbox mb
        cdef int found = fd_dict_get_ref(self._masters, master, &p)
        if found < 0:
            Py_XDECREF(fd_take_exception())  # an __eq__ failing now: keep it
        if found <= 0:
            return
        mb = <_Mailbox>p
        Py_XDECREF(p)
        if ring_try_kill(&mb.r, IDLE):
            self._forget(mb)

    def after_fork_in_child(self, reason):
        """Make the copy inherited by a forked child closed and inert."""
        cdef int64_t i, owed = 0
        # Locks may have been held by threads that do not exist here.
        fd_event_init(&self._event)
        fd_mutex_init(&self._rq.lock)
        # Queued mailboxes keep their references: their state may be half
        # written by a thread that no longer exists, so they are left alone.
        rq_init(&self._rq)
        for i in range(self._max_workers):
            owed += self._slots[i].owed
            self._slots[i].used = 0
            self._slots[i].running = 0
            self._slots[i].owed = 0
        # Whatever the parent had not finished is the parent's to run.
        self._cancelled += (self._intake >> UNF_SHIFT) - owed
        self._reason = reason
        self._intake = CLOSED
        self._live = 0
        self._shutdown = 1
        self._idle_waiters = 0
        self._space_cond = threading.Condition()
        self._idle_cond = threading.Condition()
        self._worker_idents = set()
        self._masters = {}
        self._rested = 0
        self._sweeping = 0
        self._producer = 0
        self._backoff = 0
        self._npaused = 0
        self._control = threading.Lock()
        self._paused = {}
        self._late = []

    # -- introspection -------------------------------------------------------

    def pending(self, master):
        """Items queued for ``master`` (not counting the one running)."""
        cdef PyObject *p = NULL
        cdef _Mailbox mb
        cdef int found = fd_dict_get_ref(self._masters, master, &p)
        if found < 0:
            _raise_unhashable(master)
        if found == 0:
            return 0
        mb = <_Mailbox>p
        Py_XDECREF(p)  # mb holds its own reference
        return ring_queued(&mb.r)

    def stats(self):
        """(dispatched, completed, failed, cancelled, pending, running,
        active_masters, workers, retried, paused_masters)."""
        cdef int64_t i, completed = 0, failed = 0, cancelled = 0, running = 0, owed = 0
        cdef int64_t dispatched, pending, active = 0
        cdef _Mailbox mb
        for mb in list(self._masters.values()):
            if (fd_load(&mb.r.word) & STATE_MASK) != IDLE:
                active += 1
        for i in range(self._max_workers):
            completed += fd_load(&self._slots[i].completed)
            failed += fd_load(&self._slots[i].failed)
            cancelled += fd_load(&self._slots[i].cancelled)
            running += fd_load(&self._slots[i].running)
            owed += fd_load(&self._slots[i].owed)
        cancelled += fd_load(&self._cancelled)
        running += fd_load(&self._backoff)  # items between two runs
        # Accepted = not yet finished + finished. The unfinished count also
        # holds, for an instant, a producer's attempt that will be refused.
        dispatched = (fd_load(&self._intake) >> UNF_SHIFT) + completed + failed + cancelled - owed
        pending = dispatched - completed - failed - cancelled - running
        if pending < 0:
            pending = 0
        return (dispatched, completed, failed, cancelled, pending, running,
                active, fd_load(&self._live),
                fd_load(&self._retried), fd_load(&self._npaused))


cdef int _raise_unhashable(object master) except -1:
    """Called with the look-up's exception set: raise a clearer TypeError
    (anything else goes through untouched)."""
    cdef PyObject *p = fd_take_exception()
    exc = <object>p
    Py_XDECREF(p)
    if isinstance(exc, TypeError):
        raise errors.unhashable_master(master, exc) from exc
    raise exc


def _unpack_pair(pair):
    # A two-character string would unpack, but is never meant as a pair.
    if isinstance(pair, (str, bytes, bytearray)):
        raise errors.bad_pair(pair)
    try:
        work, master = pair
    except (TypeError, ValueError) as exc:
        raise errors.bad_pair(pair) from exc
    return work, master
