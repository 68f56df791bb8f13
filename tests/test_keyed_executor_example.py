"""examples/keyed_executor_example.py runs, on both cores, and keeps each account's order."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import subprocess_env
from fastdispatch import KeyedExecutor

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "keyed_executor_example.py"


@pytest.fixture
def example(Dispatcher: type, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example module, its ``KeyedExecutor`` bound to the core under test."""
    assert EXAMPLE.is_file(), f"{EXAMPLE} is missing"
    spec = importlib.util.spec_from_file_location("keyed_executor_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bound = type("KeyedExecutor", (KeyedExecutor,), {"_Dispatcher": Dispatcher})
    monkeypatch.setattr(module, "KeyedExecutor", bound)
    return module


def test_example_keeps_each_accounts_order(example: ModuleType) -> None:
    log = example.main(echo=False, rounds=200)
    assert log["bob"] == [10, -10] * 200
    assert log["carol"] == [10, -10] * 200
    assert log["alice"] == [10, -10] * 200 + [5]  # the audit ran after alice's earlier calls


def test_example_runs_as_script(core_name: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env=subprocess_env(core_name),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        "alice: 101 operations, balance 5",
        "bob: 100 operations, balance 0",
        "carol: 100 operations, balance 0",
        "alice after the audit deposit: 5",
    ]
