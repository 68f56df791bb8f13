"""Free-threaded CPython (3.13t+): fastdispatch must not turn the GIL back on.

CPython re-enables the GIL when it imports an extension module that does not declare free-threading
support, and says so only with a RuntimeWarning. These tests import fastdispatch (and its compiled
core) in a fresh interpreter, with ``PYTHON_GIL`` removed from the environment so that nothing
forces the GIL off, and check ``sys._is_gil_enabled()`` after importing and after handling work.
On GIL builds they are skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig

import pytest

from fastdispatch._env import env_flag

pytestmark = pytest.mark.skipif(
    not sysconfig.get_config_var("Py_GIL_DISABLED"),
    reason="needs a free-threaded CPython build (3.13t+); this interpreter has the GIL",
)

# Imports, then dispatches through each requested core (the tests' ``_Core`` hook) with two
# workers, and reports the GIL state at each stage as one JSON line.
PROBE = r"""
import json, sys, threading
import fastdispatch
state = {"implementation": fastdispatch.IMPLEMENTATION, "after_import": sys._is_gil_enabled()}
cores = sys.argv[1:]
if "cython" in cores:
    import fastdispatch._core_c
    state["after_core_c_import"] = sys._is_gil_enabled()
for name in cores:
    suffix = "c" if name == "cython" else "py"
    module = __import__(f"fastdispatch._core_{suffix}", fromlist=["Core"])
    Dispatcher = type("D", (fastdispatch._dispatcher.Dispatcher,), {"_Core": module.Core})
    seen = {m: [] for m in range(8)}
    lock = threading.Lock()

    def handle(work):
        with lock:
            seen[work[0]].append(work[1])

    with Dispatcher(handle, max_workers=2) as d:
        d.dispatch_many(((m, i), m) for i in range(200) for m in range(8))
        assert d.wait(timeout=60)
    assert all(v == list(range(200)) for v in seen.values()), f"{name}: order broken"
    state[f"after_dispatching_{name}"] = sys._is_gil_enabled()
print(json.dumps(state))
"""


def have_compiled_core() -> bool:
    return importlib.util.find_spec("fastdispatch._core_c") is not None


def probe(*cores: str, extra_env: dict[str, str] | None = None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    env.update(extra_env or {})
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *cores],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def compiled_core() -> None:
    """Skip when the extension is not built, unless FASTDISPATCH_REQUIRE_EXTENSIONS demands it."""
    if not have_compiled_core():
        if env_flag("FASTDISPATCH_REQUIRE_EXTENSIONS"):
            pytest.fail("FASTDISPATCH_REQUIRE_EXTENSIONS is set, fastdispatch._core_c is missing")
        pytest.skip("the compiled core fastdispatch._core_c is not built")


@pytest.mark.usefixtures("compiled_core")
def test_compiled_core_keeps_gil_disabled() -> None:
    state = probe("cython", extra_env={"FASTDISPATCH_REQUIRE_EXTENSIONS": "1"})
    assert state == {
        "implementation": "cython",
        "after_import": False,
        "after_core_c_import": False,
        "after_dispatching_cython": False,
    }


def test_pure_core_keeps_gil_disabled() -> None:
    state = probe("python", extra_env={"FASTDISPATCH_NO_EXTENSIONS": "1"})
    assert state == {
        "implementation": "python",
        "after_import": False,
        "after_dispatching_python": False,
    }


def test_probe_detects_an_enabled_gil() -> None:
    # The probe must be able to fail: with the GIL forced on it reports True.
    state = probe("python", extra_env={"FASTDISPATCH_NO_EXTENSIONS": "1", "PYTHON_GIL": "1"})
    assert state["after_import"] is True
