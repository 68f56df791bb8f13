#!/usr/bin/env bash
# The free-threaded CI step: on CPython 3.13t (GIL disabled), install fastdispatch from a scratch
# copy of this tree, check that importing it leaves the GIL off, and run the whole test suite and
# the stress tests (each test runs on both cores through the tests' fixture).
#
#   scripts/ft_run.sh            (from anywhere inside the repository)
#
# Environment:
#   FT_PYTHON        required: a free-threaded CPython interpreter (3.13t+, built with
#                    --disable-gil)
#   FT_WORKDIR       scratch directory (default: a new mktemp -d, removed on exit)
#   FT_STEP_TIMEOUT  hard limit in seconds for each pytest run (default 1800): a deadlock in
#                    nogil code can outlive pytest-timeout's per-test alarm, CI must still end
#   FT_REF           test this commit (git archive) instead of the work tree, e.g. FT_REF=HEAD
#   FT_EXTRAS        extras to install (default "test"; "test,bench" as well runs the bench smoke
#                    tests, which need tqdm/pykka/pyperf/matplotlib)
#
# Exits non-zero if any step fails. Never builds inside the working tree: setuptools and cythonize
# write build/ and _core_c.c next to the sources, and the in-place 3.11 build must stay untouched.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
step_timeout=${FT_STEP_TIMEOUT:-1800}

if [[ -n ${FT_WORKDIR:-} ]]; then
  work=$FT_WORKDIR
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/fastdispatch-ft.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi

if [[ -z ${FT_PYTHON:-} ]]; then
  echo "ft_run: set FT_PYTHON to a free-threaded CPython (3.13t+, built with --disable-gil)" >&2
  exit 2
fi
export FT_PYTHON

t0=$SECONDS
stamp() { echo "== ft_run: $1 ($((SECONDS - t0)) s)"; }

rm -rf "$work/src"
mkdir -p "$work/src"
if [[ -n ${FT_REF:-} ]]; then
  git -C "$root" archive "$FT_REF" | tar -xf - -C "$work/src"
  stamp "exported $FT_REF ($(git -C "$root" rev-parse --short "$FT_REF")) to $work/src"
else
  # What git would see (tracked + untracked, minus ignored: no .so, no _core_c.c, no build/),
  # so the copy builds exactly what a clean clone of the current work tree would.
  (cd "$root" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -) | tar -xf - -C "$work/src"
  stamp "copied the work tree to $work/src"
fi

py=$("$here/ft_env.sh" "$work/venv" "$work/src" | tail -n 1)
stamp "venv ready: $py ($("$py" -VV | tr '\n' ' '))"

# PYTHON_GIL=0 would hide a module that re-enables the GIL; PYTHONPATH could shadow the install.
# FASTDISPATCH_REQUIRE_EXTENSIONS=1: a missing compiled core is an error, never a quiet fallback.
run() { env -u PYTHON_GIL -u PYTHONPATH FASTDISPATCH_REQUIRE_EXTENSIONS=1 "$@"; }

(cd "$work" && run "$py" -c '
import sys, fastdispatch, fastdispatch._core_c
assert fastdispatch.IMPLEMENTATION == "cython", fastdispatch.IMPLEMENTATION
assert "site-packages" in fastdispatch.__file__, fastdispatch.__file__
assert not sys._is_gil_enabled(), "importing fastdispatch re-enabled the GIL"
print("GIL disabled after import; core:", fastdispatch.IMPLEMENTATION, fastdispatch.__file__)
')

status=0
cd "$work/src"
# Two runs cover every test exactly once, whatever the default marker selection is.
stamp "pytest: whole suite except stress"
run timeout -k 30 "$step_timeout" "$py" -m pytest -q -m "not stress" || status=1
stamp "pytest: stress (-m stress)"
run timeout -k 30 "$step_timeout" "$py" -m pytest -q -m stress || status=1
stamp "done, status $status"
exit "$status"
