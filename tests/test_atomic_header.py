"""The portable C layer (src/fastdispatch/_atomic.h and _parking.h) on its own, in C.

Compiled with each C compiler found here, once through the compiler's
builtins and once through C11 <stdatomic.h> (FD_FORCE_C11). The MSVC branch
cannot be compiled on this machine; the wheels' Windows build covers it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADER_DIR = ROOT / "src" / "fastdispatch"
SOURCE = Path(__file__).resolve().parent / "c" / "test_atomic.c"

COMPILERS = [c for c in ("gcc", "clang", "clang-14") if shutil.which(c)]
MODES = {"builtins": ["-std=c99"], "c11": ["-std=c11", "-DFD_FORCE_C11"]}

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="the test driver uses pthreads"),
    pytest.mark.skipif(not (HEADER_DIR / "_atomic.h").is_file(), reason="needs a source tree"),
]


@pytest.mark.skipif(not COMPILERS, reason="no C compiler on PATH")
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("cc", COMPILERS or ["cc"])
def test_atomic_header(cc: str, mode: str, tmp_path: Path) -> None:
    exe = tmp_path / "test_atomic"
    cmd = [
        cc,
        "-O2",
        "-Wall",
        "-Wextra",
        "-Werror",
        *MODES[mode],
        "-I",
        str(HEADER_DIR),
        str(SOURCE),
        "-o",
        str(exe),
        "-pthread",
    ]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
