"""Semantic 12: an inherited dispatcher is closed and inert in a forked child."""

from __future__ import annotations

import faulthandler
import json
import os
import select
import sys
import threading
import time
import warnings
from typing import Any

import pytest

from fastdispatch import DispatcherClosed, Retry
from helpers import WAIT, Recorder, until, wait_ok

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")


def fork_and_report(child: Any, timeout: float = WAIT) -> dict[str, Any]:
    """Run ``child()`` in a forked child; return the JSON-able dict it returns."""
    r, w = os.pipe()
    with warnings.catch_warnings():
        # 3.12+ warns about fork() in a multi-threaded process; forking is the test
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        # A child that hangs prints where it hangs (to the captured stderr) before
        # the parent gives up on it, so a failure says more than "hung".
        faulthandler.dump_traceback_later(timeout * 0.8, exit=True)
        try:
            os.close(r)
            payload = json.dumps(child()).encode()
        except BaseException as exc:
            payload = json.dumps({"child_error": repr(exc)}).encode()
            code = 1
        try:
            os.write(w, payload)
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([r], [], [], max(left, 0))
            if not ready:
                os.kill(pid, 9)
                pytest.fail(f"forked child did not answer in {timeout}s (hung?)")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _reap(pid)
    report = json.loads(b"".join(chunks) or b"{}")
    assert "child_error" not in report, report["child_error"] if report else report
    return report


def _reap(pid: int) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)


