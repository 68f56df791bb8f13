"""AsyncDispatcher against what an asyncio user would otherwise write (scenarios A1-A6).

    python bench/aio.py --quick        # reduced sizes, 3 rounds: about 2-3 minutes
    python bench/aio.py                # full sizes, 5 rounds
    python bench/aio.py --child fd-cython A1 quick   # one measurement, JSON on stdout

Contenders (the same no-op coroutine handler unless the scenario says):

* ``fd-cython`` / ``fd-python``: ``fastdispatch.aio.AsyncDispatcher`` on the
  compiled / the pure-Python asyncio core;
* ``lock-recipe``: a task per item, serialised by a per-key ``asyncio.Lock``
  (``defaultdict(asyncio.Lock)``, the common recipe);
* ``lanes-64``: 64 fixed lanes, the key hashed onto one ``asyncio.Queue``
  with one task per lane;
* ``bare``: ``await handler(work)`` in the producer's loop (the floor; no
  concurrency, so it has no A4/A6 row). In A3N it first builds the list of
  all inputs, so its peak RSS is what holding the inputs alone costs.

A3 comes in two variants: the producer yields to the loop every 1,000 items
(A3), or never (A3N: every item is accepted before the first one runs, so
every master's item is queued at once: the worst case for memory).

Every measurement runs in a fresh child process; rounds are interleaved (all
contenders of round 1, then round 2, ...). Ratios pair the contenders of the
same round and report the median and min-max over rounds. Results go to
``bench/results/aio.{md,json}`` (``--quick``: ``bench/results/quick/``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

CONTENDERS = ("fd-cython", "fd-python", "lock-recipe", "lanes-64", "bare")
FD_ENV = {
    "fd-cython": {"FASTDISPATCH_REQUIRE_EXTENSIONS": "1"},
    "fd-python": {"FASTDISPATCH_NO_EXTENSIONS": "1"},
}
#: Lanes of the fixed-lanes recipe.
LANES = 64
#: A3's producer yields to the loop after this many items (an asyncio
#: producer reading a socket yields much more often).
A3_YIELD_EVERY = 1000
#: A3's peak RSS target at full size (1,000,000 masters), both variants.
A3_RSS_TARGET_MB = 150


@dataclass(frozen=True)
class Size:
    masters: int
    items: int  # per master
    threads: int = 1


SIZES: dict[str, dict[str, Size]] = {
    "A1": {"full": Size(1000, 1000), "quick": Size(1000, 200), "tiny": Size(20, 20)},
    "A3": {"full": Size(1_000_000, 1), "quick": Size(200_000, 1), "tiny": Size(2000, 1)},
    "A3N": {"full": Size(1_000_000, 1), "quick": Size(200_000, 1), "tiny": Size(2000, 1)},
    "A4": {"full": Size(256, 20), "quick": Size(256, 10), "tiny": Size(16, 3)},
    "A5": {"full": Size(1, 5000), "quick": Size(1, 1000), "tiny": Size(1, 50)},
    "A6": {"full": Size(1000, 100, 4), "quick": Size(1000, 25, 4), "tiny": Size(20, 20, 4)},
    # A1 bracketed: the bare loop and fd-cython in turn in one process.
    "A1F": {"full": Size(1000, 1000), "quick": Size(1000, 200), "tiny": Size(20, 20)},
}
TITLES = {
    "A1": "{masters:,} masters x {items:,} items, no-op coroutine, one producer (dispatch_nowait)",
    "A3": "{masters:,} one-off masters (producer yields every 1,000 items): items/s, peak RSS",
    "A3N": "{masters:,} one-off masters, the producer never yields (all queued, then aclose): "
    "items/s, peak RSS",
    "A4": "await asyncio.sleep(0.001), {masters} masters x {items}, max_concurrency=64",
    "A5": "latency dispatch -> handler start at light load, {items:,} items one at a time",
    "A1F": "A1 bracketed in one process: fd-cython / the mean of the bare-loop runs around it",
    "A6": "{threads} producer threads into {masters:,} masters x {items:,} (dispatch_threadsafe)",
}
A4_SLEEP = 0.001
#: A1F: fd-cython runs per child, each between two bare-loop runs.
FLOOR_PAIRS = {"full": 6, "quick": 3, "tiny": 1}
A4_CONCURRENCY = 64


# -- contenders (child side) ----------------------------------------------------------


Handler = Callable[[Any], Awaitable[Any]]


class FastDispatch:
    def __init__(self, handler: Handler, max_concurrency: int) -> None:
        from fastdispatch.aio import AsyncDispatcher

        self.d = AsyncDispatcher(handler, max_concurrency=max_concurrency)
        self.dispatch = self.d.dispatch_nowait
        self.dispatch_threadsafe = self.d.dispatch_threadsafe

    async def finish(self) -> None:
        await self.d.aclose()
        stats = self.d.stats()
        assert stats.completed == stats.dispatched, stats


class LockRecipe:
    """A task per item; a per-key lock serialises the key (the dict grows forever)."""

    def __init__(self, handler: Handler, max_concurrency: int | None) -> None:
        self.locks: defaultdict[Hashable, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.tasks: set[asyncio.Task[None]] = set()
        self.handler = handler
        self.limit = None if max_concurrency is None else asyncio.Semaphore(max_concurrency)
        self.loop = asyncio.get_running_loop()

    async def _run(self, work: Any, key: Hashable) -> None:
        async with self.locks[key]:
            if self.limit is None:
                await self.handler(work)
            else:
                async with self.limit:
                    await self.handler(work)

    def dispatch(self, work: Any, key: Hashable) -> None:
        task = asyncio.ensure_future(self._run(work, key))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def dispatch_threadsafe(self, work: Any, key: Hashable) -> None:
        self.loop.call_soon_threadsafe(self.dispatch, work, key)

    async def finish(self) -> None:
        # Not "while self.tasks: await gather(*self.tasks)": when every task is
        # already done, that await need not yield to the loop (it does not on
        # 3.13t), so the done callbacks that empty the set never run.
        await asyncio.gather(*list(self.tasks))


class Lanes:
    """*LANES* fixed lanes: key hashed onto an asyncio.Queue served by one task."""

    def __init__(self, handler: Handler, max_concurrency: int | None) -> None:
        self.queues = [asyncio.Queue() for _ in range(LANES)]  # type: ignore[var-annotated]
        self.handler = handler
        self.workers = [asyncio.ensure_future(self._serve(q)) for q in self.queues]
        self.loop = asyncio.get_running_loop()

    async def _serve(self, q: asyncio.Queue[Any]) -> None:
        handler = self.handler
        while True:
            work = await q.get()
            try:
                await handler(work)
            finally:
                q.task_done()

    def dispatch(self, work: Any, key: Hashable) -> None:
        self.queues[hash(key) % LANES].put_nowait(work)

    def dispatch_threadsafe(self, work: Any, key: Hashable) -> None:
        self.loop.call_soon_threadsafe(self.dispatch, work, key)

    async def finish(self) -> None:
        for q in self.queues:
            await q.join()
        for w in self.workers:
            w.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)


class Bare:
    """The floor: the producer awaits the handler itself."""

    def __init__(self, handler: Handler, max_concurrency: int | None) -> None:
        self.handler = handler

    async def finish(self) -> None:
        pass


def make(name: str, handler: Handler, max_concurrency: int | None) -> Any:
    if name.startswith("fd-"):
        return FastDispatch(handler, max_concurrency or 100)
    return {"lock-recipe": LockRecipe, "lanes-64": Lanes, "bare": Bare}[name](
        handler, max_concurrency
    )


async def noop(work: Any) -> None:
    pass


async def scenario_throughput(name: str, size: Size, key: str) -> dict[str, Any]:
    """A1, A3 and A3N: one producer, items/s until everything is handled."""
    c = make(name, noop, None)
    masters, items = size.masters, size.items
    t0 = time.perf_counter()
    if name == "bare":
        if key == "A3":
            for i in range(masters):
                await noop(i)
                if i % A3_YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        elif key == "A3N":
            # Every input alive at once, as in the others' queues: the memory floor.
            inputs = list(range(masters))
            for i in inputs:
                await noop(i)
            del inputs
        else:
            for seq in range(items):
                for _m in range(masters):
                    await noop(seq)
    elif key == "A3":
        dispatch = c.dispatch
        for i in range(masters):
            dispatch(i, i)
            if i % A3_YIELD_EVERY == 0:
                await asyncio.sleep(0)
    elif key == "A3N":
        dispatch = c.dispatch
        for i in range(masters):
            dispatch(i, i)
    else:
        dispatch = c.dispatch
        for seq in range(items):
            for m in range(masters):
                dispatch(seq, m)
    await c.finish()
    elapsed = time.perf_counter() - t0
    return {"value": masters * items / elapsed, "items": masters * items}


async def scenario_io(name: str, size: Size) -> dict[str, Any]:
    """A4: sleeping handler; efficiency = ideal time / measured time.

    Two ideals: ``efficiency_nominal`` takes each sleep as exactly 1 ms;
    ``efficiency`` takes it as long as it really lasts on this loop, measured
    first in the same process: 64 plain tasks, each sleeping as many times in
    a row as a perfect scheduler's busiest worker would (the loop's timer
    granularity makes a "1 ms" sleep last longer).
    """

    async def handler(work: Any) -> None:
        await asyncio.sleep(A4_SLEEP)

    waves = -(-size.masters // A4_CONCURRENCY)

    async def chain() -> None:
        for _ in range(waves * size.items):
            await asyncio.sleep(A4_SLEEP)

    t0 = time.perf_counter()
    await asyncio.gather(*(chain() for _ in range(min(size.masters, A4_CONCURRENCY))))
    ideal = time.perf_counter() - t0

    c = make(name, handler, A4_CONCURRENCY)
    t0 = time.perf_counter()
    for seq in range(size.items):
        for m in range(size.masters):
            c.dispatch(seq, m)
    await c.finish()
    elapsed = time.perf_counter() - t0
    n = size.masters * size.items
    return {
        "value": n / elapsed,
        "efficiency": ideal / elapsed,
        "efficiency_nominal": waves * size.items * A4_SLEEP / elapsed,
        "items": n,
    }


async def scenario_latency(name: str, size: Size) -> dict[str, Any]:
    """A5: one item at a time; dispatch -> handler start, in microseconds."""
    loop = asyncio.get_running_loop()
    started: list[float] = []
    done: asyncio.Future[None] | None = None

    async def handler(work: Any) -> None:
        started.append(time.perf_counter())
        assert done is not None
        done.set_result(None)

    c = make(name, handler, None)
    lat = []
    t0 = time.perf_counter()
    for i in range(size.items):
        done = loop.create_future()
        t = time.perf_counter()
        if name == "bare":
            await handler(i)
        else:
            c.dispatch(i, i % 10)
        await done
        lat.append((started[-1] - t) * 1e6)
    await c.finish()
    elapsed = time.perf_counter() - t0
    lat.sort()
    return {
        "value": size.items / elapsed,
        "p50_us": lat[len(lat) // 2],
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "items": size.items,
    }


async def scenario_threads(name: str, size: Size) -> dict[str, Any]:
    """A6: producer threads through the contender's thread-safe door."""
    c = make(name, noop, None)
    n = size.threads * size.masters * size.items
    start = threading.Barrier(size.threads + 1)

    def produce(k: int) -> None:
        dispatch = c.dispatch_threadsafe
        start.wait()
        for seq in range(size.items):
            for m in range(size.masters):
                dispatch((k, seq), m)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(size.threads)]
    for t in threads:
        t.start()
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    await loop.run_in_executor(None, start.wait)
    for t in threads:
        await loop.run_in_executor(None, t.join)
    await c.finish()
    elapsed = time.perf_counter() - t0
    return {"value": n / elapsed, "items": n}


