"""Run the fastdispatch benchmarks against their peers; print and save the table.

    python bench/run.py                 # everything, full sizes (~15-20 min on 2 cores)
    python bench/run.py --quick         # reduced sizes, a few minutes
    python bench/run.py --scenario S1 --scenario micro --rounds 5
    python bench/run.py --scenario aio  # the asyncio scenarios A1-A6 (bench/aio.py)
    python bench/run.py --from-json bench/results/results.json --aio-json bench/results/aio.json
                                        # redraw the report and chart, no measuring

Every measurement runs in a fresh child process (``bench/child.py``); rounds
are interleaved (all contenders of round 1, then round 2, ...) so machine drift
spreads over everyone. Results go to ``bench/results/`` (``results.json``,
``results.md``, ``throughput.png``; ``--quick`` writes ``bench/results/quick/``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

import aio
import executor
import floor
import peers
import report
import scenarios

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_TIMEOUT = {"full": 90.0, "quick": 30.0, "tiny": 30.0}
DEFAULT_ROUNDS = {"full": 5, "quick": 2, "tiny": 1}
#: Contender runs per bracketed child (bench/floor.py), each between two loop runs.
FLOOR_PAIRS = {"full": 8, "quick": 4, "tiny": 1}
#: The contenders judged against the floor (the compiled core).
FLOOR_CONTENDERS = ("fd-cython", "fd-cython-many")


def child_env(contender: str) -> dict[str, str]:
    """The environment of a child: the runner's, with this contender's core switch."""
    env = {k: v for k, v in os.environ.items() if k not in peers.FD_ENV_VARS}
    env.update(peers.CONTENDERS[contender].env)
    # From a source checkout that was not installed, use the in-tree package.
    src = REPO / "src"
    if importlib.util.find_spec("fastdispatch") is None and (src / "fastdispatch").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    env["PYTHONHASHSEED"] = "0"  # same dict layouts in every round
    return env


def preflight(contender: str) -> str | None:
    """Why a fastdispatch contender cannot run at all here, or None."""
    spec = peers.CONTENDERS[contender]
    if spec.expect_impl is None:
        return None
    code = "import fastdispatch; print(fastdispatch.IMPLEMENTATION)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(contender),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"unavailable: import fastdispatch failed: {last}"
    if proc.stdout.strip() != spec.expect_impl:
        return f"unavailable: core {proc.stdout.strip()!r} is active, not {spec.expect_impl!r}"
    return None


def run_child(
    contender: str, scenario: str, size: str, timeout: float, script: str = "child.py", *extra: str
) -> dict[str, Any]:
    """One measurement in a fresh process; failures become a status, never an exception."""
    cmd = [sys.executable, str(BENCH / script), contender, scenario, size, *extra]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, env=child_env(contender), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        return {
            "status": "timeout",
            "reason": f"timeout: not finished after {timeout:g} s (killed)",
            "stderr": err[-2000:],
        }
    wall = time.perf_counter() - t0
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()
        return {
            "status": "failed",
            "reason": f"failed: exit code {proc.returncode}: {tail[-1] if tail else 'no output'}",
            "stderr": proc.stderr[-4000:],
        }
    result = json.loads(lines[-1])
    result["wall_s"] = wall
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range over the rounds of one (contender, scenario) cell."""
    ok = [r for r in runs if r.get("status") == "ok"]
    bad = [r for r in runs if r.get("status") != "ok"]
    if not ok:
        first = bad[0] if bad else {"status": "missing", "reason": "not run"}
        return {"status": first["status"], "reason": first.get("reason", ""), "rounds": len(runs)}
    cell: dict[str, Any] = {"status": "ok", "rounds": len(ok)}
    for key in ("value", "peak_rss_mb", "efficiency", "p50_us", "p99_us", "items"):
        vals = [r[key] for r in ok if key in r]
        if vals:
            cell[key] = statistics.median(vals)
            cell[key + "_min"], cell[key + "_max"] = min(vals), max(vals)
    # Each round's value, so that ratios can pair the contenders that ran
    # back to back in the same round (string keys: the cell goes to JSON).
    cell["by_round"] = {str(r["round"]): r["value"] for r in ok if "round" in r and "value" in r}
    if bad:
        cell["reason"] = f"{len(bad)} of {len(runs)} rounds: {bad[0].get('reason', '')}"
    return cell


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "platform": platform.platform(),
        "commit": commit,
        "loadavg": _loadavg(),
        "fastdispatch_tree": _package_digest(),
    }


def _package_digest() -> str:
    """A short hash of the fastdispatch sources and binaries the children import.

    The commit alone does not identify a dirty tree or a rebuilt extension.
    """
    spec = importlib.util.find_spec("fastdispatch")
    if spec is None or not spec.submodule_search_locations:
        src = REPO / "src" / "fastdispatch"
        if not src.is_dir():
            return "?"
    else:
        src = Path(next(iter(spec.submodule_search_locations)))
    h = hashlib.sha256()
    for f in sorted(src.iterdir()):
        if f.suffix in {".py", ".pyx", ".pxd", ".h", ".so", ".pyd"}:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return f"{src} sha256:{h.hexdigest()[:12]}"


