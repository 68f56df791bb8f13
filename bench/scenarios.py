"""The benchmark scenarios S1-S6 (bench/README.md): sizes, feasibility limits and the measurement.

A scenario runs one contender once, in the current process, and returns its
metrics. Timing starts at the first dispatch and stops when every item has
been handled and the contender has shut down (``finish``): construction of the
dispatcher/pool and of the item list is outside the clock, thread start-up on
demand is inside it (that is what a user pays).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import peers

#: The bench never starts more OS threads than this in one child, whatever the
#: machine allows, so a thread-per-master peer cannot exhaust the host's
#: thread/pid table (other processes share it).
THREAD_CAP = 10_000


@dataclass(frozen=True)
class Size:
    """Parameters of one scenario at one size."""

    masters: int
    per_master: int = 1
    producers: int = 1
    max_workers: int | None = None  # None: each contender's default
    samples: int = 0  # latency round trips (S5)
    sleep: float = 0.0  # handler sleep (S4)

    @property
    def items(self) -> int:
        return self.samples or self.masters * self.per_master


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str  # a format string over the fields of Size
    run: Callable[[str, Size], dict[str, Any]]
    sizes: dict[str, Size]
    unit: str = "items/s"

    def describe(self, size: str) -> str:
        """The title with the numbers of ``size`` filled in."""
        s = self.sizes[size]
        return self.title.format(
            masters=s.masters,
            per_master=s.per_master,
            producers=s.producers,
            workers=s.max_workers,
            samples=s.samples,
            sleep_ms=s.sleep * 1000,
            plural="" if s.masters == 1 else "s",
        )


def noop(work: Any) -> None:
    """The no-op handler of S1, S2, S3 and S6."""


def round_robin(masters: int, per_master: int) -> list[tuple[int, int]]:
    # One shared (work, master) tuple per master: the list costs 8 bytes per
    # item, so peak RSS measures the contender, not the input.
    pool = [(m, m) for m in range(masters)]
    return pool * per_master  # item i goes to master i % masters


def timed_produce(c: peers.Contender, pairs: Any) -> float:
    t0 = time.perf_counter()
    c.produce(pairs)
    c.finish()
    return time.perf_counter() - t0


def _throughput(items: int, elapsed: float, **extra: Any) -> dict[str, Any]:
    return {"items": items, "elapsed_s": elapsed, "value": items / elapsed, **extra}


def run_fanout(name: str, size: Size) -> dict[str, Any]:
    """S1 / S2: one producer, ``masters`` x ``per_master`` items, no-op handler."""
    pairs = round_robin(size.masters, size.per_master)
    c = peers.make(name, noop, size.max_workers)
    return _throughput(len(pairs), timed_produce(c, pairs))


def run_churn(name: str, size: Size) -> dict[str, Any]:
    """S3: ``masters`` one-off masters with one item each (mailbox churn, memory)."""
    c = peers.make(name, noop, size.max_workers)
    n = size.masters
    # Generated on the fly: a million distinct masters in a list would dominate RSS.
    return _throughput(n, timed_produce(c, zip(range(n), range(n), strict=True)))


def _measure_sleep(delay: float, n: int = 50) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        time.sleep(delay)
    return (time.perf_counter() - t0) / n


def run_io(name: str, size: Size) -> dict[str, Any]:
    """S4: a GIL-releasing handler (``time.sleep``): efficiency against the ideal.

    Ideal = the longer of one master's serial chain and the total sleep spread
    over ``max_workers``, using the measured length of one ``time.sleep``
    here. Contenders with a thread per master are not bounded by
    ``max_workers`` and can beat that ideal.
    """
    delay = size.sleep

    def sleeper(work: Any) -> None:
        time.sleep(delay)

    actual = _measure_sleep(delay)
    workers = size.max_workers or 1
    ideal = max(size.per_master, size.items / workers) * actual
    pairs = round_robin(size.masters, size.per_master)
    c = peers.make(name, sleeper, size.max_workers)
    elapsed = timed_produce(c, pairs)
    return _throughput(
        size.items, elapsed, ideal_s=ideal, efficiency=ideal / elapsed, sleep_actual_s=actual
    )


def run_latency(name: str, size: Size) -> dict[str, Any]:
    """S5: dispatch -> handler-entry latency at light load, one item in flight.

    Each item is dispatched only after the previous one was handled, always to
    the same master, so for the thread-per-master peer this is exactly
    ``queue.Queue`` + one thread. The first ``warmup`` round trips (worker
    start-up) are not counted.
    """
    clock = time.perf_counter_ns
    entered: list[int] = []
    done = threading.Event()

    def stamp(work: Any) -> None:
        entered.append(clock())
        done.set()

    warmup = max(10, size.samples // 20)
    total = warmup + size.samples
    c = peers.make(name, stamp, size.max_workers)
    dispatch, wait, clear = c.dispatch, done.wait, done.clear
    sent: list[int] = []
    t0 = time.perf_counter()
    for i in range(total):
        sent.append(clock())
        dispatch(i, 0)
        if not wait(10.0):
            raise TimeoutError(f"item {i} was not handled within 10 s")
        clear()
    c.finish()
    elapsed = time.perf_counter() - t0
    lat = sorted((e - s) / 1000 for s, e in zip(sent[warmup:], entered[warmup:], strict=True))
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {
        "items": size.samples,
        "elapsed_s": elapsed,
        "value": q[49],  # p50, microseconds
        "p50_us": q[49],
        "p99_us": q[98],
        "max_us": lat[-1],
        "round_trips_per_s": total / elapsed,
    }


def run_producers(name: str, size: Size) -> dict[str, Any]:
    """S6: ``producers`` threads dispatching concurrently into ``masters`` masters."""
    per_producer = size.masters * size.per_master // size.producers
    pool = [(m, m) for m in range(size.masters)]
    chunks = [
        [pool[(p + i) % size.masters] for i in range(per_producer)] for p in range(size.producers)
    ]
    c = peers.make(name, noop, size.max_workers)
    start = threading.Barrier(size.producers + 1)
    errors: list[BaseException] = []

    def producer(chunk: list[tuple[int, Hashable]]) -> None:
        start.wait()
        try:
            c.produce(chunk)
        except BaseException as exc:  # reported by the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(ch,)) for ch in chunks]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    c.finish()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return _throughput(per_producer * size.producers, elapsed)


SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in [
        Scenario(
            "S1",
            "{masters:,} master{plural} x {per_master:,} items",
            run_fanout,
            {
                "full": Size(1000, 1000),
                "quick": Size(1000, 50),
                "tiny": Size(10, 20),
            },
        ),
        Scenario(
            "S2",
            "{masters:,} master{plural} x {per_master:,} items",
            run_fanout,
            {"full": Size(1, 1_000_000), "quick": Size(1, 100_000), "tiny": Size(1, 200)},
        ),
        Scenario(
            "S3",
            "{masters:,} one-off masters x 1 item",
            run_churn,
            {"full": Size(1_000_000), "quick": Size(100_000), "tiny": Size(200)},
        ),
        Scenario(
            "S4",
            "I/O: sleep {sleep_ms:g} ms, {masters:,} masters x {per_master:,}, {workers} workers",
            run_io,
            {
                "full": Size(256, 20, max_workers=64, sleep=0.001),
                "quick": Size(256, 5, max_workers=64, sleep=0.001),
                "tiny": Size(8, 2, max_workers=4, sleep=0.001),
            },
        ),
        Scenario(
            "S5",
            "latency at light load, {samples:,} round trips",
            run_latency,
            {
                "full": Size(1, samples=10_000),
                "quick": Size(1, samples=2_000),
                "tiny": Size(1, samples=50),
            },
            unit="us",
        ),
        Scenario(
            "S6",
            "{producers} producers → {masters:,} masters x {per_master:,} items",
            run_producers,
            {
                "full": Size(1000, 1000, producers=4),
                "quick": Size(1000, 50, producers=4),
                "tiny": Size(10, 20, producers=4),
            },
        ),
    ]
}


def infeasible(name: str, key: str, size: Size) -> str | None:
    """Why contender ``name`` cannot run scenario ``key`` at ``size``, or None."""
    if key == "S5" and peers.CONTENDERS[name].factory is peers.FastDispatchMany:
        return "n/a: latency is per item; dispatch_many has nothing to add"
    if peers.CONTENDERS[name].factory.thread_per_master and size.masters > THREAD_CAP:
        limit, why = peers.thread_limit()
        return (
            f"skipped: needs {size.masters:,} OS threads (one per master); "
            f"this machine allows at most {limit:,} ({why}) and the bench caps "
            f"one child at {THREAD_CAP:,} threads"
        )
    return None
