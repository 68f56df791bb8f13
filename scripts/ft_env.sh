#!/usr/bin/env bash
# Creates a free-threaded (3.13t) virtual environment and installs fastdispatch into it with its
# test extra: `pip install SRC[test]` compiles the extension with the 3.13t headers.
#
#   scripts/ft_env.sh VENV [SRC]
#
# VENV  where to create the venv (replaced if it exists).
# SRC   the project tree to install (default: this script's repository). pip builds inside SRC
#       (setuptools' build/ and cythonize's _core_c.c), so pass a scratch copy, not a working tree
#       that another build owns.
#
# The interpreter: $FT_PYTHON, required: a free-threaded CPython (3.13t+, `--disable-gil`).
# Cython publishes no 3.13t binary wheel: pip's isolated build picks the pure-Python
# `py3-none-any` wheel, which compiles more slowly but produces the same C.
#
# FT_EXTRAS: the extras to install (default "test"; e.g. "test,bench" for the bench smoke tests,
# whose dependencies all have 3.13t binary wheels).
#
# Prints the venv's python path last.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
venv=${1:?usage: scripts/ft_env.sh VENV [SRC]}
src=${2:-$root}

if [[ -z ${FT_PYTHON:-} ]]; then
  echo "ft_env: set FT_PYTHON to a free-threaded CPython (3.13t+, built with --disable-gil)" >&2
  exit 2
fi
# Check the build itself, not the current GIL state: PYTHON_GIL=1 in the environment must not
# make a free-threaded interpreter look like a GIL build, nor the reverse.
"$FT_PYTHON" -c 'import sys, sysconfig; sys.exit(not sysconfig.get_config_var("Py_GIL_DISABLED"))' \
  || { echo "ft_env: $FT_PYTHON is not a free-threaded build" >&2; exit 1; }

rm -rf "$venv"
"$FT_PYTHON" -m venv "$venv"
py=$venv/bin/python
"$py" -m pip install --quiet --upgrade pip >&2
# --prefer-binary: recent hypothesis releases are an sdist with a Rust (pyo3) part on 3.13t, which
# needs crates.io to build; an older release has a pure-Python wheel, and that is all a test needs.
# FASTDISPATCH_REQUIRE_EXTENSIONS=1: a failed compile is an error here, not setup.py's quiet
# fallback to the pure-Python core.
FASTDISPATCH_REQUIRE_EXTENSIONS=1 "$py" -m pip install --quiet --prefer-binary "$src[${FT_EXTRAS:-test}]" >&2
echo "$py"