async def scenario_floor(size: Size, pairs: int) -> dict[str, Any]:
    """A1F: the bare loop, then ``pairs`` times fd-cython and the loop again.

    The loop's speed swings by 2-10x within seconds on a shared VM; two runs a
    fraction of a second apart are a fairer floor than another process's.
    """
    from fastdispatch.aio import AsyncDispatcher

    masters, items, n = size.masters, size.items, size.masters * size.items

    async def bare_run() -> float:
        t0 = time.perf_counter()
        for seq in range(items):
            for _m in range(masters):
                await noop(seq)
        return n / (time.perf_counter() - t0)

    async def fd_run() -> float:
        d = AsyncDispatcher(noop)
        dispatch = d.dispatch_nowait
        t0 = time.perf_counter()
        for seq in range(items):
            for m in range(masters):
                dispatch(seq, m)
        await d.aclose()
        rate = n / (time.perf_counter() - t0)
        assert d.stats().completed == n
        return rate

    loop_rates = [await bare_run()]
    fd_rates, ratios_ = [], []
    for _ in range(pairs):
        fd_rates.append(await fd_run())
        loop_rates.append(await bare_run())
        ratios_.append(fd_rates[-1] / ((loop_rates[-2] + loop_rates[-1]) / 2))
    return {
        "value": statistics.median(ratios_),
        "ratios": ratios_,
        "loop": loop_rates,
        "fd": fd_rates,
        "items": n,
    }


