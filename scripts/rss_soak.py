#!/usr/bin/env python3
"""RSS soak: memory stays flat across millions of items and of one-off masters.

Two phases, each core in a fresh process (so one core's freed arenas do not
flatter the other):

* **steady**: ``--items`` items (default 10,000,000) over ``--masters``
  masters (default 1,000), dispatched with ``dispatch_many`` in blocks; after
  every block ``wait()``, then RSS is sampled;
* **churn**: ``--one-off`` masters (default 5,000,000), each used for one
  item and never again, so every mailbox is created and freed once.

RSS is read from ``/proc/self/statm`` (Linux) after every block has drained.
The first ``--warmup`` fraction of each phase (default: half) is warm-up:
pools, arenas and the masters map reach their working size, and glibc's heap
settles (with one-off masters it climbs for a few million of them, then stays
flat). After it, the median RSS over the second half of the rest may not exceed
the median over the first half by more than ``--max-growth-mb`` (steady) or
``--max-churn-growth-mb`` (churn): a leak grows with every block and shows as
that difference; a transient backlog does not move a median. ``stats()`` must
also show every item handled, none pending and no active master. Prints the
figures (peak RSS too); exits 1 on a failed check. ``--leak-every N`` makes
the handler keep every Nth item alive, a self-check that must fail.

    python scripts/rss_soak.py                    # both cores, full size
    python scripts/rss_soak.py --core cython --items 1000000 --one-off 200000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MB = 1024 * 1024
BLOCK = 100_000


def rss() -> int:
    """Resident set size in bytes, from /proc/self/statm."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * PAGE


def phase(
    d: Any, name: str, total: int, pairs_for: Any, warmup: float, max_growth: float
) -> dict[str, Any]:
    """Push *total* items in blocks; sample RSS after each block has drained."""
    samples: list[tuple[int, int]] = []
    before = d.stats()
    t0 = time.perf_counter()
    done = 0
    while done < total:
        n = min(BLOCK, total - done)
        accepted = d.dispatch_many(pairs_for(done, n))
        assert accepted == n, (accepted, n)
        done += n
        if not d.wait(timeout=600):
            raise SystemExit(f"{name}: did not drain: {d.stats()}")
        samples.append((done, rss()))
    elapsed = time.perf_counter() - t0
    after = d.stats()
    # Growth = median RSS over the last half of the measured part minus the median over its
    # first half (the measured part is what follows the warm-up). Medians, so that one block's
    # transient backlog is no "leak"; halves, so that a leak -- which grows with every block --
    # shows as the difference, while an allocator that is still settling towards its plateau
    # (glibc keeps freed arenas; the curve flattens) mostly does not.
    mid = warmup + (1 - warmup) / 2
    early = [r for n, r in samples if total * warmup < n <= total * mid]
    late = [r for n, r in samples if n > total * mid]
    base = _median(early or [samples[0][1]])
    growth = (_median(late or [samples[-1][1]]) - base) / MB
    handled = (after.completed + after.failed) - (before.completed + before.failed)
    checks = {
        "all handled": handled == total,
        "nothing pending or running": after.pending == after.running == 0,
        "no active master": after.active_masters == 0,
        f"growth after warm-up < {max_growth} MB": growth < max_growth,
    }
    return {
        "phase": name,
        "items": total,
        "seconds": round(elapsed, 2),
        "items_per_s": round(total / elapsed),
        "rss_after_warmup_mb": round(base / MB, 1),
        "rss_peak_mb": round(max(r for _, r in samples) / MB, 1),
        "rss_end_mb": round(samples[-1][1] / MB, 1),
        "growth_after_warmup_mb": round(growth, 2),
        # RSS after each block (items so far, MB): a leak shows as a steady slope.
        "samples": [(n, round(r / MB, 1)) for n, r in samples],
        "checks": checks,
        "ok": all(checks.values()),
    }


def _median(values: list[int]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def run_core(args: argparse.Namespace) -> dict[str, Any]:
    """The child: soak one core in this process."""
    import fastdispatch
    from fastdispatch._dispatcher import Dispatcher as Base

    if args.core == "cython":
        from fastdispatch import _core_c as core
    else:
        from fastdispatch import _core_py as core  # type: ignore[no-redef]

    class Dispatcher(Base):
        _Core = core.Core

    kept: list[object] = []
    leak_every = args.leak_every

    def handle(work: object) -> None:
        # --leak-every N simulates a core that loses one decref in N items (a self-check:
        # the soak must then fail).
        if leak_every and isinstance(work, int) and work % leak_every == 0:
            kept.append(work)

    masters = [("master", i) for i in range(args.masters)]
    start = rss()
    with Dispatcher(handle, max_workers=args.workers) as d:
        steady = phase(
            d,
            "steady",
            args.items,
            lambda done, n: [(done + i, masters[(done + i) % len(masters)]) for i in range(n)],
            args.warmup,
            args.max_growth_mb,
        )
        churn = phase(
            d,
            "churn",
            args.one_off,
            # every master is a fresh object used once: its mailbox must be freed
            lambda done, n: [(i, ("one-off", done + i)) for i in range(n)],
            args.warmup,
            args.max_churn_growth_mb,
        )
    return {
        "core": args.core,
        "implementation_module": core.__name__,
        "fastdispatch": fastdispatch.__version__ if hasattr(fastdispatch, "__version__") else "",
        "python": sys.version.split()[0],
        "rss_start_mb": round(start / MB, 1),
        "phases": [steady, churn],
        "ok": steady["ok"] and churn["ok"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--core", choices=["cython", "python", "both"], default="both")
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--masters", type=int, default=1_000)
    parser.add_argument("--one-off", type=int, default=5_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=0.5, help="fraction of each phase")
    parser.add_argument("--max-growth-mb", type=float, default=4.0, help="steady phase")
    parser.add_argument("--max-churn-growth-mb", type=float, default=16.0, help="churn phase")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--leak-every", type=int, default=0, help="self-check: keep every Nth work item alive"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not os.path.exists("/proc/self/statm"):
        print("rss_soak needs /proc/self/statm (Linux)", file=sys.stderr)
        return 2

    if args.child:
        print(json.dumps(run_core(args)))
        return 0

    cores = ["cython", "python"] if args.core == "both" else [args.core]
    results = []
    for core in cores:
        cmd = [sys.executable, __file__, "--child", "--core", core, *_passthrough(args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    ok = True
    for r in results:
        print(f"core={r['core']} python={r['python']} rss at start {r['rss_start_mb']} MB")
        for p in r["phases"]:
            print(
                f"  {p['phase']:<6} {p['items']:>11,} items  {p['items_per_s']:>10,} items/s  "
                f"RSS after warm-up {p['rss_after_warmup_mb']:>6} MB  "
                f"peak {p['rss_peak_mb']:>6} MB  end {p['rss_end_mb']:>6} MB  growth "
                f"{p['growth_after_warmup_mb']:+.2f} MB"
            )
            for name, passed in p["checks"].items():
                if not passed:
                    print(f"    FAILED: {name}")
        ok = ok and r["ok"]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def _passthrough(args: argparse.Namespace) -> list[str]:
    return [
        f"--items={args.items}",
        f"--masters={args.masters}",
        f"--one-off={args.one_off}",
        f"--workers={args.workers}",
        f"--warmup={args.warmup}",
        f"--max-growth-mb={args.max_growth_mb}",
        f"--max-churn-growth-mb={args.max_churn_growth_mb}",
        f"--leak-every={args.leak_every}",
    ]


if __name__ == "__main__":
    sys.exit(main())
