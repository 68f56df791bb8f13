"""Semantics 8-10: memory follows activity, fairness, idle is idle."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from helpers import WAIT, Blocker, Recorder, threads_named, wait_ok

# -- 8. memory follows activity -------------------------------------------------


def test_active_masters_counts_queued_or_running(make: Any) -> None:
    handler = Blocker(make.gate())
    d = make(handler, max_workers=1)
    assert d.stats().active_masters == 0
    d.dispatch("block", "running")
    assert handler.started.wait(WAIT)
    assert d.stats().active_masters == 1  # running, nothing queued
    d.dispatch("x", "queued-1")
    d.dispatch("x", "queued-2")
    d.dispatch("x", "queued-2")
    assert d.stats().active_masters == 3
    handler.gate.set()
    wait_ok(d)
    s = d.stats()
    assert (s.active_masters, s.pending, s.running) == (0, 0, 0)


def test_one_off_masters_drain_back_to_zero(make: Any) -> None:
    d = make(lambda w: None, max_workers=4)
    n = 100_000
    assert d.dispatch_many((i, ("one-off", i)) for i in range(n)) == n
    wait_ok(d, timeout=60)
    s = d.stats()
    assert (s.dispatched, s.completed, s.active_masters) == (n, n, 0)
    for i in range(0, n, 9973):
        assert d.pending(("one-off", i)) == 0
    assert d.stats().active_masters == 0, "pending() must not create mailboxes"


def test_a_drained_master_is_served_again_and_counts_as_inactive(make: Any) -> None:
    """The compiled core keeps an emptied mailbox for the master's next item:
    while kept it is not an active master, and the next item runs as usual."""
    rec = Recorder()
    d = make(rec, max_workers=2)
    for rnd in range(50):
        done = threading.Event()
        rec.action = lambda w, done=done, last=2 * rnd + 1: w[1] == last and done.set()
        d.dispatch(("m", 2 * rnd), "m")
        d.dispatch(("m", 2 * rnd + 1), "m")
        assert done.wait(WAIT)
        # No wait(): the mailbox may still be kept, but nothing is queued.
        assert d.pending("m") == 0
    wait_ok(d)
    assert rec.by_master["m"] == list(range(100))
    assert not rec.overlaps
    assert d.stats().active_masters == 0


def test_kept_mailboxes_stay_bounded_without_wait(make: Any, core: Any) -> None:
    """Masters that drained are released by a sweep once the kept mailboxes
    pass IDLE_KEEP, even if nobody calls wait()."""
    n = 3 * max(core.IDLE_KEEP, 1000)
    handled = threading.Semaphore(0)
    d = make(lambda w: handled.release(), max_workers=2)
    keys = [Key() for _ in range(n)]
    refs = [weakref.ref(k) for k in keys]
    for i, k in enumerate(keys):
        d.dispatch(i, k)
    for _ in range(n):
        assert handled.acquire(timeout=WAIT)
    del keys, k
    # The last item's worker may still hold it for an instant; a few more
    # items after everything drained let a sweep happen if one is due.
    for i in range(64):
        d.dispatch(i, ("tail", i))
    for _ in range(64):
        assert handled.acquire(timeout=WAIT)
    gc.collect()
    alive = sum(r() is not None for r in refs)
    assert alive <= 2 * core.IDLE_KEEP + 64, f"{alive} of {n} drained masters still kept"
    wait_ok(d)
    gc.collect()
    assert sum(r() is not None for r in refs) == 0


def test_sweeps_racing_producers_lose_and_reorder_nothing(make: Any, core: Any) -> None:
    """Producers revive kept mailboxes while sweeps free them (more masters
    than IDLE_KEEP, several rounds): every item runs once, in order."""
    masters = max(core.IDLE_KEEP, 1000) + 1500
    rounds, producers = 3, 3
    rec = Recorder()
    d = make(rec, max_workers=4)
    start = threading.Barrier(producers, timeout=WAIT)

    def produce(p: int) -> None:
        start.wait()
        for r in range(rounds):
            for m in range(p, masters, producers):
                d.dispatch((m, r), m)

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    wait_ok(d, timeout=60)
    assert d.stats().completed == masters * rounds
    assert not rec.overlaps
    for m in range(masters):
        assert rec.by_master[m] == list(range(rounds)), m


class Key:
    """A weak-referenceable master with identity hashing."""


class Item:
    """A weak-referenceable work item."""


def test_drained_masters_and_works_are_released(make: Any) -> None:
    d = make(lambda w: None, max_workers=1)
    keys = [Key() for _ in range(50)]
    items = [Item() for _ in range(50)]
    refs = [weakref.ref(o) for o in keys + items]
    for k, it in zip(keys, items, strict=False):
        d.dispatch(it, k)
    d.submit(Item(), keys[0]).result(timeout=WAIT)
    wait_ok(d)
    # one more item, so the (single) worker cannot still hold the last one in a local
    d.dispatch(None, "flush")
    wait_ok(d)
    del keys, items, k, it
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert alive == [], f"{len(alive)} masters/works still referenced after they drained"


# -- 9. fairness ------------------------------------------------------------------


def test_hot_master_hands_back_after_a_batch(make: Any, core: Any) -> None:
    gate = make.gate()
    started = threading.Event()

    def action(work: Any) -> None:
        if work[0] == "blocker":
            started.set()
            assert gate.wait(WAIT)

    rec = Recorder(action=action)
    d = make(rec, max_workers=1)
    d.dispatch(("blocker", 0), "blocker")
    assert started.wait(WAIT)  # the only worker is held: the queues fill deterministically
    hot = 5000
    d.dispatch_many((("hot", i), "hot") for i in range(hot))
    d.dispatch(("cold", 0), "cold")
    gate.set()
    wait_ok(d, timeout=30)
    position = rec.order.index(("cold", 0))
    assert position <= 1 + core.BATCH + 1, f"cold master waited behind {position - 1} items"
    assert position < 1 + hot, "the cold master ran only after the hot one finished"
    assert rec.by_master["hot"] == list(range(hot))


def test_many_hot_masters_all_progress(make: Any, core: Any) -> None:
    """Round robin: with 3 hot masters and one worker, each gets a turn
    before any has done more than two batches."""
    gate = make.gate()
    started = threading.Event()

    def action(work: Any) -> None:
        if work[0] == "blocker":
            started.set()
            assert gate.wait(WAIT)

    rec = Recorder(action=action)
    d = make(rec, max_workers=1)
    d.dispatch(("blocker", 0), "blocker")
    assert started.wait(WAIT)
    for m in ("h1", "h2", "h3"):
        d.dispatch_many(((m, i), m) for i in range(3 * core.BATCH))
    gate.set()
    wait_ok(d, timeout=30)
    firsts = [rec.order.index((m, 0)) for m in ("h1", "h2", "h3")]
    assert max(firsts) <= 1 + 2 * core.BATCH + 2, firsts


# -- 10. idle is idle -------------------------------------------------------------


def _thread_cpu_clocks(threads: list[threading.Thread]) -> list[Callable[[], float]]:
    """Per-thread CPU clocks where the platform has them (POSIX)."""
    clocks: list[Callable[[], float]] = []
    for t in threads:
        assert t.ident is not None
        clk = time.pthread_getcpuclockid(t.ident)
        clocks.append(lambda clk=clk: time.clock_gettime(clk))
    return clocks


def test_idle_workers_use_no_cpu(make: Any) -> None:
    prefix = make.prefix("fdtest-idle")
    d = make(lambda w: None, max_workers=4, thread_name_prefix=f"{prefix}1")
    barrier = threading.Barrier(4, timeout=WAIT)
    # a second dispatcher whose 4 workers are all alive (they met at the barrier)
    d2 = make(lambda w: barrier.wait(), max_workers=4, thread_name_prefix=f"{prefix}2")
    for m in range(4):
        d2.dispatch(m, m)
    for i in range(2000):
        d.dispatch(i, i % 16)
    wait_ok(d)
    wait_ok(d2)
    workers = threads_named(prefix)
    assert len(workers) == d.stats().workers + d2.stats().workers
    assert d2.stats().workers == 4
    per_thread = hasattr(time, "pthread_getcpuclockid")
    clocks = _thread_cpu_clocks(workers) if per_thread else []
    before = [c() for c in clocks]
    t0 = time.process_time()
    threading.Event().wait(0.3)
    used = time.process_time() - t0
    assert used < 0.05, f"idle dispatchers used {used:.3f}s of CPU in 0.3s"
    if per_thread:
        # a parked worker does not run at all; even polling every few ms shows here
        spent = [c() - b for c, b in zip(clocks, before, strict=True)]
        assert max(spent) < 0.001, f"idle workers used CPU: {spent}"
