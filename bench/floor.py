"""The ratio to the bare loop, measured in brackets: loop, contender, loop, ... in one process.

Usage: ``python bench/floor.py CONTENDER SCENARIO SIZE [--pairs N] [--cpus LIST]``.
The last line of stdout is a JSON object: the loop's and the contender's
items/s, run by run, and one ratio per contender run (its items/s over the
mean of the loop runs just before and just after it).

Why: on this kind of machine (a VM whose vCPUs share physical cores with
other tenants) the bare loop's speed jumps between ~32 and ~56 ns per item
from one second to the next *inside one process* (bench/README.md shows the
trace). A ratio whose two sides were measured in different processes, tens
of seconds apart, pairs random host states. Bracketing puts both sides of
each ratio within a fraction of a second of each other.

``--cpus 0`` pins the whole process (producer and workers) to those CPUs,
for diagnosis only: it shows what the dispatcher costs when the producer and
its worker share one core's caches. It is not how a user runs it.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import sys
from typing import Any

import peers
import scenarios
from child import fastdispatch_info

#: The scenarios whose floor target is judged this way (S1, S2).
FLOOR_SCENARIOS = ("S1", "S2")


def _one(name: str, size: scenarios.Size, pairs: list[tuple[int, int]]) -> float:
    c = peers.make(name, scenarios.noop, size.max_workers)
    elapsed = scenarios.timed_produce(c, pairs)
    del c
    gc.collect()  # the previous run's garbage is not the next one's cost
    return len(pairs) / elapsed


def bracket(name: str, key: str, size_name: str, n_pairs: int) -> dict[str, Any]:
    """Run the loop, then ``n_pairs`` times (contender, loop); the ratios."""
    size = scenarios.SCENARIOS[key].sizes[size_name]
    pairs = scenarios.round_robin(size.masters, size.per_master)
    _one(name, size, pairs)  # warm-up: first thread start, first imports
    loop = [_one("loop", size, pairs)]
    value: list[float] = []
    for _ in range(n_pairs):
        value.append(_one(name, size, pairs))
        loop.append(_one("loop", size, pairs))
    ratios = [v / m for v, m in zip(value, loop_means(loop), strict=True)]
    return {"loop": loop, "value": value, "ratios": ratios}


def summarise(ratios: list[float], loop_means: list[float]) -> dict[str, Any]:
    """Median and range of the ratios, and the medians of the halves by loop speed.

    The faster-loop half is the stricter reading of "a fraction of the bare
    loop": the loop gains more from a fast spell of the host than a dispatcher.
    """
    if not ratios:
        return {"status": "missing"}
    order = sorted(range(len(ratios)), key=lambda i: loop_means[i])
    half = len(order) // 2
    slow, fast = order[:half], order[half:]
    out: dict[str, Any] = {
        "status": "ok",
        "n": len(ratios),
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "fast_half": statistics.median(ratios[i] for i in fast),
        "fast_loop": statistics.median(loop_means[i] for i in fast),
    }
    if slow:
        out["slow_half"] = statistics.median(ratios[i] for i in slow)
        out["slow_loop"] = statistics.median(loop_means[i] for i in slow)
    return out


def loop_means(loop: list[float]) -> list[float]:
    """The loop speed each ratio of a bracketed run is taken against: the mean
    of the loop runs just before and just after each contender run."""
    return [(a + b) / 2 for a, b in itertools.pairwise(loop)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("contender", choices=peers.CONTENDERS)
    ap.add_argument("scenario", choices=FLOOR_SCENARIOS)
    ap.add_argument("size", choices=["full", "quick", "tiny"])
    ap.add_argument("--pairs", type=int, default=8, help="contender runs (default 8)")
    ap.add_argument("--cpus", help="pin the process to these CPUs, e.g. 0 or 0,1 (diagnosis)")
    args = ap.parse_args(argv)
    if args.pairs < 1:
        ap.error("--pairs must be positive")
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    info = fastdispatch_info(args.contender)
    run = bracket(args.contender, args.scenario, args.size, args.pairs)
    run.update(info, status="ok", cpus=sorted(os.sched_getaffinity(0)))
    print(json.dumps(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