def inspect_in_child(d: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["closed_attr"] = d.closed
    for name, call in [
        ("dispatch", lambda: d.dispatch("x", "m")),
        ("submit", lambda: d.submit("x", "m")),
        ("dispatch_many", lambda: d.dispatch_many([("x", "m")])),
    ]:
        try:
            call()
            out[name] = "accepted"
        except DispatcherClosed as exc:
            out[name] = "closed: " + str(exc)
        except BaseException as exc:
            out[name] = "other: " + repr(exc)
    out["stats"] = list(d.stats())
    out["wait"] = d.wait(timeout=5)
    out["close"] = repr(d.close())
    out["close_cancel"] = repr(d.close(cancel_pending=True))
    out["stats_after"] = list(d.stats())
    out["pending_a"] = d.pending("a")
    out["threads"] = threading.active_count()
    return out


def test_forked_child_sees_a_closed_inert_dispatcher(make: Any) -> None:
    gate = make.gate()
    started = threading.Event()

    def action(work: Any) -> None:
        if work[1] == 0:
            started.set()
            assert gate.wait(WAIT)

    rec = Recorder(action=action)
    d = make(rec, max_workers=1)
    d.dispatch(("a", 0), "a")
    assert started.wait(WAIT)
    for i in range(1, 4):
        d.dispatch(("a", i), "a")
    d.dispatch(("b", 0), "b")
    d.dispatch(("b", 1), "b")
    before = d.stats()
    assert (before.running, before.pending) == (1, 5)

    report = fork_and_report(lambda: inspect_in_child(d))

    for name in ("dispatch", "submit", "dispatch_many"):
        assert report[name].startswith("closed: "), (name, report[name])
        assert "fork" in report[name].lower(), report[name]
    assert report["closed_attr"] is True
    assert report["wait"] is True
    assert report["close"] == "[]"
    assert report["close_cancel"] == "[]"
    assert report["pending_a"] == 0
    for key in ("stats", "stats_after"):
        stats = report[key][:8]
        dispatched, completed, failed, cancelled, pending, running, active, workers = stats
        assert dispatched == before.dispatched == 6
        assert (completed, failed) == (before.completed, before.failed)
        assert cancelled == 6, "inherited queued and running work counts as cancelled"
        assert (pending, running, active, workers) == (0, 0, 0, 0)

    # the parent is unaffected and still runs its work
    assert not d.closed
    d.dispatch(("b", 2), "b")
    gate.set()
    wait_ok(d)
    assert rec.by_master["a"] == [0, 1, 2, 3]
    assert rec.by_master["b"] == [0, 1, 2]
    s = d.stats()
    assert (s.dispatched, s.completed, s.cancelled) == (7, 7, 0)


def test_fork_during_a_backoff_and_a_pause(make: Any) -> None:
    runs: list[Any] = []

    def handler(work: Any) -> None:
        runs.append(work)
        if work == "p":
            raise KeyError(work)  # not retried: pauses its master
        if work == "a" and runs.count("a") == 1:
            raise ValueError(work)  # retried after the backoff

    d = make(
        handler,
        retry=Retry(attempts=2, backoff=1.0, retry_on=ValueError),
        pause_on_error=True,
        on_error=lambda *args: None,
    )
    d.dispatch("a", "m")
    d.dispatch("p", "q")
    d.dispatch("x", "q")
    until(lambda: d.stats().retried == 1 and d.paused() == {"q"}, what="backoff and pause")

    def child() -> dict[str, Any]:
        out = inspect_in_child(d)
        out["paused"] = sorted(d.paused())
        return out

    report = fork_and_report(child)
    assert report["wait"] is True and report["close"] == "[]"
    assert report["paused"] == [] and report["threads"] == 1  # no timer, no worker
    dispatched, completed, failed, cancelled, pending, running = report["stats_after"][:6]
    assert (dispatched, completed, failed) == (3, 0, 1)
    assert (cancelled, pending, running) == (2, 0, 0), "inherited work counts as cancelled"

    # the parent's backoff and pause go on
    assert d.stats().running == 1
    wait_ok(d)
    assert runs.count("a") == 2 and "x" not in runs
    d.resume("q")
    wait_ok(d)
    assert runs[-1] == "x"


def test_forked_child_of_idle_dispatcher(make: Any) -> None:
    d = make(lambda w: None, max_workers=2)
    for i in range(20):
        d.dispatch(i, i % 4)
    wait_ok(d)
    report = fork_and_report(lambda: inspect_in_child(d))
    assert report["dispatch"].startswith("closed: ")
    assert report["wait"] is True and report["close"] == "[]"
    assert report["stats"][:4] == [20, 20, 0, 0]
    assert report["stats"][4:] == [0, 0, 0, 0, 0, 0]
    d.dispatch(1, "after-fork")
    wait_ok(d)


def test_dispatcher_created_in_child_works(Dispatcher: type) -> None:
    def child() -> dict[str, Any]:
        seen: list[int] = []
        with Dispatcher(seen.append, max_workers=2) as d:
            for i in range(50):
                d.dispatch(i, "m")
        return {"seen": seen}

    assert fork_and_report(child)["seen"] == list(range(50))


CHILD_EXITS_NORMALLY = r"""
import os, sys, threading, warnings
from fastdispatch import Dispatcher
gate = threading.Event()
started = threading.Event()
def handle(w):
    started.set()
    gate.wait(30)
d = Dispatcher(handle, max_workers=1)
d.dispatch(1, "m")
d.dispatch(2, "m")
started.wait(10)
warnings.simplefilter("ignore", DeprecationWarning)
pid = os.fork()
if pid == 0:
    # a normal exit runs the interpreter-exit drain: it must not wait for
    # work the child does not own (and never will run)
    sys.exit(0)
deadline_ok = False
import time
end = time.monotonic() + 20
while time.monotonic() < end:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        deadline_ok = os.waitstatus_to_exitcode(status) == 0
        break
    time.sleep(0.01)
else:
    os.kill(pid, 9)
gate.set()
d.close()
print("child-exited-cleanly" if deadline_ok else "child-hung")
"""


def test_forked_child_exits_without_hanging(python_in: Any) -> None:
    result = python_in(CHILD_EXITS_NORMALLY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "child-exited-cleanly", (result.stdout, result.stderr)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")
def test_fork_mentions_reason_in_message(make: Any) -> None:
    d = make(lambda w: None)

    def child() -> dict[str, Any]:
        try:
            d.dispatch(1, "m")
        except DispatcherClosed as exc:
            return {"msg": str(exc)}
        return {"msg": None}

    msg = fork_and_report(child)["msg"]
    assert msg and "fork" in msg.lower()
