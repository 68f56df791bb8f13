#!/usr/bin/env bash
# Build the compiled core with ThreadSanitizer and run the stress tests under it.
#
#   scripts/sanitize_tsan.sh                      # quick + long stress (TSAN_STRESS_SECONDS each)
#   scripts/sanitize_tsan.sh tests/test_faults.py -k cython     # any pytest arguments
#
# Environment: PYTHON (default: python3; a free-threaded 3.13t works too and is the more
# demanding run: no GIL to serialise the workers), CC (default: gcc), TSAN_STRESS_SECONDS
# (default: 20 per core; TSan slows everything 5-15x). Exit status: pytest's, or 66 when
# ThreadSanitizer reported anything that is not suppressed.
#
# How:
# * The tree is copied to a temp dir and built in place there with -fsanitize=thread (the
#   developer's own build is never touched); libtsan is LD_PRELOADed because CPython is not
#   instrumented.
# * TSan only sees memory accesses in instrumented code, i.e. in _core_c (including the
#   Py_INCREF/Py_DECREF and other CPython inline functions compiled into it). Accesses inside
#   the interpreter are invisible, so it cannot report races *within* CPython, but CPython's
#   own synchronisation (GIL, locks: pthread mutexes, condition variables, semaphores) is
#   intercepted, so happens-before through them is known.
# * scripts/tsan.supp suppresses reports whose racing frames are CPython internals only;
#   each entry says why. Nothing in _core_c, _atomic.h or _pycompat.h is suppressed: a report
#   there is a bug to fix (or, if benign, explained in tsan.supp with the reasoning).
# * setarch -R (no ASLR) avoids "FATAL: ThreadSanitizer: unexpected memory mapping" on kernels
#   with a large vm.mmap_rnd_bits.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
cc=${CC:-gcc}
seconds=${TSAN_STRESS_SECONDS:-20}

libtsan=$("$cc" -print-file-name=libtsan.so)
if [[ ! -e $libtsan ]]; then
    echo "sanitize_tsan: $cc has no libtsan ($libtsan)" >&2
    exit 2
fi

echo "== building with -fsanitize=thread ($("$py" -c 'import sys; print(sys.version.split()[0], "GIL" if getattr(sys, "_is_gil_enabled", lambda: True)() else "free-threaded")'))"
source "$root/scripts/build_copy.sh"
build_copy tsan "-fsanitize=thread -g -O1 -fno-omit-frame-pointer" "-fsanitize=thread"
if ! nm -D "$so" | grep -c __tsan_ >/dev/null; then
    echo "sanitize_tsan: $so is not instrumented" >&2
    exit 1
fi

norandom=()
if command -v setarch >/dev/null 2>&1; then
    norandom=(setarch "$(uname -m)" -R)
fi

loaded=$(cd "$work" && "${norandom[@]}" env LD_PRELOAD="$libtsan" PYTHONPATH="$work/src" \
    "$py" -c 'import fastdispatch._core_c as c; print(c.__file__)' 2>/dev/null || true)
if [[ $loaded != "$work"/* ]]; then
    echo "sanitize_tsan: the tests would not load the instrumented build (got: ${loaded:-import error})" >&2
    exit 1
fi

if [[ $# -eq 0 ]]; then
    # Both profiles of the stress test ("stress or not stress" selects both and, because the
    # expression names "stress", un-skips the long one), and the model test.
    set -- tests/test_stress.py tests/test_model.py -m "stress or not stress"
fi

echo "== running under ThreadSanitizer: $*"
cd "$work"
status=0
"${norandom[@]}" env \
    LD_PRELOAD="$libtsan" \
    TSAN_OPTIONS="suppressions=$root/scripts/tsan.supp:halt_on_error=0:exitcode=66:report_signal_unsafe=0:second_deadlock_stack=1:history_size=4:print_suppressions=0" \
    PYTHONPATH="$work/src" \
    FASTDISPATCH_REQUIRE_EXTENSIONS=1 \
    FASTDISPATCH_STRESS_SECONDS="$seconds" \
    FASTDISPATCH_STRESS_HANG="${TSAN_STRESS_HANG:-600}" \
    FASTDISPATCH_STRESS_QUICK_SECONDS="${TSAN_QUICK_SECONDS:-5}" \
    "$py" -m pytest -p no:cacheprovider -q -s -o timeout=1800 "$@" 2>&1 | tee "$work/tsan.log" ||
    status=${PIPESTATUS[0]}
reports=$(grep -c '^WARNING: ThreadSanitizer' "$work/tsan.log" || true)
echo "== sanitize_tsan: $reports unsuppressed ThreadSanitizer report(s), pytest exit status $status"
if [[ $reports -gt 0 && $status -eq 0 ]]; then
    status=66
fi
exit "$status"
