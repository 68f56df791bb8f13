#!/usr/bin/env bash
# Build the compiled core with AddressSanitizer + UndefinedBehaviorSanitizer and run the test
# suite under it (both cores run; only the compiled one is instrumented).
#
#   scripts/sanitize_asan.sh                  # the whole suite
#   scripts/sanitize_asan.sh tests/test_leaks.py -k cython    # any pytest arguments
#
# Environment: PYTHON (default: python3) must have pytest, pytest-timeout and hypothesis
# (Cython >= 3.1 and setuptools are fetched into the temp dir if it lacks them); CC (default: gcc). Exit status: pytest's; a sanitizer report
# aborts the process, which fails the run.
#
# How:
# * The tree is copied to a temp dir (git's tracked + untracked-not-ignored files) and built in
#   place there, so the developer's own in-place build in src/ is never touched.
# * CPython itself is not instrumented, so libasan must be the first library loaded:
#   LD_PRELOAD. PYTHONMALLOC=malloc routes Python objects through malloc, so ASan sees
#   overflows and use-after-free of *objects* too (pymalloc would hide them in its arenas).
# * ASAN_OPTIONS=detect_leaks=0: CPython does not free everything at exit (interned strings,
#   static types...), LeakSanitizer would report thousands of those. Our own leaks are covered
#   by tests/test_leaks.py (refcounts and weakrefs on every path) and scripts/valgrind_memcheck.sh.
# * UBSan: -fno-sanitize-recover=all plus halt_on_error=1, so any UB report stops the run.
# * Subprocesses the tests start inherit LD_PRELOAD and the options: they run sanitized too.
# * Deselected: tests that build wheels, run compilers or time benchmarks (test_build,
#   test_atomic_header, test_bench_smoke, test_wheel*): they do not load the sanitized module,
#   and a sanitized interpreter makes them too slow.
#
# Known reports: none (last run: see RELIABILITY.md). A report inside _core_c / _atomic.h is a
# bug to fix, not to suppress.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
cc=${CC:-gcc}

libasan=$("$cc" -print-file-name=libasan.so)
libubsan=$("$cc" -print-file-name=libubsan.so)
if [[ ! -e $libasan ]]; then
    echo "sanitize_asan: $cc has no libasan ($libasan)" >&2
    exit 2
fi

san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
source "$root/scripts/build_copy.sh"
build_copy asan "$san -g -O1" "$san"
if ! nm -D "$so" | grep -c __asan_ >/dev/null; then
    echo "sanitize_asan: $so is not instrumented" >&2
    exit 1
fi

loaded=$(cd "$work" && LD_PRELOAD="$libasan $libubsan" ASAN_OPTIONS=detect_leaks=0 PYTHONPATH="$work/src" "$py" -c 'import fastdispatch._core_c as c; print(c.__file__)' 2>/dev/null || true)
if [[ $loaded != "$work"/* ]]; then
    echo "sanitize_asan: the tests would not load the instrumented build (got: ${loaded:-import error})" >&2
    exit 1
fi

echo "== running the suite under ASan + UBSan"
cd "$work"
status=0
env \
    LD_PRELOAD="$libasan $libubsan" \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_init_order=1:detect_stack_use_after_return=0:print_summary=1" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:print_summary=1" \
    PYTHONMALLOC=malloc \
    PYTHONPATH="$work/src" \
    FASTDISPATCH_REQUIRE_EXTENSIONS=1 \
    "$py" -m pytest -p no:cacheprovider -q \
    --ignore=tests/test_build.py --ignore=tests/test_atomic_header.py \
    --ignore=tests/test_bench_smoke.py --ignore-glob='tests/test_wheel*' \
    "$@" || status=$?
echo "== sanitize_asan: pytest exit status $status"
exit "$status"
