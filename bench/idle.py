"""Idle cost: the CPU a dispatcher uses while its workers have nothing to do.

An idle worker of the compiled core may spin for a moment before it parks (on free-threaded
builds, so that a producer which keeps up costs no wake-up per item); parked, it must cost
nothing. For each core, in a fresh process of this interpreter: start a dispatcher with two
workers, keep both busy with a burst of items (many masters, then one busy master), wait until
it has drained, then measure the process's CPU time over ``--seconds`` of wall time while the
main thread sleeps. Reported: CPU seconds per wall second, in percent of one core (median and
min-max over ``--rounds`` rounds). Target: under 1 %.

    python bench/idle.py                     # 3 rounds of 5 s per core
    python bench/idle.py --rounds 1 --seconds 1 --core python --json out.json

Standard library only: it runs in a bare free-threaded venv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any

CORES = ("cython", "python")


def measure(core: str, seconds: float) -> dict[str, Any]:
    """One measurement in this process (a fresh subprocess of the runner)."""
    import fastdispatch

    if core != fastdispatch.IMPLEMENTATION:
        raise SystemExit(f"asked for the {core} core, got {fastdispatch.IMPLEMENTATION}")
    both_busy = threading.Barrier(2, timeout=60)

    def handle(work: object) -> None:
        if work == "meet":
            both_busy.wait()  # both workers started and handling at once

    d = fastdispatch.Dispatcher(handle, max_workers=2)
    try:
        d.dispatch("meet", "a")
        d.dispatch("meet", "b")
        d.dispatch_many((i, i % 100) for i in range(50_000))
        d.dispatch_many((i, "one") for i in range(50_000))
        if not d.wait(timeout=60):
            raise SystemExit(f"the burst did not drain: {d.stats()}")
        c0, t0 = time.process_time(), time.perf_counter()
        time.sleep(seconds)
        c1, t1 = time.process_time(), time.perf_counter()
        workers = d.stats().workers
    finally:
        d.close()
    return {"core": core, "cpu_s": c1 - c0, "wall_s": t1 - t0, "workers": workers}


def run_child(core: str, seconds: float) -> dict[str, Any]:
    # The core is chosen by the child's environment alone: no inherited switch may override it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTDISPATCH_")}
    if core == "python":
        env["FASTDISPATCH_NO_EXTENSIONS"] = "1"
    else:
        env["FASTDISPATCH_REQUIRE_EXTENSIONS"] = "1"
    out = subprocess.run(
        [sys.executable, __file__, "--child", core, "--seconds", str(seconds)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def build_key() -> str:
    """A label for this interpreter build, e.g. ``CPython 3.13.5t``."""
    suffix = "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
    return f"{platform.python_implementation()} {platform.python_version()}{suffix}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--core", choices=CORES, action="append", help="only this core; repeatable (default: both)"
    )
    ap.add_argument("--child", choices=CORES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.seconds)))
        return 0
    if args.rounds < 1 or args.seconds <= 0:
        ap.error("--rounds and --seconds must be positive")
    cores = args.core or list(CORES)
    runs: dict[str, list[float]] = {core: [] for core in cores}
    for _ in range(args.rounds):
        for core in cores:
            r = run_child(core, args.seconds)
            runs[core].append(100.0 * r["cpu_s"] / r["wall_s"])
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"{build_key()} ({'GIL enabled' if gil else 'GIL disabled'}): CPU of an idle dispatcher")
    print(f"with 2 parked workers over {args.seconds:g} s, % of one core, {args.rounds} rounds")
    print()
    print("| core | median | min-max |")
    print("|---|---:|---:|")
    for core, values in runs.items():
        spread = f"{min(values):.3f}-{max(values):.3f} %"
        print(f"| {core} | {statistics.median(values):.3f} % | {spread} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "build": build_key(),
                    "gil_enabled": gil,
                    "seconds": args.seconds,
                    "percent_of_core": runs,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
