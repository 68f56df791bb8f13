"""Turn the runner's results into a markdown report and a PNG chart."""

from __future__ import annotations

import math
import statistics
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOOP, EXECUTOR, COMPILED, MANY, PURE, QUEUE = (
    "loop",
    "executor",
    "fd-cython",
    "fd-cython-many",
    "fd-python",
    "thread-per-master",
)
LATENCY = "S5"  # the one scenario whose value is a latency (lower is better)
# Typographic signs of the report, as escapes so the source stays free of look-alikes.
TIMES, DASH = "\u00d7", "\u2013"

Cells = dict[str, dict[str, dict[str, Any]]]


def si(v: float) -> str:
    """3 significant digits with a k/M suffix."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def _ok(cells: Cells, name: str, key: str) -> dict[str, Any] | None:
    cell = cells.get(name, {}).get(key)
    return cell if cell and cell.get("status") == "ok" else None


class _Notes:
    """Footnotes for cells that did not produce a number."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def mark(self, cell: dict[str, Any] | None) -> str:
        if cell is None:
            return "—"
        reason = cell.get("reason") or cell.get("status", "?")
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"{cell.get('status', '?')} [{self.reasons.index(reason) + 1}]"

    def markdown(self) -> str:
        return "".join(f"{i}. {r}\n" for i, r in enumerate(self.reasons, 1))


def ratios(cells: Cells, name: str, base: str, key: str) -> list[float]:
    """How many times better ``name`` is than ``base`` on ``key`` (>1: better),
    one ratio per round in which both ran.

    The two ran back to back in the same round, so a slow spell of the machine
    (these are shared VMs: the same bare loop runs at 19M or 33M items/s from one
    minute to the next) hits both sides of a pair, where a ratio of medians would
    compare one side's fast rounds with the other's slow ones. Results without
    per-round values (older JSON) give the ratio of the medians.
    """
    a, b = _ok(cells, name, key), _ok(cells, base, key)
    if not a or not b:
        return []

    def one(x: float, y: float) -> float | None:
        if not x or not y:
            return None
        return y / x if key == LATENCY else x / y

    ra, rb = a.get("by_round") or {}, b.get("by_round") or {}
    pairs = [one(ra[r], rb[r]) for r in ra if r in rb] or [one(a["value"], b["value"])]
    return [v for v in pairs if v is not None]


def ratio(cells: Cells, name: str, base: str, key: str) -> float | None:
    """The median of :func:`ratios`, or None if there is nothing to compare."""
    vals = ratios(cells, name, base, key)
    return statistics.median(vals) if vals else None


def _ratio_cell(cells: Cells, name: str, base: str, key: str) -> str:
    vals = ratios(cells, name, base, key)
    if not vals:
        return "—"
    med = f"{statistics.median(vals):.3g}{TIMES}"
    if len(vals) < 2 or name == base:
        return med
    return f"{med} ({min(vals):.3g}{DASH}{max(vals):.3g})"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _grid(results: dict[str, Any], keys: list[str], fmt: Callable[[str, str], str]) -> str:
    labels = results["labels"]
    header = ["contender", *keys]
    return _table(header, [[labels[n], *(fmt(n, k) for k in keys)] for n in labels])


def _bound(results: dict[str, Any], cell: dict[str, Any], key: str) -> str:
    """What a timeout still tells: the rate was below items / timeout."""
    if cell.get("status") != "timeout":
        return ""
    size = results["scenarios"][key]["size"]
    items = size["samples"] or size["masters"] * size["per_master"]
    return f": < {si(items / results['meta']['timeout_s'])}"


def _throughput_cell(cell: dict[str, Any]) -> str:
    if cell["rounds"] < 2:
        return f"**{si(cell['value'])}**"
    return f"**{si(cell['value'])}** ({si(cell['value_min'])}{DASH}{si(cell['value_max'])})"


def _floor_half(floor: dict[str, Any] | None, name: str, key: str) -> float | None:
    """The bracketed ratio of the faster-loop half (bench/floor.py), or None."""
    cell = (floor or {}).get(name, {}).get(key)
    return cell["fast_half"] if cell and cell.get("status") == "ok" else None


