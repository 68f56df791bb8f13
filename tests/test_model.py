"""Model-based test: the dispatcher against a sequential model of its contract.

Hypothesis drives random sequences of dispatch / submit / dispatch_many /
pending / stats / wait / wait(master=) / cancel(master) /
close(cancel_pending) and bad input, on both cores,
and compares every observable result with a model that is exact.

Making the model exact: every handler blocks on a *gate* that is closed
between rules. After each rule the machine *settles*: it waits (on a
condition variable the handler signals) until ``min(max_workers, busy
masters)`` handlers have started, which a work-conserving dispatcher must
reach; from then on nothing moves, so which item runs and which are queued is
known exactly (and the running one must be the head of its master's queue).
The ``release`` rule opens the gate, ``wait()``s, checks that everything ran
in dispatch order, and closes the gate again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fastdispatch import DispatcherClosed, QueueFull

MASTERS = ["a", "b", "c", 7, ("t", 1)]
#: Generous bound on anything that should happen promptly (a worker starting).
PROMPT = 5.0


class Boom(Exception):
    pass


@dataclass(eq=False)
class Job:
    id: int
    master: Any
    fail: bool


class Handler:
    """Records starts and finishes; blocks every call on the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.cv = threading.Condition()
        self.in_handler: dict[Any, Job] = {}
        self.overlap: list[Job] = []
        self.finished: list[Job] = []

    def handle(self, job: Job) -> int:
        with self.cv:
            if job.master in self.in_handler:
                self.overlap.append(job)
            self.in_handler[job.master] = job
            self.cv.notify_all()
        self.gate.wait(PROMPT * 6)
        with self.cv:
            del self.in_handler[job.master]
            self.finished.append(job)
            self.cv.notify_all()
        if job.fail:
            raise Boom(job.id)
        return job.id


