"""Randomised stress with invariants, against both cores.

Every round draws its whole shape (producers, masters, capacity, workers,
operations, faults, when and how ``close`` arrives) from
``random.Random(seed)`` and prints the seed, so a failing round replays:

    FASTDISPATCH_STRESS_SEED=<seed> pytest tests/test_stress.py -k quick -s

(thread interleavings still differ between runs; the seed fixes everything
else). The quick profile runs in the normal suite (a few seconds per core);
the long profile is ``@pytest.mark.stress`` and runs only when selected with
``-m stress``, for ``FASTDISPATCH_STRESS_SECONDS`` (default 60) per core.
``FASTDISPATCH_STRESS_REPORT=<path>`` appends one JSON line of totals per
test, which is where the figures in RELIABILITY.md come from.

Invariants checked after every round:

* nothing lost, nothing duplicated, nothing invented: every accepted item was
  handled exactly once, or returned by ``close(cancel_pending=True)``, or its
  future was cancelled; no item that was refused was ever handled;
* per-master order: for every (dispatching thread, master), handled items are
  in dispatch order, and every handled item precedes every returned one;
* mutual exclusion: no master ever ran on two workers at once;
* futures and ``on_error`` agree with what the handler did;
* retries run in position: a retried item's runs are back to back in its
  master's order, exactly ``attempts`` runs for an item that keeps failing,
  two for one that fails once; ``stats().retried`` counts the extra runs;
* ``cancel(master)`` (from a control thread, with pauses and resumes going
  on) returns each item at most once, FIFO, never one that ran;
* the accounting identity (docs/design.md), with every counter equal to what the
  producers observed, and ``pending == running == active_masters ==
  workers == 0`` after ``close``;
* exceptions are the documented ones: ``QueueFull`` only with a capacity and
  a caller that would not wait (or a worker), ``DispatcherClosed`` only once
  ``close`` has begun;
* no round stalls, and no worker thread outlives ``close``.
"""

from __future__ import annotations

import faulthandler
import itertools
import json
import os
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest

from fastdispatch import DispatcherClosed, QueueFull, Retry

QUICK_SECONDS = float(os.environ.get("FASTDISPATCH_STRESS_QUICK_SECONDS", "3"))
LONG_SECONDS = float(os.environ.get("FASTDISPATCH_STRESS_SECONDS", "60"))
SEED_ENV = "FASTDISPATCH_STRESS_SEED"
REPORT_ENV = "FASTDISPATCH_STRESS_REPORT"
#: Longest any single step of a round may take before the round counts as hung (raise it
#: under sanitizers, which slow everything down 5-50x).
HANG = float(os.environ.get("FASTDISPATCH_STRESS_HANG", "60"))
#: A worker's dispatch into a full queue must fail "at once"; this is generous.
AT_ONCE = 2.0


class Boom(Exception):
    """An ordinary handler failure."""


class BaseBoom(BaseException):
    """A handler failure that is not an ``Exception`` (the core must catch it too)."""


@dataclass(eq=False)
class Item:
    """One work item; identity is ``uid`` = (dispatching thread tag, sequence)."""

    uid: tuple[str, int]
    master: Any
    fail: str | None  # None, "exc", "base" or "once" (fails its first run only)
    child: tuple[Any, str, str | None] | None = None  # (master, op, fail) of a follow-up


@dataclass
class Totals:
    """Figures summed over the rounds of one test (reported, and asserted > 0)."""

    rounds: int = 0
    accepted: int = 0
    handled: int = 0
    returned: int = 0
    user_cancelled: int = 0
    failures_injected: int = 0
    base_failures_injected: int = 0
    children: int = 0
    queue_full: int = 0
    closed_while_blocked: int = 0
    mid_flight_closes: int = 0
    retried: int = 0
    pauses: int = 0
    master_cancels: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0

    def add(self, other: Totals) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


# --------------------------------------------------------------------------
# One round
# --------------------------------------------------------------------------


