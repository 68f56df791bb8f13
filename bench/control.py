"""What the per-master control options cost when no item fails: a paired run.

Usage::

    python bench/control.py --baseline DIR [--rounds 7] [--size quick]

Runs S1 and S6 (see ``scenarios.py``) on the compiled core for these variants,
interleaved round by round (one fresh process per measurement), so that every
ratio compares runs of the same round on the same machine state:

* ``base``: the fastdispatch found under ``DIR/src`` (a built checkout of the
  commit to compare with, e.g. ``git archive REV | tar -x -C DIR`` then
  ``python setup.py build_ext --inplace`` there), no options;
* ``off``: this tree, ``retry=None, pause_on_error=False`` (the defaults);
* ``retry``: this tree, ``retry=Retry()``;
* ``pause``: this tree, ``pause_on_error=True``.

Without ``--baseline`` the ``base`` variant is left out. Prints, per scenario,
each variant's items/s (median and min-max over rounds) and the per-round
ratios ``off/base``, ``retry/off`` and ``pause/off`` (median and min-max).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
SCENARIOS = ("S1", "S6")
OPTIONS: dict[str, dict[str, Any]] = {
    "base": {},
    "off": {},
    "retry": {"retry": True},
    "pause": {"pause_on_error": True},
}
RATIOS = (("off", "base"), ("retry", "off"), ("pause", "off"))


def child(scenario: str, size: str, options: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: run *scenario* once or more with a Dispatcher built with *options*."""
    sys.path.insert(0, str(HERE))
    import child as bench_child
    import fastdispatch
    import peers
    import scenarios

    if fastdispatch.IMPLEMENTATION != "cython":
        raise RuntimeError(f"the compiled core is required, got {fastdispatch.IMPLEMENTATION}")
    kwargs = dict(options)
    if kwargs.pop("retry", False):
        kwargs["retry"] = fastdispatch.Retry()

    class Contender(peers.FastDispatch):
        def __init__(self, handler: Any, max_workers: int | None) -> None:
            self._d = fastdispatch.Dispatcher(handler, max_workers=max_workers, **kwargs)
            self.dispatch = self._d.dispatch  # type: ignore[method-assign]

    peers.CONTENDERS["fd-control"] = peers.Spec(Contender, "fastdispatch with options", {})
    spec = scenarios.SCENARIOS[scenario]
    result = bench_child.repeat(
        lambda: spec.run("fd-control", spec.sizes[size]), bench_child.MIN_TIME[size], scenario
    )
    result["fastdispatch_file"] = fastdispatch.__file__
    return result


def measure(variant: str, scenario: str, size: str, baseline: Path | None) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTDISPATCH_")}
    env["FASTDISPATCH_REQUIRE_EXTENSIONS"] = "1"
    src = (baseline if variant == "base" and baseline else TREE) / "src"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            json.dumps([scenario, size, OPTIONS[variant]]),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["fastdispatch_file"].startswith(str(src)):
        raise RuntimeError(f"{variant} imported {result['fastdispatch_file']}, not from {src}")
    return float(result["value"])


def spread(values: list[float], fmt: str) -> str:
    return (
        f"{format(statistics.median(values), fmt)} "
        f"({format(min(values), fmt)}-{format(max(values), fmt)})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--baseline", type=Path, help="a built checkout to compare with")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--size", choices=["full", "quick", "tiny"], default="quick")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        scenario, size, options = json.loads(args.child)
        print(json.dumps(child(scenario, size, options)))
        return 0
    variants = [v for v in OPTIONS if v != "base" or args.baseline]
    values: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for scenario in SCENARIOS:
            # Rotate the order each round: no variant always runs first.
            turn = variants[r % len(variants) :] + variants[: r % len(variants)]
            for variant in turn:
                v = measure(variant, scenario, args.size, args.baseline)
                values.setdefault((scenario, variant), []).append(v)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"size {args.size}, {args.rounds} rounds; items/s median (min-max)")
    for scenario in SCENARIOS:
        for variant in variants:
            print(f"{scenario} {variant:6} {spread(values[scenario, variant], ',.0f')}")
        for a, b in RATIOS:
            if a in variants and b in variants:
                ratios = [
                    x / y for x, y in zip(values[scenario, a], values[scenario, b], strict=True)
                ]
                print(f"{scenario} {a}/{b} {spread(ratios, '.3f')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
