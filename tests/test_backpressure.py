"""Semantic 6: capacity, blocking, timeouts, and no self-deadlock."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from fastdispatch import QueueFull
from helpers import WAIT, Call, Recorder, until, wait_ok


def held(make: Any, capacity: int, **options: Any) -> tuple[Any, Recorder, threading.Event]:
    """A dispatcher with one worker, blocked in master "a"'s first item."""
    gate = make.gate()
    started = threading.Event()

    def action(work: Any) -> Any:
        if work[1] == 0:
            started.set()
            assert gate.wait(WAIT)
        return work[1]

    rec = Recorder(action=action)
    d = make(rec, capacity=capacity, max_workers=1, **options)
    d.dispatch(("a", 0), "a")
    assert started.wait(WAIT)
    return d, rec, gate


def test_capacity_counts_queued_items_only(make: Any) -> None:
    d, rec, gate = held(make, capacity=2)
    d.dispatch(("a", 1), "a")
    d.dispatch(("a", 2), "a")  # running one + 2 queued: capacity is about queued items
    assert d.pending("a") == 2
    s = d.stats()
    assert (s.pending, s.running, s.active_masters) == (2, 1, 1)
    with pytest.raises(QueueFull):
        d.dispatch(("a", 3), "a", block=False)
    with pytest.raises(QueueFull):
        d.submit(("a", 3), "a", block=False)
    d.dispatch(("b", 1), "b")  # capacity is per master
    d.dispatch(("b", 2), "b")
    assert d.pending("b") == 2
    assert d.pending("nobody") == 0
    assert d.stats().dispatched == 5
    gate.set()
    wait_ok(d)
    assert rec.by_master["a"] == [0, 1, 2]
    assert rec.by_master["b"] == [1, 2]
    assert d.pending("a") == 0


def test_non_blocking_dispatch_fails_at_once(make: Any) -> None:
    d, rec, gate = held(make, capacity=1)
    d.dispatch(("a", 1), "a")
    t0 = time.monotonic()
    with pytest.raises(QueueFull):
        d.dispatch(("a", 2), "a", block=False, timeout=30)  # block=False ignores timeout
    with pytest.raises(QueueFull):
        d.dispatch(("a", 2), "a", timeout=0)
    assert time.monotonic() - t0 < 1.0
    s = d.stats()
    assert (s.dispatched, s.pending) == (2, 1)
    gate.set()
    wait_ok(d)
    assert rec.by_master["a"] == [0, 1]


def test_blocking_dispatch_waits_for_space(make: Any) -> None:
    d, rec, gate = held(make, capacity=1)
    d.dispatch(("a", 1), "a")
    producer = Call(lambda: d.dispatch(("a", 2), "a"))
    fut_producer = Call(lambda: d.submit(("b", 1), "b"))  # other masters are not blocked
    assert fut_producer.finish() is not None
    time.sleep(0.05)  # a chance for the blocked dispatch to (wrongly) go through
    assert producer.is_alive(), "dispatch into a full queue must block"
    assert d.stats().dispatched == 3
    gate.set()
    assert producer.finish() is None
    wait_ok(d)
    assert rec.by_master["a"] == [0, 1, 2]


def test_blocking_dispatch_times_out(make: Any) -> None:
    d, rec, gate = held(make, capacity=1)
    d.dispatch(("a", 1), "a")
    t0 = time.monotonic()
    with pytest.raises(QueueFull):
        d.dispatch(("a", 2), "a", timeout=0.2)
    elapsed = time.monotonic() - t0
    assert 0.18 <= elapsed < 5.0
    t0 = time.monotonic()
    with pytest.raises(QueueFull):
        d.submit(("a", 2), "a", timeout=0.1)
    assert 0.08 <= time.monotonic() - t0 < 5.0
    s = d.stats()
    assert (s.dispatched, s.pending, s.running) == (2, 1, 1)
    gate.set()
    wait_ok(d)
    assert rec.by_master["a"] == [0, 1]


def test_timeout_covers_the_whole_dispatch_many_call(make: Any) -> None:
    gate2 = make.gate()
    d, rec, gate = held(make, capacity=1)
    first_wait = 0.5
    whole = 1.0

    def hold_second(work: Any) -> Any:
        if work[1] == 1:
            assert gate2.wait(WAIT)
        return work[1]

    inner = rec.action
    rec.action = lambda w: hold_second(w) if w[1] == 1 else inner(w)  # type: ignore[misc]
    d.dispatch(("a", 1), "a")  # queue full; will run (and hold) once "a", 0 is done
    t0 = time.monotonic()
    many = Call(lambda: d.dispatch_many([(("a", 2), "a"), (("a", 3), "a")], timeout=whole))
    time.sleep(first_wait)
    released_at = time.monotonic() - t0
    gate.set()  # ("a", 1) starts and holds: ("a", 2) is accepted, ("a", 3) must wait again
    with pytest.raises(QueueFull) as info:
        many.finish()
    elapsed = time.monotonic() - t0
    assert info.value.accepted == 1
    # a per-item timeout would end near released_at + whole
    assert elapsed < whole + released_at / 2, (elapsed, released_at)
    assert elapsed >= whole * 0.9
    gate2.set()
    wait_ok(d)
    assert rec.by_master["a"] == [0, 1, 2]