@dataclass
class Shape:
    """Everything a round decides up front, drawn from its seed."""

    seed: int
    producers: int
    items_per_producer: int
    hot: list[Any]
    cold: list[Any]
    hot_share: float
    capacity: int | None
    max_workers: int | None
    ops: dict[str, float]
    fail_rate: float
    base_fail_share: float
    child_rate: float
    user_cancel_rate: float
    gated: bool
    close_at: float | None  # fraction of planned items; None: after producers finish
    close_kind: str
    handler_as_object: bool
    yield_in_handler: bool  # let other threads run mid-handler, so overlaps show
    retry: tuple[int, float] | None  # (attempts, backoff) of a Retry on Boom
    pause_on_error: bool
    control_cancels: bool  # a control thread cancel()s masters while the round runs

    @classmethod
    def draw(cls, seed: int) -> Shape:
        rng = random.Random(seed)
        n_cold = rng.choice([10, 100, 1000, 5000])
        # Masters of mixed types: ints, strs and tuples all hash differently.
        cold = [rng.choice([i, f"c{i}", ("c", i)]) for i in range(n_cold)]
        hot = [f"hot{i}" for i in range(rng.randint(1, 4))]
        ops = {
            "dispatch": rng.random(),
            "dispatch_nowait": rng.random() * 0.3,
            "dispatch_timeout": rng.random() * 0.3,
            "submit": rng.random() * 0.7,
            "many": rng.random() * 0.5,
        }
        return cls(
            seed=seed,
            producers=rng.randint(1, 8),
            items_per_producer=rng.choice([50, 300, 1000, 3000]),
            hot=hot,
            cold=cold,
            hot_share=rng.choice([0.0, 0.5, 0.9, 0.99]),
            capacity=rng.choice([None, None, 1, 2, 4, 16]),
            max_workers=rng.choice([None, 1, 2, 3, 8]),
            ops=ops,
            fail_rate=rng.choice([0.0, 0.01, 0.2]),
            base_fail_share=rng.choice([0.0, 0.1, 0.5]),
            child_rate=rng.choice([0.0, 0.0, 0.05]),
            user_cancel_rate=rng.choice([0.0, 0.1]),
            gated=rng.random() < 0.3,
            close_at=rng.choice([None, None, 0.1, 0.5, 0.9]),
            close_kind=rng.choice(["close", "cancel", "nowait_then_cancel", "nowait_then_wait"]),
            handler_as_object=rng.random() < 0.5,
            yield_in_handler=rng.random() < 0.5,
            retry=rng.choice([None, None, (2, 0.0), (3, 0.0005)]),
            pause_on_error=rng.random() < 0.3,
            control_cancels=rng.random() < 0.3,
        )

    def runs(self, item: Item) -> int:
        """How many times *item* runs, once it runs."""
        if self.retry is None or item.fail not in ("exc", "once"):
            return 1
        return self.retry[0] if item.fail == "exc" else 2

    def fails(self, item: Item) -> bool:
        """Whether *item*'s last run fails (reaches on_error or its future)."""
        return item.fail in ("exc", "base") or (item.fail == "once" and self.retry is None)


