"""The godispatch README example, ported to examples/, runs and keeps order."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

from conftest import subprocess_env

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "godispatch_example.py"


def load_example() -> ModuleType:
    assert EXAMPLE.is_file(), f"{EXAMPLE} is missing"
    spec = importlib.util.spec_from_file_location("godispatch_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_main_runs() -> None:
    module = load_example()
    result = module.main()
    assert result is not None, "main() should return something checkable"
    check_result(result)


def check_result(result: Any) -> None:
    """Whatever shape main() returns, per-master order must hold in it."""
    if isinstance(result, dict):
        for master, works in result.items():
            if isinstance(works, list) and all(isinstance(w, int) for w in works):
                assert works == sorted(works), (master, works)
    elif isinstance(result, list):
        check_lines([str(x) for x in result])


ORDER_LINE = re.compile(r"(?P<master>[\w-]+)\D+?(?P<seq>\d+)\s*$")


def check_lines(lines: list[str]) -> None:
    by_master: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        m = ORDER_LINE.search(line)
        if m:
            by_master[m["master"]].append(int(m["seq"]))
    for master, seqs in by_master.items():
        assert seqs == sorted(seqs), (master, seqs)


def test_example_runs_as_script() -> None:
    for core in ("python", "cython"):
        result = subprocess.run(
            [sys.executable, str(EXAMPLE)],
            env=subprocess_env(core),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip(), "the example should print what it handled"
        check_lines(result.stdout.splitlines())
