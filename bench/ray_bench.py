"""RayDispatcher on a local Ray cluster: scenarios R1 and R2, ratios to a peer in the same run.

    python bench/ray_bench.py --quick     # reduced sizes, about 2 minutes on 2 cores
    python bench/ray_bench.py             # full sizes (R1: 1,000 masters x 200 items)

R1: a no-op handler over many masters. RayDispatcher (default batch_size) against
the recipe a Ray user writes first: one actor call per item to the master's shard
actor (a sync actor runs one caller's calls in order, so this keeps per-master
order too), with the same number of shard actors. Each round times both on the
same cluster; the ratio is per round. Then RayDispatcher's sweep over batch_size.
R2: a shard actor SIGKILLed mid-run, redeliver off and on: how many items were
reported lost, silently lost, run twice, and per-master order violations among
completed runs.

One local cluster (2 CPUs, 127.0.0.1, no dashboard, no usage report) serves
every measurement. Results: bench/results/ray.json, ray.md, ray-batch-sweep.png
(--quick: bench/results/quick/).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

# Ray reads these at import: no usage report, every Ray process on loopback.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray

from fastdispatch.ray import RayDispatcher, ShardLost, shard_index

BENCH = Path(__file__).resolve().parent
SIZES = {
    # masters, items per master, rounds, batch sizes of the sweep, R2 masters x items
    "full": (1000, 200, 3, (1, 10, 100, 1000, 10000), (200, 50)),
    "quick": (200, 50, 2, (1, 10, 100, 1000, 10000), (100, 30)),
}
SHARDS = 2
#: batch_size below 100 runs this many items (masters x fewer items each), not all.
SWEEP_SMALL_ITEMS = 20_000


def noop(work: Any) -> None:
    return None


@ray.remote(num_cpus=0)
class PeerShard:
    """The first recipe: one actor per shard, one call per item."""

    def handle(self, work: Any) -> None:
        return None


def run_dispatcher(masters: int, per_master: int, **options: Any) -> float:
    """Items/s of RayDispatcher; shard start-up is outside the timing."""
    rd = RayDispatcher(noop, shards=SHARDS, **options)
    try:
        for m in range(SHARDS * 4):
            rd.dispatch(None, m)
        assert rd.wait(timeout=120)
        t0 = time.perf_counter()
        for seq in range(per_master):
            for m in range(masters):
                rd.dispatch(seq, m)
        assert rd.wait(timeout=600), rd.stats()
        elapsed = time.perf_counter() - t0
    finally:
        rd.close(wait=True)
    return masters * per_master / elapsed


def run_peer(masters: int, per_master: int) -> float:
    """Items/s of one actor call per item, routed by the same stable hash."""
    actors = [PeerShard.remote() for _ in range(SHARDS)]
    ray.get([a.handle.remote(None) for a in actors], timeout=120)
    route = [actors[shard_index(m, SHARDS)] for m in range(masters)]
    t0 = time.perf_counter()
    refs = []
    for seq in range(per_master):
        for m in range(masters):
            refs.append(route[m].handle.remote(seq))
    ray.get(refs, timeout=600)
    elapsed = time.perf_counter() - t0
    for a in actors:
        ray.kill(a)
    return masters * per_master / elapsed


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def r1(size: str) -> dict[str, Any]:
    masters, per_master, rounds, sweep, _ = SIZES[size]
    runs: dict[str, list[float]] = defaultdict(list)
    ratios: list[float] = []
    for r in range(rounds):
        fd = run_dispatcher(masters, per_master)
        peer = run_peer(masters, per_master)
        runs["RayDispatcher"].append(fd)
        runs["one actor call per item"].append(peer)
        ratios.append(fd / peer)
        print(f"R1 round {r + 1}: RayDispatcher {fd:,.0f}/s, peer {peer:,.0f}/s", file=sys.stderr)
    swept: dict[int, list[float]] = defaultdict(list)
    for r in range(rounds):
        for batch in sweep:
            # tiny batches are slow: they run the first SWEEP_SMALL_ITEMS items only
            n = (
                per_master
                if batch >= 100
                else max(1, min(per_master, SWEEP_SMALL_ITEMS // masters))
            )
            swept[batch].append(run_dispatcher(masters, n, batch_size=batch))
            print(
                f"R1 sweep round {r + 1}: batch_size {batch}: {swept[batch][-1]:,.0f}/s",
                file=sys.stderr,
            )
    return {
        "masters": masters,
        "items_per_master": per_master,
        "shards": SHARDS,
        "items_per_s": {k: summary(v) | {"runs": v} for k, v in runs.items()},
        "ratio": summary(ratios) | {"runs": ratios},
        "sweep": {str(b): summary(v) | {"runs": v} for b, v in swept.items()},
    }


class Recording:
    """A handler that appends each finished ``(master, seq)`` to a file of its process."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.file: Any = None
        self.lock = threading.Lock()  # the shard's worker threads share the file

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return Recording, (self.folder,)

    def __call__(self, work: tuple[int, int]) -> None:
        time.sleep(0.001)  # the workload: long enough to kill a shard mid-run
        with self.lock:
            if self.file is None:
                path = os.path.join(self.folder, f"{time.time_ns()}-{os.getpid()}")
                self.file = open(path, "a", buffering=1)  # noqa: SIM115 - lives with the process
            self.file.write(f"{work[0]} {work[1]}\n")


