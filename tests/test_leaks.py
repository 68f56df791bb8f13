"""Reference counts balance on every path, in both cores.

The compiled core handles object references by hand (items live in a C ring
as raw ``PyObject *``), so a missing or extra ``Py_DECREF`` on some path would
leak or, worse, free an object still in use. Two kinds of check, per path:

* **weakrefs die after ``wait()``**: once ``wait()`` has returned (and the
  caller dropped what it holds: futures, the list ``close`` returned, the
  exception it caught), no work item, master or exception is kept alive by
  the dispatcher. Checked straight after ``wait()``, many times over, so a
  worker that still holds its last item when it reports completion is caught.
* **``sys.getrefcount`` is unchanged after a round trip**: the *same* work and
  master objects go through a path 1,000 times; a leak of one reference per
  item shows as +1,000, an extra decref as a negative count (and usually a
  crash). The count may lag completion by an instant, so it is polled briefly.

Paths: dispatch (handled, failed), submit (result, exception, future
cancelled by the user), close(cancel_pending=True), refusals (QueueFull with
block=False and on timeout, DispatcherClosed, unhashable master, bad pairs),
dispatch_many (whole and stopped part-way), pending(), and a worker's own
re-dispatch.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from fastdispatch import DispatcherClosed, QueueFull, Retry
from helpers import WAIT, until

FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()
ROUNDS = 1000

pytestmark = pytest.mark.skipif(
    not hasattr(sys, "getrefcount"), reason="needs CPython reference counts"
)


class Work:
    """A weak-referenceable work item."""

    __slots__ = ("__weakref__", "fail", "n")

    def __init__(self, n: int = 0, fail: bool = False) -> None:
        self.n = n
        self.fail = fail


class Key:
    """A weak-referenceable, hashable master (hash by identity)."""

    __slots__ = ("__weakref__",)


class Boom(Exception):
    pass


class Handler:
    """Raises for failing works; remembers nothing."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.errors: list[weakref.ref[BaseException]] = []

    def handle(self, work: Any) -> Any:
        if not self.gate.is_set():
            self.gate.wait(WAIT)
        if getattr(work, "fail", False):
            raise Boom()
        return None

    def on_error(self, exc: BaseException, work: Any, master: Any) -> None:
        self.errors.append(weakref.ref(exc))  # only a weak one: exceptions must die too


def drained(d: Any) -> None:
    assert d.wait(timeout=WAIT), d.stats()


def refcount(obj: object) -> int:
    """``sys.getrefcount`` seen from a callee, as ``settle_refcount`` sees it."""
    return sys.getrefcount(obj)


def settle_refcount(obj: object, expected: int, what: str) -> None:
    """Poll until ``sys.getrefcount(obj) == expected``: completion may be reported an
    instant before a worker drops its reference, a leak never settles."""
    deadline = time.monotonic() + 2.0
    while True:
        got = sys.getrefcount(obj)
        if got == expected:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: refcount {got}, expected {expected} ({got - expected:+d})")
        time.sleep(0.001)


# -- weakrefs die straight after wait() ---------------------------------------------