class Round:
    """Runs one round against ``dispatcher_cls`` and checks its invariants."""

    def __init__(self, dispatcher_cls: type, shape: Shape) -> None:
        self.cls = dispatcher_cls
        self.shape = shape
        self.rng = random.Random(shape.seed ^ 0x5EED)
        self.lock = threading.Lock()
        # What the handler saw.
        self.running: Counter[Any] = Counter()
        self.overlaps: list[tuple[Any, Any]] = []
        self.handled: Counter[tuple[str, int]] = Counter()
        self.order: defaultdict[Any, list[tuple[str, int]]] = defaultdict(list)
        self.on_error_calls: list[tuple[BaseException, Any, Any]] = []
        # What the producers saw.
        self.accepted: dict[tuple[str, int], Item] = {}
        self.refused: dict[tuple[str, int], Item] = {}
        self.futures: dict[tuple[str, int], Future[Any]] = {}
        self.user_cancelled: set[tuple[str, int]] = set()
        self.returned: list[tuple[Any, Any]] = []
        self.master_cancelled: list[tuple[Any, Any]] = []  # from cancel(master)
        self.pauses = 0
        self.violations: list[str] = []
        self.stalls = 0
        self.queue_full = 0
        self.closed_while_blocked = 0
        self.children = 0
        self.child_seq = itertools.count()
        # Coordination.
        self.gate = threading.Event()
        if not shape.gated:
            self.gate.set()
        self.close_started = threading.Event()
        self.threshold = threading.Event()
        self.n_accepted = 0
        planned = shape.producers * shape.items_per_producer
        self.threshold_count = (
            max(1, int(planned * shape.close_at)) if shape.close_at is not None else None
        )
        self.dispatcher: Any = None

    # -- the handler ------------------------------------------------------

    def handle(self, item: Item) -> Any:
        master = item.master
        with self.lock:
            if self.running[master]:
                self.overlaps.append((master, item.uid))
            self.running[master] += 1
            self.handled[item.uid] += 1
            run = self.handled[item.uid]
            self.order[master].append(item.uid)
        try:
            if self.shape.yield_in_handler:
                time.sleep(0)
            if not self.gate.is_set() and not self.gate.wait(HANG):
                with self.lock:
                    self.stalls += 1
            if item.child is not None:
                self._dispatch_child(*item.child)
            if item.fail == "exc" or (item.fail == "once" and run == 1):
                raise Boom(item.uid)
            if item.fail == "base":
                raise BaseBoom(item.uid)
            return item.uid
        finally:
            with self.lock:
                self.running[master] -= 1

    def _dispatch_child(self, master: Any, op: str, fail: str | None) -> None:
        """Re-entrancy: a handler dispatches a follow-up item (depth 1)."""
        tag = f"w{threading.get_ident()}"
        child = Item((tag, next(self.child_seq)), master, fail)
        d = self.dispatcher
        t0 = time.monotonic()
        try:
            if op == "dispatch":
                d.dispatch(child, master)  # block=True: must not wait on itself
            elif op == "dispatch_nowait":
                d.dispatch(child, master, block=False)
            else:
                fut = d.submit(child, master)
                with self.lock:
                    self.futures[child.uid] = fut
        except QueueFull:
            self._queue_full(child, block=False)
            if time.monotonic() - t0 > AT_ONCE:
                self._violation(f"worker waited {time.monotonic() - t0:.1f}s for QueueFull")
            return
        except DispatcherClosed:
            self._closed(child, t0_blocked=False)
            return
        with self.lock:
            self.accepted[child.uid] = child
            self.children += 1

    def on_error(self, exc: BaseException, work: Any, master: Any) -> None:
        with self.lock:
            self.on_error_calls.append((exc, work, master))

    # -- outcome bookkeeping ---------------------------------------------

    def _violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)

    def _accept(self, items: list[Item]) -> None:
        with self.lock:
            for item in items:
                self.accepted[item.uid] = item
            self.n_accepted += len(items)
            if self.threshold_count is not None and self.n_accepted >= self.threshold_count:
                self.threshold.set()

    def _refuse(self, items: list[Item]) -> None:
        with self.lock:
            for item in items:
                self.refused[item.uid] = item

    def _queue_full(self, item: Item, *, block: bool, timeout: float | None = None) -> None:
        self._refuse([item])
        with self.lock:
            self.queue_full += 1
        if self.shape.capacity is None:
            self._violation(f"QueueFull without a capacity for {item.uid}")
        elif block and timeout is None and not self.close_started.is_set():
            # A producer willing to wait forever waits; only close may stop it.
            self._violation(f"QueueFull for a blocking dispatch of {item.uid}")

    def _closed(self, item: Item, *, t0_blocked: bool) -> None:
        self._refuse([item])
        if not self.close_started.is_set():
            self._violation(f"DispatcherClosed before close() for {item.uid}")
        elif t0_blocked:
            with self.lock:
                self.closed_while_blocked += 1

    # -- producers ----------------------------------------------------------

    def _plan(self, index: int) -> list[Item]:
        s = self.shape
        rng = random.Random(f"{s.seed}/{index}")
        items = []
        for seq in range(s.items_per_producer):
            hot = s.hot_share and rng.random() < s.hot_share
            master = rng.choice(s.hot) if hot else rng.choice(s.cold)
            fail = None
            if rng.random() < s.fail_rate:
                fail = "base" if rng.random() < s.base_fail_share else rng.choice(["exc", "once"])
            child = None
            if rng.random() < s.child_rate:
                child_fail = "exc" if rng.random() < s.fail_rate else None
                child = (
                    rng.choice(s.hot + s.cold[:10]),
                    rng.choice(["dispatch", "dispatch_nowait", "submit"]),
                    child_fail,
                )
            items.append(Item((f"p{index}", seq), master, fail, child))
        return items

    def produce(self, index: int, start: threading.Barrier) -> None:
        try:
            self._produce(index, start)
        except BaseException as exc:  # report, never let a thread die silently
            self._violation(f"producer {index} crashed: {exc!r}")

    def _produce(self, index: int, start: threading.Barrier) -> None:
        items = self._plan(index)
        rng = random.Random(f"{self.shape.seed}/ops/{index}")
        names = list(self.shape.ops)
        weights = [self.shape.ops[n] for n in names]
        d = self.dispatcher
        start.wait(HANG)
        i = 0
        while i < len(items):
            op = rng.choices(names, weights)[0]
            if op == "many":
                chunk = items[i : i + rng.randint(1, 16)]
                i += len(chunk)
                if not self._many(d, chunk, rng):
                    return
                continue
            item = items[i]
            i += 1
            block, timeout = True, None
            if op == "dispatch_nowait":
                block = False
            elif op == "dispatch_timeout":
                timeout = rng.choice([0.0, 0.0005, 0.005])
            was_closing = self.close_started.is_set()
            try:
                if op == "submit":
                    fut = d.submit(item, item.master, block=block, timeout=timeout)
                else:
                    d.dispatch(item, item.master, block=block, timeout=timeout)
                    fut = None
            except QueueFull:
                self._queue_full(item, block=block, timeout=timeout)
                continue
            except DispatcherClosed:
                self._closed(item, t0_blocked=not was_closing)
                return self._after_close(d, items[i:])
            self._accept([item])
            if fut is not None:
                with self.lock:
                    self.futures[item.uid] = fut
                if rng.random() < self.shape.user_cancel_rate and fut.cancel():
                    with self.lock:
                        self.user_cancelled.add(item.uid)

    def _many(self, d: Any, chunk: list[Item], rng: random.Random) -> bool:
        """dispatch_many a chunk; False once the dispatcher is closed."""
        pairs: Any = [(it, it.master) for it in chunk]
        if rng.random() < 0.5:
            pairs = iter(pairs)  # an iterator, not a sized sequence
        block = rng.random() < 0.8
        timeout = None if rng.random() < 0.8 else 0.001
        was_closing = self.close_started.is_set()
        try:
            n = d.dispatch_many(pairs, block=block, timeout=timeout)
        except (QueueFull, DispatcherClosed) as exc:
            accepted = getattr(exc, "accepted", None)
            if not isinstance(accepted, int) or not 0 <= accepted < len(chunk):
                self._violation(f"dispatch_many raised {exc!r} with accepted={accepted!r}")
                accepted = 0
            self._accept(chunk[:accepted])
            rest = chunk[accepted:]
            if isinstance(exc, QueueFull):
                self._queue_full(rest[0], block=block, timeout=timeout)
                self._refuse(rest)
                return True
            self._closed(rest[0], t0_blocked=not was_closing)
            self._refuse(rest)
            return False
        if n != len(chunk):
            self._violation(f"dispatch_many returned {n} for {len(chunk)} items")
        self._accept(chunk)
        return True

    def _after_close(self, d: Any, rest: list[Item]) -> None:
        """Once closed, every intake path refuses, and keeps refusing."""
        for item in rest[:3]:
            for call in (
                lambda it=item: d.dispatch(it, it.master),
                lambda it=item: d.submit(it, it.master, block=False),
                lambda it=item: d.dispatch_many([(it, it.master)]),
            ):
                try:
                    call()
                except DispatcherClosed:
                    continue
                except BaseException as exc:
                    self._violation(f"after close, intake raised {exc!r}")
                    continue
                self._accept([item])
                self._violation(f"after close, {item.uid} was accepted")
        self._refuse(rest)

    # -- close, the gate, and a monitor -------------------------------------

    def closer(self, producers_done: threading.Event) -> None:
        try:
            self._closer(producers_done)
        except BaseException as exc:
            self._violation(f"closer crashed: {exc!r}")

    def _closer(self, producers_done: threading.Event) -> None:
        d, s = self.dispatcher, self.shape
        if self.threshold_count is None:
            producers_done.wait(HANG)
        else:
            # With gated handlers and a capacity, the threshold may be out of
            # reach: then close anyway, with the producers blocked.
            self.threshold.wait(self.rng.choice([0.05, 0.2, 0.5]))
        if s.gated:
            # Open the gate (if its timer has not) a little before, at, or after
            # close begins.
            delay = self.rng.choice([0.0, 0.002, 0.02])
            threading.Timer(delay, self.gate.set).start()
        self.close_started.set()
        if s.close_kind == "close":
            self.returned += d.close()
        elif s.close_kind == "cancel":
            self.returned += d.close(cancel_pending=True)
        elif s.close_kind == "nowait_then_cancel":
            self.returned += self._close_nowait(d)
            time.sleep(self.rng.choice([0.0, 0.001, 0.01]))
            self.returned += d.close(cancel_pending=True)
        else:
            self.returned += self._close_nowait(d)
            if not d.wait(HANG):
                self._violation("wait() after close(wait=False) timed out")
        got = d.close()
        if got and not s.pause_on_error:
            self._violation("a second close() returned items")
        # With pause_on_error a master that failed after the first close
        # had its items cancelled by its worker; the next close returns them.
        self.returned += got

    def _close_nowait(self, d: Any) -> list[tuple[Any, Any]]:
        """close(wait=False): only paused masters' items come back."""
        got: list[tuple[Any, Any]] = d.close(wait=False)
        if got and not self.shape.pause_on_error:
            self._violation(f"close(wait=False) returned {len(got)} items")
        return got

    def controller(self, stop: threading.Event) -> None:
        """Resumes paused masters and cancels masters while the round runs."""
        d, s = self.dispatcher, self.shape
        rng = random.Random(s.seed ^ 0xC0)
        watch = s.hot + s.cold[:3]
        try:
            while not stop.wait(0.001):
                if s.pause_on_error and rng.random() < 0.7:
                    for master in d.paused():
                        self.pauses += 1
                        d.resume(master)
                if s.control_cancels and rng.random() < 0.2:
                    master = rng.choice(watch)
                    works = d.cancel(master)
                    self.master_cancelled += [(w, master) for w in works]
        except BaseException as exc:
            self._violation(f"controller crashed: {exc!r}")

    def monitor(self, stop: threading.Event) -> None:
        """Samples counters while the round runs: never negative, never over capacity."""
        d, s = self.dispatcher, self.shape
        watch = s.hot + s.cold[:3]
        try:
            while not stop.wait(0.002):
                st = d.stats()
                if min(st) < 0:
                    self._violation(f"negative counter in {st}")
                if st.pending + st.running > st.dispatched:
                    self._violation(f"pending+running exceed dispatched in {st}")
                if s.capacity is not None:
                    for m in watch:
                        n = d.pending(m)
                        if not 0 <= n <= s.capacity:
                            self._violation(f"pending({m!r}) = {n} with capacity {s.capacity}")
        except BaseException as exc:
            self._violation(f"monitor crashed: {exc!r}")

    # -- the round ----------------------------------------------------------

    def run(self) -> Totals:
        s = self.shape
        prefix = f"fdstress{s.seed}x"
        handler: Any = self if s.handler_as_object else self.handle
        self.dispatcher = d = self.cls(
            handler,
            max_workers=s.max_workers,
            capacity=s.capacity,
            on_error=self.on_error,
            thread_name_prefix=prefix,
            retry=None if s.retry is None else Retry(*s.retry, retry_on=Boom),
            pause_on_error=s.pause_on_error,
        )
        start = threading.Barrier(s.producers + 1)
        producers = [
            threading.Thread(target=self.produce, args=(i, start), name=f"producer-{i}")
            for i in range(s.producers)
        ]
        producers_done = threading.Event()
        closer = threading.Thread(target=self.closer, args=(producers_done,), name="closer")
        stop_monitor = threading.Event()
        monitor = threading.Thread(target=self.monitor, args=(stop_monitor,), name="monitor")
        controller = threading.Thread(
            target=self.controller, args=(stop_monitor,), name="controller"
        )
        # Gated handlers hold every worker until the gate opens, so queues fill
        # and (with a capacity) producers block; the gate opens on a timer, or
        # when close begins, whichever is first.
        opener = threading.Timer(self.rng.choice([0.01, 0.05, 0.2]), self.gate.set)
        try:
            opener.start()
            for t in producers:
                t.start()
            closer.start()
            monitor.start()
            controller.start()
            start.wait(HANG)
            for t in producers:
                self._join(t)
            producers_done.set()
            self._join(closer)
            self.gate.set()
            self.returned += d.close()  # idempotent; joins the workers
        finally:
            opener.cancel()
            self.gate.set()
            stop_monitor.set()
            producers_done.set()
            self.close_started.set()
            d.close(wait=False)
        self._join(monitor)
        self._join(controller)
        self._join_workers(prefix)
        return self.check()

    def _join(self, t: threading.Thread) -> None:
        t.join(HANG)
        if t.is_alive():
            faulthandler.dump_traceback(all_threads=True)
            pytest.fail(f"seed {self.shape.seed}: thread {t.name} hung for {HANG}s")

    def _join_workers(self, prefix: str) -> None:
        for t in threading.enumerate():
            if t.name.startswith(prefix):
                t.join(HANG)
                if t.is_alive():
                    self.violations.append(f"worker {t.name} still alive after close()")

    # -- invariants -----------------------------------------------------------

    def check(self) -> Totals:
        s, d = self.shape, self.dispatcher
        where = f"seed {s.seed} ({s})"
        v = list(self.violations)
        if self.overlaps:
            v.append(f"masters ran on two workers at once: {self.overlaps[:5]}")
        if self.stalls:
            v.append(f"{self.stalls} handlers waited {HANG}s on the gate")

        returned_uids: list[tuple[str, int]] = []
        for pair in self.returned:
            work, master = pair
            if not isinstance(work, Item) or master != work.master:
                v.append(f"close returned a foreign pair {pair!r}")
                continue
            returned_uids.append(work.uid)
        taken_uids: list[tuple[str, int]] = []  # by cancel(master)
        for pair in self.master_cancelled:
            work, master = pair
            if not isinstance(work, Item) or master != work.master:
                v.append(f"cancel returned a foreign item {pair!r}")
                continue
            taken_uids.append(work.uid)
        returned = set(returned_uids) | set(taken_uids)
        accepted = set(self.accepted)
        handled = set(self.handled)
        cancelled = returned | (self.user_cancelled & accepted)

        duplicated = [
            u
            for u, n in self.handled.items()
            if u in self.accepted and n != s.runs(self.accepted[u])
        ]
        duplicated += [u for u, n in Counter(returned_uids + taken_uids).items() if n > 1]
        duplicated += sorted(handled & returned)
        duplicated += sorted(handled & self.user_cancelled)
        invented = (handled | returned) - accepted
        lost = accepted - handled - cancelled
        if duplicated:
            v.append(f"{len(duplicated)} duplicated, e.g. {duplicated[:5]}")
        if invented:
            v.append(f"{len(invented)} refused items handled/returned: {sorted(invented)[:5]}")
        if lost:
            v.append(f"{len(lost)} accepted items lost: {sorted(lost)[:5]}")

        v += self._check_order(returned_uids) + self._check_cancels(taken_uids)
        v += self._check_outcomes(returned)

        failed = {u for u in handled & accepted if s.fails(self.accepted[u])}
        retried = sum(s.runs(self.accepted[u]) - 1 for u in handled & accepted)
        st = d.stats()
        expected = {
            "dispatched": len(accepted),
            "completed": len(handled - failed),
            "failed": len(failed),
            "cancelled": len(cancelled),
            "pending": 0,
            "running": 0,
            "active_masters": 0,
            "workers": 0,
            "retried": retried,
            "paused_masters": 0,
        }
        for name, want in expected.items():
            if getattr(st, name) != want:
                v.append(f"stats().{name} = {getattr(st, name)}, expected {want}: {st}")
        if st.dispatched != st.completed + st.failed + st.cancelled + st.pending + st.running:
            v.append(f"accounting identity broken: {st}")
        if not d.closed:
            v.append("closed is False after close()")

        if v:
            pytest.fail(f"{where}\n  " + "\n  ".join(v[:20]), pytrace=False)
        n_fail = sum(1 for u in handled if self.accepted[u].fail)
        return Totals(
            rounds=1,
            accepted=len(accepted),
            handled=len(handled),
            returned=len(returned),
            user_cancelled=len(self.user_cancelled & accepted - returned),
            failures_injected=n_fail,
            base_failures_injected=sum(1 for u in handled if self.accepted[u].fail == "base"),
            children=self.children,
            queue_full=self.queue_full,
            closed_while_blocked=self.closed_while_blocked,
            mid_flight_closes=int(s.close_at is not None),
            retried=retried,
            pauses=self.pauses,
            master_cancels=len(taken_uids),
        )

    def _check_order(self, returned_uids: list[tuple[str, int]]) -> list[str]:
        """Per (dispatching thread, master): handled in order, then returned in order."""
        v = []
        last_handled: dict[tuple[str, Any], int] = {}
        for master, uids in self.order.items():
            previous = None
            for uid in uids:
                if uid == previous:
                    continue  # a retry: the same item again, back to back
                previous = uid
                tag, seq = uid
                key = (tag, master)
                if last_handled.get(key, -1) >= seq:
                    v.append(f"master {master!r}: {tag} #{seq} ran after #{last_handled[key]}")
                last_handled[key] = seq
        last_returned: dict[tuple[str, Any], int] = {}
        for uid in returned_uids:
            item = self.accepted.get(uid)
            if item is None:
                continue
            key = (uid[0], item.master)
            if last_returned.get(key, -1) >= uid[1]:
                v.append(f"close returned {uid} after #{last_returned[key]} (not FIFO)")
            if last_handled.get(key, -1) >= uid[1]:
                v.append(f"{uid} was returned but a later item of its master ran")
            last_returned[key] = uid[1]
        return v[:10]

    def _check_cancels(self, taken_uids: list[tuple[str, int]]) -> list[str]:
        """cancel(master) returned each master's items FIFO (per dispatching thread)."""
        v = []
        last: dict[tuple[str, Any], int] = {}
        for uid in taken_uids:
            item = self.accepted.get(uid)
            if item is None:
                continue
            key = (uid[0], item.master)
            if last.get(key, -1) >= uid[1]:
                v.append(f"cancel returned {uid} after #{last[key]} (not FIFO)")
            last[key] = uid[1]
        return v[:10]

    def _check_outcomes(self, returned: set[tuple[str, int]]) -> list[str]:
        """Futures and on_error calls agree with what the handler did."""
        v = []
        errors_for = {}
        for exc, work, master in self.on_error_calls:
            uid = getattr(work, "uid", None)
            if uid in errors_for:
                v.append(f"on_error called twice for {uid}")
            errors_for[uid] = exc
            if master != getattr(work, "master", object()):
                v.append(f"on_error got master {master!r} for {uid}")
        for uid, item in self.accepted.items():
            fut = self.futures.get(uid)
            ran = uid in self.handled
            if fut is None:  # dispatched: failures go to on_error
                exc = errors_for.pop(uid, None)
                fails = self.shape.fails(item)
                if ran and fails and not isinstance(exc, (Boom, BaseBoom)):
                    v.append(f"on_error not called for failing {uid} (got {exc!r})")
                if exc is not None and not (ran and fails):
                    v.append(f"on_error called for {uid} which did not fail")
                continue
            if uid in errors_for:
                v.append(f"on_error called for submitted {uid}")
            if not fut.done():
                v.append(f"future of {uid} not done after close")
            elif uid in returned or uid in self.user_cancelled:
                if not fut.cancelled():
                    v.append(f"future of cancelled {uid} is not cancelled")
            elif fut.cancelled():
                v.append(f"future of {uid} cancelled, but the item ran")
            elif self.shape.fails(item):
                want = BaseBoom if item.fail == "base" else Boom
                if not isinstance(fut.exception(0), want):
                    v.append(f"future of {uid}: {fut.exception(0)!r}, expected {want}")
            elif fut.result(0) != uid:
                v.append(f"future of {uid} holds {fut.result(0)!r}")
        if errors_for:
            v.append(f"on_error for unknown work: {list(errors_for)[:5]}")
        return v[:10]