def _floor_section(floor: dict[str, Any], labels: dict[str, str]) -> str:
    rows = []
    for name, per_key in floor.items():
        for key, c in per_key.items():
            if c.get("status") != "ok":
                rows.append([labels.get(name, name), key, c.get("reason") or "no run", "", "", ""])
                continue
            slow = "—"
            if "slow_half" in c:
                slow = f"{c['slow_half']:.3g}{TIMES} (loop {si(c['slow_loop'])})"
            rows.append(
                [
                    labels.get(name, name),
                    key,
                    f"{c['median']:.3g}{TIMES} ({c['min']:.3g}{DASH}{c['max']:.3g}), n={c['n']}",
                    f"**{c['fast_half']:.3g}{TIMES}** (loop {si(c['fast_loop'])})",
                    slow,
                    str(len(c["runs"])),
                ]
            )
    header = ["contender", "scenario", "all pairs", "faster-loop half", "slower-loop half"]
    return (
        "\n## Ratio to the bare loop, bracketed in one process (`bench/floor.py`)\n\n"
        "Each child runs the loop, then the contender and the loop in turn; each contender "
        "run is divided by the mean of the two loop runs around it, a fraction of a second "
        "apart, so both sides of a ratio see the same host. The halves split the pairs by "
        "that loop speed; the faster half is the stricter reading of the floor.\n\n"
        + _table([*header, "children"], rows)
    )


def _targets(cells: Cells, floor: dict[str, Any] | None = None) -> str:
    def r(name: str, base: str, key: str) -> float | None:
        return ratio(cells, name, base, key)

    def rss(name: str) -> float | None:
        c = _ok(cells, name, "S3")
        return c["peak_rss_mb"] if c else None

    def p50(name: str) -> float | None:
        c = _ok(cells, name, LATENCY)
        return c["p50_us"] if c else None

    q = p50(QUEUE)
    lat = f"S5 compiled p50 ≤ queue.Queue + 1 thread ({q:.1f} µs)" if q else "S5 p50"
    x = TIMES
    rows_spec: list[tuple[str, Callable[[str], float | None], float, bool, str, bool]] = [
        # (target, measure(name), bound, at_least, unit, applies to dispatch_many)
        (f"S1 compiled ≥ 0.25{x} bare loop", lambda n: r(n, LOOP, "S1"), 0.25, True, x, True),
        (f"S1 compiled ≥ 10{x} executor recipe", lambda n: r(n, EXECUTOR, "S1"), 10, True, x, True),
        (f"S1 pure ≥ 2{x} executor recipe", lambda n: r(PURE, EXECUTOR, "S1"), 2, True, x, False),
        (f"S2 compiled ≥ 0.25{x} bare loop", lambda n: r(n, LOOP, "S2"), 0.25, True, x, True),
        (
            f"S1 compiled ≥ 0.25{x} bare loop, bracketed, faster-loop half",
            lambda n: _floor_half(floor, n, "S1"),
            0.25,
            True,
            x,
            True,
        ),
        (
            f"S2 compiled ≥ 0.25{x} bare loop, bracketed, faster-loop half",
            lambda n: _floor_half(floor, n, "S2"),
            0.25,
            True,
            x,
            True,
        ),
        ("S3 compiled peak RSS ≤ 300 MB", rss, 300, False, " MB", True),
        (f"S3 compiled ≥ 10{x} executor recipe", lambda n: r(n, EXECUTOR, "S3"), 10, True, x, True),
        (f"S6 compiled ≥ 5{x} executor recipe", lambda n: r(n, EXECUTOR, "S6"), 5, True, x, True),
        (lat, p50, q or 0.0, False, " µs", False),
    ]

    def judge(v: float | None, bound: float, at_least: bool, unit: str) -> str:
        if v is None:
            return "not measured"
        ok = v >= bound if at_least else v <= bound
        return f"{v:.3g}{unit} {'✅' if ok else '❌'}"

    rows = []
    for target, measure, bound, at_least, unit, many in rows_spec:
        rows.append(
            [
                target,
                judge(measure(COMPILED), bound, at_least, unit),
                judge(measure(MANY), bound, at_least, unit) if many else "—",
            ]
        )
    return _table(["target", "fastdispatch `dispatch`", "with `dispatch_many`"], rows)


