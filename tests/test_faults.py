"""Fault injection: each fault has a defined outcome, and a test that checks it.

The semantic suite (test_errors, test_close, test_backpressure, test_fork,
test_exit) checks each rule once, in the quiet case. These tests inject the
same faults where they hurt: under load, on several workers at once, in every
layer of the error-reporting chain, and at the moments of fork and exit.

Fault -> defined outcome (each has a test below):

* on_error raises (Exception or BaseException), on every failure, on several
  workers -> logged once each on "fastdispatch"; workers, masters and
  counters carry on; nothing lost.
* on_error raises and logging that raises too -> reported through
  sys.unraisablehook; the worker survives.
* on_error re-dispatches (retry) into full queues -> accepted retries run
  once; refused ones (QueueFull at once) are logged.
* a work whose repr raises, default on_error -> logging reports its own
  error; the worker survives.
* handlers raise every kind of BaseException, incl. a real RecursionError,
  via dispatch and submit -> on_error or the future gets exactly that; no
  worker thread dies or is replaced.
* a handler submits / dispatch_many's into a full queue -> QueueFull at once
  (with .accepted), never a deadlock.
* a worker of *another* dispatcher meets a full queue -> it may wait, and
  gets room when the queue drains.
* several handlers call close(wait=False, cancel_pending=True) at once ->
  every queued item is returned exactly once, to exactly one caller.
* a handler closes while producers block -> they get DispatcherClosed;
  everything accepted runs.
* a handler waits on / closes another dispatcher -> allowed.
* fork() repeatedly during a busy run -> each child sees a closed dispatcher
  that answers, never hangs, and can build a new one; the parent loses
  nothing.
* fork() from inside a handler -> in the child the thread is no worker:
  close() returns [], wait() True.
* exit with producers blocked on a full queue -> they get DispatcherClosed;
  accepted items all run.
* exit during close(wait=False, cancel_pending=True) -> returned items never
  run, all others run once.
* exit while handlers keep re-dispatching -> each chain ends with one
  DispatcherClosed; exit completes.
* exit by an uncaught KeyboardInterrupt -> accepted work is still drained.
* a dispatcher collected without close() -> intake closes, workers drain and
  exit, futures get their results.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import select
import sys
import threading
import time
import warnings
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from fastdispatch import DispatcherClosed, QueueFull
from helpers import WAIT, Blocker

#: "At once": far below any timeout a blocking call could be waiting on.
AT_ONCE = 2.0

posix_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")


class CustomBase(BaseException):
    """A BaseException subclass a user might define."""


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ of the exception raises too")


def drained(d: Any, timeout: float = WAIT) -> None:
    assert d.wait(timeout=timeout), f"did not drain in {timeout}s: {d.stats()}"


def identity(d: Any) -> Any:
    s = d.stats()
    assert s.dispatched == s.completed + s.failed + s.cancelled + s.pending + s.running, s
    return s


def worker_threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def join_workers(prefix: str, timeout: float = WAIT) -> None:
    for t in worker_threads(prefix):
        t.join(timeout)
    assert not worker_threads(prefix), f"workers still alive: {worker_threads(prefix)}"


@pytest.fixture
def thread_deaths(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Exceptions that escaped any thread (a dead worker would show here)."""
    seen: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", seen.append)
    return seen


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What reached sys.unraisablehook during the test."""
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append((u.exc_value, u.err_msg)))
    return seen


# -- on_error ---------------------------------------------------------------------

# Classes, not instances: re-raising one instance would grow its traceback every time.
ON_ERROR_RAISES: list[type[BaseException]] = [
    ValueError,
    KeyboardInterrupt,
    SystemExit,
    CustomBase,
    BadStr,
]


def test_on_error_raising_every_kind_under_load(
    make: Any, caplog: pytest.LogCaptureFixture, thread_deaths: list[Any]
) -> None:
    """Every failure's on_error raises (five kinds, two workers): each is logged once."""
    caplog.set_level(logging.ERROR, logger="fastdispatch")
    order: dict[int, list[int]] = {m: [] for m in range(8)}
    lock = threading.Lock()

    def handle(work: tuple[int, int]) -> None:
        master, i = work
        with lock:
            order[master].append(i)
        if i % 3 == 0:
            raise LookupError(work)

    calls = Counter[type]()

    def on_error(exc: BaseException, work: Any, master: Any) -> None:
        kind = ON_ERROR_RAISES[work[1] % len(ON_ERROR_RAISES)]
        with lock:
            calls[kind] += 1
        raise kind()

    d = make(handle, max_workers=2, on_error=on_error, thread_name_prefix="fdfault-onerr")
    n = 600
    for i in range(n):
        d.dispatch((i % 8, i), i % 8)
    drained(d)
    failing = len(range(0, n, 3))
    assert {m: seq for m, seq in order.items()} == {m: list(range(m, n, 8)) for m in range(8)}
    assert sum(calls.values()) == failing and len(calls) == len(ON_ERROR_RAISES)
    logged = [r for r in caplog.records if r.name == "fastdispatch" and r.exc_info]
    assert len(logged) == failing, "every failure of on_error is logged exactly once"
    assert {type(r.exc_info[1]) for r in logged} == set(calls)
    s = identity(d)
    assert (s.completed, s.failed) == (n - failing, failing)
    assert 1 <= s.workers <= 2 and not thread_deaths
    assert d.submit((0, -1), 0).result(timeout=WAIT) is None  # still serving


