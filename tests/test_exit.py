"""Semantic 5, last part: at interpreter exit an open dispatcher is drained and joined."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

SCRIPT = r"""
import sys, time
from fastdispatch import Dispatcher

def handle(work):
    master, i = work
    if i % 10 == 0:
        time.sleep(0.002)  # keep work queued when the main thread reaches exit
    sys.stdout.write(f"{master}:{i}\n")
    sys.stdout.flush()

d = Dispatcher(handle, max_workers=2)
for i in range(100):
    for m in range(4):
        d.dispatch((m, i), m)
MODE = sys.argv[1]
if MODE == "close-nowait":
    d.close(wait=False)
elif MODE == "two":
    d2 = Dispatcher(handle, max_workers=1)
    for i in range(100):
        d2.dispatch((9, i), 9)
elif MODE == "unreferenced":
    del d
sys.stdout.write("main-done\n")
sys.stdout.flush()
"""


def _parse(out: str) -> tuple[dict[str, list[int]], list[str]]:
    by_master: dict[str, list[int]] = defaultdict(list)
    other = []
    for line in out.splitlines():
        if ":" in line:
            m, i = line.split(":")
            by_master[m].append(int(i))
        else:
            other.append(line)
    return by_master, other


@pytest.mark.parametrize("mode", ["open", "close-nowait", "two", "unreferenced"])
def test_exit_drains_open_dispatcher(python_in: Any, mode: str) -> None:
    result = python_in(SCRIPT, mode)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    by_master, other = _parse(result.stdout)
    assert other == ["main-done"] or "main-done" in other
    for m in ("0", "1", "2", "3"):
        assert by_master[m] == list(range(100)), f"master {m} lost or reordered work at exit"
    if mode == "two":
        assert by_master["9"] == list(range(100))


SYS_EXIT_WITH_WORK = r"""
import sys, threading
from fastdispatch import Dispatcher
done = []
started = threading.Event()
def handle(w):
    started.set()
    done.append(w)
    sys.stdout.write(f"{w}\n"); sys.stdout.flush()
d = Dispatcher(handle, max_workers=1)
for i in range(50):
    d.dispatch(i, "m")
started.wait(5)
sys.exit(3)
"""


def test_sys_exit_still_drains(python_in: Any) -> None:
    result = python_in(SYS_EXIT_WITH_WORK)
    assert result.returncode == 3, result.stderr
    assert result.stdout.split() == [str(i) for i in range(50)]
    assert result.stderr == ""