def test_works_masters_and_exceptions_die_after_wait(make: Any) -> None:
    """Single items, checked straight after wait(): no reference outlives completion."""
    h = Handler()
    d = make(h, max_workers=1, on_error=h.on_error)
    late: list[int] = []
    cycles: list[int] = []
    gc.collect()
    for i in range(300):
        work, master = Work(i, fail=i % 3 == 0), Key()
        refs = (weakref.ref(work), weakref.ref(master))
        if i % 2:
            d.dispatch(work, master)
        else:
            fut = d.submit(work, master)
            fut.exception(WAIT)
            del fut
        del work, master
        drained(d)
        if FREE_THREADED and (
            any(r() is not None for r in refs) or any(e() is not None for e in h.errors)
        ):
            # Free-threaded CPython frees an object that a worker created and
            # another thread released only when that worker runs Python code
            # again (biased reference counting): let it handle one more item.
            d.dispatch(Work(-1, fail=False), Key())
            drained(d)
        if any(r() is not None for r in refs) or any(e() is not None for e in h.errors):
            gc.collect()
            if any(r() is not None for r in refs) or any(e() is not None for e in h.errors):
                late.append(i)  # still referenced by the dispatcher
            else:
                cycles.append(i)  # only a reference cycle kept it (freed by the gc)
        h.errors.clear()
    assert not late, (
        f"{len(late)}/300 items (e.g. #{late[:5]}) were still referenced when wait() returned"
    )
    assert not cycles, (
        f"{len(cycles)}/300 items (e.g. #{cycles[:5]}: "
        f"{['submit' if i % 2 == 0 else 'dispatch' for i in cycles[:5]]}, "
        f"{['failed' if i % 3 == 0 else 'ok' for i in cycles[:5]]}) "
        "were kept alive by a reference cycle until the garbage collector ran"
    )


def _weak_round(d: Any, h: Handler, path: Callable[[Any, list[Any], list[Any]], Any]) -> None:
    works = [Work(i, fail=i % 2 == 1) for i in range(50)]
    masters = [Key() for _ in range(5)]
    refs = [weakref.ref(o) for o in works + masters]
    held = path(d, works, masters)
    drained(d)
    del held, works, masters
    gc.collect()  # exceptions with tracebacks form reference cycles
    alive = [r() for r in refs if r() is not None]
    alive_exc = [e() for e in h.errors if e() is not None]
    assert not alive, f"{len(alive)} works/masters still alive: {alive[:3]}"
    assert not alive_exc, f"{len(alive_exc)} exceptions still alive"


def _dispatch(d: Any, works: list[Any], masters: list[Any]) -> Any:
    for i, w in enumerate(works):
        d.dispatch(w, masters[i % 5])


def _submit(d: Any, works: list[Any], masters: list[Any]) -> Any:
    futures = [d.submit(w, masters[i % 5]) for i, w in enumerate(works)]
    for f in futures:
        f.exception(WAIT)
    return futures  # held until after wait(), then dropped


def _many(d: Any, works: list[Any], masters: list[Any]) -> Any:
    assert d.dispatch_many((w, masters[i % 5]) for i, w in enumerate(works)) == len(works)


PATHS = {"dispatch": _dispatch, "submit": _submit, "dispatch_many": _many}


@pytest.mark.parametrize("path", list(PATHS))
def test_weakrefs_die_on_each_path(make: Any, path: str) -> None:
    h = Handler()
    d = make(h, max_workers=2, on_error=h.on_error)
    _weak_round(d, h, PATHS[path])


def test_weakrefs_die_after_close_cancel_and_user_cancel(make: Any) -> None:
    h = Handler()
    h.gate.clear()
    d = make(h, max_workers=1, on_error=h.on_error)
    works = [Work(i) for i in range(40)]
    masters = [Key() for _ in range(4)]
    refs = [weakref.ref(o) for o in works + masters]
    futures = [d.submit(w, masters[i % 4]) for i, w in enumerate(works[:20])]
    for i, w in enumerate(works[20:]):
        d.dispatch(w, masters[i % 4])
    del w
    cancelled = [f.cancel() for f in futures[5:10]]  # user cancels (the first may run)
    returned = d.close(wait=False, cancel_pending=True)
    h.gate.set()
    drained(d)
    assert sum(cancelled) >= 4 and len(returned) >= 30
    del works, masters, futures, returned
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert not alive, f"{len(alive)} cancelled works/masters still alive"


