"""KeyedExecutor: the ``concurrent.futures.Executor`` contract, plus keys, on both cores.

The executor expectations follow the ideas of CPython's own
``test_concurrent_futures`` executor tests (submit, map, shutdown, the context
manager, cancellation, callbacks); the keyed ones are fastdispatch's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import random
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fastdispatch
from fastdispatch import KeyedExecutor, QueueFull
from fastdispatch._future import Future
from helpers import WAIT, Call, Recorder, join_threads, threads_named, until


class Executors:
    """Makes executors bound to the core under test; shuts them all down at teardown."""

    def __init__(self, cls: type[KeyedExecutor]) -> None:
        self.cls = cls
        self.made: list[KeyedExecutor] = []
        self.gates: list[threading.Event] = []
        self._n = 0

    def __call__(self, *args: Any, **kwargs: Any) -> KeyedExecutor:
        self._n += 1
        kwargs.setdefault("thread_name_prefix", f"kx-{id(self)}-{self._n}")
        ex = self.cls(*args, **kwargs)
        self.made.append(ex)
        return ex

    def gate(self) -> threading.Event:
        ev = threading.Event()
        self.gates.append(ev)
        return ev

    def teardown(self) -> None:
        for ev in self.gates:
            ev.set()
        for ex in self.made:
            ex.shutdown(wait=False, cancel_futures=True)
        closers = [Call(ex.shutdown, name="kx-teardown") for ex in self.made]
        for c in closers:
            c.join(WAIT)


@pytest.fixture
def executor_cls(Dispatcher: type) -> type[KeyedExecutor]:
    """``KeyedExecutor`` on the core under test."""
    return type("KeyedExecutor", (KeyedExecutor,), {"_Dispatcher": Dispatcher})


@pytest.fixture
def executors(executor_cls: type[KeyedExecutor]) -> Iterator[Executors]:
    factory = Executors(executor_cls)
    yield factory
    factory.teardown()


def mul(x: int, y: int) -> int:
    return x * y


def echo(*args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    return args, kwargs


# -- the public name ------------------------------------------------------------


def test_exported() -> None:
    assert "KeyedExecutor" in fastdispatch.__all__
    assert issubclass(fastdispatch.KeyedExecutor, cf.Executor)


# -- submit ---------------------------------------------------------------------


def test_submit(executors: Executors) -> None:
    ex = executors()
    f = ex.submit(pow, 2, 8)
    assert isinstance(f, cf.Future) and type(f) is Future
    assert f.result(timeout=WAIT) == 256


def test_submit_passes_every_keyword_through(executors: Executors) -> None:
    ex = executors()
    assert ex.submit(echo, 1, fn=2, key=3).result(WAIT) == ((1,), {"fn": 2, "key": 3})
    got = ex.submit_keyed("k", echo, 1, key="kw", self=4).result(WAIT)
    assert got == ((1,), {"key": "kw", "self": 4})


def test_exception_goes_into_the_future(executors: Executors) -> None:
    ex = executors()
    for submit in (ex.submit, lambda fn, *a: ex.submit_keyed("k", fn, *a)):
        f = submit(mul, 1, "x", "too many")
        with pytest.raises(TypeError):
            f.result(timeout=WAIT)
        assert isinstance(f.exception(timeout=WAIT), TypeError)
    # a BaseException too, as ThreadPoolExecutor does
    f = ex.submit_keyed("k", sys.exit, 3)
    exc = f.exception(timeout=WAIT)
    assert isinstance(exc, SystemExit) and exc.code == 3
    assert ex.submit_keyed("k", mul, 2, 3).result(WAIT) == 6  # the key goes on


def test_unkeyed_calls_run_concurrently(executors: Executors) -> None:
    ex = executors(max_workers=4)
    barrier = threading.Barrier(4)
    fs = [ex.submit(barrier.wait, WAIT) for _ in range(4)]
    assert sorted(f.result(timeout=WAIT) for f in fs) == [0, 1, 2, 3]


def test_different_keys_run_concurrently(executors: Executors) -> None:
    ex = executors(max_workers=3)
    barrier = threading.Barrier(3)
    fs = [ex.submit_keyed(k, barrier.wait, WAIT) for k in ("a", "b", "c")]
    assert sorted(f.result(timeout=WAIT) for f in fs) == [0, 1, 2]


def test_same_key_one_at_a_time_in_submit_order(executors: Executors) -> None:
    ex = executors(max_workers=8)
    rec = Recorder()
    keys = [f"k{i}" for i in range(20)] + [1, 1.0, (2, "t")]
    fs = [ex.submit_keyed(k, rec.handle, (k, i)) for i in range(100) for k in keys]
    cf.wait(fs, timeout=WAIT)
    assert all(f.done() and f.exception() is None for f in fs)
    assert not rec.overlaps
    assert rec.by_master["k7"] == list(range(100))
    assert rec.by_master[1] == [i for i in range(100) for _ in range(2)]  # 1 == 1.0: one key
    assert rec.by_master[(2, "t")] == list(range(100))


def test_max_workers_bounds_the_threads(executors: Executors) -> None:
    ex = executors(max_workers=2, thread_name_prefix="kx-bound")
    gate = executors.gate()
    running = threading.Semaphore(0)

    def hold() -> None:
        running.release()
        assert gate.wait(WAIT)

    fs = [ex.submit(hold) for _ in range(5)]
    assert running.acquire(timeout=WAIT) and running.acquire(timeout=WAIT)
    assert len(threads_named("kx-bound_")) == 2
    assert sum(f.running() for f in fs) == 2
    gate.set()
    cf.wait(fs, timeout=WAIT)
    assert all(f.done() for f in fs)
    assert all(t.name.startswith("kx-bound_") for t in threads_named("kx-bound"))


# -- map ------------------------------------------------------------------------


def test_map(executors: Executors) -> None:
    ex = executors()
    assert list(ex.map(pow, range(10), range(10))) == [pow(i, i) for i in range(10)]
    assert list(ex.map(mul, [1, 2, 3], [4, 5])) == [4, 10]  # zip semantics
    assert list(ex.map(abs, [])) == []


def test_map_with_key_keeps_each_keys_order(executors: Executors) -> None:
    ex = executors(max_workers=4)
    rec = Recorder()
    works = [(i % 5, i) for i in range(200)]
    results = list(ex.map(rec.handle, works, key=lambda w: w[0], timeout=WAIT))
    assert results == works  # input order
    assert not rec.overlaps
    assert rec.by_master[3] == list(range(3, 200, 5))


def test_map_reraises_the_first_failure_in_input_order(executors: Executors) -> None:
    ex = executors()
    it = ex.map(lambda x: 10 // x, [5, 0, 2])
    assert next(it) == 2
    with pytest.raises(ZeroDivisionError):
        next(it)


def test_map_timeout(executors: Executors) -> None:
    ex = executors(max_workers=2)
    gate = executors.gate()
    it = ex.map(lambda x: gate.wait(WAIT) and x, [1, 2], timeout=0.05, key=lambda x: "same")
    with pytest.raises(cf.TimeoutError):
        list(it)
    gate.set()


def test_map_cancels_what_is_left_when_abandoned(executors: Executors) -> None:
    ex = executors(max_workers=1)
    gates = {0: executors.gate(), 1: executors.gate()}
    started = {0: threading.Event(), 1: threading.Event()}
    ran: list[int] = []

    def work(x: int) -> int:
        if x in gates:
            started[x].set()
            assert gates[x].wait(WAIT)
        ran.append(x)
        return x

    it = ex.map(work, range(5), key=lambda x: "k", timeout=WAIT)
    assert started[0].wait(WAIT)
    gates[0].set()
    assert next(it) == 0
    assert started[1].wait(WAIT)
    it.close()  # abandoned: what has not started is cancelled, as Executor.map does
    gates[1].set()
    ex.shutdown(wait=True)
    assert ran == [0, 1]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"chunksize": 0}, ValueError, "chunksize"),
        ({"chunksize": 1.5}, TypeError, "chunksize"),
        ({"key": "not callable"}, TypeError, "key"),
    ],
)
def test_map_bad_arguments(
    executors: Executors, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    ex = executors()
    with pytest.raises(error, match=match):
        ex.map(abs, [1, 2], **kwargs)
    assert ex._dispatcher.stats().dispatched == 0


def test_map_with_a_bad_key_half_way_cancels_what_it_queued(executors: Executors) -> None:
    ex = executors(max_workers=1)
    gate = executors.gate()
    started = threading.Event()

    def hold() -> None:
        started.set()
        assert gate.wait(WAIT)

    ex.submit_keyed("hold", hold)
    assert started.wait(WAIT)
    ran: list[int] = []
    with pytest.raises(TypeError, match=r"key must be hashable, got \[3\]"):
        ex.map(ran.append, [1, 2, 3], key=lambda x: x if x < 3 else [x])
    gate.set()
    ex.shutdown(wait=True)
    assert ran == []
    assert ex._dispatcher.stats().cancelled == 2


# -- for_key ----------------------------------------------------------------------


def test_for_key_view_runs_under_its_key(executors: Executors) -> None:
    ex = executors(max_workers=4)
    rec = Recorder()
    view = ex.for_key("v")
    assert isinstance(view, cf.Executor)
    fs = [view.submit(rec.handle, ("v", i)) for i in range(50)]
    assert list(view.map(rec.handle, [("v", i) for i in range(50, 60)])) == [
        ("v", i) for i in range(50, 60)
    ]
    cf.wait(fs, timeout=WAIT)
    assert rec.by_master["v"] == list(range(60)) and not rec.overlaps


def test_for_key_with_run_in_executor(executors: Executors) -> None:
    ex = executors(max_workers=4)
    rec = Recorder()

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        views = {k: ex.for_key(k) for k in ("a", "b")}
        calls = [
            loop.run_in_executor(views[k], rec.handle, (k, i)) for i in range(30) for k in views
        ]
        return await asyncio.wait_for(asyncio.gather(*calls), WAIT)

    results = asyncio.run(main())
    assert len(results) == 60
    assert rec.by_master["a"] == list(range(30)) == rec.by_master["b"]
    assert not rec.overlaps


def test_shutting_a_view_down_shuts_nothing(executors: Executors) -> None:
    ex = executors()
    with ex.for_key("k") as view:
        assert view.submit(mul, 2, 2).result(WAIT) == 4
    view.shutdown(wait=True, cancel_futures=True)
    assert view.submit(mul, 3, 3).result(WAIT) == 9
    assert ex.submit(mul, 4, 4).result(WAIT) == 16


def test_for_key_unhashable(executors: Executors) -> None:
    ex = executors()
    with pytest.raises(TypeError, match="key must be hashable"):
        ex.for_key(["a list"])


# -- cancellation ------------------------------------------------------------------


def test_cancelled_pending_call_is_skipped_without_stalling_its_key(
    executors: Executors,
) -> None:
    ex = executors(max_workers=2)
    gate = executors.gate()
    started = threading.Event()
    ran: list[str] = []

    def work(name: str) -> str:
        if name == "first":
            started.set()
            assert gate.wait(WAIT)
        ran.append(name)
        return name

    first = ex.submit_keyed("k", work, "first")
    assert started.wait(WAIT)
    second = ex.submit_keyed("k", work, "second")
    third = ex.submit_keyed("k", work, "third")
    assert not first.cancel()  # running
    assert second.cancel()
    gate.set()
    assert third.result(timeout=WAIT) == "third"
    assert ran == ["first", "third"]
    assert second.cancelled()
    with pytest.raises(cf.CancelledError):
        second.result(timeout=0)


def test_random_cancellations_lose_nothing_and_keep_order(executors: Executors) -> None:
    """Cancel about a third of the calls while they are queued or running: a call
    runs iff its future was not cancelled, and each key's calls run in order."""
    rng = random.Random(1234)
    ex = executors(max_workers=4)
    rec = Recorder()
    futures = [(k, i, ex.submit_keyed(k, rec.handle, (k, i))) for i in range(300) for k in range(8)]
    cancelled = {(k, i) for k, i, f in futures if rng.random() < 0.33 and f.cancel()}
    ex.shutdown(wait=True)
    assert not rec.overlaps
    for k in range(8):
        expected = [i for i in range(300) if (k, i) not in cancelled]
        assert rec.by_master[k] == expected
    for k, i, f in futures:
        assert f.done()
        assert f.cancelled() == ((k, i) in cancelled)
        if not f.cancelled():
            assert f.result(timeout=0) == (k, i)
    assert ex._dispatcher.stats().cancelled == len(cancelled)