# --------------------------------------------------------------------------
# Driving rounds
# --------------------------------------------------------------------------


def seeds() -> Iterator[int]:
    """The replay seed alone, or fresh random seeds for as long as the caller asks."""
    replay = os.environ.get(SEED_ENV)
    if replay:
        yield int(replay)
        return
    source = random.SystemRandom()
    while True:
        yield source.randrange(2**32)


def run_rounds(dispatcher_cls: type, budget: float, label: str) -> Totals:
    totals = Totals()
    deadline = time.monotonic() + budget
    for seed in seeds():
        shape = Shape.draw(seed)
        print(f"[{label}] stress round seed={seed} ...", end="", flush=True)
        t0 = time.monotonic()
        totals.add(Round(dispatcher_cls, shape).run())
        print(f" ok in {time.monotonic() - t0:.2f}s", flush=True)
        # Stop once the budget is spent, but not before some item was handled (a slow
        # machine may spend the whole budget on one round that close() cancelled).
        if time.monotonic() >= deadline and (totals.handled or totals.rounds >= 20):
            break
    print(f"[{label}] {totals}", flush=True)
    report = os.environ.get(REPORT_ENV)
    if report:
        with open(report, "a", encoding="utf-8") as f:
            f.write(
                json.dumps({"test": label, "python": sys.version.split()[0], **totals.__dict__})
                + "\n"
            )
    # A stress run that exercised nothing proves nothing.
    assert totals.rounds >= 1 and totals.handled > 0, totals
    return totals