def test_dispatch_many_stops_at_full_queue_without_blocking(make: Any) -> None:
    d, rec, gate = held(make, capacity=2)
    pairs = [(("a", i), "a") for i in range(1, 6)]
    with pytest.raises(QueueFull) as info:
        d.dispatch_many(pairs, block=False)
    assert info.value.accepted == 2
    assert d.stats().dispatched == 3
    gate.set()
    wait_ok(d)
    assert rec.by_master["a"] == [0, 1, 2]


def test_worker_dispatching_into_its_own_full_queue_gets_queue_full(make: Any) -> None:
    outcomes: list[Any] = []
    holder: dict[str, Any] = {}

    def handle(work: str) -> None:
        if work != "first":
            return
        d = holder["d"]
        d.dispatch("second", "a")  # queued: the running item does not count
        for call in (
            lambda: d.dispatch("third", "a"),
            lambda: d.dispatch("third", "a", timeout=30),
            lambda: d.submit("third", "a"),
            lambda: d.dispatch_many([("third", "a")]),
        ):
            t0 = time.monotonic()
            try:
                call()
            except QueueFull as exc:
                outcomes.append((type(exc), time.monotonic() - t0))
            except BaseException as exc:
                outcomes.append((exc, None))
            else:
                outcomes.append(("accepted", None))

    d = holder["d"] = make(handle, capacity=1, max_workers=1)
    d.dispatch("first", "a")
    wait_ok(d)
    assert [o[0] for o in outcomes] == [QueueFull] * 4, outcomes
    assert all(dt < 5.0 for _, dt in outcomes)
    assert d.stats().completed == 2


def test_worker_dispatching_into_another_full_queue_gets_queue_full(make: Any) -> None:
    """With one worker, master "b" cannot drain while the worker is in "a":
    waiting there would deadlock, so the worker gets QueueFull at once."""
    go = threading.Event()
    outcome: list[Any] = []
    holder: dict[str, Any] = {}

    def handle(work: str) -> None:
        if work == "a":
            assert go.wait(WAIT)
            try:
                holder["d"].dispatch("b2", "b")
            except QueueFull as exc:
                outcome.append(exc)
            else:
                outcome.append("accepted")

    d = holder["d"] = make(handle, capacity=1, max_workers=1)
    d.dispatch("a", "a")
    d.dispatch("b1", "b")  # b is full (and cannot start: the only worker is in "a")
    go.set()
    wait_ok(d)
    assert len(outcome) == 1 and isinstance(outcome[0], QueueFull)


def test_unbounded_by_default(make: Any) -> None:
    d, rec, gate = held(make, capacity=None)
    for i in range(1, 20001):
        d.dispatch(("a", i), "a", block=False)
    assert d.pending("a") == 20000
    gate.set()
    wait_ok(d)
    assert rec.by_master["a"] == list(range(20001))


def test_space_frees_item_by_item(make: Any) -> None:
    """Producers blocked on a full queue all get in as the worker drains."""
    d, rec, gate = held(make, capacity=1)
    d.dispatch(("a", 1), "a")
    producers = [Call(lambda i=i: d.dispatch(("a", 10 + i), "a")) for i in range(5)]
    until(lambda: all(p.started_call.is_set() for p in producers))
    gate.set()
    for p in producers:
        p.finish()
    wait_ok(d)
    assert sorted(rec.by_master["a"]) == [0, 1, 10, 11, 12, 13, 14]
    assert rec.by_master["a"][:2] == [0, 1]


def test_worker_of_another_dispatcher_blocks_normally(make: Any) -> None:
    """Only a worker of the *same* dispatcher gets QueueFull at once: a
    worker of another dispatcher can wait, the full queue's own workers drain it."""
    d2, rec2, gate2 = held(make, capacity=1)
    d2.dispatch(("a", 1), "a")  # d2's master "a" is full
    outcome: list[Any] = []

    def handle(work: str) -> None:
        try:
            d2.dispatch(("a", 2), "a", timeout=WAIT)
            outcome.append("accepted")
        except BaseException as exc:
            outcome.append(exc)

    d1 = make(handle, max_workers=1)
    d1.dispatch("go", "x")
    time.sleep(0.05)  # a chance to (wrongly) fail at once
    assert outcome == []
    gate2.set()
    wait_ok(d1)
    wait_ok(d2)
    assert outcome == ["accepted"]
    assert rec2.by_master["a"] == [0, 1, 2]