def test_set_running_before_each_call(executors: Executors) -> None:
    ex = executors()
    seen: list[bool] = []
    box: list[cf.Future[Any]] = []
    ready = threading.Event()

    def work() -> None:
        assert ready.wait(WAIT)
        seen.append(box[0].running())

    box.append(ex.submit_keyed("k", work))
    ready.set()
    box[0].result(timeout=WAIT)
    assert seen == [True]


# -- done callbacks ----------------------------------------------------------------


def test_done_callbacks_run_in_the_worker(executors: Executors) -> None:
    ex = executors(thread_name_prefix="kx-cb")
    gate = executors.gate()
    seen: list[tuple[Any, str]] = []
    done = threading.Event()

    def note(fut: cf.Future[Any]) -> None:
        seen.append((fut.result(), threading.current_thread().name))
        done.set()

    f = ex.submit_keyed("k", lambda: gate.wait(WAIT) and 42)
    f.add_done_callback(note)  # before it completes: the completing worker runs it
    gate.set()
    assert done.wait(WAIT)
    ((result, thread_name),) = seen
    assert result == 42 and thread_name.startswith("kx-cb_")
    late: list[str] = []
    f.add_done_callback(lambda _: late.append(threading.current_thread().name))
    assert late == [threading.current_thread().name]  # already done: runs at once, here