def infeasible(name: str, key: str) -> str | None:
    if name == "bare" and key in ("A4", "A6"):
        return "the bare loop has no concurrency and no thread-safe door"
    if key == "A1F" and name != "fd-cython":
        return "the bracketed floor ratio is measured for fd-cython"
    return None


def child(name: str, key: str, size_name: str) -> dict[str, Any]:
    size = SIZES[key][size_name]
    if key in ("A1", "A3", "A3N"):
        coro = scenario_throughput(name, size, key)
    elif key == "A4":
        coro = scenario_io(name, size)
    elif key == "A5":
        coro = scenario_latency(name, size)
    elif key == "A1F":
        coro = scenario_floor(size, FLOOR_PAIRS[size_name])
    else:
        coro = scenario_threads(name, size)
    result = asyncio.run(coro)
    result["status"] = "ok"
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if name.startswith("fd-"):
        import fastdispatch.aio

        result["implementation"] = fastdispatch.aio.IMPLEMENTATION
    return result


# -- runner -------------------------------------------------------------------------


def child_env(name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTDISPATCH_")}
    env.update(FD_ENV.get(name, {}))
    # The source tree only when fastdispatch is not installed: an installed copy (a wheel,
    # `pip install .`) has the compiled cores, the source tree of such a checkout does not.
    src = REPO / "src"
    if importlib.util.find_spec("fastdispatch") is None and (src / "fastdispatch").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    env["PYTHONHASHSEED"] = "0"
    return env


def run_child(name: str, key: str, size: str, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, key, size]
    try:
        proc = subprocess.run(
            cmd, env=child_env(name), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"not finished after {timeout:g} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()
        return {"status": "failed", "reason": tail[-1] if tail else f"exit {proc.returncode}"}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    cells: dict[str, dict[str, Any]] = {}
    for name, by_key in runs.items():
        for key, rs in by_key.items():
            ok = [r for r in rs if r.get("status") == "ok"]
            cell: dict[str, Any] = {"rounds": len(ok)}
            if not ok:
                cell["status"] = rs[0].get("status", "missing") if rs else "missing"
                cell["reason"] = rs[0].get("reason", "") if rs else ""
            else:
                cell["status"] = "ok"
                for field in (
                    "value",
                    "peak_rss_mb",
                    "efficiency",
                    "efficiency_nominal",
                    "p50_us",
                    "p99_us",
                ):
                    if field in ok[0]:
                        cell[field] = spread([r[field] for r in ok])
                cell["by_round"] = [r.get("value") if r.get("status") == "ok" else None for r in rs]
            cells.setdefault(name, {})[key] = cell
    return cells


def ratios(cells: dict[str, Any], key: str, of: str, to: str) -> dict[str, float] | None:
    """Per-round ratio of *of* to *to* (same round, one after the other), summarised."""
    a = cells.get(of, {}).get(key, {}).get("by_round")
    b = cells.get(to, {}).get(key, {}).get("by_round")
    if not a or not b:
        return None
    pairs = [x / y for x, y in zip(a, b, strict=False) if x and y]
    return spread(pairs) if pairs else None


def fmt_spread(s: dict[str, float] | None, unit: str = "", scale: float = 1.0, nd: int = 2) -> str:
    if not s:
        return "—"
    med, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    return f"{med:,.{nd}f}{unit} ({lo:,.{nd}f}-{hi:,.{nd}f})"


def markdown(results: dict[str, Any]) -> str:
    meta, cells, size = results["meta"], results["cells"], results["meta"]["size"]
    out = [
        "# AsyncDispatcher benchmarks (bench/aio.py)",
        "",
        f"{meta['date']}, {meta['python']} on {meta['cpu']} ({meta['nproc']} CPUs), "
        f"commit {meta['commit']}, size `{size}`, {meta['rounds']} rounds, "
        f"load average {meta['loadavg_start']} -> {meta['loadavg_end']}.",
        "Each cell: median (min-max) over rounds; ratios pair contenders of the same round.",
        "",
    ]
    for key in results["scenarios"]:
        if key == "A1F":
            floor = results.get("ratios", {}).get("A1F")
            out += [f"## {key}: {results['scenarios'][key]}", ""]
            if floor:
                out.append(
                    f"fd-cython / bare: {fmt_spread(floor['bare'], 'x')} "
                    f"over {floor['pairs']} pairs (median, min-max), "
                    f"{len(cells['fd-cython']['A1F'].get('by_round', []))} children."
                )
            else:
                reason = cells.get("fd-cython", {}).get("A1F", {}).get("reason", "not run")
                out.append(f"not measured: {reason}")
            out.append("")
            continue
        out += [f"## {key}: {results['scenarios'][key]}", ""]
        out += ["| contender | items/s | peak RSS MB | other |", "|---|---|---|---|"]
        for name in CONTENDERS:
            cell = cells.get(name, {}).get(key)
            if cell is None:
                continue
            if cell["status"] != "ok":
                out.append(f"| {name} | {cell['status']}: {cell.get('reason', '')} | | |")
                continue
            other = ""
            if "efficiency" in cell:
                other = (
                    f"efficiency {fmt_spread(cell['efficiency'])} "
                    f"(nominal 1 ms sleeps: {fmt_spread(cell['efficiency_nominal'])})"
                )
            if "p50_us" in cell:
                other = (
                    f"p50 {fmt_spread(cell['p50_us'], ' µs', nd=1)}, "
                    f"p99 {fmt_spread(cell['p99_us'], ' µs', nd=1)}"
                )
            out.append(
                f"| {name} | {fmt_spread(cell['value'], nd=0)} | "
                f"{fmt_spread(cell['peak_rss_mb'], nd=0)} | {other} |"
            )
        out.append("")
        lines = []
        for peer in ("lock-recipe", "lanes-64", "bare", "fd-python"):
            r = ratios(cells, key, "fd-cython", peer)
            if r:
                lines.append(f"fd-cython / {peer}: {fmt_spread(r, 'x')}")
        if lines:
            out += ["Throughput ratios: " + "; ".join(lines) + ".", ""]
        if key in ("A3", "A3N"):
            out += [_rss_line(cells, key), ""]
    return "\n".join(out) + "\n"


def _rss_line(cells: dict[str, Any], key: str) -> str:
    """A3's memory target, judged on each asyncio core; the bare row is the inputs' floor."""
    parts = []
    floor = cells.get("bare", {}).get(key, {}).get("peak_rss_mb")
    for name in ("fd-cython", "fd-python"):
        rss = cells.get(name, {}).get(key, {}).get("peak_rss_mb")
        if not rss:
            continue
        verdict = "met" if rss["max"] <= A3_RSS_TARGET_MB else "NOT met"
        part = f"{name} {rss['median']:.0f} MB (max {rss['max']:.0f}, {verdict})"
        if floor:
            part += f", {rss['median'] - floor['median']:+.0f} MB over bare"
        parts.append(part)
    return (
        f"Peak RSS against the {A3_RSS_TARGET_MB} MB target (set for 1,000,000 masters): "
        + ("; ".join(parts) or "not measured")
        + "."
    )


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "commit": commit,
    }


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced sizes, 3 rounds")
    ap.add_argument("--size", choices=["full", "quick", "tiny"], help=argparse.SUPPRESS)
    ap.add_argument("--scenario", action="append", choices=list(SIZES), help="repeatable")
    ap.add_argument("--contender", action="append", choices=CONTENDERS, help="repeatable")
    ap.add_argument("--rounds", type=int, help="rounds per cell (default 5, --quick 3)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per child")
    ap.add_argument("--out", type=Path, help="results directory")
    ap.add_argument("--child", nargs=3, metavar=("CONTENDER", "SCENARIO", "SIZE"))
    args = ap.parse_args(argv)
    if args.child:
        name, key, size = args.child
        print(json.dumps(child(name, key, size)))
        return 0
    size = args.size or ("quick" if args.quick else "full")
    rounds = args.rounds or {"full": 5, "quick": 3, "tiny": 1}[size]
    out = args.out or (BENCH / "results" / ("" if size == "full" else size))
    keys = args.scenario or list(SIZES)
    names = args.contender or list(CONTENDERS)
    started, load_start = time.perf_counter(), loadavg()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {k: [] for k in keys} for n in names}
    for rnd in range(1, rounds + 1):
        for key in keys:
            for name in names:
                why = infeasible(name, key)
                if why:
                    if rnd == 1:
                        runs[name][key].append({"status": "n/a", "reason": why})
                    continue
                r = run_child(name, key, size, args.timeout)
                r["round"] = rnd
                runs[name][key].append(r)
                print(
                    f"round {rnd} {key} {name}: {r.get('value', r.get('reason'))}", file=sys.stderr
                )
    results = {
        "meta": {
            **machine(),
            "size": size,
            "rounds": rounds,
            "loadavg_start": load_start,
            "loadavg_end": loadavg(),
            "elapsed_s": round(time.perf_counter() - started, 1),
            "argv": sys.argv[1:] if argv is None else argv,
        },
        "scenarios": {k: TITLES[k].format(**SIZES[k][size].__dict__) for k in keys},
        "cells": summarise(runs),
        "runs": runs,
    }
    results["ratios"] = {
        key: {
            peer: ratios(results["cells"], key, "fd-cython", peer)
            for peer in ("lock-recipe", "lanes-64", "bare", "fd-python")
        }
        for key in keys
        if key != "A1F"
    }
    bracketed = [
        x
        for r in runs.get("fd-cython", {}).get("A1F", [])
        if r.get("status") == "ok"
        for x in r["ratios"]
    ]
    if bracketed:
        results["ratios"]["A1F"] = {"bare": spread(bracketed), "pairs": len(bracketed)}
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    (out / "aio.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "aio.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
