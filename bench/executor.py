"""KeyedExecutor and fastdispatch's Future against the standard library, as ratios.

    python bench/executor.py            # full sizes, 5 rounds (~1-2 minutes on 2 cores)
    python bench/executor.py --quick    # reduced sizes, 2 rounds (seconds)

Three measurements, each a ratio of fastdispatch to its standard-library peer
measured in the same run (rounds interleave the contenders; every run is a
fresh child process):

* ``keyed``: 1,000 keys x 200 ``submit_keyed`` calls of a no-op, interleaved
  over the keys, until every call has run and the threads are joined; against
  a ``ThreadPoolExecutor`` with per-key future chaining (each call is handed
  to the pool when the key's previous call is done, the usual recipe);
* ``unkeyed``: 200,000 ``submit`` calls of a no-op until shutdown returns,
  against ``ThreadPoolExecutor.submit``;
* ``future``: a Future alone: create, ``set_running_or_notify_cancel``,
  ``set_result``; fastdispatch's Future against ``concurrent.futures.Future``
  (each child keeps the best of 5 repetitions of its loop).

Ratios > 1 mean fastdispatch is faster. Results go to ``bench/results/``
(``executor.json``, ``executor.md``; ``--quick`` writes ``bench/results/quick/``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

#: (keys, calls per key), unkeyed calls, futures; per size.
SIZES: dict[str, dict[str, Any]] = {
    "full": {"keyed": (1000, 200), "unkeyed": 200_000, "future": 200_000},
    "quick": {"keyed": (200, 50), "unkeyed": 20_000, "future": 50_000},
    "tiny": {"keyed": (10, 10), "unkeyed": 100, "future": 100},
}
ROUNDS = {"full": 5, "quick": 2, "tiny": 1}

#: measurement -> (fastdispatch contenders, the standard-library peer)
CONTENDERS: dict[str, tuple[tuple[str, ...], str]] = {
    "keyed": (("fd-cython", "fd-python"), "tpe-chained"),
    "unkeyed": (("fd-cython", "fd-python"), "tpe"),
    "future": (("fd-future",), "stdlib-future"),
}
LABELS = {
    "fd-cython": "KeyedExecutor (compiled core)",
    "fd-python": "KeyedExecutor (pure-Python core)",
    "tpe-chained": "ThreadPoolExecutor + per-key future chaining",
    "tpe": "ThreadPoolExecutor",
    "fd-future": "fastdispatch Future",
    "stdlib-future": "concurrent.futures.Future",
}
TITLES = {
    "keyed": "{0:,} keys x {1:,} submit_keyed no-op calls",
    "unkeyed": "{0:,} unkeyed submit no-op calls",
    "future": "{0:,} futures: create, set running, set result",
}
TARGETS = {"keyed": 3.0, "unkeyed": 1.0, "future": None}


def noop() -> None:
    pass


# -- the peer recipe ----------------------------------------------------------


class ChainedThreadPool:
    """``ThreadPoolExecutor`` with per-key future chaining: what users write today.

    Each call gets its own Future; the key's previous call hands it to the pool
    from its done-callback (or at once when the key is idle), so calls with one
    key run one at a time, in submit order.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor()
        self._lock = threading.Lock()
        self._tails: dict[Hashable, Future[Any]] = {}

    def submit_keyed(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            previous = self._tails.get(key)
            self._tails[key] = future
        if previous is None:
            self._start(key, future, fn, args)
        else:
            previous.add_done_callback(lambda _: self._start(key, future, fn, args))
        return future

    def _start(self, key: Hashable, future: Future[Any], fn: Callable[..., Any], args: Any) -> None:
        if future.set_running_or_notify_cancel():
            self._pool.submit(self._run, key, future, fn, args)
        else:
            self._retire(key, future)

    def _run(self, key: Hashable, future: Future[Any], fn: Callable[..., Any], args: Any) -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        self._retire(key, future)

    def _retire(self, key: Hashable, future: Future[Any]) -> None:
        with self._lock:
            if self._tails.get(key) is future:
                del self._tails[key]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


# -- one measurement (in a child process) ----------------------------------------


def run_keyed(contender: str, keys: int, per_key: int) -> float:
    """Seconds for keys x per_key no-op calls, until all ran and threads joined."""
    if contender == "tpe-chained":
        ex: Any = ChainedThreadPool()
    else:
        from fastdispatch import KeyedExecutor

        ex = KeyedExecutor()
    submit = ex.submit_keyed
    key_list = list(range(keys))
    t0 = time.perf_counter()
    for _ in range(per_key - 1):
        for k in key_list:
            submit(k, noop)
    lasts = [submit(k, noop) for k in key_list]
    for f in lasts:  # a key's last call done: all of its calls are done
        f.result()
    ex.shutdown()
    elapsed = time.perf_counter() - t0
    assert all(f.done() and f.exception() is None for f in lasts)
    return elapsed


def run_unkeyed(contender: str, n: int) -> float:
    """Seconds for n unkeyed no-op submits, until shutdown(wait=True) returns."""
    if contender == "tpe":
        ex: Any = ThreadPoolExecutor()
    else:
        from fastdispatch import KeyedExecutor

        ex = KeyedExecutor()
    submit = ex.submit
    t0 = time.perf_counter()
    for _ in range(n - 1):
        submit(noop)
    last = submit(noop)
    ex.shutdown(wait=True)
    elapsed = time.perf_counter() - t0
    assert last.done()
    return elapsed


#: Repetitions of the Future loop in one child; the fastest counts (as timeit's best
#: of), since a loop this short is easily doubled by one preemption on a busy host.
FUTURE_REPEAT = 5


def run_future(contender: str, n: int) -> float:
    """Seconds for n futures created, set running and given a result (best repetition)."""
    if contender == "stdlib-future":
        cls: Any = Future
    else:
        from fastdispatch._future import Future as cls
    best = float("inf")
    for _ in range(FUTURE_REPEAT):
        t0 = time.perf_counter()
        for _ in range(n):
            f = cls()
            f.set_running_or_notify_cancel()
            f.set_result(None)
        best = min(best, time.perf_counter() - t0)
    return best


def child(measurement: str, contender: str, size: str) -> dict[str, Any]:
    gc.collect()
    spec = SIZES[size][measurement]
    if measurement == "keyed":
        elapsed = run_keyed(contender, *spec)
        items = spec[0] * spec[1]
    elif measurement == "unkeyed":
        elapsed = run_unkeyed(contender, spec)
        items = spec
    else:
        elapsed = run_future(contender, spec)
        items = spec
    out: dict[str, Any] = {"seconds": elapsed, "items_per_s": items / elapsed}
    if contender.startswith("fd-") and contender != "fd-future":
        import fastdispatch

        out["implementation"] = fastdispatch.IMPLEMENTATION
    return out


# -- the runner ------------------------------------------------------------------------


def child_env(contender: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTDISPATCH_")}
    if contender == "fd-cython":
        env["FASTDISPATCH_REQUIRE_EXTENSIONS"] = "1"
    elif contender == "fd-python":
        env["FASTDISPATCH_NO_EXTENSIONS"] = "1"
    src = REPO / "src"
    if (src / "fastdispatch").is_dir():
        try:
            import fastdispatch  # noqa: F401  (installed or on the path already)
        except ImportError:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def measure(measurement: str, contender: str, size: str, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__)), "--child", measurement, contender, size]
    try:
        proc = subprocess.run(
            cmd, env=child_env(contender), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"timeout after {timeout:g} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "failed", "reason": f"exit code {proc.returncode}: {tail}"}
    return {"status": "ok", **json.loads(proc.stdout)}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(size: str, rounds: int, timeout: float = 120.0) -> dict[str, Any]:
    """Every measurement and contender for *rounds* interleaved rounds; the summary."""
    load_start = _loadavg()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        m: {c: [] for c in (*fd, peer)} for m, (fd, peer) in CONTENDERS.items()
    }
    for _ in range(rounds):
        for m, per in runs.items():
            for c in per:
                per[c].append(measure(m, c, size, timeout))
    summary: dict[str, Any] = {}
    for m, (fd, peer) in CONTENDERS.items():
        spec = SIZES[size][m]
        entry: dict[str, Any] = {
            "title": TITLES[m].format(*(spec if isinstance(spec, tuple) else (spec,))),
            "peer": peer,
            "target": TARGETS[m],
            "throughput": {},
            "ratio": {},
        }
        for c in (*fd, peer):
            ok = [r["items_per_s"] for r in runs[m][c] if r["status"] == "ok"]
            entry["throughput"][c] = spread(ok) if ok else None
        for c in fd:
            # Per round: the contender's throughput over the peer's of the same round.
            pairs = zip(runs[m][c], runs[m][peer], strict=True)
            ratios = [
                a["items_per_s"] / b["items_per_s"]
                for a, b in pairs
                if a["status"] == "ok" and b["status"] == "ok"
            ]
            entry["ratio"][c] = spread(ratios) if ratios else None
        summary[m] = entry
    return {
        "meta": {
            "size": size,
            "rounds": rounds,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loadavg": f"{load_start} at start, {_loadavg()} at end",
        },
        "labels": LABELS,
        "summary": summary,
        "runs": runs,
    }