def core_label(dispatcher_cls: type) -> str:
    return getattr(dispatcher_cls._Core, "__module__", "?").rsplit(".", 1)[-1]


def test_stress_quick(Dispatcher: type) -> None:
    """A few seconds of random rounds per core, in every test run."""
    run_rounds(Dispatcher, QUICK_SECONDS, f"quick/{core_label(Dispatcher)}")


@pytest.mark.stress
@pytest.mark.timeout(int(LONG_SECONDS * 3 + 300))
def test_stress_long(Dispatcher: type, request: pytest.FixtureRequest) -> None:
    """Minutes of random rounds per core; only with ``-m stress``."""
    if "stress" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long stress run: select it with -m stress")
    run_rounds(Dispatcher, LONG_SECONDS, f"long/{core_label(Dispatcher)}")


def test_shapes_cover_the_space() -> None:
    """The shape generator really produces every kind of round (else stress tests less)."""
    shapes = [Shape.draw(seed) for seed in range(200)]
    assert {s.close_kind for s in shapes} == {
        "close",
        "cancel",
        "nowait_then_cancel",
        "nowait_then_wait",
    }
    assert any(s.capacity is None for s in shapes) and any(s.capacity == 1 for s in shapes)
    assert any(s.gated and s.capacity and s.close_at for s in shapes)
    assert any(s.base_fail_share and s.fail_rate for s in shapes)
    assert any(s.child_rate and s.capacity for s in shapes)
    assert any(s.max_workers == 1 for s in shapes) and any(s.max_workers is None for s in shapes)
    assert any(s.retry and s.fail_rate for s in shapes)
    assert any(s.pause_on_error and s.fail_rate and s.control_cancels for s in shapes)
    assert Shape.draw(7) == Shape.draw(7)  # a seed replays its shape