def test_refused_works_are_not_kept(make: Any) -> None:
    """QueueFull, DispatcherClosed and bad input: the refused work is not retained."""
    h = Handler()
    h.gate.clear()
    d = make(h, max_workers=1, capacity=1, on_error=h.on_error)
    master = Key()
    d.dispatch(Work(), master)  # running (blocked), or queued
    d.dispatch(Work(), "other")
    refused = []
    for call in (
        lambda w: d.dispatch(w, "other", block=False),
        lambda w: d.submit(w, "other", timeout=0.01),
        lambda w: d.dispatch_many([(Work(), "free"), (w, "other")], block=False),
        lambda w: d.dispatch(w, ["unhashable"]),
        lambda w: d.dispatch_many([(w, {"unhashable": 1})]),
        lambda w: d.dispatch_many([w]),  # not a pair
    ):
        w = Work()
        refused.append(weakref.ref(w))
        with pytest.raises((QueueFull, TypeError)):
            call(w)
        del w
    h.gate.set()
    drained(d)
    d.close()
    w = Work()
    refused.append(weakref.ref(w))
    with pytest.raises(DispatcherClosed):
        d.submit(w, master)
    del w
    gc.collect()
    assert [r() for r in refused] == [None] * len(refused)


# -- sys.getrefcount balances over 1,000 round trips ---------------------------------


