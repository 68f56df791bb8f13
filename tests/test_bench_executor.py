"""bench/executor.py: runs end to end at a tiny size, and its peer recipe is correct."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import fastdispatch
from helpers import WAIT

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def executor_bench() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        import executor

        yield executor
    finally:
        sys.path.remove(str(BENCH))


def test_chained_thread_pool_keeps_each_keys_order(executor_bench: ModuleType) -> None:
    """The peer must be a correct recipe, or every ratio against it is meaningless."""
    pool = executor_bench.ChainedThreadPool()
    lock = threading.Lock()
    running: set[int] = set()
    overlaps: list[int] = []
    seen: dict[int, list[int]] = defaultdict(list)

    def work(key: int, seq: int) -> int:
        with lock:
            if key in running:
                overlaps.append(key)
            running.add(key)
        seen[key].append(seq)
        with lock:
            running.discard(key)
        return seq

    futures = [pool.submit_keyed(k, work, k, i) for i in range(100) for k in range(20)]
    assert [f.result(timeout=WAIT) for f in futures] == [i for i in range(100) for _ in range(20)]
    pool.shutdown()
    assert not overlaps
    assert all(seen[k] == list(range(100)) for k in range(20))


@pytest.mark.timeout(120)
def test_executor_bench_tiny_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTDISPATCH_")}
    home = str(Path(fastdispatch.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [home, env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(BENCH / "executor.py"), "--size", "tiny", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=110, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "executor.md").read_text() == proc.stdout.rstrip("\n") + "\n"
    results = json.loads((tmp_path / "executor.json").read_text())
    summary = results["summary"]
    assert set(summary) == {"keyed", "unkeyed", "future"}
    for entry in summary.values():
        for contender, spread in entry["throughput"].items():
            if contender == "fd-cython" and fastdispatch.IMPLEMENTATION != "cython":
                continue  # no compiled core in this environment
            assert spread is not None and spread["median"] > 0, (contender, entry)
    assert summary["future"]["ratio"]["fd-future"]["median"] > 0
    assert "ThreadPoolExecutor + per-key future chaining" in proc.stdout
