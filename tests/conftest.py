"""Fixtures shared by the semantic suite: every test runs against both cores.

The ``core`` fixture is parametrised over the compiled core (``cython``) and
the pure-Python core (``python``), propcache's pattern. The compiled case
*fails* when the extension cannot be imported, so a broken build can never
quietly test the pure core twice; only ``FASTDISPATCH_NO_EXTENSIONS=1`` turns
it into a skip.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

import fastdispatch
from fastdispatch._env import env_flag
from helpers import WAIT

CORE_MODULES = {"cython": "fastdispatch._core_c", "python": "fastdispatch._core_py"}
AIO_CORE_MODULES = {"cython": "fastdispatch.aio._core_c", "python": "fastdispatch.aio._core_py"}


def load_core(name: str, modules: dict[str, str] = CORE_MODULES) -> ModuleType:
    """Import the core called *name* (of *modules*), failing (not skipping) a broken build."""
    if name == "cython":
        if env_flag("FASTDISPATCH_NO_EXTENSIONS"):
            pytest.skip("FASTDISPATCH_NO_EXTENSIONS is set: compiled core deliberately not tested")
        try:
            return importlib.import_module(modules["cython"])
        except ImportError as exc:
            pytest.fail(
                f"the compiled core cannot be imported ({exc!r}); build it "
                "(python setup.py build_ext --inplace) or set FASTDISPATCH_NO_EXTENSIONS=1",
                pytrace=False,
            )
    return importlib.import_module(modules[name])


@pytest.fixture(params=list(CORE_MODULES), ids=list(CORE_MODULES))
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The core module under test: ``fastdispatch._core_c`` or ``_core_py``."""
    return load_core(request.param)


@pytest.fixture
def Dispatcher(core: ModuleType) -> type:
    """``fastdispatch.Dispatcher`` bound to the core under test."""
    from fastdispatch._dispatcher import Dispatcher as Base

    return type("Dispatcher", (Base,), {"_Core": core.Core, "__module__": __name__})


@pytest.fixture(params=list(AIO_CORE_MODULES), ids=list(AIO_CORE_MODULES))
def aio_core(request: pytest.FixtureRequest) -> ModuleType:
    """The asyncio core under test: ``fastdispatch.aio._core_c`` or ``_core_py``."""
    return load_core(request.param, AIO_CORE_MODULES)


@pytest.fixture
def AsyncDispatcher(aio_core: ModuleType) -> type:
    """``fastdispatch.aio.AsyncDispatcher`` bound to the asyncio core under test."""
    from fastdispatch.aio._dispatcher import AsyncDispatcher as Base

    return type("AsyncDispatcher", (Base,), {"_Core": aio_core.Core, "__module__": __name__})


_unique = itertools.count()


class Factory:
    """Makes dispatchers and gates; tears all of them down after the test.

    Teardown opens every gate first (so no handler stays blocked when a test
    fails half-way), then closes every dispatcher without waiting, cancelling
    what has not started, and finally waits for them with a timeout, so a
    failing test never hangs the suite.
    """

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.made: list[Any] = []
        self.gates: list[threading.Event] = []

    def __call__(self, handler: Any, **options: Any) -> Any:
        d = self.cls(handler, **options)
        self.made.append(d)
        return d

    def prefix(self, name: str) -> str:
        """A thread-name prefix unique in this process (tests count threads by it)."""
        return f"{name}-{next(_unique)}-"

    def gate(self) -> threading.Event:
        """An Event a handler may block on; it is set at teardown."""
        ev = threading.Event()
        self.gates.append(ev)
        return ev

    def teardown(self) -> None:
        for ev in self.gates:
            ev.set()
        # an error here repeats the test's own failure, which pytest reports
        for d in self.made:
            with contextlib.suppress(Exception):
                d.close(wait=False, cancel_pending=True)
        for d in self.made:
            with contextlib.suppress(Exception):
                d.wait(timeout=WAIT)
        # join the workers too, so no test sees another one's threads; in a
        # helper thread, so that a worker that never exits cannot hang the suite
        closers = [threading.Thread(target=d.close, daemon=True) for d in self.made]
        for t in closers:
            t.start()
        for t in closers:
            t.join(WAIT)


@pytest.fixture
def make(Dispatcher: type) -> Iterator[Factory]:
    """``make(handler, **options)`` builds a dispatcher closed at teardown."""
    factory = Factory(Dispatcher)
    yield factory
    factory.teardown()


# -- subprocesses ------------------------------------------------------------


def subprocess_env(core_name: str | None, **extra: str) -> dict[str, str]:
    """Environment for a child Python that imports the same fastdispatch.

    *core_name* ``"cython"`` requires the extension in the child,
    ``"python"`` selects the pure core, ``None`` leaves the choice alone.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "FASTDISPATCH_NO_EXTENSIONS",
            "FASTDISPATCH_REQUIRE_EXTENSIONS",
            "FASTDISPATCH_DEBUG",
            "PYTHONWARNINGS",
        }
    }
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastdispatch.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_parent, os.environ.get("PYTHONPATH")) if p
    )
    if core_name == "cython":
        env["FASTDISPATCH_REQUIRE_EXTENSIONS"] = "1"
    elif core_name == "python":
        env["FASTDISPATCH_NO_EXTENSIONS"] = "1"
    env.update(extra)
    return env


def run_python(
    code: str,
    env: dict[str, str],
    *args: str,
    flags: tuple[str, ...] = (),
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run *code* (``python FLAGS -c code ARGS``) in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, *flags, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def core_name(core: ModuleType) -> str:
    """``"cython"`` or ``"python"``: the core under test, for child processes."""
    return "cython" if core.__name__ == CORE_MODULES["cython"] else "python"


@pytest.fixture
def python_in(core_name: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``python_in(code, **env)`` runs *code* in a child using the core under test."""

    def run(code: str, *args: str, timeout: float = 60.0, **extra: str):
        return run_python(code, subprocess_env(core_name, **extra), *args, timeout=timeout)

    return run
