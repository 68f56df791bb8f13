"""Semantics 1-3 and 7: order per master, exclusivity, concurrency, nothing lost,
re-entrancy."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

import pytest

from helpers import WAIT, Call, Recorder, threads_named, wait_ok

# -- 1. order -----------------------------------------------------------------


def test_order_per_master_single_producer(make: Any) -> None:
    rec = Recorder()
    d = make(rec, max_workers=4)
    masters, items = 50, 200
    for i in range(items):
        for m in range(masters):
            d.dispatch((m, i), m)
    wait_ok(d)
    assert not rec.overlaps
    assert len(rec.by_master) == masters
    for m in range(masters):
        assert rec.by_master[m] == list(range(items)), m


def test_order_per_master_many_producers(make: Any) -> None:
    rec = Recorder(action=lambda w: threading.current_thread())
    d = make(rec, max_workers=4)
    producers, masters_each, items = 4, 8, 300
    start = threading.Barrier(producers, timeout=WAIT)

    def produce(p: int) -> None:
        start.wait()
        for i in range(items):
            for k in range(masters_each):
                m = f"p{p}-m{k}"
                if i % 3 == 0:
                    d.submit((m, i), m)
                elif i % 3 == 1:
                    d.dispatch((m, i), m)
                else:
                    assert d.dispatch_many([((m, i), m)]) == 1

    calls = [Call(lambda p=p: produce(p)) for p in range(producers)]
    for c in calls:
        c.finish()
    wait_ok(d)
    assert not rec.overlaps
    assert len(rec.by_master) == producers * masters_each
    for m, seqs in rec.by_master.items():
        assert seqs == list(range(items)), m
    assert d.stats().completed == producers * masters_each * items


def test_one_master_shared_by_many_producers(make: Any) -> None:
    # Producers race for places in one master's queue while its worker drains
    # it: the compiled core's chunks (4, 8, ... 1,024 places) fill, link and
    # are freed under them. Each producer's items keep that producer's order.
    rec = Recorder()
    d = make(rec, max_workers=2)
    producers, items = 4, 5000
    start = threading.Barrier(producers, timeout=WAIT)

    def produce(p: int) -> None:
        start.wait()
        for i in range(items):
            d.dispatch(("shared", (p, i)), "shared")

    calls = [Call(lambda p=p: produce(p)) for p in range(producers)]
    for c in calls:
        c.finish()
    wait_ok(d)
    assert not rec.overlaps
    seen = rec.by_master["shared"]
    assert len(seen) == producers * items
    for p in range(producers):
        assert [i for q, i in seen if q == p] == list(range(items)), p
    s = d.stats()
    assert (s.dispatched, s.completed, s.pending, s.running) == (producers * items,) * 2 + (0, 0)


def test_order_follows_return_order_of_dispatch_across_producers(make: Any) -> None:
    """Several producers share masters; the order their dispatch calls
    returned (serialised by a lock) is the handling order."""
    rec = Recorder()
    d = make(rec, max_workers=3)
    lock = threading.Lock()
    expected: dict[str, list[int]] = {"a": [], "b": []}
    counter = iter(range(10**9))
    start = threading.Barrier(3, timeout=WAIT)

    def produce() -> None:
        start.wait()
        for _ in range(400):
            for m in ("a", "b"):
                with lock:
                    seq = next(counter)
                    d.dispatch((m, seq), m)
                    expected[m].append(seq)

    calls = [Call(produce) for _ in range(3)]
    for c in calls:
        c.finish()
    wait_ok(d)
    assert not rec.overlaps
    assert rec.by_master["a"] == expected["a"]
    assert rec.by_master["b"] == expected["b"]


def test_dispatch_many_keeps_order(make: Any) -> None:
    rec = Recorder()
    d = make(rec, max_workers=4)
    pairs = [((i % 7, i), i % 7) for i in range(3000)]
    assert d.dispatch_many(pairs) == 3000
    assert d.dispatch_many(iter(pairs[:10])) == 10  # any iterable, generators included
    assert d.dispatch_many([]) == 0
    wait_ok(d)
    for m in range(7):
        want = [i for i in range(3000) if i % 7 == m] + [i for i in range(10) if i % 7 == m]
        assert rec.by_master[m] == want


def test_equal_masters_are_one_master(make: Any) -> None:
    """Masters are map keys: equal and equally hashed objects are the same master."""
    rec = Recorder()
    d = make(rec, max_workers=4)
    keys = [1, 1.0, True, "".join(["k", "ey"]), "key", (1, "x"), (1, "".join("x"))]
    for i in range(600):
        k = keys[i % len(keys)]
        d.dispatch((k, i), k)
    wait_ok(d)
    assert not rec.overlaps
    assert set(rec.by_master) == {1, "key", (1, "x")}
    for seqs in rec.by_master.values():
        assert seqs == sorted(seqs)
    assert sum(len(s) for s in rec.by_master.values()) == 600


# -- 1. no two workers on one master --------------------------------------------


def test_no_two_workers_on_one_master(make: Any) -> None:
    def yield_gil(work: Any) -> None:
        if work[1] % 25 == 0:
            time.sleep(0)  # give another worker the chance to (wrongly) take this master

    rec = Recorder(action=yield_gil)
    d = make(rec, max_workers=6)
    for i in range(500):
        for m in range(12):
            d.dispatch((m, i), m)
    wait_ok(d)
    assert rec.overlaps == []
    assert len(rec.threads) > 1, "test needs several workers to be meaningful"


# -- 2. concurrency -------------------------------------------------------------


@pytest.mark.parametrize("workers", [2, 4])
def test_masters_run_in_parallel_up_to_max_workers(make: Any, workers: int) -> None:
    barrier = threading.Barrier(workers, timeout=WAIT)

    def handle(work: Any) -> str:
        barrier.wait()  # only passes if `workers` handlers are in flight at once
        return threading.current_thread().name

    d = make(handle, max_workers=workers)
    futures = [d.submit(m, m) for m in range(workers)]
    names = {f.result(timeout=WAIT) for f in futures}
    assert len(names) == workers


def test_never_more_than_max_workers(make: Any) -> None:
    prefix = make.prefix("fdtest-maxw")
    seen_threads: list[int] = []

    def count_threads(work: Any) -> None:
        if work[1] % 10 == 0:
            seen_threads.append(len(threads_named(prefix)))
            time.sleep(0.0005)  # let other workers pile up, if they (wrongly) could

    rec = Recorder(action=count_threads)
    d = make(rec, max_workers=3, thread_name_prefix=prefix)
    assert d.stats().workers == 0, "workers are started on demand"
    assert threads_named(prefix) == []
    for i in range(60):
        for m in range(40):
            d.dispatch((m, i), m)
    wait_ok(d)
    assert rec.max_in_flight <= 3
    assert max(seen_threads) <= 3
    assert 1 <= d.stats().workers <= 3
    assert len(rec.threads) <= 3
    assert all(name.startswith(prefix) for name in rec.threads)
    assert d.stats().workers == len(threads_named(prefix))


def test_default_max_workers_allows_parallelism(make: Any) -> None:
    barrier = threading.Barrier(4, timeout=WAIT)  # default is min(32, cpus + 4) >= 5
    d = make(lambda w: barrier.wait())
    futures = [d.submit(m, m) for m in range(4)]
    for f in futures:
        f.result(timeout=WAIT)


def test_one_master_never_uses_two_threads_at_once_even_when_idle_workers(make: Any) -> None:
    """Parallelism is across masters only: a second master-a item does not
    start while the first is blocked, although workers are free."""
    gate = make.gate()
    started = threading.Event()
    order: list[int] = []

    def handle(work: int) -> None:
        order.append(work)
        if work == 0:
            started.set()
            assert gate.wait(WAIT)

    d = make(handle, max_workers=4)
    d.dispatch(0, "a")
    assert started.wait(WAIT)
    d.dispatch(1, "a")
    other = d.submit(99, "b")  # another master still runs meanwhile
    assert other.result(timeout=WAIT) is None
    assert order == [0, 99]
    assert d.pending("a") == 1
    gate.set()
    wait_ok(d)
    assert order == [0, 99, 1]


# -- 3. nothing lost --------------------------------------------------------------


def test_nothing_lost_or_duplicated(make: Any) -> None:
    seen: list[Any] = []
    lock = threading.Lock()

    def handle(work: Any) -> None:
        with lock:
            seen.append(work)

    d = make(handle, max_workers=4)
    producers = 3

    def produce(p: int) -> int:
        n = 0
        for i in range(2000):
            d.dispatch((p, i), (p * 31 + i) % 97)
            n += 1
        return n

    calls = [Call(lambda p=p: produce(p)) for p in range(producers)]
    total = sum(c.finish() for c in calls)
    wait_ok(d)
    assert len(seen) == total == producers * 2000
    assert len(set(seen)) == total
    s = d.stats()
    assert (s.dispatched, s.completed, s.pending, s.running) == (total, total, 0, 0)


def test_wait_returns_true_at_once_when_idle(make: Any) -> None:
    d = make(lambda w: None)
    assert d.wait(timeout=0) is True
    assert d.wait() is True


def test_wait_times_out_while_work_runs(make: Any) -> None:
    gate = make.gate()
    d = make(lambda w: gate.wait(WAIT))
    d.dispatch(1, "m")
    assert d.wait(timeout=0.05) is False
    gate.set()
    wait_ok(d)


# -- 7. re-entrancy ----------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
def test_handler_dispatches_to_its_own_master(make: Any, workers: int) -> None:
    handled: list[int] = []
    holder: dict[str, Any] = {}

    def handle(n: int) -> None:
        handled.append(n)
        if n > 0:
            holder["d"].dispatch(n - 1, "self")

    d = holder["d"] = make(handle, max_workers=workers)
    d.dispatch(200, "self")
    wait_ok(d)  # wait() covers work that handlers dispatch while it waits
    assert handled == list(range(200, -1, -1))
    assert d.stats().completed == 201


@pytest.mark.parametrize("workers", [1, 3])
def test_handler_dispatches_and_submits_to_other_masters(make: Any, workers: int) -> None:
    rec_lock = threading.Lock()
    by_master: dict[str, list[int]] = {"ping": [], "pong": []}
    futures: list[Future[Any]] = []
    holder: dict[str, Any] = {}

    def handle(work: tuple[str, int]) -> int:
        master, n = work
        with rec_lock:
            by_master[master].append(n)
        if n < 100:
            other = "pong" if master == "ping" else "ping"
            if n % 2:
                futures.append(holder["d"].submit((other, n + 1), other))
            else:
                holder["d"].dispatch((other, n + 1), other)
        return n

    d = holder["d"] = make(handle, max_workers=workers)
    d.dispatch(("ping", 0), "ping")
    wait_ok(d)
    assert by_master["ping"] == list(range(0, 101, 2))
    assert by_master["pong"] == list(range(1, 101, 2))
    assert [f.result(timeout=0) for f in futures] == list(range(2, 101, 2))


class Colliding:
    """Masters that all share one hash but are distinct keys."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __hash__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Colliding) and other.name == self.name

    def __repr__(self) -> str:
        return f"Colliding({self.name!r})"