class DispatcherMachine(RuleBasedStateMachine):
    cls: type  # set by the test, per core

    def __init__(self) -> None:
        super().__init__()
        self.d: Any = None
        self.h = Handler()
        self.next_id = 0
        self.queued: dict[Any, deque[Job]] = {}
        self.running: dict[Any, Job] = {}
        self.futures: dict[int, Future[Any]] = {}
        self.expect_order: dict[Any, list[int]] = {}
        self.errors: list[tuple[BaseException, Any, Any]] = []
        self.dispatched = self.completed = self.failed = self.cancelled = 0
        self.closed = False
        self.capacity: int | None = None
        self.workers = 1

    # -- helpers ------------------------------------------------------------

    def job(self, master: Any, fail: bool) -> Job:
        self.next_id += 1
        return Job(self.next_id, master, fail)

    def outstanding(self) -> int:
        return sum(len(q) for q in self.queued.values()) + len(self.running)

    def full(self, master: Any) -> bool:
        return self.capacity is not None and len(self.queued.get(master, ())) >= self.capacity

    def accept(self, job: Job) -> None:
        self.queued.setdefault(job.master, deque()).append(job)
        self.expect_order.setdefault(job.master, []).append(job.id)
        self.dispatched += 1

    def settle(self) -> None:
        """Wait until every worker that can start an item has; then check the heads."""
        busy = {m for m, q in self.queued.items() if q} | set(self.running)
        want = min(self.workers, len(busy))
        with self.h.cv:
            ok = self.h.cv.wait_for(lambda: len(self.h.in_handler) >= want, PROMPT)
            now = dict(self.h.in_handler)
        assert ok, f"only {len(now)} of {want} busy masters started (max_workers={self.workers})"
        assert len(now) == want, f"{len(now)} handlers running, expected {want}"
        for master, job in now.items():
            if master in self.running:
                assert self.running[master] is job, "a blocked handler was replaced"
                continue
            q = self.queued.get(master)
            assert q and q[0] is job, f"master {master!r} started {job} out of order"
            self.running[master] = q.popleft()
        assert not self.h.overlap, f"masters ran twice at once: {self.h.overlap}"

    # -- lifecycle ------------------------------------------------------------

    @initialize(
        capacity=st.one_of(st.none(), st.integers(1, 3)),
        workers=st.integers(1, 3),
        as_object=st.booleans(),
    )
    def start(self, capacity: int | None, workers: int, as_object: bool) -> None:
        self.capacity, self.workers = capacity, workers
        handler = self.h if as_object else self.h.handle
        self.d = self.cls(
            handler,
            max_workers=workers,
            capacity=capacity,
            on_error=lambda exc, w, m: self.errors.append((exc, w, m)),
            thread_name_prefix="fdmodel",
        )

    def teardown(self) -> None:
        if self.d is None:
            return
        self.h.gate.set()
        try:
            assert self.d.close() == []
            assert self.d.wait(PROMPT)
            st_ = self.d.stats()
            assert st_.pending == st_.running == st_.active_masters == 0, st_
            assert st_.dispatched == st_.completed + st_.failed + st_.cancelled, st_
            assert st_.workers == 0, st_
        finally:
            self.d.close(wait=False)

    # -- intake ---------------------------------------------------------------

    @precondition(lambda self: not self.closed)
    @rule(master=st.sampled_from(MASTERS), fail=st.booleans(), how=st.sampled_from(["d", "s"]))
    def dispatch(self, master: Any, fail: bool, how: str) -> None:
        job = self.job(master, fail)
        full = self.full(master)
        block = not full  # a blocking call on a full queue would wait for the gate
        try:
            if how == "s":
                fut = self.d.submit(job, master, block=block)
            else:
                self.d.dispatch(job, master, block=block)
        except QueueFull:
            assert full, f"QueueFull for {master!r} with {len(self.queued.get(master, ()))} queued"
            return
        assert not full, f"{master!r} is full, yet dispatch(block=False) accepted"
        if how == "s":
            self.futures[job.id] = fut
        self.accept(job)
        self.settle()

    @precondition(lambda self: not self.closed and self.capacity is not None)
    @rule(master=st.sampled_from(MASTERS), how=st.sampled_from(["d", "s"]))
    def dispatch_times_out_on_full(self, master: Any, how: str) -> None:
        while not self.full(master):  # fill it first
            job = self.job(master, False)
            self.d.dispatch(job, master, block=False)
            self.accept(job)
            self.settle()
        job = self.job(master, False)
        t0 = time.monotonic()
        with pytest.raises(QueueFull):
            if how == "s":
                self.d.submit(job, master, timeout=0.02)
            else:
                self.d.dispatch(job, master, timeout=0.02)
        assert time.monotonic() - t0 >= 0.015, "QueueFull before the timeout ran out"

    @precondition(lambda self: not self.closed)
    @rule(
        masters=st.lists(st.sampled_from(MASTERS), min_size=1, max_size=4, unique=True),
        fails=st.lists(st.booleans(), min_size=4, max_size=4),
    )
    def dispatch_many(self, masters: list[Any], fails: list[bool]) -> None:
        # Distinct masters: whether a second item for the same master fits would
        # depend on whether a worker took the first one yet.
        jobs = [self.job(m, f) for m, f in zip(masters, fails, strict=False)]
        fits = 0
        while fits < len(jobs) and not self.full(jobs[fits].master):
            fits += 1
        if fits == len(jobs):
            assert self.d.dispatch_many((j, j.master) for j in jobs) == len(jobs)
        else:
            with pytest.raises(QueueFull) as info:
                self.d.dispatch_many([(j, j.master) for j in jobs], block=False)
            assert info.value.accepted == fits
        for j in jobs[:fits]:
            self.accept(j)
        self.settle()

    @precondition(lambda self: not self.closed and self.capacity is not None)
    @rule(master=st.sampled_from(MASTERS), then_close=st.booleans())
    def blocked_producer(self, master: Any, then_close: bool) -> None:
        """A producer blocked on a full queue is released by a worker, or by close()."""
        while not self.full(master):
            job = self.job(master, False)
            self.d.dispatch(job, master)
            self.accept(job)
            self.settle()
        job = self.job(master, False)
        outcome: list[BaseException | None] = []
        entered = threading.Event()

        def produce() -> None:
            entered.set()
            try:
                self.d.dispatch(job, master, timeout=PROMPT)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=produce)
        t.start()
        entered.wait(PROMPT)
        t.join(0.05)
        assert t.is_alive(), f"dispatch to a full queue did not block: {outcome}"
        if then_close:
            assert self.d.close(wait=False) == []
            self.closed = True
            t.join(PROMPT)
            assert not t.is_alive()
            assert len(outcome) == 1 and isinstance(outcome[0], DispatcherClosed), outcome
            return
        # Open the gate: workers drain the queue, the producer gets its slot.
        self.h.gate.set()
        t.join(PROMPT)
        assert not t.is_alive() and outcome == [None], outcome
        self.accept(job)
        self.release()

    @precondition(lambda self: self.closed)
    @rule(master=st.sampled_from(MASTERS), how=st.sampled_from(["d", "s", "m"]))
    def intake_after_close(self, master: Any, how: str) -> None:
        job = self.job(master, False)
        with pytest.raises(DispatcherClosed) as info:
            if how == "d":
                self.d.dispatch(job, master)
            elif how == "s":
                self.d.submit(job, master)
            else:
                self.d.dispatch_many([(job, master)])
        if how == "m":
            assert info.value.accepted == 0

    @precondition(lambda self: not self.closed)  # closed: which error wins is unspecified
    @rule(
        bad=st.sampled_from(
            [
                "unhashable",
                "submit-unhashable",
                "negative-timeout",
                "many-unhashable",
                "many-not-pairs",
            ]
        )
    )
    def bad_input(self, bad: str) -> None:
        """Wrong arguments raise and change nothing (the next checks prove the latter)."""
        job = self.job("a", False)
        if bad == "unhashable":
            with pytest.raises(TypeError, match="hashable"):
                self.d.dispatch(job, ["a", "list"])
        elif bad == "negative-timeout":
            with pytest.raises(ValueError):
                self.d.dispatch(job, "a", timeout=-1)
        elif bad == "submit-unhashable":
            with pytest.raises(TypeError, match="hashable"):
                self.d.submit(job, {"a"})
        elif bad == "many-unhashable":
            with pytest.raises(TypeError) as info:
                self.d.dispatch_many([(job, {"a": 1})])
            assert getattr(info.value, "accepted", 0) == 0
        else:
            with pytest.raises((TypeError, ValueError)):
                self.d.dispatch_many([job])

    # -- observation ----------------------------------------------------------

    @rule(master=st.sampled_from([*MASTERS, "never-used"]))
    def pending(self, master: Any) -> None:
        assert self.d.pending(master) == len(self.queued.get(master, ()))

    @rule()
    def stats(self) -> None:
        s = self.d.stats()
        queued = sum(len(q) for q in self.queued.values())
        busy = {m for m, q in self.queued.items() if q} | set(self.running)
        assert s.dispatched == self.dispatched, s
        assert s.completed == self.completed, s
        assert s.failed == self.failed, s
        assert s.cancelled == self.cancelled, s
        assert s.pending == queued, s
        assert s.running == len(self.running), s
        assert s.active_masters == len(busy), s
        assert len(self.running) <= s.workers <= self.workers, s
        assert s.dispatched == s.completed + s.failed + s.cancelled + s.pending + s.running

    @rule()
    def wait_short(self) -> None:
        assert self.d.wait(timeout=0.01) is (self.outstanding() == 0)

    @rule(master=st.sampled_from([*MASTERS, "never-used"]))
    def wait_master(self, master: Any) -> None:
        busy = bool(self.queued.get(master)) or master in self.running
        assert self.d.wait(timeout=0.01, master=master) is not busy

    @rule(master=st.sampled_from([*MASTERS, "never-used"]))
    def cancel_master(self, master: Any) -> None:
        """cancel(master) takes exactly the queued items, FIFO; the running one stays."""
        queue = self.queued.get(master, deque())
        assert self.d.cancel(master) == list(queue)
        for job in queue:
            self.cancelled += 1
            self.expect_order[master].remove(job.id)
            fut = self.futures.pop(job.id, None)
            if fut is not None:
                assert fut.cancelled()
        queue.clear()
        self.settle()

    @rule()
    def release(self) -> None:
        """Open the gate, let everything run, check order and outcomes, close it."""
        self.h.gate.set()
        try:
            assert self.d.wait(PROMPT), "wait() timed out with the gate open"
        finally:
            self.h.gate.clear()
        order: dict[Any, list[int]] = {}
        for job in self.h.finished:
            order.setdefault(job.master, []).append(job.id)
        for master, ids in self.expect_order.items():
            ran = order.get(master, [])
            assert ran == ids, f"master {master!r} ran {ran}, expected {ids}"
        ran_jobs = [*self.running.values()] + [j for q in self.queued.values() for j in q]
        for job in ran_jobs:
            self._done(job)
        failed_dispatches = {j.id for j in ran_jobs if j.fail and j.id not in self.futures}
        assert {w.id for _, w, _ in self.errors} == failed_dispatches, self.errors
        assert len(self.errors) == len(failed_dispatches), "on_error called twice"
        for exc, work, master in self.errors:
            assert isinstance(exc, Boom) and master == work.master
        self.errors.clear()
        for job in ran_jobs:
            self.futures.pop(job.id, None)
        self.queued.clear()
        self.running.clear()
        self.h.finished.clear()
        self.expect_order.clear()
        self.settle()

    def _done(self, job: Job) -> None:
        if job.fail:
            self.failed += 1
        else:
            self.completed += 1
        fut = self.futures.get(job.id)
        if fut is None:
            return
        assert fut.done() and not fut.cancelled()
        if job.fail:
            assert isinstance(fut.exception(0), Boom)
        else:
            assert fut.result(0) == job.id

    # -- close ------------------------------------------------------------------

    @rule(cancel=st.booleans())
    def close_nowait(self, cancel: bool) -> None:
        returned = self.d.close(wait=False, cancel_pending=cancel)
        self.closed = True
        if not cancel:
            assert returned == []
            return
        got: dict[Any, list[int]] = {}
        for work, master in returned:
            assert master == work.master
            got.setdefault(master, []).append(work.id)
        want = {m: [j.id for j in q] for m, q in self.queued.items() if q}
        assert got == want, "close(cancel_pending=True) must return the queued items, FIFO"
        for queue in self.queued.values():
            for job in queue:
                self.cancelled += 1
                self.expect_order[job.master].remove(job.id)
                fut = self.futures.pop(job.id, None)
                if fut is not None:
                    assert fut.cancelled()
        self.queued.clear()
        self.settle()

    @precondition(lambda self: self.outstanding() == 0)
    @rule(cancel=st.booleans())
    def close_idle(self, cancel: bool) -> None:
        assert self.d.close(cancel_pending=cancel) == []
        self.closed = True
        assert self.d.stats().workers == 0

    @invariant()
    def closed_flag(self) -> None:
        if self.d is not None:
            assert self.d.closed is self.closed


@pytest.mark.timeout(600)
def test_model(Dispatcher: type) -> None:
    machine = type("Machine", (DispatcherMachine,), {"cls": Dispatcher})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            # No shrinking: a concurrency failure rarely replays step for step, and each
            # failing step may cost a PROMPT timeout; the full failing sequence is printed.
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            report_multiple_bugs=False,
        ),
    )
