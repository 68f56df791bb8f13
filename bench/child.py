"""Run one contender on one scenario in this (fresh) process; print JSON.

Usage: ``python bench/child.py CONTENDER SCENARIO SIZE``. The runner starts
one of these per measurement, with the fastdispatch core chosen by the
environment it passes. The last line of stdout is a JSON object with the
scenario's metrics plus ``peak_rss_mb`` (``ru_maxrss`` of this process) and
``base_rss_mb`` (the same, measured before the scenario started). Short
scenarios are repeated in the process (see ``repeat``) and the median
repetition is reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
from collections.abc import Callable
from typing import Any

import peers
import scenarios


def _maxrss_mb() -> float:
    # Linux reports kilobytes, macOS bytes.
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1 << 20) if sys.platform == "darwin" else kb / 1024


def fastdispatch_info(name: str) -> dict[str, Any]:
    expect = peers.CONTENDERS[name].expect_impl
    if expect is None:
        return {}
    import fastdispatch

    impl = fastdispatch.IMPLEMENTATION
    if impl != expect:
        raise RuntimeError(f"{name} expects the {expect!r} core but {impl!r} is active")
    return {
        "implementation": impl,
        "fastdispatch_file": fastdispatch.__file__,
        "fastdispatch_version": getattr(fastdispatch, "__version__", None),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("contender", choices=peers.CONTENDERS)
    ap.add_argument("scenario", choices=scenarios.SCENARIOS)
    ap.add_argument("size", choices=["full", "quick", "tiny"])
    args = ap.parse_args(argv)

    scenario = scenarios.SCENARIOS[args.scenario]
    size = scenario.sizes[args.size]
    why = scenarios.infeasible(args.contender, args.scenario, size)
    if why:
        print(json.dumps({"status": "skipped", "reason": why}))
        return 0
    info = fastdispatch_info(args.contender)
    base = _maxrss_mb()
    result = repeat(lambda: scenario.run(args.contender, size), MIN_TIME[args.size], args.scenario)
    result.update(info, status="ok", base_rss_mb=base)
    print(json.dumps(result))
    return 0


#: A round repeats a scenario in its process until this many seconds are spent
#: (at most ``MAX_REPS`` times) and reports the median: a run of ~50 ms, like
#: the bare loop's, is otherwise at the mercy of one preemption on a busy machine.
MIN_TIME = {"full": 1.0, "quick": 0.3, "tiny": 0.0}
MAX_REPS = 15


def repeat(run: Callable[[], dict[str, Any]], min_time: float, key: str) -> dict[str, Any]:
    """Run the scenario once or more; the median repetition, with peak RSS of the first.

    S5 is run once: its 10,000 round trips are already a distribution.
    """
    reps: list[dict[str, Any]] = []
    spent = 0.0
    while True:
        r = run()
        if not reps:
            # Peak RSS of one clean repetition, not of the heap later ones inherit.
            r["peak_rss_mb"] = _maxrss_mb()
        reps.append(r)
        spent += r["elapsed_s"]
        if key == "S5" or spent >= min_time or len(reps) >= MAX_REPS:
            break
        gc.collect()  # the previous repetition's garbage is not this one's cost
    best = sorted(reps, key=lambda x: x["value"])[len(reps) // 2]
    return {
        **best,
        "peak_rss_mb": reps[0]["peak_rss_mb"],
        "peak_rss_all_reps_mb": _maxrss_mb(),
        "reps": len(reps),
        "rep_values": [x["value"] for x in reps],
    }


if __name__ == "__main__":
    sys.exit(main())
