"""Smoke test of bench/aio.py: every contender runs every tiny asyncio scenario."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastdispatch._env import env_flag

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.timeout(300)
def test_aio_bench_tiny_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTDISPATCH_")}
    cmd = [sys.executable, str(BENCH / "aio.py"), "--size", "tiny", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("# AsyncDispatcher benchmarks")
    assert (tmp_path / "aio.md").read_text() + "\n" == proc.stdout
    results = json.loads((tmp_path / "aio.json").read_text())
    cells = results["cells"]
    assert set(cells) == {"fd-cython", "fd-python", "lock-recipe", "lanes-64", "bare"}
    compiled = not env_flag("FASTDISPATCH_NO_EXTENSIONS")
    for name, row in cells.items():
        assert set(row) == {"A1", "A3", "A4", "A5", "A6"}
        for key, cell in row.items():
            if name == "bare" and key in ("A4", "A6"):
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
