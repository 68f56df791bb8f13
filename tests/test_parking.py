"""Idle workers park: a worker may poll for work for a moment before it sleeps, never longer.

The compiled core lets one idle worker spin for a bounded while on free-threaded builds, so
that a producer which keeps up does not pay for a wake-up per item. These tests check the other
half of that bargain: once the work is done, every worker ends up asleep in the kernel (state
``S`` in ``/proc``), not running. A worker that kept spinning would stay in state ``R`` and
fail the test after ``WAIT``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from helpers import WAIT, until, wait_ok

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="reads thread states from Linux's /proc"
)


def thread_state(native_id: int) -> str:
    """The scheduler state letter of one of this process's threads (R, S, D, ...)."""
    stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces.
    return stat.rsplit(")", 1)[1].split()[0]


def run_and_settle(Dispatcher: type, pairs: list[tuple[Any, Any]]) -> set[int]:
    """Run *pairs* on two workers that both handle work; return the workers' native ids."""
    both_busy = threading.Barrier(2, timeout=WAIT)
    ids: set[int] = set()
    lock = threading.Lock()

    def handle(work: Any) -> None:
        with lock:
            ids.add(threading.get_native_id())
        if work == "meet":
            both_busy.wait()

    d = Dispatcher(handle, max_workers=2)
    try:
        d.dispatch("meet", "a")
        d.dispatch("meet", "b")
        d.dispatch_many(pairs)
        wait_ok(d)
        assert len(ids) == 2, ids

        def all_parked() -> bool:
            return all(thread_state(i) == "S" for i in ids)

        until(all_parked, what="every idle worker asleep (state S)")
        # Asleep, and still asleep when looked at again: not a spinner caught
        # between two polls.
        until(all_parked, what="every idle worker asleep on a second look")
    finally:
        d.close()
    return ids


def test_idle_workers_park_after_many_masters(Dispatcher: type) -> None:
    run_and_settle(Dispatcher, [(i, i % 100) for i in range(20_000)])


def test_idle_workers_park_after_one_busy_master(Dispatcher: type) -> None:
    # One master fed as fast as it drains: the case where a worker holds on to
    # its just-emptied mailbox.
    run_and_settle(Dispatcher, [(i, "one") for i in range(20_000)])
