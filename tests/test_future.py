"""fastdispatch's Future is a standard ``concurrent.futures.Future`` in every way that shows.

Modelled on what CPython's own ``test_concurrent_futures`` expects of a
Future: states, callbacks, timeouts, cancellation, ``wait``, ``as_completed``
and ``asyncio.wrap_future``; plus both cores' ``submit`` returning it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from fastdispatch._future import Future
from helpers import WAIT, Call, until

State = Callable[[], Future[Any]]


def pending() -> Future[Any]:
    return Future()


def running() -> Future[Any]:
    f: Future[Any] = Future()
    assert f.set_running_or_notify_cancel() is True
    return f


def cancelled() -> Future[Any]:
    f: Future[Any] = Future()
    assert f.cancel() is True
    return f


def cancelled_and_notified() -> Future[Any]:
    f = cancelled()
    assert f.set_running_or_notify_cancel() is False
    return f


def finished(result: Any = 42) -> Future[Any]:
    f = running()
    f.set_result(result)
    return f


def raised(exc: BaseException | None = None) -> Future[Any]:
    f = running()
    f.set_exception(exc if exc is not None else OSError("boom"))
    return f


ALL_STATES: list[State] = [pending, running, cancelled, cancelled_and_notified, finished, raised]


# -- identity and cost ----------------------------------------------------------


def test_is_a_standard_future() -> None:
    f: Future[int] = Future()
    assert isinstance(f, cf.Future)
    assert Future[int].__origin__ is Future  # generic, like the standard Future


def test_nothing_is_built_until_someone_waits() -> None:
    f = finished()
    assert f._cond is None and f._waiter_list is None and f._callbacks is None
    assert f.result() == 42  # done already: no condition needed
    assert f._cond is None


def test_condition_uses_the_futures_own_lock() -> None:
    f: Future[Any] = Future()
    cond = f._condition
    assert f._condition is cond  # made once
    with cond:
        assert f._lock.locked()


# -- states ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "is_cancelled", "is_running", "is_done"),
    [
        (pending, False, False, False),
        (running, False, True, False),
        (cancelled, True, False, True),
        (cancelled_and_notified, True, False, True),
        (finished, False, False, True),
        (raised, False, False, True),
    ],
)
def test_state_queries(make: State, is_cancelled: bool, is_running: bool, is_done: bool) -> None:
    f = make()
    assert (f.cancelled(), f.running(), f.done()) == (is_cancelled, is_running, is_done)


@pytest.mark.parametrize("make", ALL_STATES)
def test_state_strings_match_the_standard_future(make: State) -> None:
    # wait() and as_completed() read _state directly: same strings as the stdlib.
    stdlib: dict[State, str] = {
        pending: "PENDING",
        running: "RUNNING",
        cancelled: "CANCELLED",
        cancelled_and_notified: "CANCELLED_AND_NOTIFIED",
        finished: "FINISHED",
        raised: "FINISHED",
    }
    assert make()._state == stdlib[make]


def test_repr() -> None:
    assert "state=pending>" in repr(pending())
    assert "state=running>" in repr(running())
    assert "state=cancelled>" in repr(cancelled())
    assert "state=cancelled>" in repr(cancelled_and_notified())
    assert "state=finished returned int>" in repr(finished())
    assert "state=finished raised OSError>" in repr(raised())
    assert repr(pending()).startswith("<Future at 0x")


def test_cancel() -> None:
    for make, expected in [
        (pending, True),
        (running, False),
        (cancelled, True),
        (cancelled_and_notified, True),
        (finished, False),
        (raised, False),
    ]:
        f = make()
        assert f.cancel() is expected, make.__name__
        assert f.cancelled() is expected, make.__name__


def test_result_and_exception_when_done() -> None:
    assert finished(7).result(timeout=0) == 7
    assert finished(7).exception(timeout=0) is None
    exc = OSError("boom")
    f = raised(exc)
    with pytest.raises(OSError, match="boom") as info:
        f.result(timeout=0)
    assert info.value is exc
    assert f.exception(timeout=0) is exc


@pytest.mark.parametrize("make", [cancelled, cancelled_and_notified])
def test_result_and_exception_of_a_cancelled_future(make: State) -> None:
    with pytest.raises(cf.CancelledError):
        make().result(timeout=0)
    with pytest.raises(cf.CancelledError):
        make().exception(timeout=0)


@pytest.mark.parametrize("make", [pending, running])
def test_timeouts(make: State) -> None:
    with pytest.raises(cf.TimeoutError):
        make().result(timeout=0)
    with pytest.raises(cf.TimeoutError):
        make().exception(timeout=0.01)


def test_set_running_or_notify_cancel() -> None:
    f: Future[Any] = Future()
    assert f.set_running_or_notify_cancel() is True
    assert f.running()
    with pytest.raises(RuntimeError, match="unexpected state"):
        f.set_running_or_notify_cancel()
    f.set_result(1)
    with pytest.raises(RuntimeError, match="unexpected state"):
        f.set_running_or_notify_cancel()
    c = cancelled()
    assert c.set_running_or_notify_cancel() is False
    assert c._state == "CANCELLED_AND_NOTIFIED"


@pytest.mark.parametrize("make", [cancelled, cancelled_and_notified, finished, raised])
def test_setting_a_done_future_is_an_invalid_state(make: State) -> None:
    f = make()
    before = (f._state, f._result, f._exception)
    with pytest.raises(cf.InvalidStateError):
        f.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        f.set_exception(ValueError())
    assert (f._state, f._result, f._exception) == before


def test_set_result_from_pending_without_running() -> None:
    f: Future[Any] = Future()
    f.set_result("x")  # the standard Future allows it too
    assert f.result() == "x"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (pending, (False, False, None, None)),
        (running, (False, False, None, None)),
        (cancelled, (True, True, None, None)),
        (cancelled_and_notified, (True, True, None, None)),
        (lambda: finished(7), (True, False, 7, None)),
    ],
)
def test_snapshot_for_asyncio(make: State, expected: tuple[Any, ...]) -> None:
    # newer asyncio versions copy a finished future's state through _get_snapshot().
    f = make()
    assert f._get_snapshot() == expected
    assert f._cond is None  # read under the plain lock: no condition built for it


def test_snapshot_of_a_raised_future() -> None:
    exc = OSError("boom")
    assert raised(exc)._get_snapshot() == (True, False, None, exc)


# -- blocking waiters -------------------------------------------------------------


@pytest.mark.parametrize("how", ["result", "exception"])
@pytest.mark.parametrize("outcome", ["result", "exception", "cancel"])
def test_a_blocked_waiter_is_woken(how: str, outcome: str) -> None:
    f: Future[Any] = Future()
    waiter = Call(lambda: getattr(f, how)(timeout=WAIT))
    until(lambda: f._cond is not None, what="the waiter to build the condition")
    if outcome == "result":
        f.set_running_or_notify_cancel()
        f.set_result(5)
        assert waiter.finish() == (5 if how == "result" else None)
    elif outcome == "exception":
        exc = KeyError("k")
        f.set_running_or_notify_cancel()
        f.set_exception(exc)
        if how == "result":
            with pytest.raises(KeyError):
                waiter.finish()
        else:
            assert waiter.finish() is exc
    else:
        f.cancel()
        with pytest.raises(cf.CancelledError):
            waiter.finish()


def _race_once() -> None:
    f: Future[Any] = Future()
    calls: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(9)

    def add(i: int) -> None:
        start.wait(WAIT)

        def note(_: Any) -> None:
            with lock:
                calls.append(i)

        f.add_done_callback(note)

    def wait_for() -> Any:
        start.wait(WAIT)
        return f.result(timeout=WAIT)

    def complete() -> None:
        start.wait(WAIT)
        f.set_running_or_notify_cancel()
        f.set_result("done")

    threads = (
        [Call(lambda i=i: add(i)) for i in range(4)]
        + [Call(wait_for) for _ in range(4)]
        + [Call(complete)]
    )
    results = [t.finish() for t in threads]
    assert results[4:8] == ["done"] * 4
    assert sorted(calls) == [0, 1, 2, 3]


def test_many_waiters_and_callbacks_race_the_result() -> None:
    """Waiters, callbacks and the result from many threads at once: each callback once."""
    for _ in range(50):
        _race_once()


# -- done callbacks ---------------------------------------------------------------


def test_callbacks_run_in_order_with_the_future() -> None:
    f: Future[Any] = Future()
    seen: list[tuple[str, Any]] = []
    f.add_done_callback(lambda fut: seen.append(("a", fut)))
    f.add_done_callback(lambda fut: seen.append(("b", fut.result())))
    assert seen == []
    f.set_running_or_notify_cancel()
    f.set_result(3)
    assert seen == [("a", f), ("b", 3)]


def test_callback_on_a_done_future_runs_at_once() -> None:
    for make in [finished, raised, cancelled, cancelled_and_notified]:
        seen: list[Any] = []
        f = make()
        f.add_done_callback(seen.append)
        assert seen == [f], make.__name__


def test_callbacks_run_on_exception_and_on_cancel() -> None:
    for complete in (lambda f: f.set_exception(ValueError()), lambda f: f.cancel()):
        f: Future[Any] = Future()
        seen: list[Any] = []
        f.add_done_callback(seen.append)
        complete(f)
        assert seen == [f]


def test_a_raising_callback_is_logged_and_the_rest_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f: Future[Any] = Future()
    seen: list[str] = []

    def bad(_: Any) -> None:
        raise ValueError("callback broke")

    f.add_done_callback(bad)
    f.add_done_callback(lambda _: seen.append("after"))
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        f.set_result(1)
        finished().add_done_callback(bad)  # the immediate path logs the same way
    assert seen == ["after"]
    records = [r for r in caplog.records if r.name == "concurrent.futures"]
    assert len(records) == 2
    assert all("exception calling callback for" in r.getMessage() for r in records)
    assert all(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in records)


# -- concurrent.futures.wait / as_completed -------------------------------------


def test_wait_all_completed_mixed_with_standard_futures() -> None:
    ours, theirs = Future(), cf.Future()  # type: ignore[var-annotated]
    waiter = Call(lambda: cf.wait([ours, theirs], timeout=WAIT))
    until(lambda: ours._waiter_list, what="wait() to install its waiter")
    ours.set_result(1)
    theirs.set_result(2)
    done, not_done = waiter.finish()
    assert done == {ours, theirs} and not not_done
    assert ours._waiter_list == []  # wait() removed its waiter again


def test_wait_first_completed_and_timeout() -> None:
    a, b = running(), running()
    done, not_done = cf.wait([a, b], timeout=0.01, return_when=cf.FIRST_COMPLETED)
    assert not done and not_done == {a, b}
    waiter = Call(lambda: cf.wait([a, b], timeout=WAIT, return_when=cf.FIRST_COMPLETED))
    until(lambda: a._waiter_list and b._waiter_list, what="wait() to install its waiters")
    b.set_result(None)
    done, not_done = waiter.finish()
    assert done == {b} and not_done == {a}


def test_wait_first_exception() -> None:
    a, b, c = running(), running(), running()
    waiter = Call(lambda: cf.wait([a, b, c], timeout=WAIT, return_when=cf.FIRST_EXCEPTION))
    until(lambda: c._waiter_list, what="wait() to install its waiter")
    a.set_result(1)
    c.set_exception(ValueError())
    done, not_done = waiter.finish()
    assert done == {a, c} and not_done == {b}


def test_wait_sees_a_cancel_notified_by_the_executor() -> None:
    f = pending()
    waiter = Call(lambda: cf.wait([f], timeout=WAIT))
    until(lambda: f._waiter_list, what="wait() to install its waiter")
    f.cancel()
    assert f.set_running_or_notify_cancel() is False  # what an executor does next
    done, _ = waiter.finish()
    assert done == {f}


def test_wait_on_already_done_futures() -> None:
    fs = [finished(), raised(), cancelled_and_notified()]
    done, not_done = cf.wait(fs, timeout=0)
    assert done == set(fs) and not not_done


def test_as_completed_in_completion_order() -> None:
    fs = [running() for _ in range(3)]
    gates = [threading.Event() for _ in fs]

    def complete() -> None:
        for i in (2, 0, 1):
            assert gates[i].wait(WAIT)
            fs[i].set_result(i)

    order: list[int] = []
    done_first = finished("early")
    completer = Call(complete)
    it = cf.as_completed([*fs, done_first], timeout=WAIT)
    assert next(it) is done_first  # the finished one comes first
    for i in (2, 0, 1):
        gates[i].set()
        order.append(next(it).result())
    completer.finish()
    assert order == [2, 0, 1]
    with pytest.raises(StopIteration):
        next(it)


def test_as_completed_timeout() -> None:
    a, b = finished(), running()
    it = cf.as_completed([a, b], timeout=0.01)
    assert next(it) is a
    with pytest.raises(cf.TimeoutError):
        next(it)
    assert b._waiter_list == []  # the waiter is removed on the way out


# -- asyncio ----------------------------------------------------------------------


def test_asyncio_wrap_future_result_and_exception() -> None:
    async def main() -> tuple[Any, BaseException | None]:
        ok, bad = running(), running()
        threading.Timer(0, ok.set_result, ("from a thread",)).start()
        threading.Timer(0, bad.set_exception, (KeyError("x"),)).start()
        result = await asyncio.wait_for(asyncio.wrap_future(ok), WAIT)
        try:
            await asyncio.wait_for(asyncio.wrap_future(bad), WAIT)
        except KeyError as exc:
            return result, exc
        return result, None

    result, exc = asyncio.run(main())
    assert result == "from a thread"
    assert isinstance(exc, KeyError)


def test_asyncio_cancel_propagates_to_the_future() -> None:
    f: Future[Any] = Future()

    async def main() -> None:
        wrapped = asyncio.wrap_future(f)
        wrapped.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wrapped

    asyncio.run(main())
    assert f.cancelled()


def test_asyncio_sees_a_cancelled_future() -> None:
    f: Future[Any] = Future()

    async def main() -> None:
        wrapped = asyncio.wrap_future(f)
        f.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(wrapped, WAIT)

    asyncio.run(main())


# -- both cores' submit -------------------------------------------------------------


def test_submit_returns_this_future(make: Any) -> None:
    d = make(lambda work: work * 2)
    f = d.submit(21, "m")
    assert type(f) is Future
    assert f.result(timeout=WAIT) == 42


def test_submit_future_cancelled_while_queued_is_skipped(make: Any) -> None:
    gate = make.gate()
    ran: list[Any] = []
    started = threading.Event()

    def handler(work: Any) -> Any:
        if work == "block":
            started.set()
            assert gate.wait(WAIT)
        ran.append(work)
        return work

    d = make(handler)
    first = d.submit("block", "m")
    assert started.wait(WAIT)
    skipped = d.submit("skipped", "m")
    last = d.submit("last", "m")
    assert skipped.cancel()
    gate.set()
    assert last.result(timeout=WAIT) == "last"
    assert first.result(timeout=WAIT) == "block"
    assert ran == ["block", "last"]
    assert d.wait(WAIT)
    assert d.stats().cancelled == 1