def markdown(results: dict[str, Any]) -> str:
    """The whole report: throughput, ratios, RSS, latency, targets, footnotes."""
    meta, cells = results["meta"], results["cells"]
    keys = list(results["scenarios"])
    rate_keys = [k for k in keys if k != LATENCY]
    notes = _Notes()
    out = [
        "# fastdispatch benchmark results\n",
        f"{meta['date']} · {meta['nproc']} CPUs ({meta['cpu']}) · "
        f"{meta['python_impl']} {meta['python']} · {meta['platform']} · "
        f"commit {meta['commit'] or '?'} · size **{meta['size']}** · "
        f"{meta['rounds']} rounds (median, min{DASH}max) · "
        f"timeout {meta['timeout_s']:g} s per run · "
        f"took {meta['elapsed_s']:.0f} s · load average {meta['loadavg_start']} at start, "
        f"{meta['loadavg']} at end · fastdispatch from {meta.get('fastdispatch_tree', '?')}\n",
    ]
    out.append(
        "\n" + "".join(f"- **{k}**: {v['title']}\n" for k, v in results["scenarios"].items())
    )
    if meta["size"] != "full":
        out.append(
            f"\n> Sizes are reduced (`{meta['size']}`), so these numbers are indicative only; "
            "the committed results come from a full run.\n"
        )
    if rate_keys:
        out += [
            "\n## Throughput, items/s (higher is better)\n\n",
            _grid(
                results,
                rate_keys,
                lambda n, k: (
                    _throughput_cell(c)
                    if (c := _ok(cells, n, k))
                    else notes.mark(cells[n][k]) + _bound(results, cells[n][k], k)
                ),
            ),
        ]
    for base, title in ((LOOP, "the bare loop"), (EXECUTOR, "the executor recipe")):
        if base in cells:
            out += [
                f"\n## Ratio to {title} (>1 = faster than {title}; S5: its p50 / this p50)\n\n"
                "Each round runs every contender back to back, so each round gives one ratio; "
                "the cell is the median of those, with their range.\n\n",
                _grid(results, keys, lambda n, k, b=base: _ratio_cell(cells, n, b, k)),
            ]
    out += [
        "\n## Peak RSS of the child process, MB (ru_maxrss; includes the interpreter)\n\n",
        _grid(
            results,
            keys,
            lambda n, k: f"{c['peak_rss_mb']:.0f}" if (c := _ok(cells, n, k)) else "—",
        ),
    ]
    extra = [k for k in ("S4", LATENCY) if k in keys]
    if extra:
        header, rows = ["contender"], []
        if "S4" in keys:
            header.append("S4 efficiency (ideal time / time)")
        if LATENCY in keys:
            header += ["S5 p50 µs", "S5 p99 µs"]
        for n, label in results["labels"].items():
            row = [label]
            if "S4" in keys:
                c = _ok(cells, n, "S4")
                row.append(f"{c['efficiency']:.2f}" if c else notes.mark(cells[n]["S4"]))
            if LATENCY in keys:
                c = _ok(cells, n, LATENCY)
                row += (
                    [f"{c['p50_us']:.1f}", f"{c['p99_us']:.1f}"]
                    if c
                    else [notes.mark(cells[n][LATENCY]), "—"]
                )
            rows.append(row)
        out += ["\n## I/O efficiency (S4) and latency (S5)\n\n", _table(header, rows)]
    floor = results.get("floor")
    if floor:
        out.append(_floor_section(floor, results["labels"]))
    if COMPILED in cells:
        out += ["\n## Targets\n\n", _targets(cells, floor)]
    if notes.reasons:
        out += ["\n## Cells without a number\n\n", notes.markdown()]
    partial = [
        f"- {results['labels'][n]} / {k}: {c['reason']}"
        for n in cells
        for k, c in cells[n].items()
        if c.get("status") == "ok" and c.get("reason")
    ]
    if partial:
        out += [
            "\n## Rounds that failed (the cell is the median of the others)\n\n",
            "\n".join(partial) + "\n",
        ]
    micro = results.get("micro")
    if micro:
        out.append("\n## Dispatch cost per item (pyperf, `bench/micro.py`)\n\n")
        if "compare_to" in micro:
            out.append("```\n" + micro["compare_to"] + "\n```\n")
        for core in ("python", "cython"):
            if core in micro:
                out.append(f"\n{core} core:\n```\n{micro[core]}\n```\n")
    keyed = results.get("executor")
    if keyed:
        from executor import markdown as executor_markdown  # bench/executor.py

        out += ["\n## KeyedExecutor vs the standard library\n\n", executor_markdown(keyed)]
    return "".join(out)