def test_a_raising_done_callback_is_logged_like_the_standard_library(
    executors: Executors, caplog: pytest.LogCaptureFixture
) -> None:
    ex = executors(max_workers=1)
    gate = executors.gate()
    f = ex.submit_keyed("k", gate.wait, WAIT)
    after = threading.Event()

    def bad(_: Any) -> None:
        raise ValueError("callback broke")

    f.add_done_callback(bad)
    f.add_done_callback(lambda _: after.set())
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        gate.set()
        assert after.wait(WAIT)
        assert ex.submit_keyed("k", mul, 1, 2).result(WAIT) == 2  # the worker survived
    messages = [r.getMessage() for r in caplog.records if r.name == "concurrent.futures"]
    assert len(messages) == 1 and messages[0].startswith("exception calling callback for")


# -- shutdown -----------------------------------------------------------------------


def test_submit_after_shutdown_raises_runtime_error(executors: Executors) -> None:
    ex = executors()
    ex.shutdown()
    for submit in (
        lambda: ex.submit(abs, 1),
        lambda: ex.submit_keyed("k", abs, 1),
        lambda: ex.for_key("k").submit(abs, 1),
        lambda: ex.map(abs, [1]),
    ):
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            submit()


def test_shutdown_is_idempotent_and_joins_the_threads(executors: Executors) -> None:
    ex = executors(thread_name_prefix="kx-join")
    fs = [ex.submit_keyed(i % 3, mul, i, 2) for i in range(30)]
    ex.shutdown(wait=True)
    assert [f.result(timeout=0) for f in fs] == [i * 2 for i in range(30)]
    assert not threads_named("kx-join_")
    ex.shutdown()
    ex.shutdown(wait=False, cancel_futures=True)


