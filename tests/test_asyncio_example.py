"""The asyncio example in examples/ runs, keeps each user's order, on both asyncio cores."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import subprocess_env

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "asyncio_example.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asyncio_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_run(AsyncDispatcher: type, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_example()
    monkeypatch.setattr(module, "AsyncDispatcher", AsyncDispatcher)
    result = asyncio.run(module.run(echo=False))
    assert result == {user: [1, 2, 3, 4, 5] for user in ("alice", "bob", "carol", "dave")}


def test_example_script(aio_core: ModuleType) -> None:
    core_name = "cython" if aio_core.__name__.endswith("_core_c") else "python"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env=subprocess_env(core_name),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "handled dave#1" in proc.stdout
    assert "alice [1, 2, 3, 4, 5]" in proc.stdout
    assert "dave [1, 2, 3, 4, 5]" in proc.stdout


def readme_asyncio_code() -> str:
    text = (EXAMPLE.parent.parent / "README.md").read_text(encoding="utf-8")
    heading = re.search(r"^## asyncio\b.*$", text, re.MULTILINE)
    assert heading, "README.md has no asyncio section"
    block = re.search(r"^```python\n(.*?)^```", text[heading.end() :], re.DOTALL | re.MULTILINE)
    assert block, "the README's asyncio section has no ```python block"
    return block.group(1)


def test_readme_asyncio_example_runs(aio_core: ModuleType) -> None:
    core_name = "cython" if aio_core.__name__.endswith("_core_c") else "python"
    proc = subprocess.run(
        [sys.executable, "-c", readme_asyncio_code()],
        env=subprocess_env(core_name),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1\n"