def test_on_error_and_its_logging_both_raise(
    make: Any, unraisable: list[Any], thread_deaths: list[Any]
) -> None:
    """The whole reporting chain fails: the last resort is sys.unraisablehook."""

    class Explode(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            raise OSError("the log pipeline is broken")

    def on_error(exc: BaseException, work: Any, master: Any) -> None:
        raise ValueError(f"on_error for {work}")

    log = logging.getLogger("fastdispatch")
    filt = Explode()
    log.addFilter(filt)
    try:
        handled: list[int] = []

        def handle(i: int) -> None:
            handled.append(i)
            if i % 2:
                raise RuntimeError(i)

        d = make(handle, max_workers=1, on_error=on_error)
        for i in range(20):
            d.dispatch(i, "m")
        drained(d)
    finally:
        log.removeFilter(filt)
    assert handled == list(range(20))
    assert len(unraisable) == 10, unraisable
    assert all(isinstance(exc, OSError) for exc, _ in unraisable)
    s = identity(d)
    assert (s.completed, s.failed) == (10, 10)
    assert not thread_deaths


def test_on_error_retries_into_full_queues(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A common pattern: on_error re-dispatches the failed work. With a capacity the
    worker gets QueueFull at once (no deadlock); that failure is logged."""
    caplog.set_level(logging.ERROR, logger="fastdispatch")
    ran: Counter[Any] = Counter()
    retried: list[Any] = []
    holder: dict[str, Any] = {}

    def handle(work: tuple[str, int, int]) -> None:
        ran[work] += 1
        if work[2] == 0 and work[1] % 2 == 0:
            raise ValueError(work)

    def on_error(exc: BaseException, work: Any, master: Any) -> None:
        retry = (work[0], work[1], 1)
        holder["d"].dispatch(retry, master)  # QueueFull at once if full
        retried.append(retry)

    d = holder["d"] = make(handle, max_workers=2, capacity=3, on_error=on_error)
    accepted = []
    for i in range(300):
        m = f"m{i % 3}"
        d.dispatch((m, i, 0), m)
        accepted.append((m, i, 0))
    drained(d)
    refused = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], QueueFull)]
    assert len(retried) + len(refused) == 150, "every failure was retried or reported"
    assert all(ran[w] == 1 for w in accepted + retried)
    assert set(ran) == set(accepted) | set(retried)
    s = identity(d)
    assert s.failed == 150 and s.dispatched == 300 + len(retried)


def test_default_on_error_with_a_work_whose_repr_raises(python_in: Any) -> None:
    """The default on_error logs %r of the work; a raising __repr__ must not kill
    the worker nor hide the failure (logging reports its own error on stderr)."""
    code = r"""
import sys
from fastdispatch import Dispatcher
class Evil:
    def __init__(self, i): self.i = i
    def __repr__(self): raise RuntimeError("repr of the work raises")
done = []
def handle(w):
    done.append(w.i)
    if w.i == 1:
        raise ValueError("handler failed")
d = Dispatcher(handle, max_workers=1)
for i in range(5):
    d.dispatch(Evil(i), "m")
d.close()
s = d.stats()
print(done, s.completed, s.failed, s.workers)
"""
    result = python_in(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "[0, 1, 2, 3, 4] 4 1 0"
    assert "ValueError: handler failed" in result.stderr or "Logging error" in result.stderr


# -- handlers raising -------------------------------------------------------------


def _recurse(n: int) -> int:
    return _recurse(n + 1) + 1


def _raise(exc: BaseException) -> None:
    raise exc


RAISERS: list[Callable[[], Any]] = [
    lambda: _raise(StopIteration("stop")),
    lambda: _recurse(0),  # a real RecursionError, raised deep in the worker's stack
    lambda: _raise(MemoryError()),
    lambda: _raise(KeyboardInterrupt()),
    lambda: _raise(SystemExit(1)),
    lambda: _raise(GeneratorExit()),
    lambda: _raise(CustomBase("custom")),
    lambda: _raise(BadStr()),
]
EXPECTED = [
    StopIteration,
    RecursionError,
    MemoryError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
    CustomBase,
    BadStr,
]


def test_every_base_exception_under_load_dispatch_and_submit(
    make: Any, thread_deaths: list[Any]
) -> None:
    """Handlers on four workers raise every kind; the futures and on_error get
    exactly those, and the same worker threads carry on (none died)."""
    reports: dict[Any, BaseException] = {}
    threads: set[int] = set()
    lock = threading.Lock()

    def handle(work: tuple[int, int]) -> int:
        with lock:
            threads.add(threading.get_ident())
        kind = work[1] % (len(RAISERS) + 1)
        if kind < len(RAISERS):
            RAISERS[kind]()
        return work[1]

    def on_error(exc: BaseException, work: Any, master: Any) -> None:
        with lock:
            reports[work] = exc

    d = make(handle, max_workers=4, on_error=on_error, thread_name_prefix="fdfault-raise")
    futures = {}
    n = 900
    for i in range(n):
        work = (i % 16, i)
        if i % 2:
            futures[work] = d.submit(work, work[0])
        else:
            d.dispatch(work, work[0])
    drained(d)
    for i in range(n):
        work = (i % 16, i)
        kind = i % (len(RAISERS) + 1)
        got = futures[work].exception(0) if work in futures else reports.pop(work, None)
        if kind == len(RAISERS):
            assert got is None and (work not in futures or futures[work].result(0) == i)
        else:
            assert isinstance(got, EXPECTED[kind]), (work, got)
    assert not reports, "on_error called for submitted or successful work"
    assert len(threads) <= 4 and not thread_deaths, "a worker died and was replaced"
    s = identity(d)
    assert s.failed == sum(1 for i in range(n) if i % (len(RAISERS) + 1) != len(RAISERS))
    assert s.completed == n - s.failed


# -- handlers that dispatch -------------------------------------------------------


def test_handler_submit_and_dispatch_many_into_full_queue(make: Any) -> None:
    """submit and dispatch_many from a worker into a full queue: QueueFull at once,
    dispatch_many with .accepted = the pairs before the full master."""
    gate = make.gate()
    holder: dict[str, Any] = {}
    outcomes: list[Any] = []

    def handle(work: str) -> None:
        if work == "hold":
            assert gate.wait(WAIT)
            return
        if work != "probe":
            return
        try:
            probe(holder["d"])
        finally:
            gate.set()  # only now may "full" drain

    def probe(d: Any) -> None:
        for name, call in [
            ("submit", lambda: d.submit("x", "full")),
            ("submit-timeout", lambda: d.submit("x", "full", timeout=60)),
            ("many", lambda: d.dispatch_many([("y", "free1"), ("y", "free2"), ("z", "full")])),
        ]:
            t0 = time.monotonic()
            try:
                call()
            except QueueFull as exc:
                outcomes.append((name, time.monotonic() - t0, getattr(exc, "accepted", None)))
            else:
                outcomes.append((name, "accepted", None))

    d = holder["d"] = make(handle, max_workers=2, capacity=1)
    d.dispatch("hold", "full")  # runs on worker 1, blocked
    d.dispatch("queued", "full")  # fills "full"
    d.dispatch("probe", "probe")  # runs on worker 2 while "hold" blocks worker 1
    drained(d)
    names = [o[0] for o in outcomes]
    assert names == ["submit", "submit-timeout", "many"], outcomes
    assert all(isinstance(o[1], float) and o[1] < AT_ONCE for o in outcomes), outcomes
    assert outcomes[2][2] == 2, "dispatch_many accepted the two pairs before the full one"
    assert identity(d).completed == 5  # hold, queued, probe, y, y


def test_worker_of_another_dispatcher_may_wait_for_room(make: Any) -> None:
    """QueueFull-at-once is for a dispatcher's own workers; d2's worker feeding a
    full d1 waits for room like any producer."""
    gate = make.gate()
    d1 = make(lambda w: gate.wait(WAIT), max_workers=1, capacity=1)
    result: list[Any] = []

    def feed(work: Any) -> None:
        t0 = time.monotonic()
        d1.dispatch("fed", "m", timeout=WAIT)
        result.append(time.monotonic() - t0)

    d2 = make(feed, max_workers=1)
    d1.dispatch("running", "m")
    d1.dispatch("queued", "m")  # d1's "m" is full now (once "running" started)
    d2.dispatch("go", "x")
    # d2's worker must now wait for room in d1 (it must not fail at once):
    # give it a moment to get there, then let d1 drain.
    time.sleep(0.1)
    assert result == [], "d2's worker should be waiting for room in d1"
    gate.set()
    drained(d2)
    drained(d1)
    assert len(result) == 1, "d2's worker got an error instead of room (see the log)"
    assert identity(d1).completed == 3


# -- handlers that close ------------------------------------------------------------


def test_several_handlers_cancel_at_once(make: Any) -> None:
    """Four handlers (and the main thread) call close(wait=False, cancel_pending=True)
    together: every queued item is returned exactly once, to exactly one caller."""
    n_masters, depth = 4, 200
    barrier = threading.Barrier(n_masters + 1)
    holder: dict[str, Any] = {}
    got: list[list[Any]] = []
    ran: list[Any] = []
    lock = threading.Lock()

    def handle(work: tuple[int, int]) -> None:
        with lock:
            ran.append(work)
        if work[1] == 0:
            barrier.wait(WAIT)
            taken = holder["d"].close(wait=False, cancel_pending=True)
            with lock:
                got.append(taken)

    d = holder["d"] = make(handle, max_workers=n_masters)
    for i in range(depth):
        for m in range(n_masters):
            d.dispatch((m, i), m)
    barrier.wait(WAIT)
    main_taken = d.close(cancel_pending=True)
    got.append(main_taken)
    drained(d)
    returned = [w for taken in got for w, _ in taken]
    assert len(got) == n_masters + 1
    assert len(returned) == len(set(returned)), "an item was returned twice"
    assert set(returned).isdisjoint(ran), "an item was both returned and run"
    assert set(returned) | set(ran) == {(m, i) for m in range(n_masters) for i in range(depth)}
    for taken in got:  # FIFO within a master, in each caller's share
        for m in range(n_masters):
            seq = [w[1] for w, master in taken if master == m]
            assert seq == sorted(seq)
    s = identity(d)
    assert s.cancelled == len(returned) and s.completed == len(ran)
    assert (s.pending, s.running, s.active_masters) == (0, 0, 0)


def test_handler_closes_while_producers_block(make: Any) -> None:
    """Producers blocked on a full queue are released with DispatcherClosed when a
    handler closes (wait=False); everything accepted still runs."""
    gate = make.gate()
    holder: dict[str, Any] = {}
    ran: list[Any] = []

    def handle(work: Any) -> None:
        ran.append(work)
        if work == "closer":
            assert gate.wait(WAIT)
            holder["d"].close(wait=False)

    # One worker: while "closer" holds it, nothing drains and producers block.
    d = holder["d"] = make(handle, max_workers=1, capacity=2)
    d.dispatch("closer", "c")
    outcomes: dict[int, list[Any]] = {i: [] for i in range(4)}

    def produce(p: int) -> None:
        for i in range(1000):
            try:
                d.dispatch((p, i), "full")
            except DispatcherClosed:
                outcomes[p].append("closed")
                return
            outcomes[p].append((p, i))

    producers = [threading.Thread(target=produce, args=(p,)) for p in range(4)]
    for t in producers:
        t.start()
    deadline = time.monotonic() + WAIT
    while d.pending("full") < 2:  # two accepted: the others are blocked now
        assert time.monotonic() < deadline, d.stats()
        time.sleep(0.001)
    gate.set()
    for t in producers:
        t.join(WAIT)
    assert not any(t.is_alive() for t in producers)
    drained(d)
    accepted = [w for p in outcomes.values() for w in p if w != "closed"]
    assert all(p[-1] == "closed" for p in outcomes.values()), "producers must see the close"
    assert len(accepted) == 2, accepted
    assert sorted(accepted) == sorted(w for w in ran if w != "closer"), "accepted == handled"
    s = identity(d)
    assert s.dispatched == 3 and s.completed == 3 and s.cancelled == 0


def test_handler_may_wait_on_and_close_another_dispatcher(make: Any) -> None:
    other_ran: list[int] = []
    other = make(other_ran.append, max_workers=1)
    seen: list[Any] = []

    def handle(work: Any) -> None:
        for i in range(10):
            other.dispatch(i, "o")
        seen.append(other.wait(WAIT))
        seen.append(other.close())
        seen.append(other.closed)

    d = make(handle, max_workers=1)
    d.dispatch("x", "m")
    drained(d)
    assert seen == [True, [], True]
    assert other_ran == list(range(10))


# -- fork -----------------------------------------------------------------------------


def _fork(child: Callable[[], dict[str, Any]], timeout: float = 30.0) -> dict[str, Any]:
    """Run *child* in a forked child with an alarm; return its JSON report.

    Generous timeout: forking a big process (e.g. under AddressSanitizer, on a loaded CI
    machine) can take seconds. A hung child dumps its stacks, then SIGALRM kills it.
    """
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        code = 0
        try:
            import faulthandler
            import signal

            # pytest-timeout may have a Python-level SIGALRM handler, which a child stuck
            # in C would never run: restore the default action (terminate).
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            faulthandler.dump_traceback_later(timeout - 2)
            signal.alarm(int(timeout))
            payload = json.dumps(child())
        except BaseException as exc:
            payload = json.dumps({"child_error": repr(exc)})
            code = 1
        os.write(w, payload.encode())
        os._exit(code)
    os.close(w)
    data = b""
    deadline = time.monotonic() + timeout + 5
    try:
        while True:
            ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, 9)
                pytest.fail("forked child hung")
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    report = json.loads(data or b'{"child_error": "no report (killed?)"}')
    assert "child_error" not in report, report
    assert os.waitstatus_to_exitcode(status) == 0, status
    return report


def _probe_child(d: Any, cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {"intake": []}
    for call in (
        lambda: d.dispatch("x", "m"),
        lambda: d.submit("x", "m", block=False),
        lambda: d.dispatch_many([("x", "m")]),
    ):
        try:
            call()
            out["intake"].append("accepted")
        except DispatcherClosed:
            out["intake"].append("closed")
    out["wait"] = d.wait(timeout=2)
    out["close"] = len(d.close(cancel_pending=True))
    out["stats"] = list(d.stats())
    # A fresh dispatcher in the child works, whatever locks the parent held.
    seen: list[int] = []
    with cls(seen.append, max_workers=2) as fresh:
        for i in range(100):
            fresh.dispatch(i, i % 3)
    out["fresh"] = sorted(seen) == list(range(100))
    return out


@posix_only
def test_fork_storm_during_a_busy_run(make: Any, Dispatcher: type) -> None:
    """Fork 15 times while producers and workers are mid-flight; no child hangs or
    sees accepted work run, and the parent loses nothing."""
    ran: Counter[Any] = Counter()
    lock = threading.Lock()

    def handle(work: Any) -> None:
        with lock:
            ran[work] += 1
        if work[1] % 7 == 0:
            time.sleep(0)  # switch threads mid-handler

    d = make(handle, max_workers=3, capacity=8)
    stop = threading.Event()
    accepted: list[list[Any]] = [[] for _ in range(3)]

    def produce(p: int) -> None:
        i = 0
        while not stop.is_set():
            work = (p, i)
            d.dispatch(work, (p, i % 5))
            accepted[p].append(work)
            i += 1

    producers = [threading.Thread(target=produce, args=(p,)) for p in range(3)]
    for t in producers:
        t.start()
    try:
        for _ in range(15):
            time.sleep(0.01)
            report = _fork(lambda: _probe_child(d, Dispatcher))
            assert report["intake"] == ["closed"] * 3, report
            assert report["wait"] is True and report["close"] == 0, report
            disp, comp, fail, canc, pend, run, active, workers, *_ = report["stats"]
            assert disp == comp + fail + canc and (pend, run, active, workers) == (0, 0, 0, 0)
            assert report["fresh"] is True
    finally:
        stop.set()
        for t in producers:
            t.join(WAIT)
    drained(d)
    everything = [w for p in accepted for w in p]
    assert len(everything) > 0 and all(ran[w] == 1 for w in everything)
    assert sum(ran.values()) == len(everything), "work ran that was never accepted"
    assert identity(d).completed == len(everything)


@posix_only
def test_fork_from_inside_a_handler(make: Any, Dispatcher: type) -> None:
    """In a child forked by a worker, the calling thread is no longer a worker:
    close() and wait() answer instead of raising RuntimeError."""
    reports: list[dict[str, Any]] = []
    holder: dict[str, Any] = {}

    def handle(work: Any) -> None:
        if work == "fork":
            reports.append(_fork(lambda: _probe_child(holder["d"], Dispatcher)))

    d = holder["d"] = make(handle, max_workers=2)
    for i in range(50):
        d.dispatch(i, i % 4)
    d.dispatch("fork", "f")
    for i in range(50, 100):
        d.dispatch(i, i % 4)
    drained(d)
    assert len(reports) == 1, "the handler that forked failed (see on_error log)"
    report = reports[0]
    assert report["intake"] == ["closed"] * 3 and report["wait"] is True
    assert report["close"] == 0 and report["fresh"] is True
    assert identity(d).completed == 101


# -- interpreter exit (subprocesses) ------------------------------------------------

EXIT_BLOCKED_PRODUCERS = r"""
import sys, threading
from fastdispatch import Dispatcher, DispatcherClosed
gate = threading.Event()
def handle(w):
    gate.wait(0.01)  # slow items: the producers spend their time blocked
    sys.stdout.write(f"ran {w}\n")
d = Dispatcher(handle, max_workers=1, capacity=2)
started = threading.Barrier(4)
def produce(p):
    started.wait()
    for i in range(10**6):
        try:
            d.dispatch((p, i), "m")
        except DispatcherClosed:
            sys.stdout.write(f"closed {p}\n")
            return
        sys.stdout.write(f"acc {(p, i)}\n")
for p in range(3):
    threading.Thread(target=produce, args=(p,)).start()
started.wait()
sys.stdout.write("main exits\n")
"""

EXIT_DURING_CANCEL = r"""
import sys, threading
from fastdispatch import Dispatcher
gate = threading.Event()
def handle(w):
    gate.wait(5)
    sys.stdout.write(f"ran {w}\n")
d = Dispatcher(handle, max_workers=2)
for i in range(200):
    d.dispatch(i, i % 4)
    sys.stdout.write(f"acc {i}\n")
for w, m in d.close(wait=False, cancel_pending=True):
    sys.stdout.write(f"ret {w}\n")
threading.Timer(0.2, gate.set).start()
sys.stdout.write("main exits\n")
"""

EXIT_CHAIN = r"""
import sys
from fastdispatch import Dispatcher, DispatcherClosed
holder = {}
def handle(work):
    chain, n = work
    sys.stdout.write(f"ran {chain} {n}\n")
    holder["d"].dispatch((chain, n + 1), (chain + n) % 3)  # until intake closes at exit
def on_error(exc, work, master):
    sys.stdout.write(f"error {type(exc).__name__}\n")
d = holder["d"] = Dispatcher(handle, max_workers=2, on_error=on_error)
for chain in range(3):
    d.dispatch((chain, 0), chain)
sys.stdout.write("main exits\n")
"""

EXIT_INTERRUPTED = r"""
import sys, threading, time
from fastdispatch import Dispatcher
started = threading.Event()
def handle(w):
    started.set()
    time.sleep(0.001)
    sys.stdout.write(f"ran {w}\n")
d = Dispatcher(handle, max_workers=2)
for i in range(300):
    d.dispatch(i, i % 3)
started.wait(5)
raise KeyboardInterrupt
"""


def _lines(out: str, tag: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith(tag + " ")]


def test_exit_with_producers_blocked_on_a_full_queue(python_in: Any) -> None:
    result = python_in(EXIT_BLOCKED_PRODUCERS, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    accepted, ran = _lines(result.stdout, "acc"), _lines(result.stdout, "ran")
    assert sorted(_lines(result.stdout, "closed")) == ["0", "1", "2"], result.stdout[-2000:]
    assert sorted(accepted) == sorted(ran) and len(set(ran)) == len(ran)


def test_exit_during_close_nowait_cancel(python_in: Any) -> None:
    result = python_in(EXIT_DURING_CANCEL, timeout=60)
    assert result.returncode == 0, result.stderr
    accepted, ran = _lines(result.stdout, "acc"), _lines(result.stdout, "ran")
    returned = _lines(result.stdout, "ret")
    assert len(accepted) == 200 and len(returned) >= 198  # at most the two running ran
    assert sorted(ran + returned, key=int) == accepted
    assert set(ran).isdisjoint(returned)


def test_exit_while_handlers_keep_dispatching(python_in: Any) -> None:
    result = python_in(EXIT_CHAIN, timeout=60)
    assert result.returncode == 0, result.stderr
    ran = _lines(result.stdout, "ran")
    errors = _lines(result.stdout, "error")
    # each of the three chains ends with exactly one refused re-dispatch
    assert errors == ["DispatcherClosed"] * 3, result.stdout[-2000:]
    assert len(ran) == len(set(ran)) >= 3


def test_exit_by_keyboard_interrupt_still_drains(python_in: Any) -> None:
    result = python_in(EXIT_INTERRUPTED, timeout=60)
    assert result.returncode != 0 and "KeyboardInterrupt" in result.stderr
    assert sorted(_lines(result.stdout, "ran"), key=int) == [str(i) for i in range(300)]


# -- garbage collection ----------------------------------------------------------------


def test_collected_dispatcher_drains_and_its_workers_exit(Dispatcher: type) -> None:
    """No close(): once unreachable, intake closes; accepted work still runs, the
    futures get their results, and every worker thread exits."""
    gate = threading.Event()
    ran: list[Any] = []
    prefix = "fdfault-gc"

    def handle(work: Any) -> Any:
        assert gate.wait(WAIT)
        ran.append(work)
        return work

    d = Dispatcher(handle, max_workers=3, thread_name_prefix=prefix)
    for i in range(60):
        d.dispatch(i, i % 5)
    fut = d.submit("last", 0)
    ref = weakref.ref(d)
    del d
    gc.collect()
    try:
        assert ref() is None, "nothing but the test referenced the dispatcher"
        assert worker_threads(prefix), "workers are still busy with the accepted work"
    finally:
        gate.set()
    assert fut.result(timeout=WAIT) == "last"
    join_workers(prefix)
    assert sorted(ran, key=str) == sorted([*range(60), "last"], key=str)


# -- a worker thread refused at spawn ------------------------------------------------------


def _refuse_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)


def test_refused_worker_with_others_alive_does_not_fail_the_dispatch(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accepted item must not look refused: a caller would retry it (a duplicate)."""
    handler = Blocker(make.gate())
    d = make(handler, max_workers=2)
    d.dispatch("block", "a")
    assert handler.started.wait(WAIT)
    with monkeypatch.context() as m:
        _refuse_threads(m)
        d.dispatch("x", "b")  # wants a second worker; refused, but accepted
    assert d.stats().dispatched == 2
    handler.gate.set()
    drained(d)
    assert sorted(handler.handled) == ["block", "x"]  # the live worker served it
    s = d.stats()
    assert (s.completed, s.workers) == (2, 1)


def test_refused_worker_with_none_alive_raises_and_keeps_the_item(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    handled: list[Any] = []
    d = make(handled.append, max_workers=2)
    with monkeypatch.context() as m:
        _refuse_threads(m)
        with pytest.raises(RuntimeError, match="can't create new thread"):
            d.dispatch("x", "a")
    s = d.stats()
    assert (s.dispatched, s.pending, s.workers) == (1, 1, 0)  # accepted, nobody runs it yet
    d.dispatch("y", "b")  # an idle master: this dispatch starts a worker
    drained(d)
    assert sorted(handled) == ["x", "y"]