def test_colliding_hashes_are_distinct_masters(make: Any) -> None:
    n = 4
    barrier = threading.Barrier(n, timeout=WAIT)

    def action(work: Any) -> None:
        if work[1] == 0:
            barrier.wait()  # the n colliding masters really run in parallel

    rec = Recorder(action=action)
    d = make(rec, max_workers=n)
    masters = [Colliding(f"m{i}") for i in range(n)]
    for i in range(200):
        for m in masters:
            d.dispatch((Colliding(m.name), i), Colliding(m.name))  # equal, not identical
    wait_ok(d)
    assert not rec.overlaps
    assert len(rec.by_master) == n
    for m in masters:
        assert rec.by_master[m] == list(range(200))
    # -1 and -2 share a hash in CPython but are different masters
    d.dispatch((-1, 1), -1)
    d.dispatch((-2, 1), -2)
    wait_ok(d)
    assert rec.by_master[-1] == [1] and rec.by_master[-2] == [1]


def test_concurrent_waiters_all_return(make: Any) -> None:
    gate = make.gate()
    d = make(lambda w: gate.wait(WAIT), max_workers=2)
    for i in range(10):
        d.dispatch(i, i % 3)
    waiters = [Call(lambda: d.wait(timeout=WAIT)) for _ in range(4)]
    timed = Call(lambda: d.wait(timeout=0.05))
    assert timed.finish() is False
    gate.set()
    assert [w.finish() for w in waiters] == [True] * 4


def test_handler_may_introspect_its_dispatcher(make: Any) -> None:
    holder: dict[str, Any] = {}
    seen: list[Any] = []

    def handle(work: int) -> None:
        d = holder["d"]
        seen.append((d.pending("m"), d.stats().running, d.closed, repr(d) != ""))

    d = holder["d"] = make(handle, max_workers=1)
    d.dispatch(0, "m")
    wait_ok(d)
    assert seen == [(0, 1, False, True)]
