"""Semantic 5: close stops intake, drains, joins; cancel_pending; misuse from a handler."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError
from typing import Any

import pytest

from fastdispatch import DispatcherClosed
from helpers import (
    WAIT,
    Call,
    Recorder,
    assert_identity,
    join_threads,
    threads_named,
    until,
    wait_ok,
)


def blocked_first(
    make: Any, **options: Any
) -> tuple[Any, Recorder, threading.Event, threading.Event]:
    """A dispatcher whose handler blocks on a gate for works marked ``"block"``.

    Returns (dispatcher, recorder, started, gate): ``started`` is set once a
    blocking handler is running.
    """
    gate = make.gate()
    started = threading.Event()

    def action(work: Any) -> Any:
        if len(work) > 2 and work[2] == "block":
            started.set()
            assert gate.wait(WAIT)
        return work[1]

    rec = Recorder(action=action)
    return make(rec, **options), rec, started, gate


def test_intake_stops_after_close(make: Any) -> None:
    d = make(lambda w: None)
    assert d.closed is False
    d.dispatch(1, "m")
    assert d.close() == []
    assert d.closed is True
    with pytest.raises(DispatcherClosed):
        d.dispatch(2, "m")
    with pytest.raises(DispatcherClosed):
        d.dispatch(2, "m", block=False)
    with pytest.raises(DispatcherClosed):
        d.submit(2, "m")
    with pytest.raises(DispatcherClosed) as info:
        d.dispatch_many([(2, "m"), (3, "n")])
    assert getattr(info.value, "accepted", 0) == 0
    s = d.stats()
    assert (s.dispatched, s.completed) == (1, 1)
    assert d.wait(timeout=0) is True


def test_close_drains_everything_and_joins_workers(make: Any) -> None:
    prefix = make.prefix("fdtest-drain")

    def slowish(work: Any) -> None:
        if work[1] % 40 == 0:
            time.sleep(0.001)  # keep work queued when close() is called

    rec = Recorder(action=slowish)
    d = make(rec, max_workers=4, thread_name_prefix=prefix)
    for i in range(200):
        for m in range(10):
            d.dispatch((m, i), m)
    assert d.close() == []
    assert rec.count == 2000
    for m in range(10):
        assert rec.by_master[m] == list(range(200))
    s = d.stats()
    assert (s.dispatched, s.completed, s.pending, s.running, s.active_masters) == (
        2000,
        2000,
        0,
        0,
        0,
    )
    assert s.workers == 0
    assert threads_named(prefix) == [], "close() must join the workers"


def test_close_without_wait_returns_at_once_and_drains_after(make: Any) -> None:
    prefix = make.prefix("fdtest-nowait")
    d, rec, started, gate = blocked_first(make, max_workers=2, thread_name_prefix=prefix)
    d.dispatch(("a", 0, "block"), "a")
    for i in range(1, 50):
        d.dispatch(("a", i), "a")
        d.dispatch(("b", i), "b")
    assert started.wait(WAIT)
    closer = Call(lambda: d.close(wait=False))
    assert closer.finish(timeout=5) == []  # returned although a handler is blocked
    assert d.closed
    with pytest.raises(DispatcherClosed):
        d.dispatch(("a", 99), "a")
    gate.set()
    wait_ok(d)
    join_threads(prefix)  # the workers exit once drained
    assert rec.by_master["a"] == list(range(50))
    assert rec.by_master["b"] == list(range(1, 50))
    s = d.stats()
    assert (s.completed, s.cancelled, s.workers) == (99, 0, 0)


def test_cancel_pending_returns_queued_items_fifo(make: Any) -> None:
    d, rec, started, gate = blocked_first(make, max_workers=1)
    running = d.submit(("a", 0, "block"), "a")
    assert started.wait(WAIT)
    queued_a = [("a", i) for i in range(1, 30)]
    queued_b = [("b", i) for i in range(30)]
    futures = []
    for i in range(30):
        if i:
            futures.append(d.submit(queued_a[i - 1], "a"))
        d.dispatch(queued_b[i], "b")
    assert d.stats().pending == 59

    returned = d.close(wait=False, cancel_pending=True)

    assert isinstance(returned, list)
    assert all(isinstance(pair, tuple) and len(pair) == 2 for pair in returned)
    assert [w for w, m in returned if m == "a"] == queued_a
    assert [w for w, m in returned if m == "b"] == queued_b
    assert len(returned) == 59
    assert all(f.cancelled() for f in futures)
    with pytest.raises(CancelledError):
        futures[0].result(timeout=0)
    assert not running.done()
    gate.set()
    assert running.result(timeout=WAIT) == 0  # the running item completes
    wait_ok(d)
    assert rec.order == [("a", 0, "block")]
    s = d.stats()
    assert (s.dispatched, s.completed, s.cancelled, s.pending, s.running) == (60, 1, 59, 0, 0)
    assert_identity(s)


def test_cancel_pending_with_wait_waits_for_the_running_item(make: Any) -> None:
    d, rec, started, gate = blocked_first(make, max_workers=1)
    d.dispatch(("a", 0, "block"), "a")
    assert started.wait(WAIT)
    d.dispatch(("a", 1), "a")
    closer = Call(lambda: d.close(cancel_pending=True))
    time.sleep(0.05)  # a chance for close() to return too early
    assert closer.is_alive(), "close(wait=True) returned while a handler was running"
    gate.set()
    assert closer.finish() == [(("a", 1), "a")]
    assert rec.order == [("a", 0, "block")]
    assert d.stats().workers == 0


def test_cancel_after_close_without_wait_still_cancels(make: Any) -> None:
    d, rec, started, gate = blocked_first(make, max_workers=1)
    d.dispatch(("a", 0, "block"), "a")
    assert started.wait(WAIT)
    fut = d.submit(("a", 1), "a")
    d.dispatch(("b", 0), "b")
    assert d.close(wait=False) == []
    later = d.close(wait=False, cancel_pending=True)
    assert sorted(later) == sorted([(("a", 1), "a"), (("b", 0), "b")])
    assert fut.cancelled()
    assert d.close(cancel_pending=True, wait=False) == []  # nothing left to cancel
    gate.set()
    wait_ok(d)
    assert rec.order == [("a", 0, "block")]
    s = d.stats()
    assert (s.completed, s.cancelled) == (1, 2)
    assert_identity(s)


def test_second_close_returns_empty(make: Any) -> None:
    d = make(lambda w: None)
    d.dispatch(1, "m")
    assert d.close() == []
    assert d.close() == []
    assert d.close(wait=False) == []
    assert d.close(cancel_pending=True) == []


def test_close_after_close_without_wait_waits_for_drain(make: Any) -> None:
    d, rec, started, gate = blocked_first(make, max_workers=1)
    d.dispatch(("a", 0, "block"), "a")
    d.dispatch(("a", 1), "a")
    assert started.wait(WAIT)
    assert d.close(wait=False) == []
    closer = Call(d.close)
    time.sleep(0.05)  # a chance for close() to return too early
    assert closer.is_alive(), "close() returned before the dispatcher drained"
    gate.set()
    assert closer.finish() == []
    assert rec.by_master["a"] == [0, 1]
    assert d.stats().workers == 0


def test_blocked_producers_get_closed_on_close(make: Any) -> None:
    d, rec, started, gate = blocked_first(make, max_workers=1, capacity=1)
    d.dispatch(("a", 0, "block"), "a")
    assert started.wait(WAIT)
    d.dispatch(("a", 1), "a")  # the queue is now full
    producers = [Call(lambda i=i: d.dispatch(("a", 10 + i), "a")) for i in range(3)]
    many = Call(lambda: d.dispatch_many([(("b", 0), "b"), (("a", 20), "a"), (("b", 1), "b")]))
    until(lambda: d.pending("b") == 1, what="dispatch_many accepted its first item")
    for p in producers:
        assert p.started_call.wait(WAIT)
    time.sleep(0.05)  # let them block on the full queue (else they fail the same way later)
    assert all(p.is_alive() for p in producers), "dispatch into a full queue must block"
    assert d.close(wait=False) == []
    for p in producers:
        with pytest.raises(DispatcherClosed):
            p.finish()
    with pytest.raises(DispatcherClosed) as info:
        many.finish()
    assert info.value.accepted == 1  # ("b", 0) went in before it blocked
    gate.set()
    wait_ok(d)
    assert rec.by_master["a"] == [0, 1]
    assert rec.by_master["b"] == [0]
    s = d.stats()
    assert (s.dispatched, s.completed, s.cancelled) == (3, 3, 0)


def test_close_wait_and_wait_from_handler_raise_and_change_nothing(make: Any) -> None:
    errors: dict[str, BaseException | None] = {}
    holder: dict[str, Any] = {}

    def handle(work: str) -> None:
        d = holder["d"]
        for name, call in [
            ("close", d.close),
            ("close_cancel", lambda: d.close(cancel_pending=True)),
            # with a timeout, so that a broken check fails this test instead of hanging it
            ("wait", lambda: d.wait(timeout=WAIT)),
            ("wait_zero", lambda: d.wait(timeout=0)),
        ]:
            try:
                call()
            except BaseException as exc:
                errors[name] = exc
            else:
                errors[name] = None

    d = holder["d"] = make(handle, max_workers=2)
    d.dispatch("call", "m")
    wait_ok(d)
    assert set(errors) == {"close", "close_cancel", "wait", "wait_zero"}
    for name, exc in errors.items():
        assert isinstance(exc, RuntimeError), (name, exc)
        assert not isinstance(exc, DispatcherClosed), (name, exc)
    assert d.closed is False
    fut = d.submit("x", "other")
    assert fut.result(timeout=WAIT) is None  # still works
    s = d.stats()
    assert (s.dispatched, s.completed, s.failed, s.cancelled) == (2, 2, 0, 0)


def test_close_from_handler_cancel_pending_raises_and_cancels_nothing(make: Any) -> None:
    outcome: list[Any] = []
    holder: dict[str, Any] = {}
    go = make.gate()

    def handle(work: int) -> None:
        if work == 0:
            assert go.wait(WAIT)
            try:
                holder["d"].close(cancel_pending=True)
            except RuntimeError as exc:
                outcome.append(exc)
        else:
            outcome.append(work)

    d = holder["d"] = make(handle, max_workers=1)
    d.dispatch(0, "m")
    d.dispatch(1, "m")
    d.dispatch(2, "n")
    go.set()
    wait_ok(d)
    assert isinstance(outcome[0], RuntimeError)
    assert outcome[1:] == [1, 2]
    assert d.stats().cancelled == 0


def test_close_without_wait_from_handler_is_allowed(make: Any) -> None:
    handled: list[int] = []
    result: list[Any] = []
    holder: dict[str, Any] = {}

    def handle(work: int) -> None:
        handled.append(work)
        if work == 0:
            result.append(holder["d"].close(wait=False))
            try:
                holder["d"].dispatch(99, "m")
            except DispatcherClosed as exc:
                result.append(exc)

    go = make.gate()
    d = holder["d"] = make(lambda w: (go.wait(WAIT), handle(w)), max_workers=1)
    d.dispatch(0, "m")
    d.dispatch(1, "m")
    go.set()
    wait_ok(d)
    assert result[0] == []
    assert isinstance(result[1], DispatcherClosed)
    assert handled == [0, 1]  # what was accepted before close still ran
    assert d.closed


def test_context_manager_closes(Dispatcher: type) -> None:
    rec = Recorder()
    prefix = f"fdtest-ctx-{Dispatcher._Core.__module__}-"
    with Dispatcher(rec, max_workers=2, thread_name_prefix=prefix) as d:
        assert d.closed is False
        for i in range(100):
            d.dispatch((i % 3, i), i % 3)
    assert d.closed
    assert rec.count == 100
    assert threads_named(prefix) == []


def test_context_manager_closes_on_exception(Dispatcher: type) -> None:
    rec = Recorder()
    with pytest.raises(ZeroDivisionError), Dispatcher(rec, max_workers=2) as d:
        d.dispatch(("m", 0), "m")
        1 / 0  # noqa: B018
    assert d.closed
    assert rec.by_master["m"] == [0]


def test_close_with_nothing_dispatched(make: Any) -> None:
    d = make(lambda w: None)
    assert d.close() == []
    s = d.stats()
    assert tuple(s) == (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def test_cancel_pending_handles_many_masters(make: Any) -> None:
    d, _rec, started, gate = blocked_first(make, max_workers=1)
    d.dispatch(("blk", 0, "block"), "blk")
    assert started.wait(WAIT)
    expected = []
    for i in range(5):
        for m in range(300):
            d.dispatch((m, i), m)
            expected.append(((m, i), m))
    returned = d.close(wait=False, cancel_pending=True)
    assert sorted(returned) == sorted(expected)
    for m in range(300):
        assert [w[1] for w, mm in returned if mm == m] == list(range(5))
    gate.set()
    wait_ok(d)
    s = d.stats()
    assert (s.cancelled, s.completed, s.active_masters) == (1500, 1, 0)
