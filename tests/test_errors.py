"""Semantic 4: a handler's exception is isolated, reported, and counted."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from helpers import WAIT, wait_ok


class CustomBase(BaseException):
    pass


RAISED = [
    ValueError("boom"),
    KeyboardInterrupt(),
    SystemExit(3),
    CustomBase("custom"),
    GeneratorExit(),
]


@pytest.mark.parametrize("exc", RAISED, ids=lambda e: type(e).__name__)
def test_handler_exception_goes_to_on_error_and_work_goes_on(make: Any, exc: BaseException) -> None:
    reports: list[tuple[BaseException, Any, Any]] = []
    handled: list[Any] = []

    def handle(work: Any) -> None:
        handled.append(work)
        if work[1] == "bad":
            raise exc

    d = make(
        handle,
        max_workers=1,
        on_error=lambda e, w, m: reports.append((e, w, m)),
    )
    master = ("master", 1)
    bad = (master, "bad")
    d.dispatch(bad, master)
    d.dispatch((master, "after"), master)
    d.dispatch(("other", "x"), "other")
    wait_ok(d)
    assert len(reports) == 1
    e, w, m = reports[0]
    assert e is exc and w is bad and m == master
    # The master goes on after its failure, in order. Across masters nothing is
    # promised: "other" may run between them if the worker freed the mailbox
    # before "after" arrived (seen on 3.13t).
    assert [w for w in handled if w[0] == master] == [bad, (master, "after")]
    assert sorted(handled, key=repr) == sorted([bad, (master, "after"), ("other", "x")], key=repr)
    s = d.stats()
    assert (s.dispatched, s.completed, s.failed) == (3, 2, 1)
    # the dispatcher keeps working afterwards
    assert d.submit((master, "later"), master).result(timeout=WAIT) is None


def test_many_failures_do_not_kill_workers(make: Any) -> None:
    reports: list[Any] = []
    prefix = make.prefix("fdtest-errs")

    def handle(n: int) -> int:
        if n % 2:
            raise (KeyboardInterrupt if n % 4 == 1 else RuntimeError)(n)
        return n

    d = make(
        handle,
        max_workers=2,
        thread_name_prefix=prefix,
        on_error=lambda e, w, m: reports.append(w),
    )
    for n in range(1000):
        d.dispatch(n, n % 5)
    wait_ok(d)
    assert sorted(reports) == list(range(1, 1000, 2))
    s = d.stats()
    assert (s.completed, s.failed) == (500, 500)
    assert 1 <= s.workers <= 2
    assert len([t for t in threading.enumerate() if t.name.startswith(prefix)]) == s.workers


def test_on_error_is_called_in_the_worker(make: Any) -> None:
    where: list[str] = []
    d = make(
        lambda w: 1 / 0,
        thread_name_prefix="fdtest-onerr",
        on_error=lambda e, w, m: where.append(threading.current_thread().name),
    )
    d.dispatch(1, "m")
    wait_ok(d)
    assert where and where[0].startswith("fdtest-onerr")


def test_on_error_raising_is_logged_and_dispatcher_goes_on(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[int] = []

    def handle(n: int) -> None:
        handled.append(n)
        if n == 0:
            raise ValueError("handler failed")

    def on_error(exc: BaseException, work: Any, master: Any) -> None:
        raise RuntimeError("on_error failed too")

    caplog.set_level(logging.ERROR, logger="fastdispatch")
    d = make(handle, max_workers=1, on_error=on_error)
    d.dispatch(0, "m")
    d.dispatch(1, "m")
    wait_ok(d)
    assert handled == [0, 1]
    records = [r for r in caplog.records if r.name.split(".")[0] == "fastdispatch"]
    assert records, "an exception raised by on_error must be logged on 'fastdispatch'"
    text = "\n".join(
        r.getMessage()
        + "\n"
        + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
        for r in records
    )
    assert "on_error failed too" in text
    assert all(r.levelno >= logging.ERROR for r in records)
    s = d.stats()
    assert (s.completed, s.failed) == (1, 1)
    assert d.submit(2, "m").result(timeout=WAIT) is None


def test_default_on_error_logs_with_traceback(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="fastdispatch")
    exc = ValueError("default-on-error-boom")

    def handle(work: Any) -> None:
        raise exc

    d = make(handle)
    d.dispatch("w", "the-master")
    wait_ok(d)
    records = [r for r in caplog.records if r.name.split(".")[0] == "fastdispatch"]
    assert len(records) == 1
    (record,) = records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[1] is exc
    assert record.exc_info[2] is not None  # the traceback
    assert "the-master" in record.getMessage()
    assert d.stats().failed == 1


def test_submit_puts_exception_into_future(make: Any) -> None:
    reports: list[Any] = []

    def handle(work: Any) -> Any:
        if isinstance(work, BaseException):
            raise work
        return work * 2

    d = make(handle, on_error=lambda e, w, m: reports.append(e))
    ok = d.submit(21, "m")
    bad = d.submit(ValueError("in-future"), "m")
    base = d.submit(KeyboardInterrupt(), "m")
    after = d.submit(5, "m")
    assert ok.result(timeout=WAIT) == 42
    with pytest.raises(ValueError, match="in-future"):
        bad.result(timeout=WAIT)
    assert isinstance(base.exception(timeout=WAIT), KeyboardInterrupt)
    assert after.result(timeout=WAIT) == 10
    wait_ok(d)
    assert reports == [], "a submitted item's exception goes into its future, not on_error"
    s = d.stats()
    assert (s.completed, s.failed) == (2, 2)


def test_submit_returns_a_concurrent_future(make: Any) -> None:
    from concurrent.futures import Future

    d = make(lambda w: {"got": w})
    fut = d.submit("x", "m")
    assert isinstance(fut, Future)
    assert fut.result(timeout=WAIT) == {"got": "x"}
    done = threading.Event()
    fut2 = d.submit("y", "m")
    fut2.add_done_callback(lambda f: done.set())
    assert done.wait(WAIT)
    assert fut2.result(timeout=0) == {"got": "y"}


def test_handler_errors_are_not_silent_without_on_error(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Default on_error under a BaseException: still logged, worker survives."""
    caplog.set_level(logging.ERROR, logger="fastdispatch")

    def handle(work: Any) -> None:
        if work == "exit":
            raise SystemExit("exit-from-handler")

    d = make(handle, max_workers=1)
    d.dispatch("exit", "m")
    d.dispatch("fine", "m")
    wait_ok(d)
    records = [r for r in caplog.records if r.name.split(".")[0] == "fastdispatch"]
    assert len(records) == 1 and records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], SystemExit)
    s = d.stats()
    assert (s.completed, s.failed) == (1, 1)
