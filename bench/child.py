"""Run one contender on one scenario in this (fresh) process; print JSON.

Usage: ``python bench/child.py CONTENDER SCENARIO SIZE``. The runner starts
one of these per measurement, with the fastdispatch core chosen by the
environment it passes. The last line of stdout is a JSON object with the
scenario's metrics plus ``peak_rss_mb`` (``ru_maxrss`` of this process) and
``base_rss_mb`` (the same, measured before the scenario started).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from typing import Any

import peers
import scenarios


def _maxrss_mb() -> float:
    # Linux reports kilobytes, macOS bytes.
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1 << 20) if sys.platform == "darwin" else kb / 1024


def _fastdispatch_info(name: str) -> dict[str, Any]:
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
    info = _fastdispatch_info(args.contender)
    base = _maxrss_mb()
    result = scenario.run(args.contender, size)
    result.update(info, status="ok", peak_rss_mb=_maxrss_mb(), base_rss_mb=base)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