def _loadavg() -> str:
    # Other processes on the machine skew every number: say how busy it was.
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def run_micro(out: Path, fast: bool, tiny: bool, timeout: float) -> dict[str, Any]:
    """pyperf micro-benchmarks for both cores, then ``pyperf compare_to``."""
    result: dict[str, Any] = {}
    files = []
    for core, contender in (("python", "fd-python"), ("cython", "fd-cython")):
        path = out / f"micro-{core}.json"
        path.unlink(missing_ok=True)
        cmd = [sys.executable, str(BENCH / "micro.py"), "--core", core, "-o", str(path), "-q"]
        if tiny:
            cmd.append("--debug-single-value")
        elif fast:
            cmd += ["--processes", "2", "--values", "3"]
        else:
            cmd.append("--fast")  # 10 worker processes: keeps a full run under ~20 minutes
        try:
            proc = subprocess.run(
                cmd, env=child_env(contender), capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            result[core] = f"timeout after {timeout:g} s"
            continue
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            result[core] = f"failed: exit code {proc.returncode}: {tail}"
            continue
        result[core] = proc.stdout.strip()
        files.append(path)
    if len(files) == 2:
        cmp = subprocess.run(
            [sys.executable, "-m", "pyperf", "compare_to", *map(str, files), "--table"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        result["compare_to"] = (cmp.stdout + cmp.stderr).strip()
    return result


def run_floor(
    names: list[str],
    keys: list[str],
    size: str,
    rounds: int,
    timeout: float,
    unavailable: dict[str, str],
) -> dict[str, dict[str, Any]]:
    """Bracketed floor ratios (bench/floor.py): ``rounds`` children per cell, pooled."""
    out: dict[str, dict[str, Any]] = {}
    for n in FLOOR_CONTENDERS:
        if n in names and n in unavailable:
            out[n] = {k: {"status": "unavailable", "reason": unavailable[n]} for k in keys}
    cells = [(n, k) for n in FLOOR_CONTENDERS if n in names and n not in out for k in keys]
    pairs = str(FLOOR_PAIRS[size])
    with tqdm(total=len(cells) * rounds, desc="floor", unit="run", file=sys.stderr) as bar:
        for _ in range(rounds):
            for name, key in cells:
                r = run_child(name, key, size, timeout, "floor.py", "--pairs", pairs)
                out.setdefault(name, {}).setdefault(key, {"runs": []})["runs"].append(r)
                bar.update()
    for name, key in cells:
        cell = out[name][key]
        ok = [r for r in cell["runs"] if r.get("status") == "ok"]
        ratios = [x for r in ok for x in r["ratios"]]
        means = [x for r in ok for x in floor.loop_means(r["loop"])]
        cell.update(floor.summarise(ratios, means))
        if not ok:
            cell["reason"] = cell["runs"][0].get("reason", "")
    return out


def run_aio(out: Path, size: str, rounds: int | None, timeout: float) -> dict[str, Any]:
    """The asyncio step: bench/aio.py at this size; its results (also in out/aio.*)."""
    cmd = [sys.executable, str(BENCH / "aio.py"), "--size", size, "--out", str(out)]
    if rounds:
        cmd += ["--rounds", str(rounds)]
    cmd += ["--timeout", str(timeout)]
    print("running the asyncio scenarios (bench/aio.py) ...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "failed", "reason": f"exit code {proc.returncode}: {tail}"}
    return json.loads((out / "aio.json").read_text())  # type: ignore[no-any-return]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced sizes (a few minutes)")
    ap.add_argument("--size", choices=["full", "quick", "tiny"], help=argparse.SUPPRESS)
    ap.add_argument(
        "--scenario",
        action="append",
        choices=[*scenarios.SCENARIOS, "micro", "floor", "executor", "aio"],
        help=(
            "run just this scenario (repeatable; 'micro' = the pyperf benchmarks, "
            "'floor' = S1/S2 bracketed against the loop in one process, bench/floor.py; "
            "'executor' = KeyedExecutor and Future vs the standard library, bench/executor.py; "
            "'aio' = AsyncDispatcher's A1-A6, bench/aio.py)"
        ),
    )
    ap.add_argument(
        "--contender",
        action="append",
        choices=list(peers.CONTENDERS),
        help="run just this contender (repeatable)",
    )
    ap.add_argument("--rounds", type=int, help="rounds per cell (default 3, --quick 2)")
    ap.add_argument("--timeout", type=float, help="seconds per child (default 90, --quick 30)")
    ap.add_argument("--json", type=Path, help="also write the machine-readable results here")
    ap.add_argument("--out", type=Path, help="results directory (default bench/results[/quick])")
    ap.add_argument("--no-chart", action="store_true", help="skip the PNG")
    ap.add_argument(
        "--from-json",
        type=Path,
        metavar="PATH",
        help="measure nothing: redraw results.md and the chart from a results.json",
    )
    ap.add_argument(
        "--aio-json",
        type=Path,
        metavar="PATH",
        help="with --from-json: take the asyncio step's results from this aio.json "
        "(bench/aio.py's output) instead of the results.json's own",
    )
    args = ap.parse_args(argv)
    args.size = args.size or ("quick" if args.quick else "full")
    if args.out is None:
        args.out = BENCH / "results" / ("" if args.size == "full" else args.size)
    if args.aio_json and not args.from_json:
        ap.error("--aio-json needs --from-json")
    args.rounds = args.rounds or DEFAULT_ROUNDS[args.size]
    args.timeout = args.timeout or DEFAULT_TIMEOUT[args.size]
    if args.rounds < 1 or args.timeout <= 0:
        ap.error("--rounds and --timeout must be positive")
    return args


def write_outputs(results: dict[str, Any], args: argparse.Namespace) -> None:
    """results.json, results.md, --json and the chart; the report also on stdout."""
    text = report.markdown(results)
    if results.get("aio"):
        text += "\n" + (
            aio.markdown(results["aio"])
            if "cells" in results["aio"]
            else f"asyncio scenarios: {results['aio']['reason']}\n"
        )
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if not args.no_chart:
        report.chart(results, args.out / "throughput.png")
    print(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        if args.aio_json:
            results["aio"] = json.loads(args.aio_json.read_text())
        if args.out == BENCH / "results" / "" and results["meta"]["size"] != "full":
            args.out = BENCH / "results" / results["meta"]["size"]
        args.out.mkdir(parents=True, exist_ok=True)
        write_outputs(results, args)
        return 0
    selected = args.scenario or [*scenarios.SCENARIOS, "micro", "floor", "executor", "aio"]
    keys = [k for k in scenarios.SCENARIOS if k in selected]
    names = [n for n in peers.CONTENDERS if not args.contender or n in args.contender]
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_start = _loadavg()

    unavailable = {n: why for n in names if (why := preflight(n))}
    runs: list[dict[str, Any]] = []
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {n: {k: [] for k in keys} for n in names}
    jobs = []
    for key in keys:
        size = scenarios.SCENARIOS[key].sizes[args.size]
        for name in names:
            why = unavailable.get(name) or scenarios.infeasible(name, key, size)
            if why:
                status = why.split(":", 1)[0]
                cells[name][key].append({"status": status, "reason": why})
    for rnd in range(1, args.rounds + 1):
        jobs += [(rnd, k, n) for k in keys for n in names if not cells[n][k]]

    with tqdm(total=len(jobs), desc="bench", unit="run", file=sys.stderr) as bar:
        for rnd, key, name in jobs:
            previous = cells[name][key]
            if any(r["status"] == "timeout" for r in previous):
                bar.update()  # a timeout is not retried: it would cost the budget again
                continue
            bar.set_postfix_str(f"round {rnd} {key} {name}")
            r = run_child(name, key, args.size, args.timeout)
            r.update(contender=name, scenario=key, round=rnd)
            previous.append(r)
            runs.append(r)
            bar.update()

    floor_results = None
    if "floor" in selected:
        fkeys = [k for k in keys if k in floor.FLOOR_SCENARIOS] or list(floor.FLOOR_SCENARIOS)
        floor_results = run_floor(names, fkeys, args.size, args.rounds, args.timeout, unavailable)

    micro = None
    if "micro" in selected:
        print("running pyperf micro-benchmarks ...", file=sys.stderr)
        micro = run_micro(args.out, args.size == "quick", args.size == "tiny", 30 * args.timeout)

    executor_results = None
    if "executor" in selected:
        print("running the KeyedExecutor benchmarks (bench/executor.py) ...", file=sys.stderr)
        executor_results = executor.run(args.size, args.rounds, args.timeout)
    aio_results = None
    if "aio" in selected:
        # The runner's rounds (--quick: 2), so the step fits its time budget.
        # Its lock-recipe children take tens of seconds on a loaded machine.
        aio_results = run_aio(args.out, args.size, args.rounds, max(args.timeout, 120.0))

    results = {
        "meta": {
            **machine(),
            "loadavg_start": load_start,
            "size": args.size,
            "rounds": args.rounds,
            "timeout_s": args.timeout,
            "argv": sys.argv[1:] if argv is None else argv,
            "elapsed_s": round(time.perf_counter() - started, 1),
            "fastdispatch": next(
                (r.get("fastdispatch_version") for r in runs if r.get("fastdispatch_version")),
                None,
            ),
        },
        "labels": {n: peers.CONTENDERS[n].label for n in names},
        "scenarios": {
            k: {
                "title": scenarios.SCENARIOS[k].describe(args.size),
                "size": scenarios.SCENARIOS[k].sizes[args.size].__dict__,
            }
            for k in keys
        },
        "cells": {n: {k: summarise(cells[n][k]) for k in keys} for n in names},
        "micro": micro,
        "floor": floor_results,
        "executor": executor_results,
        "aio": aio_results,
        "runs": runs,
    }
    write_outputs(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