def test_context_manager_waits_for_everything(executors: Executors) -> None:
    with executors(max_workers=2, thread_name_prefix="kx-with") as ex:
        fs = [ex.submit_keyed(i % 4, mul, i, i) for i in range(100)]
        fs += [ex.submit(mul, i, 1) for i in range(100)]
    assert all(f.done() for f in fs)
    assert not threads_named("kx-with_")


def test_shutdown_no_wait_lets_the_work_finish(executors: Executors) -> None:
    ex = executors(max_workers=1, thread_name_prefix="kx-nowait")
    gate = executors.gate()
    first = ex.submit_keyed("k", gate.wait, WAIT)
    rest = [ex.submit_keyed("k", mul, i, 1) for i in range(5)]
    ex.shutdown(wait=False)
    with pytest.raises(RuntimeError):
        ex.submit(abs, 1)
    gate.set()
    assert [f.result(timeout=WAIT) for f in rest] == list(range(5))
    assert first.result(timeout=WAIT) is True
    join_threads("kx-nowait_")


def test_shutdown_cancel_futures(executors: Executors) -> None:
    ex = executors(max_workers=1)
    gate = executors.gate()
    started = threading.Event()

    def hold() -> str:
        started.set()
        assert gate.wait(WAIT)
        return "ran"

    first = ex.submit_keyed("k", hold)
    assert started.wait(WAIT)
    keyed = [ex.submit_keyed("k", mul, i, 1) for i in range(5)]
    unkeyed = [ex.submit(mul, i, 1) for i in range(5)]
    releaser = threading.Timer(0, gate.set)
    ex.shutdown(wait=False, cancel_futures=True)
    releaser.start()
    assert all(f.cancelled() for f in keyed + unkeyed)
    assert first.result(timeout=WAIT) == "ran"
    ex.shutdown(wait=True)
    releaser.join(WAIT)


