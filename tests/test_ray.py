"""RayDispatcher on a real Ray cluster started by the tests (no mocks of Ray).

One local cluster (two CPUs, loopback only) serves the module; the two-node
test and the start-a-cluster test run in child processes, each with its own
cluster. Without Ray installed the module is skipped, unless
FASTDISPATCH_REQUIRE_RAY=1 is set (CI), where a missing Ray is an error.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from conftest import run_python, subprocess_env
from fastdispatch import DispatcherClosed, QueueFull
from fastdispatch._env import env_flag
from fastdispatch.ray import RayDispatcher, ShardLost, shard_index
from helpers import WAIT, assert_identity, until

# Ray stays on this machine: no usage report, and every Ray process on loopback.
# Ray rewrites 127.0.0.1 (also ray.init's _node_ip_address) to the host's outside
# address unless multi-node clusters are switched off, which it reads at import.
LOOPBACK_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
os.environ.update(LOOPBACK_ENV)

if env_flag("FASTDISPATCH_REQUIRE_RAY"):
    import ray
else:
    ray = pytest.importorskip("ray")

TESTS = Path(__file__).resolve().parent
EXAMPLE = TESTS.parent / "examples" / "ray_example.py"
#: Ray calls from a handler or a test wait at most this long (Ray is slower than threads).
RAY_WAIT = 3 * WAIT


# -- Ray-side helpers (imported by name in the workers: the cluster has tests/ on its path) --


@ray.remote(num_cpus=0)
class Signal:
    """A cross-process Event."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def send(self) -> None:
        self.event.set()

    async def wait(self) -> None:
        await self.event.wait()


@ray.remote(num_cpus=0)
class Log:
    """Records handler runs in the order they finished."""

    def __init__(self) -> None:
        self.entries: list[Any] = []

    def append(self, entry: Any) -> None:
        self.entries.append(entry)

    def get(self) -> list[Any]:
        return self.entries


class Boom(Exception):
    pass


