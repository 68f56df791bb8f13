"""Smoke tests of bench/: the runner end to end at a tiny size, and the peers' correctness.

The real benchmark runs are not part of the suite; this only keeps bench/
from rotting: every scenario, the report, the chart and the pyperf driver run
once on tiny inputs, and each contender is checked to handle every item, in
order per master, never running one master on two threads at once (a peer
that cheated would make every ratio meaningless).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
#: Contenders the runner smoke test drives in subprocesses; the thread-hungry
#: peers are covered in-process below, which is much faster.
RUNNER_CONTENDERS = ["fd-cython", "fd-python", "executor", "loop"]


@pytest.fixture(scope="module")
def bench() -> Iterator[dict[str, ModuleType]]:
    """bench/'s modules, imported the way bench/child.py imports them."""
    sys.path.insert(0, str(BENCH))
    try:
        import peers
        import scenarios

        yield {"peers": peers, "scenarios": scenarios}
    finally:
        sys.path.remove(str(BENCH))


def _compiled_available() -> bool:
    return importlib.util.find_spec("fastdispatch._core_c") is not None


def _child_env() -> dict[str, str]:
    # The children import the same fastdispatch as this process: the installed
    # package in CI (a clean clone's src/ has no compiled module), src/ in a
    # developer's in-place build.
    import fastdispatch

    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTDISPATCH_")}
    home = str(Path(fastdispatch.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [home, env.get("PYTHONPATH")]))
    return env


