"""nox sessions: every check the project runs; .ci/run calls them.

    nox -s tests            # CPython 3.10-3.13 (pyenv), both cores each
    nox -s tests-3.12       # one version
    nox -s wheel_check      # scripts/check_wheel.py (build, auditwheel, installed-wheel tests)
    nox -s lint             # ruff, cython-lint, mypy (pinned versions)
    nox -s stress           # the long stress runs, both cores
    nox -s freethreaded     # FT_PYTHON=... : suite + stress on 3.13t
    nox -s sanitizers       # the suite under ASan + UBSan

Interpreters come from pyenv when it has them (``$(pyenv root)/versions/3.X.Y``, the newest
patch release of each), otherwise from PATH. A missing interpreter is an error, not a skip:
a multi-version run that quietly ran on fewer versions would prove nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
ROOT = Path(__file__).resolve().parent

nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True
nox.options.download_python = "never"  # no interpreter downloads: test what is installed


def _pyenv_bindirs(versions: list[str]) -> list[str]:
    """The bin/ of the newest pyenv CPython for each X.Y in *versions* that pyenv has."""
    pyenv = shutil.which("pyenv")
    root = os.environ.get("PYENV_ROOT")
    if root is None and pyenv is not None:
        root = subprocess.run(
            [pyenv, "root"], capture_output=True, text=True, check=False
        ).stdout.strip()
    if not root or not (Path(root) / "versions").is_dir():
        return []
    bindirs = []
    for version in versions:
        pattern = re.compile(rf"{re.escape(version)}\.(\d+)")
        found = [
            (int(match.group(1)), path)
            for path in (Path(root) / "versions").iterdir()
            if (match := pattern.fullmatch(path.name)) and (path / "bin" / "python").exists()
        ]
        if found:
            bindirs.append(str(max(found)[1] / "bin"))
    return bindirs


# nox looks interpreters up as pythonX.Y on PATH; pyenv's shims only answer for the
# versions pyenv currently enables, so put the real bin/ directories first.
os.environ["PATH"] = os.pathsep.join([*_pyenv_bindirs(PYTHONS), os.environ.get("PATH", "")])


def _assert_installed(session: nox.Session) -> None:
    """Fail unless fastdispatch is imported from the session's venv (not from src/)."""
    session.run(
        "python",
        "-c",
        "import sys, pathlib, fastdispatch; "
        "f = pathlib.Path(fastdispatch.__file__).resolve(); "
        "assert f.is_relative_to(pathlib.Path(sys.prefix).resolve()), f; "
        "print('fastdispatch', fastdispatch.IMPLEMENTATION, 'from', f)",
        env={"FASTDISPATCH_REQUIRE_EXTENSIONS": "1"},
    )


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Install .[test,bench] (compiles the extension; failing to is an error), run the suite.

    First with FASTDISPATCH_REQUIRE_EXTENSIONS=1 (the suite's fixture runs both cores), then
    with FASTDISPATCH_NO_EXTENSIONS=1. Extra arguments go to pytest.
    """
    if not (ROOT / "tests" / "conftest.py").exists():
        session.error("tests/conftest.py is missing: the test suite has not landed")
    # None removes a variable: PYTHONPATH would let the source tree shadow the installed
    # package, and switches from the caller's shell would change what each run tests.
    for name in ("PYTHONPATH", "FASTDISPATCH_NO_EXTENSIONS", "FASTDISPATCH_REQUIRE_EXTENSIONS"):
        session.env[name] = None
    session.install(".[test,bench]", env={"FASTDISPATCH_REQUIRE_EXTENSIONS": "1"})
    _assert_installed(session)
    pytest = ["python", "-m", "pytest", "-p", "no:cacheprovider", *session.posargs]
    failed = []
    for switch in ("FASTDISPATCH_REQUIRE_EXTENSIONS", "FASTDISPATCH_NO_EXTENSIONS"):
        # Both runs always happen: the second one's result matters even if the first fails.
        try:
            session.run(*pytest, env={switch: "1"})
        except nox.command.CommandFailed:
            failed.append(f"{switch}=1")
    if failed:
        session.error(f"the test suite failed with {' and with '.join(failed)}")


@nox.session(venv_backend="none")
def wheel_check(session: nox.Session) -> None:
    """Build, repair and test the wheels from a clean clone (scripts/check_wheel.py)."""
    session.run(sys.executable, str(ROOT / "scripts" / "check_wheel.py"), *session.posargs)


# Tool versions are pinned: a new ruff or mypy release must not fail a run of unchanged code.
LINT_TOOLS = ["ruff==0.17.6", "cython-lint==0.22.1", "pycodestyle==2.15.0", "mypy==2.4.1"]
LINTED = ["src", "tests", "bench", "scripts", "examples", "noxfile.py", "setup.py"]


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff (check and format), cython-lint on the .pyx files, mypy on src/."""
    session.install(*LINT_TOOLS)
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)
    cython_files = [p for ext in ("pyx", "pxd", "pxi") for p in ROOT.glob(f"src/**/*.{ext}")]
    session.run("cython-lint", *sorted(map(str, cython_files)))
    session.run("mypy", "src")


@nox.session(python="3.11")
def stress(session: nox.Session) -> None:
    """The long randomised stress runs on both cores (FASTDISPATCH_STRESS_SECONDS, default 60)."""
    session.env["PYTHONPATH"] = None
    session.install(".[test]", env={"FASTDISPATCH_REQUIRE_EXTENSIONS": "1"})
    _assert_installed(session)
    session.run(
        "python",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-m",
        "stress",
        *session.posargs,
        env={
            "FASTDISPATCH_REQUIRE_EXTENSIONS": "1",
            "FASTDISPATCH_STRESS_SECONDS": os.environ.get("FASTDISPATCH_STRESS_SECONDS", "60"),
        },
    )


@nox.session(venv_backend="none")
def freethreaded(session: nox.Session) -> None:
    """The whole suite and the stress run on free-threaded CPython (needs FT_PYTHON)."""
    if not os.environ.get("FT_PYTHON"):
        session.error("set FT_PYTHON to a free-threaded CPython (3.13t+, built with --disable-gil)")
    session.run("bash", str(ROOT / "scripts" / "ft_run.sh"), external=True)


@nox.session(venv_backend="none")
def sanitizers(session: nox.Session) -> None:
    """The suite under ASan + UBSan (scripts/sanitize_asan.sh) with this interpreter."""
    session.run(
        "bash",
        str(ROOT / "scripts" / "sanitize_asan.sh"),
        *session.posargs,
        env={"PYTHON": sys.executable},
        external=True,
    )
