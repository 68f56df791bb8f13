#!/usr/bin/env bash
# Profile scenario S1 (1,000 masters x 1,000 items, no-op handler) on the
# compiled core, to see where the time per item goes.
#
#   bench/profile.sh [SCENARIO] [SIZE] [CONTENDER]   # defaults: S1 full fd-cython
#
# Writes, under bench/results/:
#   profile-S1.svg   py-spy flame graph with native (C/Cython) frames
#   perf-S1.txt      perf's flat profile by symbol (if perf is installed and allowed)
#   perf-S1-callers.txt  perf's call graph of the hottest symbols
# Uses the fastdispatch that imports (installed or on PYTHONPATH), else ./src.
# PYTHON overrides the interpreter.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scenario="${1:-S1}"
size="${2:-full}"
contender="${3:-fd-cython}"
python="${PYTHON:-python}"
out="$here/results"
mkdir -p "$out"

# As run.py does: an importable fastdispatch (installed, or on PYTHONPATH) wins;
# otherwise use the source tree next to bench/.
if ! "$python" -c "import fastdispatch" 2>/dev/null && [[ -d "$here/../src/fastdispatch" ]]; then
    export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}"
fi
unset FASTDISPATCH_NO_EXTENSIONS
case "$contender" in
    fd-cython*) export FASTDISPATCH_REQUIRE_EXTENSIONS=1 ;;
    fd-python) export FASTDISPATCH_NO_EXTENSIONS=1 ;;
esac

child=("$python" "$here/child.py" "$contender" "$scenario" "$size")
echo "profiling: ${child[*]}" >&2

if command -v py-spy >/dev/null; then
    # --native shows the Cython/C frames under the Python ones; --threads keeps
    # the producer and the workers apart in the graph.
    py-spy record --native --threads --rate 1000 \
        -o "$out/profile-$scenario.svg" -- "${child[@]}"
    echo "wrote $out/profile-$scenario.svg" >&2
else
    echo "py-spy not found: skipping the flame graph (pip install py-spy)" >&2
fi

if command -v perf >/dev/null; then
    data="$(mktemp -t "perf-$scenario.XXXXXX")"
    trap 'rm -f "$data" "$data".*' EXIT
    # DWARF unwinding: CPython and the extension are built without frame pointers.
    if perf record -F 1999 --call-graph dwarf,16384 -o "$data" -- "${child[@]}" \
        >/dev/null 2>"$data.err"; then
        perf report -i "$data" --stdio --no-children -g none --sort dso,symbol \
            --percent-limit 0.3 >"$data.flat" 2>/dev/null || true
        grep -v '^$' "$data.flat" | head -100 >"$out/perf-$scenario.txt" || true
        perf report -i "$data" --stdio --no-children --sort symbol --percent-limit 2 \
            -g caller,1,callee,function,percent --max-stack 16 >"$data.tree" 2>/dev/null || true
        head -600 "$data.tree" >"$out/perf-$scenario-callers.txt" || true
        echo "wrote $out/perf-$scenario.txt and perf-$scenario-callers.txt" >&2
    else
        echo "perf record failed (perf_event_paranoid?): $(tail -1 "$data.err")" >&2
    fi
else
    echo "perf not found: skipping the perf profile" >&2
fi