# ~10 s on an idle 2-core machine; the generous limits only keep a machine
# saturated by other work (load average in the hundreds) from failing it.
@pytest.mark.timeout(300)
def test_runner_tiny_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cmd = [sys.executable, str(BENCH / "run.py"), "--size", "tiny", "--out", str(out)]
    cmd += ["--json", str(tmp_path / "extra.json"), "--timeout", "120"]
    for c in RUNNER_CONTENDERS:
        cmd += ["--contender", c]
    proc = subprocess.run(
        cmd, env=_child_env(), capture_output=True, text=True, timeout=280, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert "| contender |" in proc.stdout
    assert "## Targets" in proc.stdout
    assert (out / "results.md").read_text() + "\n" == proc.stdout
    assert (out / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert json.loads((tmp_path / "extra.json").read_text())["cells"] == results["cells"]

    cells: dict[str, dict[str, Any]] = results["cells"]
    assert set(cells) == set(RUNNER_CONTENDERS)
    assert set(cells["loop"]) == {"S1", "S2", "S3", "S4", "S5", "S6"}
    for name, row in cells.items():
        for key, cell in row.items():
            if name == "fd-cython" and not _compiled_available():
                assert cell["status"] == "unavailable", (name, key, cell)
                continue
            assert cell["status"] == "ok", (name, key, cell)
            assert cell["value"] > 0
            assert cell["peak_rss_mb"] > 1
    assert cells["loop"]["S5"]["p99_us"] >= cells["loop"]["S5"]["p50_us"] > 0
    assert cells["executor"]["S4"]["efficiency"] > 0

    floor = results["floor"]
    if _compiled_available():
        for key in ("S1", "S2"):
            cell = floor["fd-cython"][key]
            assert cell["status"] == "ok", cell
            assert cell["n"] == 1 and cell["median"] > 0
            (run,) = cell["runs"]
            assert len(run["loop"]) == len(run["value"]) + 1
        assert "bracketed in one process" in proc.stdout
    else:
        assert floor["fd-cython"]["S1"]["status"] == "unavailable", floor

    micro = results["micro"]
    assert "dispatch_many" in micro["python"], micro
    if _compiled_available():
        assert "compare_to" in micro, micro
        assert "dispatch+handle" in micro["compare_to"]

    # The asyncio step is in the same report and the same chart; the chart can be
    # redrawn from the saved results, the asyncio ones taken from aio.json.
    assert results["aio"]["cells"]["fd-python"]["A3N"]["status"] == "ok"
    assert "## A3N:" in proc.stdout
    redrawn = tmp_path / "redrawn"
    cmd = [sys.executable, str(BENCH / "run.py"), "--from-json", str(out / "results.json")]
    cmd += ["--aio-json", str(out / "aio.json"), "--out", str(redrawn)]
    proc = subprocess.run(
        cmd, env=_child_env(), capture_output=True, text=True, timeout=280, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (redrawn / "results.md").read_text() == (out / "results.md").read_text()
    assert (redrawn / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _Recorder:
    """A handler that checks order per master and exclusivity per master."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[Any] = set()
        self.seen: dict[Any, list[int]] = defaultdict(list)
        self.overlaps: list[Any] = []

    def __call__(self, work: tuple[Any, Any, int]) -> None:
        producer, master, seq = work
        key = (producer, master)
        with self.lock:
            if master in self.running:
                self.overlaps.append(master)
            self.running.add(master)
        self.seen[key].append(seq)  # only this master's (exclusive) thread appends here
        with self.lock:
            self.running.discard(master)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("producers", [1, 3])
@pytest.mark.parametrize(
    "name",
    ["loop", "executor", "thread-per-master", "pykka", "fd-cython", "fd-cython-many", "fd-python"],
)
def test_contender_handles_everything_in_order(
    bench: dict[str, ModuleType], name: str, producers: int
) -> None:
    peers = bench["peers"]
    spec = peers.CONTENDERS[name]
    if spec.expect_impl is not None:
        import fastdispatch

        if spec.expect_impl != fastdispatch.IMPLEMENTATION:
            pytest.skip(f"this process runs the {fastdispatch.IMPLEMENTATION} core")
    masters, per_master = 40, 25
    rec = _Recorder()
    c = peers.make(name, rec, 4)
    chunks = [
        [((p, m, i), m) for i in range(per_master) for m in range(masters)]
        for p in range(producers)
    ]
    if producers == 1:
        c.produce(chunks[0])
    else:
        threads = [threading.Thread(target=c.produce, args=(ch,)) for ch in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
            assert not t.is_alive()
    c.finish()

    if name != "loop" or producers == 1:
        # The bare loop is a floor, not a dispatcher: with several producers it
        # calls one master's handler from several threads, which free-threaded
        # builds really run at once.
        assert rec.overlaps == []
    assert len(rec.seen) == masters * producers
    for key, seqs in rec.seen.items():
        assert seqs == list(range(per_master)), key


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["thread-per-master", "pykka"])
def test_thread_peers_run_every_tiny_scenario(bench: dict[str, ModuleType], name: str) -> None:
    scenarios = bench["scenarios"]
    for key, scenario in scenarios.SCENARIOS.items():
        size = scenario.sizes["tiny"]
        assert scenarios.infeasible(name, key, size) is None
        result = scenario.run(name, size)
        assert result["value"] > 0, (key, result)


def test_thread_peers_report_their_limit(bench: dict[str, ModuleType]) -> None:
    scenarios = bench["scenarios"]
    full = scenarios.SCENARIOS["S3"].sizes["full"]
    for name in ("thread-per-master", "pykka"):
        why = scenarios.infeasible(name, "S3", full)
        assert why is not None
        assert why.startswith("skipped: needs 1,000,000 OS threads"), why
    assert scenarios.infeasible("executor", "S3", full) is None
    assert scenarios.infeasible("fd-cython", "S3", full) is None


@pytest.mark.timeout(300)
def test_idle_bench_reports_each_core(tmp_path: Path) -> None:
    cores = ["cython", "python"] if _compiled_available() else ["python"]
    out = tmp_path / "idle.json"
    cmd = [sys.executable, str(BENCH / "idle.py"), "--rounds", "1", "--seconds", "0.1"]
    cmd += ["--json", str(out)]
    for core in cores:
        cmd += ["--core", core]
    proc = subprocess.run(
        cmd, env=_child_env(), capture_output=True, text=True, timeout=280, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert sorted(result["percent_of_core"]) == sorted(cores)
    for values in result["percent_of_core"].values():
        assert len(values) == 1 and values[0] >= 0


def test_ratios_pair_the_contenders_of_each_round() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import report
    finally:
        sys.path.remove(str(BENCH))
    # A slow spell in round 2 hits both: paired, the ratio is 0.5 every round;
    # a ratio of the medians (4 / 6) would say 0.67.
    cells = {
        "a": {"S1": {"status": "ok", "value": 4.0, "by_round": {"1": 5.0, "2": 2.0, "3": 4.0}}},
        "b": {"S1": {"status": "ok", "value": 8.0, "by_round": {"1": 10.0, "2": 4.0, "3": 8.0}}},
        "lat": {"S5": {"status": "ok", "value": 2.0, "by_round": {"1": 2.0}}},
        "base": {"S5": {"status": "ok", "value": 6.0, "by_round": {"1": 6.0}}},
        "old": {"S1": {"status": "ok", "value": 6.0}},
    }
    assert report.ratios(cells, "a", "b", "S1") == [0.5, 0.5, 0.5]
    assert report.ratio(cells, "a", "b", "S1") == 0.5
    assert report.ratio(cells, "lat", "base", "S5") == 3.0  # latency: lower is better
    assert report.ratio(cells, "a", "old", "S1") == 4.0 / 6.0  # no rounds: medians
    assert report.ratio(cells, "a", "missing", "S1") is None
    assert report._ratio_cell(cells, "a", "b", "S1") == f"0.5{report.TIMES} (0.5{report.DASH}0.5)"


def test_floor_brackets_each_run_between_two_loop_runs() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import floor
    finally:
        sys.path.remove(str(BENCH))
    # The host slows down for the middle run: bracketing sees 0.25 throughout.
    run = {"loop": [20.0, 20.0, 10.0, 10.0, 20.0], "value": [5.0, 3.75, 2.5, 3.75]}
    means = floor.loop_means(run["loop"])
    assert means == [20.0, 15.0, 10.0, 15.0]
    ratios = [v / m for v, m in zip(run["value"], means, strict=True)]
    s = floor.summarise(ratios, means)
    assert s["median"] == s["fast_half"] == s["slow_half"] == 0.25
    assert (s["fast_loop"], s["slow_loop"]) == (17.5, 12.5)
    # The halves split by loop speed, not by position.
    s = floor.summarise([0.2, 0.3, 0.2, 0.3], [30.0, 10.0, 30.0, 10.0])
    assert (s["fast_half"], s["slow_half"], s["n"]) == (0.2, 0.3, 4)
    assert floor.summarise([], []) == {"status": "missing"}


# -- bench/aio.py: the asyncio scenarios ---------------------------------------------------


@pytest.mark.timeout(300)
def test_aio_bench_tiny_end_to_end(tmp_path: Path) -> None:
    from fastdispatch._env import env_flag as _env_flag

    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTDISPATCH_")}
    cmd = [sys.executable, str(BENCH / "aio.py"), "--size", "tiny", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("# AsyncDispatcher benchmarks")
    assert (tmp_path / "aio.md").read_text() + "\n" == proc.stdout
    results = json.loads((tmp_path / "aio.json").read_text())
    cells = results["cells"]
    assert set(cells) == {"fd-cython", "fd-python", "lock-recipe", "lanes-64", "bare"}
    compiled = not _env_flag("FASTDISPATCH_NO_EXTENSIONS")
    for name, row in cells.items():
        assert set(row) == {"A1", "A3", "A3N", "A4", "A5", "A6", "A1F"}
        for key, cell in row.items():
            if (name == "bare" and key in ("A4", "A6")) or (key == "A1F" and name != "fd-cython"):
                assert cell["status"] == "n/a", cell
            elif name == "fd-cython" and not compiled:
                continue
            else:
                assert cell["status"] == "ok", (name, key, cell)
                assert cell["value"]["median"] > 0
    assert cells["fd-python"]["A4"]["efficiency"]["median"] > 0
    assert (
        cells["fd-python"]["A5"]["p99_us"]["median"] >= cells["fd-python"]["A5"]["p50_us"]["median"]
    )
    if compiled:
        assert results["ratios"]["A1"]["lock-recipe"]["median"] > 0
        assert results["ratios"]["A1F"]["pairs"] == 1
        assert "fd-cython / bare:" in proc.stdout
    assert "Peak RSS against the 150 MB target" in proc.stdout