class OrderChecker:
    """A handler for ``(master, seq)`` works that fails on any order, overlap or repeat."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[Any, int] = {}
        self.active: set[Any] = set()

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return OrderChecker, ()  # each shard starts with fresh state (and its own lock)

    def handle(self, work: tuple[Any, int]) -> tuple[int, str]:
        import fastdispatch

        master, seq = work
        with self.lock:
            if master in self.active:
                raise AssertionError(f"two items of {master!r} at once")
            if self.last.get(master, -1) != seq - 1:
                raise AssertionError(f"{master!r}: {seq} after {self.last.get(master)}")
            self.active.add(master)
            self.last[master] = seq
        with self.lock:
            self.active.discard(master)
        return seq, fastdispatch.IMPLEMENTATION


class Gated:
    """Works ``(master, seq, hold)``: a held work waits for *gate*; every finished run is logged."""

    def __init__(self, gate: Any, log: Any) -> None:
        self.gate = gate
        self.log = log

    def __call__(self, work: tuple[Any, int, bool]) -> int:
        master, seq, hold = work
        if hold:
            ray.get(self.gate.wait.remote(), timeout=RAY_WAIT)
        ray.get(self.log.append.remote((master, seq)), timeout=RAY_WAIT)
        return seq


def lock_or_same(work: str) -> Any:
    return threading.Lock() if work == "lock" else work


def maybe_boom(work: int) -> int:
    if work % 3 == 0:
        raise Boom(f"work {work}")
    return work * 10


# -- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster() -> Iterator[None]:
    """One local Ray cluster for the session: 2 CPUs, loopback, no dashboard."""
    saved = {"PYTHONPATH": os.environ.get("PYTHONPATH")}
    # the workers import this module's handlers by name
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), saved["PYTHONPATH"]) if p)
    try:
        ray.init(
            num_cpus=2,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def make(cluster: None) -> Iterator[Any]:
    """``make(handler, **options)``: a RayDispatcher closed (cancelling) at teardown."""
    made: list[RayDispatcher] = []

    def factory(handler: Any, **options: Any) -> RayDispatcher:
        rd = RayDispatcher(handler, **options)
        made.append(rd)
        return rd

    yield factory
    for rd in made:
        rd.close(wait=False, cancel_pending=True)
    for rd in made:
        assert rd.wait(timeout=RAY_WAIT), rd.stats()


def shard_pid(rd: RayDispatcher, index: int) -> int:
    return int(ray.get(rd._slots[index].actor.pid.remote(), timeout=RAY_WAIT))


def shard_running(rd: RayDispatcher, index: int) -> int:
    return int(ray.get(rd._slots[index].actor.stats.remote(), timeout=RAY_WAIT)[5])


# -- the contract ------------------------------------------------------------------


def test_every_item_once_in_order_over_many_masters(make: Any, core_name: str) -> None:
    # the shards' workers use the core under test
    env = {"FASTDISPATCH_NO_EXTENSIONS": "1"} if core_name == "python" else {}
    env["FASTDISPATCH_REQUIRE_EXTENSIONS"] = "1" if core_name == "cython" else "0"
    rd = make(
        OrderChecker(),
        shards=3,
        batch_size=64,
        actor_options={"runtime_env": {"env_vars": env}},
    )
    masters, per_master = 300, 20
    futures: dict[tuple[int, int], Future[Any]] = {}
    for seq in range(per_master):
        for m in range(masters):
            futures[m, seq] = rd.submit((m, seq), m)
    assert rd.wait(timeout=RAY_WAIT), rd.stats()
    for (_m, seq), future in futures.items():
        assert future.result(timeout=0) == (seq, core_name)
    stats = rd.stats()
    assert stats.dispatched == stats.completed == masters * per_master, stats
    assert_identity(stats)


def test_results_and_exceptions_come_back(make: Any) -> None:
    rd = make(maybe_boom, shards=2, batch_size=5, workers_per_shard=2)
    futures = {i: rd.submit(i, f"m{i % 4}") for i in range(30)}
    for i in range(30, 60):
        rd.dispatch(i, f"m{i % 4}")  # failures go to on_error on the shard (logged there)
    assert rd.wait(timeout=RAY_WAIT)
    for i, future in futures.items():
        if i % 3 == 0:
            exc = future.exception(timeout=0)
            assert isinstance(exc, Boom) and str(exc) == f"work {i}"
        else:
            assert future.result(timeout=0) == i * 10
    stats = rd.stats()
    assert (stats.completed, stats.failed) == (40, 20), stats
    assert 1 <= stats.workers <= 2 * 2, stats
    assert_identity(stats)


def test_an_unpicklable_result_fails_its_future_only(make: Any) -> None:
    rd = make(lock_or_same, shards=1, batch_size=3)
    futures = [rd.submit(work, "m") for work in ("a", "lock", "b")]
    assert futures[0].result(timeout=RAY_WAIT) == "a"
    with pytest.raises(TypeError, match="cannot be pickled"):
        futures[1].result(timeout=RAY_WAIT)
    assert futures[2].result(timeout=RAY_WAIT) == "b"
    assert rd._slots[0].epoch == 0  # the shard lived on


def test_backpressure_bounds_the_driver_buffer(make: Any) -> None:
    gate, log = Signal.remote(), Log.remote()
    batch, window, capacity = 2, 1, 1
    rd = make(
        Gated(gate, log),
        shards=1,
        capacity=capacity,
        batch_size=batch,
        max_inflight_batches=window,
        flush_interval=0.001,
    )
    accepted = 0
    with pytest.raises(QueueFull):
        for seq in range(100):
            rd.dispatch(("m", seq, True), "m", timeout=0.5)
            accepted += 1
    # shard: one running + `capacity` queued + one batch blocked; driver: a full buffer
    assert accepted <= 1 + capacity + batch * (window + 1), accepted
    with pytest.raises(QueueFull):
        rd.dispatch(("m", accepted, True), "m", block=False)
    stats = rd.stats()
    assert stats.dispatched == accepted and stats.completed == 0, stats
    ray.get(gate.send.remote(), timeout=RAY_WAIT)
    assert rd.wait(timeout=RAY_WAIT), rd.stats()
    assert ray.get(log.get.remote(), timeout=RAY_WAIT) == [("m", s) for s in range(accepted)]
    rd.dispatch(("m", accepted, False), "m", block=False)  # room again
    assert rd.wait(timeout=RAY_WAIT)


def test_close_cancel_pending_returns_unstarted_items_fifo(make: Any) -> None:
    gate, log = Signal.remote(), Log.remote()
    rd = make(Gated(gate, log), shards=1, batch_size=3)
    futures = [rd.submit(("m", seq, seq == 0), "m") for seq in range(10)]
    rd.flush()
    until(lambda: shard_running(rd, 0) == 1, RAY_WAIT, "the first item running")
    taken = rd.close(wait=False, cancel_pending=True)
    assert taken == [(("m", seq, False), "m") for seq in range(1, 10)]
    assert all(f.cancelled() for f in futures[1:])
    with pytest.raises(DispatcherClosed):
        rd.dispatch(("m", 10, False), "m")
    ray.get(gate.send.remote(), timeout=RAY_WAIT)
    assert futures[0].result(timeout=RAY_WAIT) == 0
    assert rd.wait(timeout=RAY_WAIT)
    stats = rd.stats()
    assert (stats.completed, stats.cancelled) == (1, 9), stats
    assert_identity(stats)
    assert rd.close(cancel_pending=True) == []


def test_context_manager_go_aliases_and_bad_input(make: Any) -> None:
    log = Log.remote()
    with RayDispatcher(Gated(None, log), shards=2, batch_size=4) as rd:
        for seq in range(10):
            rd.Dispatch(("m", seq, False), "m")
        with pytest.raises(TypeError, match="hashable"):
            rd.dispatch(("x", 0, False), ["unhashable"])
        with pytest.raises(ValueError, match="timeout"):
            rd.dispatch(("x", 0, False), "x", timeout=-1)
    assert rd.closed
    assert ray.get(log.get.remote(), timeout=RAY_WAIT) == [("m", s) for s in range(10)]
    assert rd.stats().dispatched == 10
    assert rd.Close() == []


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("shards", 0, ValueError),
        ("batch_size", "10", TypeError),
        ("max_inflight_batches", 0, ValueError),
        ("flush_interval", -1, ValueError),
        ("redeliver", 1, TypeError),
        ("actor_options", [], TypeError),
    ],
)
def test_bad_options_are_rejected_before_any_shard_starts(
    option: str, value: Any, error: type
) -> None:
    with pytest.raises(error, match=option):
        RayDispatcher(print, **{option: value})


def test_bad_handler_is_rejected() -> None:
    with pytest.raises(TypeError, match="handler"):
        RayDispatcher(42)


# -- faults -----------------------------------------------------------------------


def run_with_a_killed_shard(make: Any, redeliver: bool) -> tuple[Any, dict[Any, Future[Any]], Any]:
    """Run items, SIGKILL shard 0 while it holds some, let the rest finish."""
    gate, log = Signal.remote(), Log.remote()
    lost: list[tuple[Any, Any]] = []

    def on_error(exc: BaseException, work: Any, master: Any) -> None:
        # pickled into the shards too (a copy there); this one sees ShardLost
        lost.append((type(exc), master))

    rd = make(Gated(gate, log), shards=2, batch_size=8, redeliver=redeliver, on_error=on_error)
    masters = [f"m{i}" for i in range(40)]
    futures = {}
    for seq in range(3):  # runs before the kill
        for m in masters:
            futures[m, seq] = rd.submit((m, seq, False), m)
    assert rd.wait(timeout=RAY_WAIT)
    for seq in range(3, 6):  # held on the gate when the shard dies
        for m in masters:
            futures[m, seq] = rd.submit((m, seq, True), m)
    rd.dispatch(("d", 0, True), "d")
    rd.flush()
    until(lambda: shard_running(rd, 0) > 0, RAY_WAIT, "shard 0 running held items")
    os.kill(shard_pid(rd, 0), signal.SIGKILL)
    until(lambda: rd._slots[0].epoch == 1, RAY_WAIT, "the driver noticing the death")
    ray.get(gate.send.remote(), timeout=RAY_WAIT)
    for m in masters:  # after the death: the masters of shard 0 go to a fresh shard
        futures[m, 6] = rd.submit((m, 6, False), m)
    assert rd.wait(timeout=RAY_WAIT), rd.stats()
    stats = rd.stats()
    assert_identity(stats)
    assert stats.dispatched == stats.completed + stats.failed
    runs = ray.get(log.get.remote(), timeout=RAY_WAIT)
    return rd, futures, (runs, lost, stats)


def test_killed_shard_fails_its_unfinished_items_with_shard_lost(make: Any) -> None:
    _rd, futures, (runs, lost, stats) = run_with_a_killed_shard(make, redeliver=False)
    failed = 0
    for (m, seq), future in futures.items():
        exc = future.exception(timeout=0)
        if shard_index(m, 2) == 0 and 3 <= seq <= 5:
            assert isinstance(exc, ShardLost) and exc.shard == 0, (m, seq, exc)
            failed += 1
        else:
            assert exc is None and future.result(timeout=0) == seq, (m, seq, exc)
    assert failed > 0
    d_lost = [(ShardLost, "d")] if shard_index("d", 2) == 0 else []
    assert lost == d_lost  # on_error (on the driver) for the dispatched one
    assert stats.failed == failed + len(d_lost), stats
    assert len(runs) == len(set(runs)), "at most once: nothing ran twice"


def test_killed_shard_with_redeliver_completes_every_item_in_order(make: Any) -> None:
    _rd, futures, (runs, lost, stats) = run_with_a_killed_shard(make, redeliver=True)
    assert all(f.result(timeout=0) == seq for (_m, seq), f in futures.items())
    assert lost == [] and stats.failed == 0, stats
    by_master: dict[Any, list[int]] = defaultdict(list)
    for master, seq in runs:
        by_master[master].append(seq)
    assert set(by_master) == {f"m{i}" for i in range(40)} | {"d"}
    for master, seqs in by_master.items():
        expected = list(range(7)) if master != "d" else [0]
        # every item ran; a re-sent item may run again, but each run of the
        # master restarts at an earlier item and goes on in order from there
        assert sorted(set(seqs)) == expected, (master, seqs)
        for a, b in itertools.pairwise(seqs):
            assert b == a + 1 or b <= a, (master, seqs)


# -- clusters of their own (child processes) ---------------------------------------

TWO_NODES = """
import json, os
import ray
from ray.cluster_utils import Cluster
from fastdispatch.ray import RayDispatcher

