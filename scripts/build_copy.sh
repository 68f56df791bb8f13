# Sourced by the sanitizer and valgrind scripts: copy the tree to a scratch directory and build
# the compiled cores there in place, so the developer's own build in src/ is never touched.
#
#   source scripts/build_copy.sh
#   build_copy NAME CFLAGS LDFLAGS    # sets $work (removed on exit) and $so (the thread core)
#
# Needs $py (the interpreter) and $cc (the C compiler). The build needs Cython >= 3.1 and
# setuptools in $py; a venv made by `pip install .` has neither (pip builds in isolation), so
# they are fetched into the scratch directory, never into $py's environment. A failed build
# prints its log and exits non-zero.

build_copy() {
    local name=$1 cflags=$2 ldflags=$3 root buildpath=
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    work=$(mktemp -d "${TMPDIR:-/tmp}/fastdispatch-$name.XXXXXX")
    # shellcheck disable=SC2064  # expand $work now: the trap outlives this function
    trap "rm -rf '$work'" EXIT

    echo "== copying the tree to $work"
    (cd "$root" && git ls-files -z --cached --others --exclude-standard) |
        (cd "$root" && xargs -0 cp --parents -t "$work")
    find "$work/src" \( -name '*.so' -o -name '*.pyd' -o -name '_core_c.c' \) -delete

    if ! "$py" -c 'import Cython, setuptools, sys; sys.exit(tuple(map(int, Cython.__version__.split(".")[:2])) < (3, 1))' 2>/dev/null; then
        echo "== installing Cython and setuptools for the build into $work/buildtools"
        "$py" -m pip install -q --target "$work/buildtools" "cython>=3.1" setuptools
        buildpath=$work/buildtools
    fi
    echo "== building the compiled cores with CFLAGS=$cflags"
    (
        cd "$work"
        CC=$cc CFLAGS="$cflags" LDFLAGS="$ldflags" FASTDISPATCH_REQUIRE_EXTENSIONS=1 \
            PYTHONPATH="$buildpath" "$py" setup.py -q build_ext --inplace >"$work/build.log" 2>&1 ||
            { cat "$work/build.log"; exit 1; }
    )
    so=$(ls "$work"/src/fastdispatch/_core_c*.so)
}
