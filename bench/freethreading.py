"""Free-threading scaling: does a second worker double the throughput of a CPU-bound handler?

A pure-Python, CPU-bound handler (a few thousand arithmetic operations per item) handles
``--items`` items for each of ``--masters`` masters, with ``max_workers=1`` and then
``max_workers=2``, for both cores. On a free-threaded build (3.13t, GIL disabled) the two workers
run handlers on two cores at once and the ratio should approach 2x; on a GIL build it stays ~1x.
A bare ``for`` loop calling the same handler is the single-thread floor.

Every measurement runs in a fresh subprocess of the *same* interpreter, and rounds are
interleaved (A B C ... A B C ...) so machine drift hits every contender alike. Reported: items/s
(median, min-max over rounds) and, per core, the 2-worker/1-worker ratio (ratio of medians, and
the median of the per-round paired ratios).

    python bench/freethreading.py                    # full run, updates bench/results/
    python bench/freethreading.py --rounds 3 --items 5 --no-save    # quick look

Results are merged into ``bench/results/freethreading.json`` keyed by interpreter build, so a run
on 3.13t and a run on a GIL build sit side by side in ``freethreading.md``. Standard library only:
it runs in a bare free-threaded venv.
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: (label, core, workers); core "bare" is the single-thread for-loop floor.
CONTENDERS: tuple[tuple[str, str, int], ...] = (
    ("bare loop", "bare", 1),
    ("bare loop, 2 processes (ceiling)", "processes", 2),
    ("compiled core, 1 worker", "cython", 1),
    ("compiled core, 2 workers", "cython", 2),
    ("pure core, 1 worker", "python", 1),
    ("pure core, 2 workers", "python", 2),
)


def make_handler(iterations: int) -> Callable[[int], int]:
    """A CPU-bound handler: ``iterations`` rounds of an LCG step (3 arithmetic ops each).

    Only locals and small constants: nothing shared between threads, so on 3.13t the handler
    itself has no contention and the measured scaling is the dispatcher's.
    """

    def handle(work: int) -> int:
        x = work
        for _ in range(iterations):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        return x

    return handle


def gil_enabled() -> bool:
    """Whether the GIL is on right now (always True before 3.13)."""
    probe = getattr(sys, "_is_gil_enabled", None)
    return True if probe is None else bool(probe())


def build_key() -> str:
    """A label for this interpreter build, e.g. ``CPython 3.13.5t`` or ``CPython 3.11.7``."""
    suffix = "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
    return f"{platform.python_implementation()} {platform.python_version()}{suffix}"


# -- child: one measurement -------------------------------------------------------------------


def measure(core: str, workers: int, masters: int, items: int, iterations: int) -> dict[str, Any]:
    """Handle ``masters * items`` items once; runs inside a fresh subprocess."""
    handle = make_handler(iterations)
    # Interleaved (item 0 of every master, then item 1, ...): every master is ready from the
    # start, so both workers have work as soon as they exist.
    pairs = [(i * masters + m, m) for i in range(items) for m in range(masters)]
    handle(1)  # warm the code object before the clock starts
    if core == "bare":
        c0, t0 = time.process_time(), time.perf_counter()
        for work, _master in pairs:
            handle(work)
        t1, c1 = time.perf_counter(), time.process_time()
        implementation = "bare"
    else:
        import fastdispatch

        implementation = fastdispatch.IMPLEMENTATION
        if implementation != core:
            raise SystemExit(f"asked for the {core} core, got {implementation}")
        c0, t0 = time.process_time(), time.perf_counter()
        with fastdispatch.Dispatcher(handle, max_workers=workers) as d:
            d.dispatch_many(pairs)
            finished = d.wait(timeout=600)
            t1, c1 = time.perf_counter(), time.process_time()
            stats = d.stats()
        if not finished or stats.completed != len(pairs):
            raise SystemExit(f"incomplete run: finished={finished} {stats}")
    wall = t1 - t0
    return {
        "items": len(pairs),
        "seconds": wall,
        "items_per_s": len(pairs) / wall,
        # CPU seconds per wall second: ~2 means two cores were busy.
        "cpu_per_wall": (c1 - c0) / wall,
        "implementation": implementation,
        "gil_enabled": gil_enabled(),
    }


# -- parent: rounds, summary, output ----------------------------------------------------------


def child_command(core: str, workers: int, masters: int, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        core,
        str(workers),
        f"--masters={masters}",
        f"--items={args.items}",
        f"--iterations={args.iterations}",
    ]


def child_env(core: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHON_GIL", None)  # measure the build as users get it, not a forced GIL state
    env.pop("FASTDISPATCH_NO_EXTENSIONS", None)
    env.pop("FASTDISPATCH_REQUIRE_EXTENSIONS", None)
    if core == "python":
        env["FASTDISPATCH_NO_EXTENSIONS"] = "1"
    elif core == "cython":
        env["FASTDISPATCH_REQUIRE_EXTENSIONS"] = "1"
    return env


def child_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=900)
    if proc.returncode != 0:
        lines = (err or out).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {proc.returncode}"}
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def run_child(core: str, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in fresh interpreters; ``{"error": ...}`` if it could not run.

    Core ``processes``: ``workers`` bare loops in as many processes at once, each with its share
    of the masters: the parallelism the machine itself gave at that moment (the ceiling).
    """
    n, child_core = (workers, "bare") if core == "processes" else (1, core)
    procs = [
        subprocess.Popen(
            child_command(child_core, workers, args.masters // n, args),
            env=child_env(child_core),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    results = [child_result(p) for p in procs]
    if n == 1 or any("error" in r for r in results):
        return results[0] if n == 1 else next(r for r in results if "error" in r)
    wall = max(r["seconds"] for r in results)
    items = sum(r["items"] for r in results)
    return {
        "items": items,
        "seconds": wall,
        "items_per_s": items / wall,
        "cpu_per_wall": sum(r["cpu_per_wall"] * r["seconds"] for r in results) / wall,
        "implementation": "bare",
        "gil_enabled": any(r["gil_enabled"] for r in results),
    }


def summarise(label: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"label": label, "error": runs[0]["error"] if runs else "not run"}
    rates = [r["items_per_s"] for r in ok]
    return {
        "label": label,
        "median_items_per_s": statistics.median(rates),
        "min_items_per_s": min(rates),
        "max_items_per_s": max(rates),
        "median_cpu_per_wall": statistics.median(r["cpu_per_wall"] for r in ok),
        "gil_enabled_during_run": sorted({r["gil_enabled"] for r in ok}),
        "rounds": len(ok),
        "errors": [r["error"] for r in runs if "error" in r],
        "items_per_s": rates,
    }


def scaling(one: list[dict[str, Any]], two: list[dict[str, Any]]) -> dict[str, Any] | None:
    """2-worker/1-worker throughput: ratio of medians and the per-round paired ratios."""
    paired = [
        b["items_per_s"] / a["items_per_s"]
        for a, b in zip(one, two, strict=True)
        if "error" not in a and "error" not in b
    ]
    if not paired:
        return None
    med1 = statistics.median(r["items_per_s"] for r in one if "error" not in r)
    med2 = statistics.median(r["items_per_s"] for r in two if "error" not in r)
    return {
        "ratio_of_medians": med2 / med1,
        "median_paired_ratio": statistics.median(paired),
        "min_paired_ratio": min(paired),
        "max_paired_ratio": max(paired),
    }


def load_average() -> float | None:
    """The 1-minute load average, where the platform has one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_warning(entry: dict[str, Any]) -> str | None:
    """Why these figures do not show the build's scaling, if the machine was busy.

    Scaling needs two idle cores; the two self-checks say whether the run had them. The bare
    loop alone on a core gets ~1 CPU second per wall second, and two bare-loop processes ~2
    (the load average is no check: it also counts processes the run got priority over).
    """
    reasons = []
    by_label = {c["label"]: c for c in entry["contenders"] if "error" not in c}
    for label, floor in (("bare loop", 0.9), ("bare loop, 2 processes (ceiling)", 1.8)):
        c = by_label.get(label)
        if c is not None and c["median_cpu_per_wall"] < floor:
            reasons.append(f"{label}: {c['median_cpu_per_wall']:.2f} CPU s per wall s")
    if not reasons:
        return None
    return "machine busy (" + "; ".join(reasons) + "): these figures do not measure scaling"


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in CONTENDERS}
    load_before = load_average()
    total = args.rounds * len(CONTENDERS)
    done = 0
    for rnd in range(args.rounds):
        for label, core, workers in CONTENDERS:
            result = run_child(core, workers, args)
            runs[label].append(result)
            done += 1
            shown = result.get("error") or f"{result['items_per_s']:,.0f} items/s"
            print(f"[{done}/{total}] round {rnd + 1}: {label}: {shown}", file=sys.stderr)
    contenders = [summarise(label, runs[label]) for label, _, _ in CONTENDERS]
    scale = {
        core: scaling(runs[f"{name} core, 1 worker"], runs[f"{name} core, 2 workers"])
        for core, name in (("cython", "compiled"), ("python", "pure"))
    }
    scale["processes"] = scaling(runs["bare loop"], runs["bare loop, 2 processes (ceiling)"])
    entry = {
        "build": build_key(),
        "python": sys.version.replace("\n", " "),
        "free_threaded_build": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "params": {
            "masters": args.masters,
            "items_per_master": args.items,
            "lcg_iterations_per_item": args.iterations,
            "rounds": args.rounds,
        },
        "contenders": contenders,
        "scaling_2_over_1": scale,
        "load_average": [load_before, load_average()],
        "note": args.note,
    }
    entry["warning"] = busy_warning(entry)
    return entry


def gil_label(entry: dict[str, Any]) -> str:
    states = {s for c in entry["contenders"] for s in c.get("gil_enabled_during_run", [])}
    if states == {False}:
        return "GIL disabled"
    if states == {True}:
        return "GIL enabled"
    return "GIL state mixed" if states else "GIL state unknown"


def markdown_build(entry: dict[str, Any]) -> str:
    p = entry["params"]
    lines = [
        f"### {entry['build']} ({gil_label(entry)})",
        "",
        f"{p['masters']:,} masters x {p['items_per_master']} items, handler = "
        f"{p['lcg_iterations_per_item']:,} LCG steps (~{3 * p['lcg_iterations_per_item']:,} "
        f"arithmetic ops); median of {p['rounds']} interleaved rounds, fresh process each; "
        f"{entry['machine']}; {entry['date']}; 1-min load average "
        f"{' -> '.join('?' if x is None else f'{x:.1f}' for x in entry['load_average'])}.",
        "",
    ]
    if entry.get("note"):
        lines += [f"Note: {entry['note']}", ""]
    if entry.get("warning"):
        lines += [f"**Warning: {entry['warning']}.**", ""]
    lines += [
        "| contender | items/s (median) | min-max | CPU s / wall s |",
        "|---|---:|---:|---:|",
    ]
    for c in entry["contenders"]:
        if "error" in c:
            lines.append(f"| {c['label']} | not run: {c['error']} | | |")
            continue
        lines.append(
            f"| {c['label']} | {c['median_items_per_s']:,.0f} | "
            f"{c['min_items_per_s']:,.0f}-{c['max_items_per_s']:,.0f} | "
            f"{c['median_cpu_per_wall']:.2f} |"
        )
    lines += [
        "",
        "| contender | 2 / 1 (ratio of medians) | per-round ratio: median (min-max) |",
        "|---|---:|---:|",
    ]
    names = {
        "cython": "compiled core",
        "python": "pure core",
        "processes": "machine ceiling: 2 processes / 1",
    }
    for core, s in entry["scaling_2_over_1"].items():
        name = names[core]
        if s is None:
            lines.append(f"| {name} | not run | |")
            continue
        lines.append(
            f"| {name} | **{s['ratio_of_medians']:.2f}x** | {s['median_paired_ratio']:.2f}x "
            f"({s['min_paired_ratio']:.2f}-{s['max_paired_ratio']:.2f}) |"
        )
    return "\n".join(lines) + "\n"


def markdown_all(builds: dict[str, Any]) -> str:
    parts = [
        "# Free-threading scaling (bench/freethreading.py)",
        "",
        "Throughput of a CPU-bound pure-Python handler with `max_workers=1` vs `max_workers=2`.",
        "On a free-threaded build the two workers run on two cores at once; with the GIL they",
        "take turns. Regenerate with `python bench/freethreading.py` on each interpreter.",
        "",
        "The last column is the machine's own ceiling in the same run: two bare-loop processes",
        "against one.",
        "",
        "| build | GIL | core | 1 worker items/s | 2 workers items/s | 2 / 1 | ceiling |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for entry in builds.values():
        if entry.get("warning"):
            # A figure from a busy machine is kept, but never shown without the caveat.
            entry = {**entry, "build": f"{entry['build']} (busy machine, see below)"}
        by_label = {c["label"]: c for c in entry["contenders"]}
        for core, name in (("cython", "compiled"), ("python", "pure")):
            one = by_label.get(f"{name} core, 1 worker", {})
            two = by_label.get(f"{name} core, 2 workers", {})
            s = entry["scaling_2_over_1"].get(core)
            ceiling = entry["scaling_2_over_1"].get("processes")
            top = "-" if ceiling is None else f"{ceiling['ratio_of_medians']:.2f}x"
            if s is None or "error" in one or "error" in two:
                parts.append(
                    f"| {entry['build']} | {gil_label(entry)} | {name} | not run | | | {top} |"
                )
                continue
            parts.append(
                f"| {entry['build']} | {gil_label(entry)} | {name} | "
                f"{one['median_items_per_s']:,.0f} | {two['median_items_per_s']:,.0f} | "
                f"**{s['ratio_of_medians']:.2f}x** | {top} |"
            )
    parts.append("")
    parts += [markdown_build(entry) for entry in builds.values()]
    return "\n".join(parts)


def save(entry: dict[str, Any], json_path: Path, md_path: Path) -> None:
    """Merge this build's entry into the JSON (other builds are kept) and rewrite the markdown."""
    data: dict[str, Any] = {"builds": {}}
    if json_path.exists():
        data = json.loads(json_path.read_text())
    data.setdefault("builds", {})[entry["build"]] = entry
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    md_path.write_text(markdown_all(data["builds"]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--masters", type=int, default=1000)
    ap.add_argument("--items", type=int, default=10, help="items per master (default 10)")
    ap.add_argument(
        "--iterations", type=int, default=1000, help="LCG steps per item, 3 ops each (default 1000)"
    )
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--json", type=Path, default=RESULTS_DIR / "freethreading.json")
    ap.add_argument("--md", type=Path, default=RESULTS_DIR / "freethreading.md")
    ap.add_argument("--no-save", action="store_true", help="print only; leave bench/results/ alone")
    ap.add_argument("--note", default="", help="how the run was made, kept with its results")
    ap.add_argument("--child", nargs=2, metavar=("CORE", "WORKERS"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        core, workers = args.child[0], int(args.child[1])
        print(json.dumps(measure(core, workers, args.masters, args.items, args.iterations)))
        return 0
    entry = benchmark(args)
    print(markdown_build(entry))
    if not args.no_save:
        save(entry, args.json, args.md)
        print(f"saved {args.json} and {args.md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