def node(work):
    return ray.get_runtime_context().get_node_id()

args = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
cluster = Cluster(initialize_head=True, head_node_args=args)
try:
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    ray.init(address=cluster.address, _node_ip_address="127.0.0.1")
    with RayDispatcher(node, shards=2, batch_size=10) as rd:
        futures = {m: rd.submit(m, m) for m in range(100)}
        nodes = {m: f.result(timeout=60) for m, f in futures.items()}
    print(json.dumps({"nodes": len({n["NodeID"] for n in ray.nodes() if n["Alive"]}),
                      "used": sorted(set(nodes.values()))}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""

OWN_CLUSTER = """
import json, time
import ray
from fastdispatch import DispatcherClosed
from fastdispatch.ray import RayDispatcher

assert not ray.is_initialized()
with RayDispatcher(lambda w: w + 1, batch_size=10) as rd:
    out = [rd.submit(i, i % 5).result(timeout=60) for i in range(20)]
result = {"started": ray.is_initialized(), "out": out, "shards": rd.shards,
          "ips": sorted({n["NodeManagerAddress"] for n in ray.nodes()})}

# Ray shut down under an open dispatcher with items in flight: nothing hangs or is lost
slow = RayDispatcher(lambda w: time.sleep(60), shards=1, batch_size=1)
futures = [slow.submit(i, "m") for i in range(5)]
slow.flush()
ray.shutdown()
t0 = time.monotonic()
slow.close()
result["close_s"] = time.monotonic() - t0
result["errors"] = sorted({type(f.exception(timeout=30)).__name__ for f in futures})
try:
    slow.dispatch(0, "m")
except DispatcherClosed:
    result["closed"] = True
# a Ray call racing the shutdown may have auto-started another local cluster: stop it
result["restarted"] = ray.is_initialized()
ray.shutdown()
print(json.dumps(result))
"""


EXIT_DRAIN = """
import sys
from fastdispatch.ray import RayDispatcher

path = sys.argv[1]

def record(work):
    with open(path, "a") as f:
        f.write(f"{work}\\n")

# left open, its items still buffered on the driver (flush_interval: 60 s) at exit
rd = RayDispatcher(record, shards=1, batch_size=7, flush_interval=60.0)
for i in range(50):
    rd.dispatch(i, "m")
print('{"dispatched": %d}' % rd.stats().dispatched)
"""


def ray_child(code: str, *args: str) -> dict[str, Any]:
    env = subprocess_env(None, **LOOPBACK_ENV)
    env.pop("RAY_ADDRESS", None)
    result = run_python(code, env, *args, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_two_node_cluster_spreads_masters_over_both_nodes() -> None:
    out = ray_child(TWO_NODES)
    assert out["nodes"] == 2
    assert len(out["used"]) == 2, out


def test_starts_a_local_cluster_and_survives_its_shutdown() -> None:
    out = ray_child(OWN_CLUSTER)
    assert out["started"] is True and out["out"] == [i + 1 for i in range(20)], out
    assert out["ips"] == ["127.0.0.1"] and out["shards"] >= 1, out
    # the unfinished items failed with ShardLost at once, instead of hanging close()
    assert out["errors"] == ["ShardLost"] and out["closed"] is True, out
    assert out["close_s"] < WAIT, out
    print("Ray restarted by a call racing ray.shutdown():", out["restarted"])


def test_the_example_runs() -> None:
    result = run_python(
        EXAMPLE.read_text(encoding="utf-8"), subprocess_env(None, **LOOPBACK_ENV), timeout=240
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "'alice': [1, 3, 6, 10, 15]" in result.stdout, result.stdout


def test_an_open_dispatcher_is_drained_at_interpreter_exit(tmp_path: Path) -> None:
    path = tmp_path / "handled.txt"
    assert ray_child(EXIT_DRAIN, str(path)) == {"dispatched": 50}
    assert path.read_text().split() == [str(i) for i in range(50)]
