#!/usr/bin/env bash
# A short run of the compiled core under valgrind memcheck: a third opinion after ASan and
# the refcount tests.
#
#   scripts/valgrind_memcheck.sh            # exit 0 when clean (see below), 1 otherwise
#
# Environment: PYTHON (default: python3); valgrind on PATH. Cython >= 3.1 and setuptools are
# fetched into the temp dir if PYTHON lacks them.
#
# How:
# * The tree is copied to a temp dir and the extension built there with -g -O1 (exact stacks;
#   the developer's build is not touched).
# * PYTHONMALLOC=malloc: every Python object is a malloc block valgrind can track (pymalloc
#   arenas would hide use-after-free of objects and make leaks invisible).
# * The workload (below) takes every path of the core: dispatch / submit / dispatch_many,
#   handler errors, QueueFull, DispatcherClosed, user-cancelled futures, close with
#   cancel_pending, one-off masters (mailbox create/free), ring chunks growing past their
#   first size, a dispatcher dropped without close(), all on two workers.
# * Verdict: any memcheck *error* (invalid read/write/free, use of uninitialised values) whose
#   stack passes through _core_c fails the run; so does a "definitely lost" block allocated
#   under _core_c. CPython's own exit-time "definitely lost" blocks (there are a few even for
#   `python -c pass`) are counted and printed but do not fail the run; "possibly lost" and
#   "still reachable" are not collected at all (everything alive at exit is, by design).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
cc=${CC:-gcc}
command -v valgrind >/dev/null || { echo "valgrind_memcheck: valgrind not found" >&2; exit 2; }

source "$root/scripts/build_copy.sh"
build_copy valgrind "-g -O1 -fno-omit-frame-pointer" ""

cat >"$work/workload.py" <<'EOF'
import gc
import threading

from fastdispatch import DispatcherClosed, QueueFull
from fastdispatch import _core_c
from fastdispatch._dispatcher import Dispatcher as Base


class D(Base):
    _Core = _core_c.Core


def handle(w):
    if isinstance(w, int) and w % 7 == 0:
        raise ValueError(w)
    return w


def quiet(exc, work, master):
    pass


for rnd in range(2):
    d = D(handle, max_workers=2, capacity=64, on_error=quiet)
    for i in range(3000):
        d.dispatch(i, i % 13)                   # rings grow past their first chunk
    futures = [d.submit(i, ("s", i % 5)) for i in range(600)]
    assert d.dispatch_many((i, ("one-off", rnd, i)) for i in range(2000)) == 2000
    d.wait()
    assert sum(f.exception() is not None for f in futures) == len(range(0, 600, 7))
    # refusals
    gate = threading.Event()
    h = D(lambda w: gate.wait(), max_workers=1, capacity=2, on_error=quiet)
    h.dispatch("hold", "m")
    h.dispatch("q1", "m")
    h.dispatch("q2", "m")
    for call in (lambda: h.dispatch("x", "m", block=False),
                 lambda: h.submit("x", "m", timeout=0.01),
                 lambda: h.dispatch_many([("y", "n"), ("x", "m")], block=False)):
        try:
            call()
        except QueueFull:
            pass
    try:
        h.dispatch("x", ["unhashable"])
    except TypeError:
        pass
    # user cancel + close(cancel_pending=True)
    fs = [h.submit(i, ("c", i)) for i in range(30)]  # one per master: capacity 2
    for f in fs[::2]:
        f.cancel()
    returned = h.close(wait=False, cancel_pending=True)
    gate.set()
    h.close()
    try:
        h.dispatch("late", "m")
    except DispatcherClosed:
        pass
    del returned, fs
    d.close()
    # dropped without close(): intake closes when collected, workers drain and exit
    g = D(handle, max_workers=2, on_error=quiet)
    for i in range(500):
        g.dispatch(i, i % 3)
    del g
    gc.collect()
print("workload done")
EOF

log=$work/memcheck.log
echo "== valgrind memcheck (a few minutes)"
status=0
(cd "$work" && PYTHONMALLOC=malloc PYTHONPATH="$work/src" FASTDISPATCH_REQUIRE_EXTENSIONS=1 \
    valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
    --errors-for-leak-kinds=none --num-callers=40 --track-origins=no --log-file="$log" \
    "$py" workload.py) || status=$?
echo "== workload exit status $status"

verdict=0
("$py" - "$log" <<'EOF'
import re
import sys

text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
records = re.split(r"\n==\d+== \n", text)
ours_errors, ours_lost, other_lost, other_errors = [], [], [], []
for rec in records:
    body = "\n".join(line.split("== ", 1)[-1] for line in rec.splitlines())
    if "definitely lost in loss record" in body:
        (ours_lost if "_core_c" in body else other_lost).append(body)
    elif re.search(r"^(Invalid (read|write|free)|Conditional jump|Use of uninitialised|"
                   r"Syscall param|Mismatched free|Source and destination overlap)",
                   body, re.M):
        (ours_errors if "_core_c" in body else other_errors).append(body)
lost = re.search(r"definitely lost: ([\d,]+) bytes in ([\d,]+) blocks", text)
summary = re.search(r"ERROR SUMMARY: (\d+) errors", text)
print(f"memcheck: {summary.group(0) if summary else 'no ERROR SUMMARY?'}")
print(f"  definitely lost, whole process: {lost.group(0) if lost else '0 bytes'}")
print(f"  errors with _core_c on the stack: {len(ours_errors)}")
print(f"  definitely-lost blocks allocated under _core_c: {len(ours_lost)}")
print(f"  other (CPython) errors: {len(other_errors)}, definitely-lost records: {len(other_lost)}")
for rec in (ours_errors + ours_lost)[:10]:
    print("----\n" + rec)
sys.exit(1 if ours_errors or ours_lost else 0)
EOF
) || verdict=$?
if [[ $status -ne 0 ]]; then
    echo "valgrind_memcheck: the workload failed (exit $status); log tail:" >&2
    tail -40 "$log" >&2
    exit 1
fi
exit "$verdict"