def _round_trip(name: str, d: Any, work: Any, master: Any, h: Handler) -> None:
    """Send the same *work* and *master* through path *name* ROUNDS times."""
    if name == "dispatch":
        for _ in range(ROUNDS):
            d.dispatch(work, master)
    elif name == "submit":
        futures = [d.submit(work, master) for _ in range(ROUNDS)]
        for f in futures:
            f.exception(WAIT)
        del futures, f
    elif name == "dispatch_many":
        assert d.dispatch_many([(work, master)] * ROUNDS) == ROUNDS
    elif name == "user-cancel":
        h.gate.clear()
        d.dispatch(Work(), master)  # holds the worker
        futures = [d.submit(work, master) for _ in range(ROUNDS)]
        assert all(f.cancel() for f in futures)
        h.gate.set()
        del futures
    elif name == "close-cancel":
        h.gate.clear()
        d.dispatch(Work(), master)
        for _ in range(ROUNDS // 2):
            d.dispatch(work, master)
            d.submit(work, master)
        returned = d.close(wait=False, cancel_pending=True)
        assert len(returned) >= ROUNDS
        h.gate.set()
        del returned
    elif name == "refused":
        h.gate.clear()
        d.dispatch(Work(), master)
        d.dispatch(Work(), master)  # full (capacity 1) once the first started
        for _ in range(ROUNDS // 4):
            for call in (
                lambda: d.dispatch(work, master, block=False),
                lambda: d.submit(work, master, block=False),
                lambda: d.dispatch(work, master, timeout=0),
                lambda: d.dispatch_many([(work, master)], block=False),
            ):
                with contextlib.suppress(QueueFull):
                    call()
        h.gate.set()
    elif name == "closed":
        d.close()
        for _ in range(ROUNDS // 3):
            for call in (
                lambda: d.dispatch(work, master),
                lambda: d.submit(work, master),
                lambda: d.dispatch_many([(work, master)]),
            ):
                with pytest.raises(DispatcherClosed):
                    call()
    elif name == "pending":
        for _ in range(ROUNDS):
            d.pending(master)
            d.stats()
    elif name == "redispatch":
        # The handler re-dispatches the same objects from inside a worker.
        d.dispatch(("again", ROUNDS), master)
    else:  # pragma: no cover
        raise AssertionError(name)


ROUND_TRIPS = [
    "dispatch",
    "submit",
    "dispatch_many",
    "user-cancel",
    "close-cancel",
    "refused",
    "closed",
    "pending",
    "redispatch",
]


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "error"])
@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_refcounts_balance(make: Any, name: str, fail: bool) -> None:
    holder: dict[str, Any] = {}
    work = Work(fail=fail)
    master = Key()

    class Redispatching(Handler):
        def handle(self, item: Any) -> Any:
            if isinstance(item, tuple):
                left = item[1] - 1
                if left:
                    holder["d"].dispatch(("again", left), master)
                holder["d"].dispatch(work, master)
                return None
            return super().handle(item)

    h = Redispatching()
    capacity = 1 if name == "refused" else None
    d = holder["d"] = make(h, max_workers=2, capacity=capacity, on_error=h.on_error)
    d.dispatch(Work(), Key())  # start the workers before taking the baseline
    drained(d)
    gc.collect()
    base_work, base_master = refcount(work), refcount(master)
    _round_trip(name, d, work, master, h)
    drained(d)
    h.errors.clear()
    gc.collect()
    settle_refcount(work, base_work, f"work after {ROUNDS} x {name}")
    settle_refcount(master, base_master, f"master after {ROUNDS} x {name}")
    assert d.stats().active_masters == 0


def test_masters_of_many_types_balance(make: Any) -> None:
    """Masters that are ints, strs, tuples, frozensets and instances: their
    refcounts balance (the compiled core looks them up in a dict by hand)."""
    d = make(lambda w: None, max_workers=2)
    big = int("1" * 21)  # built at run time: no constant shared with code objects
    masters: list[Any] = [
        big,
        "".join(["m"] * 50),
        ("tuple", big + 1),
        frozenset({"a", str(big)}),
        Key(),
        float(big),
        str(big).encode(),
    ]
    base = [refcount(masters[i]) for i in range(len(masters))]
    for _ in range(200):
        for m in masters:
            d.dispatch(None, m)
            d.pending(m)
    del m
    drained(d)
    for i in range(len(masters)):  # not zip(): its cached result tuple holds a reference
        settle_refcount(masters[i], base[i], f"master {masters[i]!r}")


def _control_trip(name: str, d: Any, work: Any, master: Any, h: Handler) -> None:
    """Send *work* (which fails) and *master* through a per-master control path."""
    n = ROUNDS // 10
    if name == "retry":  # every item runs three times, through the backoff timer
        for _ in range(n):
            d.dispatch(work, master)
        futures = [d.submit(work, master) for _ in range(n)]
        for f in futures:
            assert isinstance(f.exception(WAIT), Boom)
        del futures, f
    elif name == "pause-resume":
        for _ in range(n):
            d.dispatch(work, master)
            future = d.submit(work, master)  # held by the pause the first one causes
            assert d.wait(WAIT, master=master)
            d.resume(master)
            assert isinstance(future.exception(WAIT), Boom)
            assert d.wait(WAIT, master=master)
            d.resume(master)
        del future
    elif name == "cancel":
        h.gate.clear()
        d.dispatch(Work(), master)  # holds the worker
        until(lambda: d.stats().running == 1, what="the holding item to start")
        for _ in range(n):
            d.dispatch(work, master)
            d.submit(work, master)
        taken = d.cancel(master)
        assert len(taken) == 2 * n
        h.gate.set()
        del taken
    elif name == "pause-close":
        d.dispatch(work, master)
        for _ in range(n):
            d.dispatch(work, master)
            d.submit(work, master)
        assert d.wait(WAIT)
        returned = d.close()
        assert len(returned) == 2 * n
        del returned
    else:  # pragma: no cover
        raise AssertionError(name)


@pytest.mark.parametrize("name", ["retry", "pause-resume", "cancel", "pause-close"])
def test_refcounts_balance_under_per_master_control(make: Any, name: str) -> None:
    work = Work(fail=True)
    master = Key()
    h = Handler()
    d = make(
        h,
        max_workers=2,
        on_error=h.on_error,
        retry=Retry(attempts=3, backoff=0) if name == "retry" else None,
        pause_on_error=name.startswith("pause"),
    )
    d.dispatch(Work(), Key())  # start the workers before taking the baseline
    drained(d)
    gc.collect()
    base_work, base_master = refcount(work), refcount(master)
    _control_trip(name, d, work, master, h)
    drained(d)
    h.errors.clear()
    gc.collect()
    settle_refcount(work, base_work, f"work after {name}")
    settle_refcount(master, base_master, f"master after {name}")
    assert d.stats().active_masters == 0
