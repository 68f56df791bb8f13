"""Semantics 13-15: retry in position, pause on error, cancel and wait for one master."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import Any, ClassVar

import pytest

import fastdispatch._dispatcher as layer
from fastdispatch import DispatcherClosed, QueueFull, Retry
from helpers import WAIT, Blocker, Call, assert_identity, join_threads, until, wait_ok


class ManualTimer:
    """Stands in for the backoff timer: records each hand-back, fires on demand."""

    made: ClassVar[list[ManualTimer]] = []

    def __init__(self, name: str) -> None:
        self.name = name
        self.cond = threading.Condition()
        self.due: list[tuple[float, Callable[[Any], object], Any]] = []
        self.delays: list[float] = []
        ManualTimer.made.append(self)

    def schedule(self, delay: float, fn: Callable[[Any], object], arg: Any) -> None:
        with self.cond:
            self.due.append((delay, fn, arg))
            self.delays.append(delay)
            self.cond.notify_all()

    def fire(self) -> float:
        """Wait for the next hand-back and do it now; return its delay."""
        with self.cond:
            assert self.cond.wait_for(lambda: self.due, WAIT), "nothing was scheduled"
            delay, fn, arg = self.due.pop(0)
        fn(arg)
        return delay

    def join(self) -> None:
        pass

    def after_fork_in_child(self) -> None:
        self.due = []


@pytest.fixture
def timer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], ManualTimer]]:
    """Dispatchers made after this use a ManualTimer; ``timer()`` is the last one made."""
    ManualTimer.made = []
    monkeypatch.setattr(layer, "Timer", ManualTimer)

    def last() -> ManualTimer:
        assert ManualTimer.made, "no dispatcher with retry was made"
        return ManualTimer.made[-1]

    yield last
    for t in ManualTimer.made:  # nothing may stay stranded in a test's teardown
        while t.due:
            t.fire()


class Flaky:
    """Records every run; raises for a work while its failure budget lasts."""

    def __init__(self, failures: dict[Any, int], exc: type[BaseException] = ValueError) -> None:
        self.failures = dict(failures)
        self.exc = exc
        self.runs: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, work: Any) -> Any:
        with self.lock:
            self.runs.append(work)
            left = self.failures.get(work, 0)
            if left:
                self.failures[work] = left - 1
        if left:
            raise self.exc(f"{work} run {self.runs.count(work)}")
        return work


def errors_into(reports: list[Any]) -> Callable[[BaseException, Any, Any], None]:
    return lambda exc, work, master: reports.append((exc, work, master))


# -- Retry -------------------------------------------------------------------


def test_retry_runs_a_failing_item_again_before_the_masters_next_item(make: Any) -> None:
    handler = Flaky({"a": 2})
    reports: list[Any] = []
    d = make(handler, retry=Retry(attempts=3, backoff=0.001), on_error=errors_into(reports))
    for work in ("a", "b", "c"):
        d.dispatch(work, "m")
    wait_ok(d)
    assert handler.runs == ["a", "a", "a", "b", "c"]
    assert reports == []
    s = d.stats()
    assert (s.dispatched, s.completed, s.failed, s.retried) == (3, 3, 0, 2)
    assert_identity(s)


def test_only_the_last_failure_reaches_on_error(make: Any) -> None:
    handler = Flaky({"a": 10})
    reports: list[Any] = []
    d = make(handler, retry=Retry(attempts=3, backoff=0), on_error=errors_into(reports))
    d.dispatch("a", "m")
    d.dispatch("b", "m")
    wait_ok(d)
    assert handler.runs == ["a", "a", "a", "b"]
    assert [(str(e), w, m) for e, w, m in reports] == [("a run 3", "a", "m")]
    s = d.stats()
    assert (s.completed, s.failed, s.retried) == (1, 1, 2)
    assert_identity(s)


def test_a_submitted_item_is_retried_and_its_future_gets_the_outcome(make: Any) -> None:
    handler = Flaky({"ok": 1, "bad": 5})
    d = make(handler, retry=Retry(attempts=2, backoff=0))
    ok = d.submit("ok", "m")
    bad = d.submit("bad", "m")
    assert ok.result(timeout=WAIT) == "ok"
    with pytest.raises(ValueError, match="bad run 2"):
        bad.result(timeout=WAIT)
    wait_ok(d)
    assert handler.runs == ["ok", "ok", "bad", "bad"]
    assert (d.stats().completed, d.stats().failed, d.stats().retried) == (1, 1, 2)


def test_retry_on_picks_the_failures_worth_another_run(make: Any) -> None:
    handler = Flaky({"a": 1}, exc=KeyError)
    reports: list[Any] = []
    d = make(handler, retry=Retry(retry_on=ValueError, backoff=0), on_error=errors_into(reports))
    d.dispatch("a", "m")
    wait_ok(d)
    assert handler.runs == ["a"]
    assert len(reports) == 1 and isinstance(reports[0][0], KeyError)
    assert d.stats().retried == 0


def test_one_attempt_means_no_retry(make: Any) -> None:
    handler = Flaky({"a": 1})
    d = make(handler, retry=Retry(attempts=1), on_error=lambda *a: None)
    d.dispatch("a", "m")
    wait_ok(d)
    assert handler.runs == ["a"]
    assert (d.stats().failed, d.stats().retried) == (1, 0)


def test_backoff_doubles_up_to_max_backoff(make: Any, timer: Any) -> None:
    handler = Flaky({"a": 4})
    d = make(handler, retry=Retry(attempts=5, backoff=0.1, max_backoff=0.3))
    d.dispatch("a", "m")
    delays = [timer().fire() for _ in range(4)]
    wait_ok(d)
    assert delays == [0.1, 0.2, 0.3, 0.3]
    assert handler.runs == ["a"] * 5


def test_between_runs_the_item_is_running_and_no_worker_waits(make: Any, timer: Any) -> None:
    handler = Flaky({"a": 1})
    d = make(handler, max_workers=1, retry=Retry(backoff=5.0))
    d.dispatch("a", "m")
    d.dispatch("later", "m")
    t = timer()
    with t.cond:
        assert t.cond.wait_for(lambda: t.due, WAIT)
    # The only worker is free: another master runs while "a" waits.
    assert d.submit("other", "n").result(timeout=WAIT) == "other"
    s = d.stats()
    assert (s.running, s.pending) == (1, 1), s
    assert d.pending("m") == 1
    assert d.wait(timeout=0.01) is False
    assert d.wait(timeout=0.01, master="m") is False
    t.fire()
    wait_ok(d)
    assert handler.runs == ["a", "other", "a", "later"]
    assert_identity(d.stats())


def test_a_retried_handler_may_dispatch_to_its_own_master(make: Any) -> None:
    runs: list[Any] = []
    d: Any = None

    def handler(work: Any) -> None:
        runs.append(work)
        if work == "a":
            n = runs.count("a")
            d.dispatch(("child", n), "m")
            if n < 3:
                raise ValueError(n)

    d = make(handler, retry=Retry(attempts=3, backoff=0))
    d.dispatch("a", "m")
    wait_ok(d)
    assert runs == ["a", "a", "a", ("child", 1), ("child", 2), ("child", 3)]


def test_close_during_a_backoff_lets_the_item_finish_and_leaves_no_thread(make: Any) -> None:
    handler = Flaky({"a": 1})
    prefix = make.prefix("backoff")
    d = make(handler, retry=Retry(backoff=0.05), thread_name_prefix=prefix)
    d.dispatch("a", "m")
    d.dispatch("b", "m")
    until(lambda: d.stats().retried == 1, what="the first failure")
    assert d.close(cancel_pending=True) == [("b", "m")]
    assert handler.runs == ["a", "a"]
    join_threads(prefix, timeout=0)  # workers and the timer are gone already
    s = d.stats()
    assert (s.completed, s.cancelled, s.running, s.retried) == (1, 1, 0, 1)
    assert_identity(s)
    with pytest.raises(DispatcherClosed):
        d.dispatch("c", "m")


def test_close_without_wait_during_a_backoff_still_finishes_the_item(make: Any) -> None:
    handler = Flaky({"a": 1})
    prefix = make.prefix("nowait")
    d = make(handler, retry=Retry(backoff=0.05), thread_name_prefix=prefix)
    d.dispatch("a", "m")
    d.close(wait=False)
    wait_ok(d)
    join_threads(prefix)
    assert handler.runs == ["a", "a"]
    assert d.stats().completed == 1


def test_the_timer_thread_ends_when_no_retry_waits(make: Any) -> None:
    handler = Flaky({"a": 1})
    prefix = make.prefix("timer")
    d = make(handler, retry=Retry(backoff=0), thread_name_prefix=prefix)
    d.dispatch("a", "m")
    wait_ok(d)
    join_threads(prefix + "_timer")


# -- pause on error --------------------------------------------------------------


def test_a_final_failure_pauses_its_master_until_resume(make: Any) -> None:
    handler = Flaky({"bad": 1})
    reports: list[Any] = []
    d = make(handler, pause_on_error=True, on_error=errors_into(reports))
    d.dispatch("bad", "m")
    d.dispatch("x", "m")
    d.dispatch("y", "other")
    wait_ok(d)  # does not wait for the paused master's items
    assert [w for _, w, _ in reports] == ["bad"]
    assert d.paused() == frozenset({"m"})
    assert d.pending("m") == 1
    s = d.stats()
    assert (s.paused_masters, s.pending, s.failed, s.completed) == (1, 1, 1, 1)
    assert_identity(s)
    d.dispatch("z", "m")  # held too
    assert d.wait(timeout=WAIT, master="m") is True
    assert sorted(handler.runs) == ["bad", "y"]
    d.resume("m")
    wait_ok(d)
    assert [w for w in handler.runs if w != "y"] == ["bad", "x", "z"]
    assert d.paused() == frozenset()
    s = d.stats()
    assert (s.paused_masters, s.active_masters, s.completed) == (0, 0, 3)


def test_a_pause_holds_items_dispatched_after_it_even_from_empty(make: Any) -> None:
    handler = Flaky({"bad": 1})
    d = make(handler, pause_on_error=True, on_error=lambda *a: None)
    d.dispatch("bad", "m")
    wait_ok(d)
    assert d.paused() == {"m"}
    d.dispatch("after", "m")
    f = d.submit("after2", "m")
    wait_ok(d)
    assert handler.runs == ["bad"] and not f.done()
    d.resume("m")
    assert f.result(timeout=WAIT) == "after2"
    assert handler.runs == ["bad", "after", "after2"]


def test_resuming_an_empty_paused_master_frees_it(make: Any) -> None:
    d = make(Flaky({"bad": 1}), pause_on_error=True, on_error=lambda *a: None)
    d.dispatch("bad", "m")
    wait_ok(d)
    d.resume("m")
    wait_ok(d)
    s = d.stats()
    assert (s.paused_masters, s.active_masters) == (0, 0)
    assert d.paused() == frozenset()


def test_a_failed_submit_pauses_too(make: Any) -> None:
    handler = Flaky({"bad": 1})
    d = make(handler, pause_on_error=True)
    f = d.submit("bad", "m")
    d.dispatch("x", "m")
    with pytest.raises(ValueError):
        f.result(timeout=WAIT)
    wait_ok(d)
    assert d.paused() == {"m"} and handler.runs == ["bad"]


def test_retries_come_before_the_pause(make: Any) -> None:
    handler = Flaky({"bad": 5})
    d = make(handler, retry=Retry(attempts=2, backoff=0), pause_on_error=True)
    d.dispatch("bad", "m")
    d.dispatch("x", "m")
    held = d.submit("held", "m")
    wait_ok(d)
    assert handler.runs == ["bad", "bad"]
    assert d.paused() == {"m"} and not held.done()
    s = d.stats()
    assert (s.failed, s.retried, s.pending) == (1, 1, 2)


def test_resume_of_a_master_not_paused_does_nothing(make: Any) -> None:
    gate = make.gate()
    handler = Blocker(gate)
    d = make(handler, pause_on_error=True)
    d.resume("nobody")
    d.dispatch("block", "m")
    assert handler.started.wait(WAIT)
    d.dispatch("x", "m")
    d.resume("m")  # running, not paused
    assert d.paused() == frozenset()
    gate.set()
    wait_ok(d)
    assert handler.handled == ["block", "x"]


def test_cancel_takes_a_paused_masters_items_and_keeps_it_paused(make: Any) -> None:
    handler = Flaky({"bad": 1})
    d = make(handler, pause_on_error=True, on_error=lambda *a: None)
    d.dispatch("bad", "m")
    d.dispatch("x", "m")
    f = d.submit("y", "m")
    wait_ok(d)
    assert d.cancel("m") == ["x", "y"]
    assert f.cancelled()
    assert d.paused() == {"m"}
    d.dispatch("z", "m")
    wait_ok(d)
    assert handler.runs == ["bad"]
    d.resume("m")
    wait_ok(d)
    assert handler.runs == ["bad", "z"]
    s = d.stats()
    assert (s.cancelled, s.completed, s.failed) == (2, 1, 1)
    assert_identity(s)


@pytest.mark.parametrize("cancel_pending", [False, True])
def test_close_cancels_and_returns_paused_items(make: Any, cancel_pending: bool) -> None:
    handler = Flaky({"bad": 1})
    d = make(handler, pause_on_error=True, on_error=lambda *a: None)
    d.dispatch("bad", "m")
    d.dispatch("x", "m")
    f = d.submit("y", "m")
    wait_ok(d)
    taken = d.close(cancel_pending=cancel_pending)
    assert taken == [("x", "m"), ("y", "m")]
    assert f.cancelled()
    assert handler.runs == ["bad"]
    s = d.stats()
    assert (s.cancelled, s.pending, s.paused_masters, s.active_masters) == (2, 0, 0, 0)
    assert_identity(s)
    assert d.close() == []


def test_a_master_paused_while_close_drains_is_returned_by_it(make: Any) -> None:
    gate = make.gate()
    started = threading.Event()

    def handler(work: Any) -> None:
        if work == "bad":
            started.set()
            assert gate.wait(WAIT)
            raise ValueError(work)

    d = make(handler, pause_on_error=True, on_error=lambda *a: None)
    d.dispatch("bad", "m")
    d.dispatch("x", "m")
    assert started.wait(WAIT)
    closing = Call(lambda: d.close())
    gate.set()
    assert closing.finish() == [("x", "m")]
    s = d.stats()
    assert (s.failed, s.cancelled, s.paused_masters) == (1, 1, 0)
    assert_identity(s)


def test_resume_racing_a_new_failure(make: Any) -> None:
    rounds = 200
    handler = Flaky({("bad", i): 1 for i in range(rounds)})
    d = make(handler, pause_on_error=True, on_error=lambda *a: None)
    stop = threading.Event()

    def resumer() -> None:
        while not stop.is_set():
            d.resume("m")

    racer = Call(resumer, name="resumer")
    try:
        for i in range(rounds):
            d.dispatch(("bad", i), "m")
            d.dispatch(("ok", i), "m")
    finally:
        stop.set()
        racer.finish()
    # Whatever interleaving happened, resuming until nothing is paused runs it all.
    for _ in range(2 * rounds + 1):
        wait_ok(d)
        if not d.paused():
            break
        d.resume("m")
    assert d.paused() == frozenset()
    wait_ok(d)
    expected = [w for i in range(rounds) for w in (("bad", i), ("ok", i))]
    assert handler.runs == expected
    s = d.stats()
    assert (s.completed, s.failed, s.cancelled, s.pending, s.running) == (rounds, rounds, 0, 0, 0)


# -- cancel(master) ------------------------------------------------------------------


def test_cancel_takes_the_queued_items_but_never_the_running_one(make: Any) -> None:
    gate = make.gate()
    handler = Blocker(gate)
    d = make(handler)
    d.dispatch("block", "m")
    assert handler.started.wait(WAIT)
    d.dispatch(1, "m")
    f = d.submit(2, "m")
    d.dispatch(3, "m")
    d.dispatch("o", "other")
    assert d.cancel("m") == [1, 2, 3]
    assert f.cancelled()
    with pytest.raises(CancelledError):
        f.result(timeout=0)
    assert d.pending("m") == 0
    d.dispatch(4, "m")  # the master is not stopped
    gate.set()
    wait_ok(d)
    assert [w for w in handler.handled if w != "o"] == ["block", 4]
    s = d.stats()
    assert (s.cancelled, s.completed) == (3, 3)
    assert_identity(s)


def test_cancel_of_an_unknown_or_idle_master_is_empty(make: Any) -> None:
    d = make(lambda w: None)
    assert d.cancel("nobody") == []
    d.dispatch(1, "m")
    wait_ok(d)
    assert d.cancel("m") == []
    assert d.stats().cancelled == 0


def test_cancel_leaves_an_item_between_runs(make: Any, timer: Any) -> None:
    handler = Flaky({"a": 1})
    d = make(handler, retry=Retry(backoff=1.0))
    d.dispatch("a", "m")
    d.dispatch("b", "m")
    t = timer()
    with t.cond:
        assert t.cond.wait_for(lambda: t.due, WAIT)
    assert d.cancel("m") == ["b"]
    t.fire()
    wait_ok(d)
    assert handler.runs == ["a", "a"]
    s = d.stats()
    assert (s.completed, s.cancelled, s.retried) == (1, 1, 1)
    assert_identity(s)


def test_cancel_while_the_worker_drains_the_master(make: Any) -> None:
    n = 20_000
    handled: list[int] = []
    d = make(handled.append)
    for i in range(n):  # the worker drains while they arrive
        d.dispatch(i, "m")
    taken = d.cancel("m")
    wait_ok(d)
    # Each item either ran or was taken, exactly once, in order on both sides.
    assert handled + taken == list(range(n))
    s = d.stats()
    assert (s.cancelled, s.completed) == (len(taken), len(handled))
    assert_identity(s)


def test_cancel_makes_room_for_a_blocked_producer(make: Any) -> None:
    gate = make.gate()
    handler = Blocker(gate)
    d = make(handler, capacity=1)
    d.dispatch("block", "m")
    assert handler.started.wait(WAIT)
    d.dispatch(1, "m")
    with pytest.raises(QueueFull):
        d.dispatch(2, "m", block=False)
    producer = Call(lambda: d.dispatch(2, "m", timeout=WAIT))
    assert producer.started_call.wait(WAIT)
    # Asleep on the full queue or not yet there: either way it gets in now,
    # where without the wake-up it would end in QueueFull.
    assert d.cancel("m") == [1]
    producer.finish()
    assert d.cancel("m") == [2]
    gate.set()
    wait_ok(d)
    assert handler.handled == ["block"]


# -- wait(master=...) ---------------------------------------------------------------


def test_wait_for_one_master_does_not_wait_for_the_others(make: Any) -> None:
    gate = make.gate()
    handler = Blocker(gate)
    d = make(handler)
    d.dispatch("block", "slow")
    assert handler.started.wait(WAIT)
    for i in range(100):
        d.dispatch(i, "fast")
    assert d.wait(timeout=WAIT, master="fast") is True
    assert handler.handled == list(range(100))
    assert d.wait(timeout=0.01, master="slow") is False
    assert d.wait(timeout=0.01) is False
    assert d.wait(timeout=0, master="unknown") is True
    gate.set()
    assert d.wait(timeout=WAIT, master="slow") is True


def test_wait_for_a_master_whose_items_were_all_cancelled(make: Any) -> None:
    gate = make.gate()
    handler = Blocker(gate)
    d = make(handler, max_workers=1)
    d.dispatch("block", "busy")
    assert handler.started.wait(WAIT)
    d.dispatch("x", "m")  # waits for the only worker
    assert d.wait(timeout=0.01, master="m") is False
    waiter = Call(lambda: d.wait(timeout=WAIT, master="m"))
    assert waiter.started_call.wait(WAIT)
    assert d.cancel("m") == ["x"]
    assert waiter.finish() is True  # woken by the cancel, not by the worker
    assert d.wait(timeout=0, master="m") is True
    assert handler.handled == []
    gate.set()
    wait_ok(d)
    assert handler.handled == ["block"]


def test_wait_for_a_master_from_another_thread_wakes_when_it_drains(make: Any) -> None:
    gate = make.gate()
    handler = Blocker(gate)
    d = make(handler)
    d.dispatch("block", "m")
    d.dispatch("x", "m")
    assert handler.started.wait(WAIT)
    waiter = Call(lambda: d.wait(timeout=WAIT, master="m"))
    assert waiter.started_call.wait(WAIT)
    gate.set()
    assert waiter.finish() is True
    assert handler.handled == ["block", "x"]


# -- bad input ---------------------------------------------------------------------


def _unhashable_message() -> str:
    return "master must be hashable, got [] (unhashable type 'list')"


@pytest.mark.parametrize(
    "call",
    [
        lambda d: d.cancel([]),
        lambda d: d.resume([]),
        lambda d: d.wait(timeout=0, master=[]),
    ],
    ids=["cancel", "resume", "wait"],
)
def test_unhashable_master_is_a_type_error(make: Any, call: Any) -> None:
    d = make(lambda w: None)
    with pytest.raises(TypeError) as info:
        call(d)
    assert str(info.value) == _unhashable_message()
    assert d.stats() == (0,) * 10


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"attempts": 0}, ValueError, "Retry attempts must be an int >= 1, got 0"),
        ({"attempts": True}, TypeError, "Retry attempts must be an int >= 1, got True"),
        ({"attempts": 2.0}, TypeError, "Retry attempts must be an int >= 1, got 2.0"),
        (
            {"backoff": -1},
            ValueError,
            "Retry backoff must be a finite number of seconds >= 0, got -1",
        ),
        (
            {"backoff": math.nan},
            ValueError,
            "Retry backoff must be a finite number of seconds >= 0, got nan",
        ),
        (
            {"max_backoff": math.inf},
            ValueError,
            "Retry max_backoff must be a finite number of seconds >= 0, got inf",
        ),
        (
            {"backoff": "1"},
            TypeError,
            "Retry backoff must be a finite number of seconds >= 0, got '1'",
        ),
        (
            {"retry_on": (ValueError, int)},
            TypeError,
            "Retry retry_on must be an exception class or a tuple of exception classes, "
            "got (<class 'ValueError'>, <class 'int'>)",
        ),
        (
            {"retry_on": ()},
            TypeError,
            "Retry retry_on must be an exception class or a tuple of exception classes, got ()",
        ),
    ],
)
def test_bad_retry_arguments(kwargs: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error) as info:
        Retry(**kwargs)
    assert str(info.value) == message


def test_retry_values_are_normalised() -> None:
    r = Retry(attempts=4, backoff=1, max_backoff=2, retry_on=KeyError)
    assert (r.attempts, r.backoff, r.max_backoff, r.retry_on) == (4, 1.0, 2.0, (KeyError,))
    assert r == Retry(4, 1.0, 2.0, (KeyError,)) and r != Retry(4, 1.0, 2.0)
    assert hash(r) == hash(Retry(4, 1.0, 2.0, (KeyError,)))
    assert repr(r) == (
        "Retry(attempts=4, backoff=1.0, max_backoff=2.0, retry_on=(<class 'KeyError'>,))"
    )
    with pytest.raises(AttributeError):
        r.attempts = 5  # type: ignore[misc]
    assert r.attempts == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retry": 3}, "retry must be None or a fastdispatch.Retry, got 3"),
        ({"pause_on_error": 1}, "pause_on_error must be a bool, got 1"),
    ],
)
def test_bad_control_options(Dispatcher: type, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError) as info:
        Dispatcher(lambda w: None, **kwargs)
    assert str(info.value) == message


def test_wait_for_a_master_from_its_own_handler_is_refused(make: Any) -> None:
    outcome: list[Any] = []

    def handler(work: Any) -> None:
        try:
            d.wait(master="m")
        except RuntimeError as exc:
            outcome.append(exc)

    d = make(handler)
    d.dispatch("x", "m")
    wait_ok(d)
    assert len(outcome) == 1 and "wait for itself" in str(outcome[0])
