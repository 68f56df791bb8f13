#!/usr/bin/env python3
"""Run fastdispatch's test suite against the *installed* package, never a source tree.

Used by cibuildwheel's test-command and by scripts/check_wheel.py. Run it from (or point
``--root`` at) a directory that holds copies of ``tests/`` and ``pyproject.toml`` (the
pytest configuration) and no ``src/``:

    python scripts/run_installed_tests.py --expect cython   # a binary wheel
    python scripts/run_installed_tests.py --expect python   # the py3-none-any wheel

``--expect cython``: with FASTDISPATCH_REQUIRE_EXTENSIONS=1, ``IMPLEMENTATION`` must be
"cython"; the suite then runs with that switch set (its fixture runs both cores, and the
compiled one cannot silently be missing) and once more with FASTDISPATCH_NO_EXTENSIONS=1.

``--expect python``: ``IMPLEMENTATION`` must be "python" without any switch, and
FASTDISPATCH_REQUIRE_EXTENSIONS=1 must make the import fail; the suite runs once with
FASTDISPATCH_NO_EXTENSIONS=1.

Anything after ``--`` is passed to pytest. Exit status: non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

SWITCHES = ("FASTDISPATCH_NO_EXTENSIONS", "FASTDISPATCH_REQUIRE_EXTENSIONS")

# Printed by the probe: where fastdispatch came from and which core is live.
PROBE = """
import json, sys
import fastdispatch
print(json.dumps({"file": fastdispatch.__file__, "implementation": fastdispatch.IMPLEMENTATION,
                  "prefix": sys.prefix}))
"""


def clean_env(**switches: str) -> dict[str, str]:
    """The environment for a child: no PYTHONPATH (no source tree), only *switches* set."""
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES and k != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(switches)
    return env


def probe(root: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=root, env=dict(env), capture_output=True, text=True
    )


def check_import(root: Path, expect: str) -> list[str]:
    """Import checks; returns the failures (empty: all good)."""
    failures: list[str] = []
    switches = {"FASTDISPATCH_REQUIRE_EXTENSIONS": "1"} if expect == "cython" else {}
    result = probe(root, clean_env(**switches))
    if result.returncode != 0:
        return [f"import fastdispatch failed with {switches or 'no switches'}:\n{result.stderr}"]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    location = Path(info["file"]).resolve()
    print(f"fastdispatch {info['implementation']} core from {location}")
    if info["implementation"] != expect:
        failures.append(f"IMPLEMENTATION is {info['implementation']!r}, expected {expect!r}")
    prefix = Path(info["prefix"]).resolve()
    if not location.is_relative_to(prefix):
        failures.append(f"fastdispatch imported from {location}, outside the environment {prefix}")
    if location.is_relative_to(root.resolve()):
        failures.append(f"fastdispatch imported from the test directory {root}, not the install")
    if expect == "python":
        required = probe(root, clean_env(FASTDISPATCH_REQUIRE_EXTENSIONS="1"))
        if required.returncode == 0 or "ImportError" not in required.stderr:
            failures.append(
                "FASTDISPATCH_REQUIRE_EXTENSIONS=1 did not make importing the pure wheel an "
                f"ImportError (exit {required.returncode}):\n{required.stdout}{required.stderr}"
            )
        else:
            print("FASTDISPATCH_REQUIRE_EXTENSIONS=1 -> ImportError, as it must")
    return failures


def run_suite(root: Path, switches: Mapping[str, str], pytest_args: Sequence[str]) -> bool:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-c",
        str(root / "pyproject.toml"),
        "--rootdir",
        str(root),
        *pytest_args,
        str(root / "tests"),
    ]
    label = " ".join(f"{k}={v}" for k, v in switches.items())
    print(f"\n=== pytest with {label} ===", flush=True)
    return subprocess.run(command, cwd=root, env=clean_env(**switches)).returncode == 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect", choices=("cython", "python"), required=True)
    parser.add_argument(
        "--root", type=Path, default=Path.cwd(), help="holds tests/, pyproject.toml"
    )
    parser.add_argument("--no-suite", action="store_true", help="import checks only")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()

    if (root / "src" / "fastdispatch").exists():
        print(
            f"error: {root} contains src/fastdispatch; run from a copy of tests/", file=sys.stderr
        )
        return 2
    failures = check_import(root, args.expect)
    if not args.no_suite:
        runs = [{"FASTDISPATCH_NO_EXTENSIONS": "1"}]
        if args.expect == "cython":
            runs.insert(0, {"FASTDISPATCH_REQUIRE_EXTENSIONS": "1"})
        for switches in runs:
            if not run_suite(root, switches, args.pytest_args):
                failures.append(f"test suite failed with {switches}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    if not failures:
        print(f"run_installed_tests: all checks passed ({args.expect} wheel)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
