"""AsyncDispatcher: the keyed contract on an asyncio event loop, on both asyncio cores.

Tests drive their own loop with ``asyncio.run`` (no pytest plugin); every wait
has the one ``WAIT`` timeout, and handlers synchronise with asyncio events.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from fastdispatch import DispatcherClosed, QueueFull
from fastdispatch._env import env_flag
from helpers import WAIT, assert_identity


def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``main()`` in a fresh event loop; fail instead of hanging."""

    async def bounded() -> Any:
        return await asyncio.wait_for(main(), WAIT)

    return asyncio.run(bounded())


async def until(cond: Callable[[], bool], what: str = "condition") -> None:
    """Let the loop run until *cond* holds (for states with no event of their own)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not cond():
        assert loop.time() < deadline, f"{what} not reached in {WAIT}s"
        await asyncio.sleep(0)


class Tracker:
    """An async handler for works ``(master, seq)``: order per master, overlaps, in flight.

    Each item yields to the loop (``await asyncio.sleep(0)``) so that masters
    really interleave; *gate*, if given, holds every item until it is set.
    """

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.gate = gate
        self.by_master: dict[Any, list[Any]] = defaultdict(list)
        self.active: dict[Any, int] = defaultdict(int)
        self.overlaps: list[Any] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def handle(self, work: tuple[Any, Any]) -> Any:
        master, seq = work
        if self.active[master]:
            self.overlaps.append(work)
        self.active[master] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)
            if self.gate is not None:
                await self.gate.wait()
            self.by_master[master].append(seq)
            return seq
        finally:
            self.active[master] -= 1
            self.in_flight -= 1


# -- order, concurrency, handlers -------------------------------------------------


def test_order_per_master_and_masters_in_parallel(AsyncDispatcher: type) -> None:
    tracker = Tracker()

    async def main() -> None:
        async with AsyncDispatcher(tracker, max_concurrency=8) as d:
            for seq in range(200):
                for master in range(20):
                    await d.dispatch((master, seq), master)
        assert tracker.overlaps == []
        assert dict(tracker.by_master) == {m: list(range(200)) for m in range(20)}
        assert 1 < tracker.max_in_flight <= 8
        stats = d.stats()
        assert stats.dispatched == stats.completed == 4000
        assert_identity(stats)

    run(main)


def test_max_concurrency_bounds_masters_in_flight(AsyncDispatcher: type) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        tracker = Tracker(gate)
        d = AsyncDispatcher(tracker, max_concurrency=3)
        for master in range(10):
            d.dispatch_nowait((master, 0), master)
        await until(lambda: tracker.in_flight == 3, "3 handlers in flight")
        for _ in range(5):  # more turns of the loop start no fourth handler
            await asyncio.sleep(0)
        assert tracker.in_flight == 3
        assert d.stats().workers == d.stats().running == 3
        assert d.stats().pending == 7
        gate.set()
        assert await d.wait(WAIT)
        assert tracker.max_in_flight == 3
        assert len(tracker.by_master) == 10
        await d.aclose()

    run(main)


class AsyncHandle:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def handle(self, work: Any) -> Any:
        self.seen.append(work)
        return work * 2


class AsyncCall:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def __call__(self, work: Any) -> Any:
        self.seen.append(work)
        return work * 2


@pytest.mark.parametrize("kind", ["function", "handle", "callable-object", "plain", "returns-coro"])
def test_handler_kinds(AsyncDispatcher: type, kind: str) -> None:
    seen: list[Any] = []

    async def coro_fn(work: Any) -> Any:
        seen.append(work)
        return work * 2

    def plain(work: Any) -> Any:
        seen.append(work)
        return work * 2

    handler: Any
    if kind == "function":
        handler = coro_fn
    elif kind == "handle":
        handler = AsyncHandle()
        seen = handler.seen
    elif kind == "callable-object":
        handler = AsyncCall()
        seen = handler.seen
    elif kind == "plain":
        handler = plain
    else:
        handler = coro_fn.__call__  # a plain callable (method wrapper) returning a coroutine

    async def main() -> None:
        async with AsyncDispatcher(handler) as d:
            futures = [await d.submit(i, "m") for i in range(5)]
            assert await asyncio.gather(*futures) == [0, 2, 4, 6, 8]

    run(main)
    assert seen == [0, 1, 2, 3, 4]


def test_a_handler_may_dispatch_to_its_own_master(AsyncDispatcher: type) -> None:
    seen: list[int] = []

    async def main() -> None:
        d: Any = None

        async def handle(n: int) -> None:
            seen.append(n)
            if n < 50:
                d.dispatch_nowait(n + 1, "m")
                await d.dispatch(1000 + n, "other")

        d = AsyncDispatcher(handle)
        d.dispatch_nowait(0, "m")
        assert await d.wait(WAIT)
        await d.aclose()

    run(main)
    assert [n for n in seen if n < 1000] == list(range(51))
    assert sorted(n for n in seen if n >= 1000) == [1000 + n for n in range(50)]


def test_a_hot_master_does_not_starve_the_others(AsyncDispatcher: type) -> None:
    order: list[str] = []

    async def handle(work: str) -> None:
        order.append(work)

    async def main() -> None:
        async with AsyncDispatcher(handle, max_concurrency=1) as d:
            for _ in range(5000):
                d.dispatch_nowait("hot", "hot")
            d.dispatch_nowait("cold", "cold")
        # the one worker hands the hot master back after a bounded batch
        assert order.index("cold") <= 2048

    run(main)


def test_the_loop_stays_responsive_under_a_flood(AsyncDispatcher: type) -> None:
    handled = 0

    async def handle(work: int) -> None:
        nonlocal handled
        handled += 1

    async def main() -> None:
        seen_at_ticks: list[int] = []

        async def ticker() -> None:
            while True:
                seen_at_ticks.append(handled)
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        async with AsyncDispatcher(handle, max_concurrency=1) as d:
            for i in range(20000):
                d.dispatch_nowait(i, i % 10)
            await d.wait(WAIT)
        t.cancel()
        # Handlers that never suspend still let other tasks run between batches.
        gaps = [b - a for a, b in itertools.pairwise(seen_at_ticks)]
        assert seen_at_ticks[-1] == 20000
        assert max(gaps) <= 1024, gaps

    run(main)


def test_a_lane_refilled_while_its_worker_yields_is_not_stranded(
    AsyncDispatcher: type, aio_core: Any
) -> None:
    handled = 0

    async def handle(work: int) -> None:
        nonlocal handled
        handled += 1

    async def main() -> None:
        d = AsyncDispatcher(handle, max_concurrency=1)
        for i in range(aio_core.BATCH):  # the worker's run ends exactly as the lane empties
            d.dispatch_nowait(i, "m")
        await until(lambda: handled == aio_core.BATCH)
        # The worker still holds the (empty) lane, yielding the loop: refill it now.
        d.dispatch_nowait("late", "m")
        assert await d.wait(WAIT)
        assert handled == aio_core.BATCH + 1
        await d.aclose()

    run(main)


def test_workers_are_tasks_only_while_needed(AsyncDispatcher: type) -> None:
    async def handle(work: int) -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        me = asyncio.all_tasks()  # this test's own
        d = AsyncDispatcher(handle, max_concurrency=4)
        for i in range(100):
            d.dispatch_nowait(i, i % 10)
        await until(lambda: len(asyncio.all_tasks() - me) >= 2, "workers started")
        assert len(asyncio.all_tasks() - me) <= 4
        assert await d.wait(WAIT)
        d.dispatch_nowait(100, "again")  # a quiet dispatcher takes work at once
        assert await d.wait(WAIT)
        await d.aclose()
        await until(lambda: not (asyncio.all_tasks() - me), "workers ended")

    run(main)


def test_a_parked_worker_ends_after_a_quiet_second(AsyncDispatcher: type) -> None:
    async def handle(work: int) -> None:
        pass

    async def main() -> None:
        ours = asyncio.all_tasks()
        d = AsyncDispatcher(handle)
        d.dispatch_nowait(1, "m")
        assert await d.wait(WAIT)
        assert len(asyncio.all_tasks() - ours) == 1  # parked, not closed
        await until(lambda: not (asyncio.all_tasks() - ours), "the parked worker ended")
        d.dispatch_nowait(2, "m")  # a new worker starts
        assert await d.wait(WAIT)
        assert d.stats().completed == 2
        await d.aclose()

    run(main)


# -- results, errors ---------------------------------------------------------------


def test_submit_futures_carry_result_and_exception(AsyncDispatcher: type) -> None:
    errors: list[Any] = []

    async def handle(work: Any) -> Any:
        if isinstance(work, Exception):
            raise work
        return work + 1

    async def main() -> None:
        d = AsyncDispatcher(handle, on_error=lambda *a: errors.append(a))
        ok = d.submit_nowait(1, "m")
        boom = ValueError("boom")
        bad = await d.submit(boom, "m")
        assert isinstance(ok, asyncio.Future) and isinstance(bad, asyncio.Future)
        assert await ok == 2
        with pytest.raises(ValueError, match="boom") as info:
            await bad
        assert info.value is boom
        await d.aclose()
        stats = d.stats()
        assert (stats.completed, stats.failed) == (1, 1)
        assert_identity(stats)

    run(main)
    assert errors == []  # a submitted item's error goes to its future only


def test_errors_are_isolated_and_reach_on_error(AsyncDispatcher: type) -> None:
    errors: list[tuple[BaseException, Any, Any]] = []
    handled: list[Any] = []

    async def handle(work: Any) -> None:
        if work % 3 == 0:
            raise RuntimeError(f"bad {work}")
        handled.append(work)

    async def main() -> None:
        async with AsyncDispatcher(handle, on_error=lambda *a: errors.append(a)) as d:
            for i in range(10):
                d.dispatch_nowait(i, "m")
        stats = d.stats()
        assert (stats.failed, stats.completed) == (4, 6)
        assert_identity(stats)

    run(main)
    assert handled == [1, 2, 4, 5, 7, 8]
    assert [(str(e), w, m) for e, w, m in errors] == [(f"bad {i}", i, "m") for i in (0, 3, 6, 9)]


def test_default_on_error_logs_and_a_failing_on_error_is_logged(
    AsyncDispatcher: type, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="fastdispatch")

    async def handle(work: Any) -> None:
        raise KeyError(work)

    def broken_on_error(*args: Any) -> None:
        raise OSError("on_error itself failed")

    async def main() -> None:
        async with AsyncDispatcher(handle) as d:
            d.dispatch_nowait("w1", "m1")
        async with AsyncDispatcher(handle, on_error=broken_on_error) as d2:
            d2.dispatch_nowait("w2", "m2")

    run(main)
    messages = [r.getMessage() for r in caplog.records if r.name == "fastdispatch"]
    assert any("'w1'" in m and "'m1'" in m for m in messages), messages
    assert any("on_error" in m and "'w2'" in m for m in messages), messages


def test_a_handler_raising_cancelled_error_is_a_failure_not_a_stop(
    AsyncDispatcher: type,
) -> None:
    seen: list[int] = []
    errors: list[Any] = []

    async def handle(work: int) -> int:
        if work == 1:
            raise asyncio.CancelledError
        seen.append(work)
        return work

    async def main() -> None:
        async with AsyncDispatcher(handle, on_error=lambda e, w, m: errors.append((e, w))) as d:
            d.dispatch_nowait(0, "m")
            d.dispatch_nowait(1, "m")
            future = d.submit_nowait(1, "m")
            last = d.submit_nowait(2, "m")
            assert await last == 2
            assert future.cancelled()
        stats = d.stats()
        assert (stats.completed, stats.failed) == (2, 2)
        assert_identity(stats)

    run(main)
    assert seen == [0, 2]
    assert [(type(e), w) for e, w in errors] == [(asyncio.CancelledError, 1)]


def test_a_future_cancelled_before_its_item_starts_skips_it(AsyncDispatcher: type) -> None:
    tracker = Tracker()

    async def main() -> None:
        gate = asyncio.Event()
        tracker.gate = gate
        async with AsyncDispatcher(tracker) as d:
            first = d.submit_nowait(("m", 0), "m")
            skipped = d.submit_nowait(("m", 1), "m")
            d.dispatch_nowait(("m", 2), "m")
            assert skipped.cancel()
            gate.set()
            assert await first == 0
        assert dict(tracker.by_master) == {"m": [0, 2]}
        stats = d.stats()
        assert (stats.completed, stats.cancelled) == (2, 1)
        assert_identity(stats)

    run(main)


# -- close -------------------------------------------------------------------------


def test_close_stops_intake_and_aclose_drains(AsyncDispatcher: type) -> None:
    tracker = Tracker()

    async def main() -> None:
        d = AsyncDispatcher(tracker)
        for seq in range(50):
            d.dispatch_nowait(("m", seq), "m")
        d.close()
        assert d.closed
        with pytest.raises(DispatcherClosed):
            d.dispatch_nowait(("m", 99), "m")
        with pytest.raises(DispatcherClosed):
            await d.dispatch(("m", 99), "m")
        with pytest.raises(DispatcherClosed):
            d.submit_nowait(("m", 99), "m")
        with pytest.raises(DispatcherClosed):
            d.dispatch_threadsafe(("m", 99), "m")
        assert await d.aclose() == []
        assert tracker.by_master == {"m": list(range(50))}
        assert await d.aclose() == []
        assert d.stats().dispatched == 50

    run(main)


def test_aclose_cancel_pending_returns_the_not_started_items(AsyncDispatcher: type) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        tracker = Tracker(gate)
        d = AsyncDispatcher(tracker, max_concurrency=2)
        futures = []
        for seq in range(4):
            for master in ("a", "b", "c"):
                futures.append(d.submit_nowait((master, seq), master))
        await until(lambda: tracker.in_flight == 2, "two running")
        closing = asyncio.ensure_future(d.aclose(cancel_pending=True))
        await asyncio.sleep(0)
        gate.set()
        taken = await closing
        running = {m for m, seqs in tracker.by_master.items() if seqs == [0]}
        assert len(running) == 2
        by_master: dict[str, list[int]] = defaultdict(list)
        for (master, seq), m in taken:
            assert master == m
            by_master[m].append(seq)
        for master in ("a", "b", "c"):
            expected = [1, 2, 3] if master in running else [0, 1, 2, 3]
            assert by_master[master] == expected  # FIFO per master
        assert sum(f.cancelled() for f in futures) == len(taken) == 10
        stats = d.stats()
        assert (stats.completed, stats.cancelled, stats.pending, stats.running) == (2, 10, 0, 0)
        assert_identity(stats)
        assert await d.aclose(cancel_pending=True) == []

    run(main)


def test_close_then_aclose_cancel_pending_still_cancels(AsyncDispatcher: type) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        tracker = Tracker(gate)
        d = AsyncDispatcher(tracker)
        for seq in range(3):
            d.dispatch_nowait(("m", seq), "m")
        await until(lambda: tracker.in_flight == 1)
        d.close()
        d.close()  # a second close does nothing
        gate.set()
        taken = await d.aclose(cancel_pending=True)
        assert [w for w, _ in taken] == [("m", 1), ("m", 2)]

    run(main)


def test_wait_times_out_and_wait_and_aclose_refuse_inside_a_handler(
    AsyncDispatcher: type,
) -> None:
    caught: list[BaseException] = []

    async def main() -> None:
        gate = asyncio.Event()
        d: Any = None

        async def handle(work: str) -> None:
            if work == "inner":
                for call in (d.wait(), d.aclose()):
                    try:
                        await call
                    except RuntimeError as exc:
                        caught.append(exc)
                return
            await gate.wait()

        d = AsyncDispatcher(handle)
        d.dispatch_nowait("block", "m")
        assert await d.wait(0) is False
        assert await d.wait(0.01) is False
        d.dispatch_nowait("inner", "n")
        await until(lambda: len(caught) == 2)
        assert not d.closed  # the refused aclose changed nothing
        gate.set()
        assert await d.wait() is True
        await d.aclose()

    run(main)
    assert all("own handler" in str(e) for e in caught), caught


def test_async_with_closes_on_exit(AsyncDispatcher: type) -> None:
    tracker = Tracker()

    async def main() -> None:
        async with AsyncDispatcher(tracker) as d:
            d.dispatch_nowait(("m", 0), "m")
        assert d.closed
        assert tracker.by_master == {"m": [0]}

    run(main)


def test_a_cancelled_aclose_leaves_the_dispatcher_closed_and_draining(
    AsyncDispatcher: type,
) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        tracker = Tracker(gate)
        d = AsyncDispatcher(tracker)
        for seq in range(3):
            d.dispatch_nowait(("m", seq), "m")
        closing = asyncio.ensure_future(d.aclose())
        await until(lambda: d.closed)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        with pytest.raises(DispatcherClosed):
            d.dispatch_nowait(("m", 3), "m")
        gate.set()
        assert await d.aclose() == []
        assert tracker.by_master["m"] == [0, 1, 2]
        assert_identity(d.stats())

    run(main)


# -- capacity ---------------------------------------------------------------------


def test_capacity_nowait_raises_and_dispatch_waits_for_room(AsyncDispatcher: type) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        tracker = Tracker(gate)
        d = AsyncDispatcher(tracker, capacity=2)
        d.dispatch_nowait(("m", 0), "m")
        await until(lambda: tracker.in_flight == 1)
        d.dispatch_nowait(("m", 1), "m")
        d.dispatch_nowait(("m", 2), "m")
        assert d.pending("m") == 2
        with pytest.raises(QueueFull, match="'m'"):
            d.dispatch_nowait(("m", 3), "m")
        with pytest.raises(QueueFull):
            d.submit_nowait(("m", 3), "m")
        with pytest.raises(QueueFull):
            await d.dispatch(("m", 3), "m", timeout=0)
        d.dispatch_nowait(("other", 0), "other")  # other masters are not affected
        producers = [asyncio.ensure_future(d.dispatch(("m", seq), "m")) for seq in (3, 4, 5)]
        await asyncio.sleep(0)
        assert not any(p.done() for p in producers)
        assert d.stats().dispatched == 4
        gate.set()
        await asyncio.gather(*producers)
        assert await d.wait(WAIT)
        assert tracker.by_master["m"] == [0, 1, 2, 3, 4, 5]  # waiting producers in FIFO
        await d.aclose()

    run(main)


def test_capacity_timeout_raises_queue_full_and_queues_nothing(AsyncDispatcher: type) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        tracker = Tracker(gate)
        d = AsyncDispatcher(tracker, capacity=1)
        d.dispatch_nowait(("m", 0), "m")
        await until(lambda: tracker.in_flight == 1)
        d.dispatch_nowait(("m", 1), "m")
        before = d.stats()
        with pytest.raises(QueueFull):
            await d.dispatch(("m", 2), "m", timeout=0.01)
        with pytest.raises(QueueFull):
            await d.submit(("m", 2), "m", timeout=0.01)
        assert d.stats() == before
        gate.set()
        assert await d.wait(WAIT)
        assert tracker.by_master["m"] == [0, 1]
        await d.aclose()

    run(main)


def test_close_fails_producers_waiting_for_room(AsyncDispatcher: type) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        tracker = Tracker(gate)
        d = AsyncDispatcher(tracker, capacity=1)
        d.dispatch_nowait(("m", 0), "m")
        await until(lambda: tracker.in_flight == 1)
        d.dispatch_nowait(("m", 1), "m")
        waiting = asyncio.ensure_future(d.dispatch(("m", 2), "m"))
        await asyncio.sleep(0)
        d.close()
        with pytest.raises(DispatcherClosed):
            await waiting
        gate.set()
        await d.aclose()
        assert tracker.by_master["m"] == [0, 1]
        assert d.stats().dispatched == 2

    run(main)


def test_a_handler_meeting_a_full_queue_gets_queue_full_at_once(AsyncDispatcher: type) -> None:
    outcomes: list[str] = []

    async def main() -> None:
        d: Any = None

        full = asyncio.Event()

        async def handle(work: str) -> None:
            if work == "first":
                await full.wait()
                for master in ("m", "n"):  # its own master and another one
                    try:
                        await d.dispatch("third", master)
                    except QueueFull:
                        outcomes.append(f"QueueFull {master}")

        # one worker: "n"'s item waits for it, so "n"'s queue stays full too
        d = AsyncDispatcher(handle, capacity=1, max_concurrency=1)
        d.dispatch_nowait("first", "m")
        await until(lambda: d.stats().running == 1)
        d.dispatch_nowait("second", "m")
        d.dispatch_nowait("second", "n")
        full.set()
        assert await d.wait(WAIT)
        await d.aclose()

    run(main)
    assert outcomes == ["QueueFull m", "QueueFull n"]


# -- cancellation ---------------------------------------------------------------------


def test_a_producer_cancelled_while_waiting_queues_nothing(AsyncDispatcher: type) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        tracker = Tracker(gate)
        d = AsyncDispatcher(tracker, capacity=1)
        d.dispatch_nowait(("m", 0), "m")
        await until(lambda: tracker.in_flight == 1)
        d.dispatch_nowait(("m", 1), "m")
        cancelled = asyncio.ensure_future(d.dispatch(("m", "cancelled"), "m"))
        kept = asyncio.ensure_future(d.dispatch(("m", 2), "m"))
        await asyncio.sleep(0)
        before = d.stats()
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert d.stats() == before
        gate.set()
        await kept
        assert await d.wait(WAIT)
        assert tracker.by_master["m"] == [0, 1, 2]
        assert_identity(d.stats())
        await d.aclose()

    run(main)


def test_a_producer_cancelled_after_room_was_granted_passes_it_on(
    AsyncDispatcher: type,
) -> None:
    async def main() -> None:
        tasks: dict[str, asyncio.Future[None]] = {}
        seen: list[str] = []
        release = asyncio.Event()

        async def handle(work: str) -> None:
            if work == "first":
                await release.wait()
            elif work == "second":
                # Room was just granted to "a" (not yet resumed): cancel it now.
                tasks["a"].cancel()
            seen.append(work)

        d = AsyncDispatcher(handle, capacity=1)
        d.dispatch_nowait("first", "m")
        await until(lambda: d.stats().running == 1)
        d.dispatch_nowait("second", "m")
        tasks["a"] = asyncio.ensure_future(d.dispatch("a", "m"))
        tasks["b"] = asyncio.ensure_future(d.dispatch("b", "m"))
        await asyncio.sleep(0)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await tasks["a"]
        await tasks["b"]
        assert await d.wait(WAIT)
        assert seen == ["first", "second", "b"]
        stats = d.stats()
        assert stats.dispatched == 3
        assert_identity(stats)
        await d.aclose()

    run(main)


def test_a_cancelled_wait_changes_nothing(AsyncDispatcher: type) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        tracker = Tracker(gate)
        d = AsyncDispatcher(tracker)
        d.dispatch_nowait(("m", 0), "m")
        waiter = asyncio.ensure_future(d.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not d.closed
        d.dispatch_nowait(("m", 1), "m")
        gate.set()
        assert await d.wait(WAIT)
        assert tracker.by_master["m"] == [0, 1]
        await d.aclose()

    run(main)


# -- threads ---------------------------------------------------------------------------


def test_dispatch_threadsafe_from_several_threads_under_load(AsyncDispatcher: type) -> None:
    threads, per_thread, masters = 4, 2000, 7
    seen: dict[Any, list[int]] = defaultdict(list)

    async def handle(work: tuple[int, int, int]) -> None:
        thread, master, seq = work
        seen[(thread, master)].append(seq)
        if seq % 50 == 0:
            await asyncio.sleep(0)

    async def main() -> None:
        d = AsyncDispatcher(handle, max_concurrency=4)
        start = threading.Barrier(threads)

        def produce(thread: int) -> None:
            start.wait(WAIT)
            for seq in range(per_thread):
                master = seq % masters
                d.dispatch_threadsafe((thread, master, seq), master)

        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            await asyncio.gather(*(loop.run_in_executor(pool, produce, t) for t in range(threads)))
        assert await d.wait(WAIT)
        stats = d.stats()
        assert stats.dispatched == stats.completed == threads * per_thread
        assert_identity(stats)
        await d.aclose()

    run(main)
    for (thread, master), seqs in seen.items():
        assert seqs == [s for s in range(per_thread) if s % masters == master], (thread, master)


def test_dispatch_threadsafe_wakes_the_loop_once_per_burst(AsyncDispatcher: type) -> None:
    handled: list[int] = []

    async def handle(work: int) -> None:
        handled.append(work)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        wakeups = 0
        real = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal wakeups
            wakeups += 1
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        try:
            d = AsyncDispatcher(handle)

            def burst() -> None:
                for i in range(1000):
                    d.dispatch_threadsafe(i, i % 10)

            # The loop is blocked while the thread produces: one burst.
            producer = threading.Thread(target=burst)
            producer.start()
            producer.join(WAIT)
            assert not producer.is_alive()
            assert await d.wait(WAIT)
            assert wakeups == 1
            burst()  # from the loop's own thread too
            assert await d.wait(WAIT)
            assert wakeups == 2
            await d.aclose()
        finally:
            del loop.call_soon_threadsafe

    run(main)
    assert sorted(handled) == sorted(list(range(1000)) * 2)


def test_loop_methods_from_another_thread_name_dispatch_threadsafe(
    AsyncDispatcher: type,
) -> None:
    async def handle(work: Any) -> None:
        pass

    async def main() -> None:
        d = AsyncDispatcher(handle)
        errors: list[BaseException] = []

        def other_thread() -> None:
            for call in (
                lambda: d.dispatch_nowait(1, "m"),
                lambda: d.submit_nowait(1, "m"),
                d.close,
            ):
                try:
                    call()
                except RuntimeError as exc:
                    errors.append(exc)

        t = threading.Thread(target=other_thread)
        t.start()
        t.join(WAIT)
        assert len(errors) == 3, errors
        assert all("dispatch_threadsafe" in str(e) for e in errors)
        assert "dispatch_nowait" in str(errors[0])
        assert d.stats().dispatched == 0 and not d.closed
        await d.aclose()

    run(main)


def test_another_event_loop_is_refused(AsyncDispatcher: type) -> None:
    async def handle(work: Any) -> None:
        pass

    async def make() -> Any:
        return AsyncDispatcher(handle)

    d = asyncio.run(make())

    async def use_elsewhere() -> None:
        for call in (
            lambda: d.dispatch_nowait(1, "m"),
            lambda: d.dispatch(1, "m"),
            lambda: d.wait(),
            lambda: d.aclose(),
        ):
            with pytest.raises(RuntimeError, match="another event loop"):
                result = call()
                if isinstance(result, Awaitable):
                    await result

    run(use_elsewhere)
    with pytest.raises(RuntimeError, match="outside any event loop"):
        d.dispatch_nowait(1, "m")


def test_created_outside_a_loop_binds_on_first_use(AsyncDispatcher: type) -> None:
    seen: list[int] = []

    async def handle(work: int) -> None:
        seen.append(work)

    d = AsyncDispatcher(handle)
    with pytest.raises(RuntimeError, match="has none yet"):
        d.dispatch_threadsafe(1, "m")

    async def main() -> None:
        async with d:
            d.dispatch_nowait(1, "m")
            d.dispatch_threadsafe(2, "m")

    run(main)
    assert seen == [1, 2]


def test_thread_dispatcher_bridge_with_wrap_future(Dispatcher: type) -> None:
    async def main() -> None:
        with Dispatcher(lambda w: w * 3) as d:
            results = await asyncio.gather(
                *(asyncio.wrap_future(d.submit(i, i % 2)) for i in range(10))
            )
        assert results == [i * 3 for i in range(10)]

    run(main)


# -- bad input, memory, debug ------------------------------------------------------------


def test_bad_input_is_refused_and_changes_nothing(AsyncDispatcher: type) -> None:
    async def handle(work: Any) -> None:
        pass

    for bad, exc in [
        ({"max_concurrency": 0}, ValueError),
        ({"max_concurrency": 1.5}, TypeError),
        ({"max_concurrency": True}, TypeError),
        ({"capacity": 0}, ValueError),
        ({"capacity": "3"}, TypeError),
        ({"on_error": 42}, TypeError),
        ({"debug": "yes"}, TypeError),
    ]:
        with pytest.raises(exc):
            AsyncDispatcher(handle, **bad)
    with pytest.raises(TypeError, match="handler"):
        AsyncDispatcher(42)

    async def main() -> None:
        d = AsyncDispatcher(handle, capacity=1)
        before = d.stats()
        for call in (
            lambda: d.dispatch_nowait(1, ["unhashable"]),
            lambda: d.submit_nowait(1, ["unhashable"]),
            lambda: d.dispatch_threadsafe(1, ["unhashable"]),
            lambda: d.pending(["unhashable"]),
        ):
            with pytest.raises(TypeError, match=r"\['unhashable'\]"):
                call()
        with pytest.raises(TypeError, match=r"\['unhashable'\]"):
            await d.dispatch(1, ["unhashable"])
        with pytest.raises(ValueError, match="timeout"):
            await d.dispatch(1, "m", timeout=-1)
        with pytest.raises(TypeError, match="timeout"):
            await d.submit(1, "m", timeout="soon")
        with pytest.raises(ValueError, match="timeout"):
            await d.wait(-1)
        with pytest.raises(TypeError, match="cancel_pending"):
            await d.aclose(cancel_pending=1)
        assert d.stats() == before
        assert not d.closed
        await d.aclose()

    run(main)


def test_one_off_masters_leave_nothing_behind(AsyncDispatcher: type) -> None:
    async def handle(work: int) -> None:
        if work % 1000 == 0:
            await asyncio.sleep(0)

    async def main() -> None:
        async with AsyncDispatcher(handle) as d:
            for i in range(50_000):
                d.dispatch_nowait(i, ("master", i))
            assert d.stats().active_masters > 0
            assert await d.wait(WAIT)
            stats = d.stats()
            assert stats.active_masters == 0
            assert stats.pending == stats.running == 0
            assert d.pending(("master", 1)) == 0

    run(main)


def test_a_master_with_one_queued_item_behaves_like_any_lane(AsyncDispatcher: type) -> None:
    # A master's first queued item is kept without a lane of its own until a
    # second item arrives or a worker takes it: order, counts, pending() and
    # cancel_pending must not see the difference, whatever the work (None too).
    async def scenario(cancel: bool) -> None:
        gate = asyncio.Event()
        seen: list[Any] = []

        async def handle(work: Any) -> str:
            if work == "block":
                await gate.wait()
            seen.append(work)
            return "done"

        d = AsyncDispatcher(handle, max_concurrency=1)
        d.dispatch_nowait("block", "x")
        await until(lambda: d.stats().running == 1, "x running")
        d.dispatch_nowait(None, "a")
        future = d.submit_nowait("b0", "b")
        d.dispatch_nowait(("c", 0), "c")
        assert (d.pending("a"), d.pending("b"), d.pending("c"), d.pending("z")) == (1, 1, 1, 0)
        assert d.stats().active_masters == 4
        d.dispatch_nowait("a1", "a")
        d.dispatch_nowait(("c", 1), "c")
        assert (d.pending("a"), d.pending("b"), d.pending("c")) == (2, 1, 2)
        assert d.stats().pending == 5
        if cancel:
            closing = asyncio.ensure_future(d.aclose(cancel_pending=True))
            await asyncio.sleep(0)
            gate.set()
            taken = await closing
            assert sorted(taken, key=lambda t: t[1]) == [
                (None, "a"),
                ("a1", "a"),
                ("b0", "b"),
                (("c", 0), "c"),
                (("c", 1), "c"),
            ]
            assert future.cancelled()
            assert seen == ["block"]
        else:
            gate.set()
            await d.aclose()
            assert seen == ["block", None, "a1", "b0", ("c", 0), ("c", 1)]
            assert future.result() == "done"
        stats = d.stats()
        assert (stats.pending, stats.running, stats.active_masters) == (0, 0, 0)
        assert stats.cancelled == (5 if cancel else 0)
        assert_identity(stats)

    run(lambda: scenario(cancel=False))
    run(lambda: scenario(cancel=True))


def test_debug_logs_every_item(AsyncDispatcher: type, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fastdispatch")

    async def handle(work: str) -> None:
        pass

    async def main() -> None:
        async with AsyncDispatcher(handle, debug=True) as d:
            d.dispatch_nowait("hello-item", "m")

    logger = logging.getLogger("fastdispatch")
    before = list(logger.handlers)
    try:
        run(main)
    finally:
        for h in logger.handlers:
            if h not in before:
                logger.removeHandler(h)
        logger.setLevel(logging.NOTSET)
    messages = [r.getMessage() for r in caplog.records if r.name == "fastdispatch"]
    assert "handle 'hello-item'" in messages
    assert "handled 'hello-item'" in messages


def test_public_names() -> None:
    import fastdispatch.aio as aio

    assert aio.IMPLEMENTATION in ("cython", "python")
    assert aio.QueueFull is QueueFull and aio.DispatcherClosed is DispatcherClosed
    assert aio.AsyncDispatcher.__doc__


SHOW_AIO_IMPL = "import fastdispatch.aio as a; print(a.IMPLEMENTATION)"


def test_the_asyncio_core_follows_the_environment_switches() -> None:
    from conftest import run_python, subprocess_env

    pure = run_python(SHOW_AIO_IMPL, subprocess_env(None, FASTDISPATCH_NO_EXTENSIONS="1"))
    assert (pure.returncode, pure.stdout) == (0, "python\n"), pure.stderr
    blocked = "import sys; sys.modules['fastdispatch.aio._core_c'] = None\n" + SHOW_AIO_IMPL
    quiet = run_python(blocked, subprocess_env(None))
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "python\n", "")
    required = run_python(blocked, subprocess_env(None, FASTDISPATCH_REQUIRE_EXTENSIONS="1"))
    assert required.returncode != 0
    assert "fastdispatch.aio._core_c" in required.stderr
    assert "FASTDISPATCH_REQUIRE_EXTENSIONS" in required.stderr
    if not env_flag("FASTDISPATCH_NO_EXTENSIONS"):
        compiled = run_python(SHOW_AIO_IMPL, subprocess_env("cython"))
        assert (compiled.returncode, compiled.stdout) == (0, "cython\n"), compiled.stderr