#: The asyncio scenarios drawn as throughput bars (A5 is a latency, A1F a ratio).
AIO_RATE_KEYS = ("A1", "A3", "A3N", "A4", "A6")
#: The asyncio scenarios whose peak RSS is drawn (their memory target: A3_RSS_MB).
AIO_RSS_KEYS = ("A3", "A3N")
A3_RSS_MB = 150


def _aio_panels(aio: dict[str, Any], ax: Any, rx: Any, colors: Callable[[int], Any]) -> None:
    """bench/aio.py's results: items/s per scenario on *ax*, A3's peak RSS on *rx*."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    cells: Cells = aio["cells"]
    names = list(cells)
    color = {n: colors(i) for i, n in enumerate(names)}
    keys = [k for k in AIO_RATE_KEYS if k in aio["scenarios"]]
    width = 0.8 / max(1, len(names))
    ok = [c for n in names for k in keys if (c := cells[n].get(k, {})).get("status") == "ok"]
    if ok:
        low = min(c["value"]["min"] for c in ok)
        ax.set_ylim(
            bottom=10 ** math.floor(math.log10(low / 2)),
            top=max(c["value"]["max"] for c in ok) * 12,
        )
    for i, n in enumerate(names):
        for j, k in enumerate(keys):
            x = j + (i - (len(names) - 1) / 2) * width
            c = cells[n].get(k, {})
            if c.get("status") != "ok":
                continue  # n/a cells (the bare loop has no A4/A6): no bar
            v = c["value"]
            err = [[v["median"] - v["min"]], [v["max"] - v["median"]]]
            ax.bar(x, v["median"], width, color=color[n], yerr=err, capsize=2)
            ax.text(x, v["max"] * 1.15, si(v["median"]), rotation=90, ha="center", fontsize=6.5)
    ax.set_yscale("log")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(
        [f"{k}\n" + textwrap.fill(aio["scenarios"][k], 22) for k in keys], fontsize=7
    )
    ax.set_ylabel(f"items/s (log scale, median; whiskers min{DASH}max)")
    meta = aio["meta"]
    ax.set_title(
        f"asyncio: AsyncDispatcher vs recipes (bench/aio.py, {meta['size']} sizes, "
        f"{meta['rounds']} rounds, {meta['date']})",
        fontsize=10,
    )
    ax.grid(axis="y", which="major", alpha=0.4)
    ax.legend(
        handles=[Patch(color=color[n], label=n) for n in names],
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.3),
        ncol=len(names),
    )
    rows = [
        (f"{n} {k}", c["peak_rss_mb"], color[n])
        for k in AIO_RSS_KEYS
        for n in names
        if (c := cells[n].get(k, {})).get("status") == "ok"
    ]
    ys = range(len(rows))
    rx.barh(
        list(ys),
        [r["median"] for _, r, _ in rows],
        0.7,
        color=[c for _, _, c in rows],
        xerr=[
            [r["median"] - r["min"] for _, r, _ in rows],
            [r["max"] - r["median"] for _, r, _ in rows],
        ],
    )
    for y, (_, r, _) in zip(ys, rows, strict=True):
        rx.text(r["max"] * 1.1, y, f"{r['median']:.0f}", va="center", fontsize=7)
    rx.axvline(A3_RSS_MB, color="red", linestyle="--", linewidth=1, label=f"{A3_RSS_MB} MB target")
    rx.set_yticks(list(ys))
    rx.set_yticklabels([label for label, _, _ in rows], fontsize=7)
    rx.invert_yaxis()
    rx.set_xscale("log")
    rx.xaxis.set_major_formatter(ScalarFormatter())
    rx.xaxis.set_minor_formatter(NullFormatter())
    rx.set_xlabel("peak RSS, MB (log scale)")
    rx.set_title("A3 / A3N memory (lower is better)", fontsize=10)
    rx.grid(axis="x", which="major", alpha=0.4)
    rx.legend(fontsize=8, loc="lower right")


def chart(results: dict[str, Any], path: Path) -> None:
    """Grouped log-scale bars of throughput per scenario, and S5 latency; below
    them, when the asyncio step ran, its throughput and A3's memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cells, labels, meta = results["cells"], results["labels"], results["meta"]
    keys = list(results["scenarios"])
    rate_keys = [k for k in keys if k != LATENCY]
    names = list(labels)
    colors = {n: plt.get_cmap("tab10")(i) for i, n in enumerate(names)}
    has_lat = LATENCY in keys
    aio = results.get("aio")
    has_aio = bool(aio and "cells" in aio)
    rows = 2 if has_aio else 1
    fig = plt.figure(figsize=(15 if has_lat or has_aio else 11, 6.5 * rows))
    grid = fig.add_gridspec(rows, 2, width_ratios=[3, 1.3])
    ax = fig.add_subplot(grid[0, 0] if has_lat else grid[0, :])
    width = 0.8 / max(1, len(names))
    ok = [c for n in names for k in rate_keys if (c := _ok(cells, n, k))]
    bottom = 10 ** math.floor(math.log10(min(c["value_min"] for c in ok) / 2)) if ok else 1.0
    top = max((c["value_max"] for c in ok), default=10.0) * 12  # room for the value labels
    for i, n in enumerate(names):
        for j, k in enumerate(rate_keys):
            x = j + (i - (len(names) - 1) / 2) * width
            c = _ok(cells, n, k)
            if c:
                err = [[c["value"] - c["value_min"]], [c["value_max"] - c["value"]]]
                ax.bar(
                    x,
                    c["value"],
                    width,
                    color=colors[n],
                    yerr=err,
                    capsize=2,
                    label=None,
                )
                ax.text(
                    x,
                    c["value_max"] * 1.15,
                    si(c["value"]),
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=6.5,
                )
            else:
                status = cells[n][k].get("status", "?")
                ax.text(
                    x,
                    bottom * 1.3,
                    status + _bound(results, cells[n][k], k),
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color=colors[n],
                )
    ax.set_yscale("log")
    ax.set_ylim(bottom=bottom, top=top)
    ax.set_xticks(range(len(rate_keys)))
    ax.set_xticklabels(
        [f"{k}\n" + textwrap.fill(results["scenarios"][k]["title"], 19) for k in rate_keys],
        fontsize=8,
    )
    ax.set_ylabel(f"items/s (log scale, median; whiskers min{DASH}max)")
    ax.set_title("Throughput (higher is better)")
    ax.grid(axis="y", which="major", alpha=0.4)
    ax.legend(
        handles=[Patch(color=colors[n], label=labels[n]) for n in names],
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.22),
        ncol=4,
    )
    if has_lat:
        lx = fig.add_subplot(grid[0, 1])
        lat = [(n, c) for n in names if (c := _ok(cells, n, LATENCY))]
        ys = range(len(lat))
        lx.barh(
            [y + 0.2 for y in ys],
            [c["p99_us"] for _, c in lat],
            0.4,
            color=[colors[n] for n, _ in lat],
            alpha=0.45,
            label="p99",
        )
        lx.barh(
            [y - 0.2 for y in ys],
            [c["p50_us"] for _, c in lat],
            0.4,
            color=[colors[n] for n, _ in lat],
            label="p50",
        )
        for y, (_, c) in zip(ys, lat, strict=True):
            for dy, v in ((-0.2, c["p50_us"]), (0.2, c["p99_us"])):
                lx.text(v * 1.1, y + dy, f"{v:.3g}", va="center", fontsize=7)
        lx.set_yticks(list(ys))
        lx.set_yticklabels([labels[n] for n, _ in lat], fontsize=8)
        lx.invert_yaxis()
        lx.set_xscale("log")
        lx.set_xlim(right=max(c["p99_us"] for _, c in lat) * 4 if lat else None)
        lx.set_xlabel("µs, dispatch → handler entry (log scale)")
        lx.set_title("S5 latency at light load (lower is better)")
        lx.grid(axis="x", which="major", alpha=0.4)
        lx.legend(fontsize=8, loc="lower right")
    if has_aio:
        assert aio is not None
        _aio_panels(
            aio, fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1]), plt.get_cmap("tab10")
        )
    fig.suptitle(
        f"fastdispatch vs peers · {meta['size']} sizes · {meta['nproc']} CPUs {meta['cpu']} · "
        f"Python {meta['python']} · {meta['date']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
