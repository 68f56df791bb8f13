"""Dispatch-cost micro-benchmarks with pyperf, for one fastdispatch core.

Usage::

    python bench/micro.py --core cython -o bench/results/micro-cython.json
    python bench/micro.py --core python -o bench/results/micro-python.json
    python -m pyperf compare_to bench/results/micro-python.json \
        bench/results/micro-cython.json --table

pyperf options apply (``--fast``, ``--rigorous``, ``-p``, ``-n`` ...). Each
value is the time per item of:

* ``dispatch``: one ``dispatch(work, master)`` call over 1,000 masters, with
  the only worker held busy, so only the producer side is timed (the queued
  items are cancelled afterwards, untimed);
* ``dispatch_many``: the same, through one ``dispatch_many`` call, per item;
* ``dispatch+handle``: dispatch to 1,000 masters with a no-op handler and
  default workers, until ``wait()`` returns (S1's cost per item).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

MASTERS = 1000
_CORE_ENV = {
    "cython": ("FASTDISPATCH_REQUIRE_EXTENSIONS", "FASTDISPATCH_NO_EXTENSIONS"),
    "python": ("FASTDISPATCH_NO_EXTENSIONS", "FASTDISPATCH_REQUIRE_EXTENSIONS"),
}


def _core_from_argv(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--core" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--core="):
            return arg.split("=", 1)[1]
    return "cython"


def _select_core(core: str) -> None:
    # Must happen before fastdispatch is imported: the core is chosen at import.
    on, off = _CORE_ENV[core]
    os.environ[on] = "1"
    os.environ.pop(off, None)


def _masters(loops: int) -> list[int]:
    return (list(range(MASTERS)) * (loops // MASTERS + 1))[:loops]


class _HeldWorker:
    """A one-worker dispatcher whose worker is stuck in a gate item."""

    GATE = object()

    def __init__(self) -> None:
        from fastdispatch import Dispatcher

        self.started, self.release = threading.Event(), threading.Event()

        def handler(work: Any) -> None:
            if work is self.GATE:
                self.started.set()
                self.release.wait()

        self.d = Dispatcher(handler, max_workers=1)
        self.d.dispatch(self.GATE, "gate")
        if not self.started.wait(30):
            raise RuntimeError("the worker never started the gate item")

    def dispose(self) -> None:
        self.d.close(wait=False, cancel_pending=True)
        self.release.set()
        self.d.close()


def bench_dispatch(loops: int) -> float:
    held = _HeldWorker()
    masters = _masters(loops)
    dispatch = held.d.dispatch
    t0 = time.perf_counter()
    for m in masters:
        dispatch(None, m)
    dt = time.perf_counter() - t0
    held.dispose()
    return dt


def bench_dispatch_many(loops: int) -> float:
    held = _HeldWorker()
    pairs = [(None, m) for m in _masters(loops)]
    t0 = time.perf_counter()
    held.d.dispatch_many(pairs)
    dt = time.perf_counter() - t0
    held.dispose()
    return dt


def _noop(work: Any) -> None:
    pass


def bench_dispatch_handle(loops: int) -> float:
    from fastdispatch import Dispatcher

    masters = _masters(loops)
    d = Dispatcher(_noop)
    dispatch = d.dispatch
    t0 = time.perf_counter()
    for m in masters:
        dispatch(None, m)
    d.wait()
    dt = time.perf_counter() - t0
    d.close()
    return dt


def main() -> None:
    core = _core_from_argv(sys.argv)
    _select_core(core)
    import pyperf

    def add_cmdline_args(cmd: list[str], args: Any) -> None:
        cmd.extend(["--core", args.core])

    runner = pyperf.Runner(add_cmdline_args=add_cmdline_args)
    runner.argparser.add_argument("--core", choices=sorted(_CORE_ENV), default="cython")
    args = runner.parse_args()
    if args.worker:
        import fastdispatch

        if core != fastdispatch.IMPLEMENTATION:
            raise SystemExit(f"asked for the {core} core, got {fastdispatch.IMPLEMENTATION}")
    runner.metadata["fastdispatch_core"] = core
    runner.bench_time_func("dispatch", bench_dispatch)
    runner.bench_time_func("dispatch_many", bench_dispatch_many)
    runner.bench_time_func("dispatch+handle", bench_dispatch_handle)


if __name__ == "__main__":
    main()
