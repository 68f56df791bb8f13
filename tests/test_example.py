"""The godispatch README example, ported to examples/, runs and keeps order."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest

from conftest import subprocess_env

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "godispatch_example.py"


def load_example() -> ModuleType:
    assert EXAMPLE.is_file(), f"{EXAMPLE} is missing"
    spec = importlib.util.spec_from_file_location("godispatch_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example(Dispatcher: type, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example module, its ``Dispatcher`` bound to the core under test."""
    module = load_example()
    monkeypatch.setattr(module, "Dispatcher", Dispatcher)
    return module


def test_example_main(example: ModuleType) -> None:
    assert example.main(echo=False) == {str(m): [1, 2, 3, 4] for m in range(1, 5)}


def test_example_main_at_scale(example: ModuleType) -> None:
    result = example.main(echo=False, masters=40, works=250)
    assert result == {str(m): list(range(1, 251)) for m in range(1, 41)}


def test_example_go_style() -> None:
    module = load_example()
    assert module.main_go_style(echo=False) == {f"go-{m}": [1, 2, 3, 4] for m in range(1, 5)}


def test_example_echo_prints_each_item(
    example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    example.main(echo=True, masters=3, works=5)
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == sorted(
        f"master {m}: handled work {i}" for m in range(1, 4) for i in range(1, 6)
    )


HANDLED = re.compile(r"^master (?P<master>\S+): handled work (?P<work>\d+)$")
SUMMARY = re.compile(r"^master (?P<master>\S+) handled (?P<n>\d+) items in order: (?P<ids>\[.*\])$")


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
    handled: dict[str, list[int]] = defaultdict(list)
    summaries: dict[str, str] = {}
    for line in result.stdout.splitlines():
        if m := HANDLED.match(line):
            handled[m["master"]].append(int(m["work"]))
        elif m := SUMMARY.match(line):
            summaries[m["master"]] = m["ids"]
        else:
            assert line == "", f"unexpected output line {line!r}"
    masters = [str(n) for n in range(1, 5)] + [f"go-{n}" for n in range(1, 5)]
    assert dict(handled) == {m: [1, 2, 3, 4] for m in masters}  # per-master order, all items
    assert summaries == {m: "[1, 2, 3, 4]" for m in masters}
