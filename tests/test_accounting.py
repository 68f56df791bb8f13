"""Accounting: the stats identity, user-cancelled futures, worker counts."""

from __future__ import annotations

import threading
from typing import Any

from fastdispatch import DispatcherStats
from helpers import WAIT, Blocker, assert_identity, threads_named, wait_ok


def test_stats_is_a_dispatcher_stats(make: Any) -> None:
    d = make(lambda w: None)
    s = d.stats()
    assert isinstance(s, DispatcherStats)
    assert tuple(s) == (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def test_identity_after_a_mixed_run(make: Any) -> None:
    gate = make.gate()
    started = threading.Event()
    handled: list[Any] = []

    def handle(work: Any) -> Any:
        if work == "block":
            started.set()
            assert gate.wait(WAIT)
        handled.append(work)
        if isinstance(work, int) and work % 5 == 0:
            raise ValueError(work)
        return work

    d = make(handle, max_workers=1, on_error=lambda e, w, m: None)
    d.dispatch("block", "blocker")
    assert started.wait(WAIT)
    futures = {}
    for i in range(1, 41):
        if i % 2:
            d.dispatch(i, i % 4)
        else:
            futures[i] = d.submit(i, i % 4)
    user_cancelled = [i for i in (2, 4, 6, 8) if futures[i].cancel()]
    assert user_cancelled == [2, 4, 6, 8], "queued futures can be cancelled by the user"
    # a quiet moment with work queued and one item running
    s = d.stats()
    assert_identity(s)
    assert s.running == 1 and s.dispatched == 41
    gate.set()
    wait_ok(d)
    s = d.stats()
    assert_identity(s)
    assert not set(user_cancelled) & set(handled), "a cancelled future's item must not run"
    failed = [i for i in range(1, 41) if i % 5 == 0 and i not in user_cancelled]
    assert s.dispatched == 41
    assert s.cancelled == len(user_cancelled)
    assert s.failed == len(failed)
    assert s.completed == 41 - len(user_cancelled) - len(failed)
    assert (s.pending, s.running, s.active_masters) == (0, 0, 0)
    for i, fut in futures.items():
        if i in user_cancelled:
            assert fut.cancelled()
        elif i % 5 == 0:
            assert isinstance(fut.exception(timeout=0), ValueError)
        else:
            assert fut.result(timeout=0) == i


def test_identity_with_cancel_pending_close(make: Any) -> None:
    gate = make.gate()
    started = threading.Event()

    def handle(work: Any) -> None:
        if work == "block":
            started.set()
            assert gate.wait(WAIT)
        elif work == "fail":
            raise KeyError(work)

    d = make(handle, max_workers=1, on_error=lambda e, w, m: None)
    d.dispatch("ok", "a")
    d.dispatch("fail", "a")
    d.dispatch("block", "a")
    assert started.wait(WAIT)
    for i in range(10):
        d.dispatch(i, i % 3)
    returned = d.close(wait=False, cancel_pending=True)
    s = d.stats()
    assert_identity(s)
    assert (s.cancelled, s.pending, s.running) == (10, 0, 1)
    gate.set()
    wait_ok(d)
    s = d.stats()
    assert_identity(s)
    assert (s.dispatched, s.completed, s.failed, s.cancelled) == (13, 2, 1, 10)
    assert len(returned) == 10


def test_cancelled_future_of_running_item_cannot_cancel(make: Any) -> None:
    gate = make.gate()
    started = threading.Event()

    def handle(work: Any) -> str:
        started.set()
        assert gate.wait(WAIT)
        return "done"

    d = make(handle, max_workers=1)
    fut = d.submit("x", "m")
    assert started.wait(WAIT)
    assert fut.running()
    assert fut.cancel() is False
    gate.set()
    assert fut.result(timeout=WAIT) == "done"
    wait_ok(d)
    s = d.stats()
    assert (s.completed, s.cancelled) == (1, 0)


def test_user_cancelled_future_does_not_block_its_master(make: Any) -> None:
    handler = Blocker(make.gate())
    d = make(handler, max_workers=1)
    d.dispatch("block", "m")
    assert handler.started.wait(WAIT)
    f1 = d.submit("c1", "m")
    d.dispatch("d2", "m")
    f3 = d.submit("c3", "m")
    assert f1.cancel() and f3.cancel()
    handler.gate.set()
    wait_ok(d)
    assert handler.handled == ["block", "d2"]
    s = d.stats()
    assert_identity(s)
    assert (s.completed, s.cancelled, s.active_masters) == (2, 2, 0)


def test_workers_stat_matches_threads(make: Any) -> None:
    prefix = make.prefix("fdtest-wstat")
    barrier = threading.Barrier(3, timeout=WAIT)
    d = make(lambda w: barrier.wait(), max_workers=3, thread_name_prefix=prefix)
    assert d.stats().workers == 0
    for m in range(3):
        d.dispatch(m, m)
    wait_ok(d)
    assert d.stats().workers == 3 == len(threads_named(prefix))
    d.close()
    assert d.stats().workers == 0
    assert threads_named(prefix) == []


def test_counters_are_exact_under_concurrency(make: Any) -> None:
    from helpers import Call

    d = make(lambda w: None if w % 7 else 1 / 0, max_workers=3, on_error=lambda e, w, m: None)

    def produce(p: int) -> None:
        for i in range(3000):
            d.dispatch(i, (p, i % 11))

    calls = [Call(lambda p=p: produce(p)) for p in range(3)]
    for c in calls:
        c.finish()
    wait_ok(d)
    s = d.stats()
    failed = 3 * len(range(0, 3000, 7))
    assert (s.dispatched, s.completed, s.failed, s.cancelled) == (9000, 9000 - failed, failed, 0)
    assert_identity(s)


def test_user_cancelled_then_close_cancel_pending_counts_once(make: Any) -> None:
    handler = Blocker(make.gate())
    d = make(handler, max_workers=1)
    d.dispatch("block", "m")
    assert handler.started.wait(WAIT)
    f1 = d.submit("f1", "m")
    d.dispatch("x", "m")
    assert f1.cancel()
    returned = d.close(wait=False, cancel_pending=True)
    assert ("x", "m") in returned
    assert set(returned) <= {("f1", "m"), ("x", "m")}
    assert_identity(d.stats())
    handler.gate.set()
    wait_ok(d)
    s = d.stats()
    assert_identity(s)
    assert (s.dispatched, s.completed, s.cancelled) == (3, 1, 2), "each item counted once"