def test_shutdown_wait_from_an_own_call_raises(executors: Executors) -> None:
    ex = executors()

    def shut(wait: bool) -> str:
        ex.shutdown(wait=wait)
        return "returned"

    f = ex.submit_keyed("k", shut, True)
    with pytest.raises(RuntimeError, match="wait for itself"):
        f.result(timeout=WAIT)
    assert ex.submit(abs, -1).result(WAIT) == 1  # changed nothing
    assert ex.submit_keyed("k", shut, False).result(WAIT) == "returned"
    with pytest.raises(RuntimeError):
        ex.submit(abs, -1)


def test_calls_submitted_by_calls(executors: Executors) -> None:
    ex = executors(max_workers=2)
    rec = Recorder()

    def spawn(i: int) -> Any:
        rec.handle(("k", i))
        if i < 20:
            return ex.submit_keyed("k", spawn, i + 1)
        return None

    f = ex.submit_keyed("k", spawn, 0)
    for _ in range(21):
        f = f.result(timeout=WAIT) or f
        if not isinstance(f, cf.Future):
            break
    until(lambda: rec.count == 21, what="the chain of calls")
    assert rec.by_master["k"] == list(range(21))


def test_calls_still_queued_at_interpreter_exit_run(python_in: Any) -> None:
    code = """
import threading
from fastdispatch import KeyedExecutor
ex = KeyedExecutor(max_workers=2)
gate = threading.Event()
ex.submit_keyed("k", gate.wait, 10)
for i in range(5):
    ex.submit_keyed("k", print, i)
ex.submit(print, "unkeyed")
threading.Timer(0.05, gate.set).start()  # the calls are still queued when the script ends
"""
    result = python_in(code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [x for x in lines if x != "unkeyed"] == ["0", "1", "2", "3", "4"]
    assert lines.count("unkeyed") == 1


# -- capacity ---------------------------------------------------------------------


def test_capacity_blocks_submit_keyed_of_a_full_key(executors: Executors) -> None:
    ex = executors(max_workers=2, capacity=2)
    assert ex.capacity == 2
    gate = executors.gate()
    started = threading.Event()

    def hold() -> None:
        started.set()
        assert gate.wait(WAIT)

    ex.submit_keyed("k", hold)
    assert started.wait(WAIT)
    queued = [ex.submit_keyed("k", mul, i, 1) for i in range(2)]  # the key is now full
    assert ex.submit_keyed("other", mul, 5, 1).result(WAIT) == 5  # other keys are not held up
    assert ex.submit(mul, 6, 1).result(WAIT) == 6  # nor unkeyed calls
    blocked = Call(lambda: ex.submit_keyed("k", mul, 9, 1))
    assert blocked.started_call.wait(WAIT)
    blocked.join(0.1)  # it must still be waiting for room, not done
    assert blocked.is_alive() and ex._dispatcher.pending("k") == 2
    gate.set()
    assert blocked.finish().result(timeout=WAIT) == 9
    assert [f.result(timeout=WAIT) for f in queued] == [0, 1]


def test_capacity_full_key_from_an_own_call_raises_queue_full(executors: Executors) -> None:
    ex = executors(max_workers=2, capacity=1)
    gate = executors.gate()

    def fill_own_key() -> str:
        ex.submit_keyed("k", gate.wait, WAIT)  # queued behind this call: the key is full
        with pytest.raises(QueueFull):
            ex.submit_keyed("k", abs, 1)
        return "ok"

    assert ex.submit_keyed("k", fill_own_key).result(timeout=WAIT) == "ok"
    gate.set()


def test_default_capacity_is_unbounded(executors: Executors) -> None:
    assert executors().capacity is None


# -- bad input ----------------------------------------------------------------------


def test_unhashable_key(executors: Executors) -> None:
    ex = executors()
    with pytest.raises(TypeError, match=r"key must be hashable, got \{\}"):
        ex.submit_keyed({}, abs, 1)
    assert ex._dispatcher.stats().dispatched == 0


def test_fn_not_callable(executors: Executors) -> None:
    ex = executors()
    for call in (
        lambda: ex.submit(42),
        lambda: ex.submit_keyed("k", 42),
        lambda: ex.map(42, [1]),
    ):
        with pytest.raises(TypeError, match="fn must be callable, got 42"):
            call()
    assert ex._dispatcher.stats().dispatched == 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_workers": 0}, ValueError),
        ({"max_workers": -1}, ValueError),
        ({"max_workers": "2"}, TypeError),
        ({"capacity": 0}, ValueError),
        ({"thread_name_prefix": 3}, TypeError),
    ],
)
def test_bad_constructor_arguments(
    executor_cls: type[KeyedExecutor], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        executor_cls(**kwargs)


def test_repr(executors: Executors) -> None:
    ex = executors(max_workers=3, capacity=7)
    assert "open" in repr(ex) and "capacity=7" in repr(ex) and "/3" in repr(ex)
    assert "key='k'" in repr(ex.for_key("k"))
    ex.shutdown()
    assert "shut down" in repr(ex)


# -- the README section -------------------------------------------------------------


def test_readme_section_runs(python_in: Any) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    heading = re.search(r"^## From ThreadPoolExecutor to KeyedExecutor$", readme, re.MULTILINE)
    assert heading, "README.md has no 'From ThreadPoolExecutor to KeyedExecutor' section"
    block = re.search(r"^```python\n(.*?)^```", readme[heading.end() :], re.DOTALL | re.MULTILINE)
    assert block, "the section has no python block"
    result = python_in(block.group(1))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["6", "[1, 3]", "{'alice': 25, 'bob': 3}"]