def _loadavg() -> str:
    # Other processes skew every number: say how busy the machine was.
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _si(v: float) -> str:
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def markdown(results: dict[str, Any]) -> str:
    """The table: throughput and ratio to the peer, median (min-max) over rounds."""
    meta = results["meta"]
    lines = [
        "| measurement | contender | items/s, median (min-max) | ratio to peer, median "
        "(min-max) | target |",
        "|---|---|---|---|---|",
    ]
    for entry in results["summary"].values():
        for c, tp in entry["throughput"].items():
            r = entry["ratio"].get(c)
            is_peer = c == entry["peer"]
            ratio = (
                "peer"
                if is_peer
                else "n/a"
                if r is None
                else f"**{r['median']:.2f}x** ({r['min']:.2f}-{r['max']:.2f})"
            )
            target = "" if is_peer or entry["target"] is None else f">= {entry['target']:g}x"
            if target and meta["size"] != "full":
                target += " (judged at full size)"
            elif target and r is not None:
                target += " met" if r["median"] >= entry["target"] else " MISSED"
            through = (
                "failed"
                if tp is None
                else f"{_si(tp['median'])} ({_si(tp['min'])}-{_si(tp['max'])})"
            )
            lines.append(
                f"| {entry['title']} | {results['labels'][c]} | {through} | {ratio} | {target} |"
            )
    head = (
        f"KeyedExecutor and Future vs the standard library (`bench/executor.py`, "
        f"size {meta['size']}, {meta['rounds']} rounds, Python {meta['python']}, "
        f"{meta['cpus']} CPUs, {meta['date']}, load average {meta.get('loadavg', '?')}). "
        "Ratios > 1: fastdispatch is faster; each is paired within a round.\n\n"
    )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(*argv[1:4])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced sizes, 2 rounds")
    ap.add_argument("--size", choices=list(SIZES), help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, help="rounds (default 5, --quick 2)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per child")
    ap.add_argument("--out", type=Path, help="results directory (default bench/results[/quick])")
    args = ap.parse_args(argv)
    size = args.size or ("quick" if args.quick else "full")
    rounds = args.rounds or ROUNDS[size]
    if rounds < 1:
        ap.error("--rounds must be >= 1")
    out = args.out or BENCH / "results" / ("" if size == "full" else size)
    out.mkdir(parents=True, exist_ok=True)
    results = run(size, rounds, args.timeout)
    text = markdown(results)
    (out / "executor.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "executor.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