def r2_run(masters: int, per_master: int, redeliver: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fastdispatch-r2-") as folder:
        rd = RayDispatcher(Recording(folder), shards=SHARDS, batch_size=100, redeliver=redeliver)
        futures = {}
        t0 = time.perf_counter()
        for seq in range(per_master):
            for m in range(masters):
                futures[m, seq] = rd.submit((m, seq), m)
        total = masters * per_master
        deadline = time.monotonic() + 120
        while rd.stats().completed < total // 3:
            assert time.monotonic() < deadline, rd.stats()
            time.sleep(0.01)
        os.kill(ray.get(rd._slots[0].actor.pid.remote()), signal.SIGKILL)
        done = rd.wait(timeout=300)
        elapsed = time.perf_counter() - t0
        stats = rd.stats()
        rd.close()
        shard_lost = sum(
            1 for f in futures.values() if f.done() and isinstance(f.exception(), ShardLost)
        )
        unresolved = sum(1 for f in futures.values() if not f.done())
        runs: dict[int, list[int]] = defaultdict(list)
        for name in sorted(os.listdir(folder)):  # by process start: old shard first
            with open(os.path.join(folder, name)) as fh:
                for line in fh:
                    m, seq = map(int, line.split())
                    runs[m].append(seq)
    ran = {(m, s) for m, seqs in runs.items() for s in seqs}
    twice = sum(len(seqs) - len(set(seqs)) for seqs in runs.values())
    # order among completed runs: each run of a master goes on from the one before,
    # or restarts at an earlier item (a re-sent suffix)
    disorder = sum(
        1
        for seqs in runs.values()
        for a, b in itertools.pairwise(seqs)
        if not (b == a + 1 or b <= a)
    )
    lost_keys = {k for k, f in futures.items() if f.done() and isinstance(f.exception(), ShardLost)}
    return {
        "redeliver": redeliver,
        "items": total,
        "drained": done,
        "seconds": elapsed,
        "completed": stats.completed,
        "failed_shard_lost": shard_lost,
        # at-most-once: an item reported lost may have run before its shard died
        "shard_lost_but_ran": len(lost_keys & ran),
        # nothing may be silently lost: every future resolved, every completed item ran
        "silently_lost": unresolved
        + sum(1 for k, f in futures.items() if k not in ran and k not in lost_keys and f.done()),
        "ran_twice": twice,
        "order_violations": disorder,
        "identity_holds": stats.dispatched
        == stats.completed + stats.failed + stats.cancelled + stats.pending + stats.running,
    }


def r2(size: str) -> list[dict[str, Any]]:
    masters, per_master = SIZES[size][4]
    return [r2_run(masters, per_master, redeliver) for redeliver in (False, True)]


def fmt(x: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def markdown(res: dict[str, Any]) -> str:
    r1_ = res["R1"]
    lines = [
        "# RayDispatcher benchmark (R1, R2)",
        f"{res['when']} · {os.cpu_count()} CPUs · CPython {platform.python_version()} · "
        f"Ray {ray.__version__} · size **{res['size']}** · local cluster, "
        f"{r1_['shards']} shards · median (min-max) of {len(r1_['ratio']['runs'])} rounds",
        "",
        f"## R1: {r1_['masters']:,} masters x {r1_['items_per_master']} items, no-op handler",
        "",
        "| contender | items/s |",
        "|---|---|",
    ]
    for name, s in r1_["items_per_s"].items():
        lines.append(f"| {name} | {fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])}) |")
    q = r1_["ratio"]
    lines += [
        "",
        f"**RayDispatcher / one actor call per item: {q['median']:.1f}x** "
        f"({q['min']:.1f}-{q['max']:.1f}; the ratio of each round's two runs)",
        "",
        "### batch_size sweep (RayDispatcher, items/s)",
        "",
        f"batch_size 1 and 10 run the first {SWEEP_SMALL_ITEMS:,} items only (fewer per master).",
        "",
        "| batch_size | items/s |",
        "|---|---|",
    ]
    for b, s in r1_["sweep"].items():
        lines.append(f"| {b} | {fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])}) |")
    lines += [
        "",
        "## R2: a shard SIGKILLed mid-run (a third of the items done)",
        "",
        "| redeliver | items | completed | failed with ShardLost (of which had run) "
        "| silently lost | ran twice | order violations | identity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["R2"]:
        lines.append(
            f"| {r['redeliver']} | {r['items']:,} | {r['completed']:,} | "
            f"{r['failed_shard_lost']:,} ({r['shard_lost_but_ran']}) | "
            f"{r['silently_lost']} | {r['ran_twice']} | "
            f"{r['order_violations']} | {'holds' if r['identity_holds'] else 'BROKEN'} |"
        )
    return "\n".join(lines) + "\n"


def chart(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = res["R1"]["sweep"]
    xs = [int(b) for b in sweep]
    med = [sweep[b]["median"] for b in sweep]
    lo = [sweep[b]["median"] - sweep[b]["min"] for b in sweep]
    hi = [sweep[b]["max"] - sweep[b]["median"] for b in sweep]
    peer = res["R1"]["items_per_s"]["one actor call per item"]["median"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3, label="RayDispatcher")
    ax.axhline(peer, color="grey", linestyle="--", label="one actor call per item")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch_size")
    ax.set_ylabel("items/s (median, min-max)")
    ax.set_title(f"R1: {res['R1']['masters']:,} masters x {res['R1']['items_per_master']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced sizes")
    ap.add_argument("--out", type=Path, help="results directory")
    args = ap.parse_args(argv)
    size = "quick" if args.quick else "full"
    out = args.out or (BENCH / "results" / ("quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.monotonic()
        res = {
            "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "size": size,
            "command": " ".join(["python", "bench/ray_bench.py", *(argv or sys.argv[1:])]),
            "R1": r1(size),
            "R2": r2(size),
        }
        res["seconds"] = time.monotonic() - t0
    finally:
        ray.shutdown()
    (out / "ray.json").write_text(json.dumps(res, indent=1) + "\n")
    text = markdown(res)
    (out / "ray.md").write_text(text)
    chart(res, out / "ray-batch-sweep.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
