"""The contenders: fastdispatch and what a Python user would otherwise write.

Every contender has the same shape so that a scenario can drive any of them:
``dispatch(work, master)`` for one item, ``produce(pairs)`` for a producer
loop over ``(work, master)`` pairs, and ``finish()``, which returns once every
item is handled and the contender's threads are gone. A contender is built by
``make(name, handler, max_workers)``; nothing here is imported by fastdispatch.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

Handler = Callable[[Any], object]
Pairs = Iterable[tuple[Any, Hashable]]

log = logging.getLogger("bench.peers")

#: Items a drain task of the executor recipe handles before it yields its
#: worker to other keys (the same fairness bound fastdispatch promises).
EXECUTOR_BATCH = 1024


class Contender:
    """Base: a per-item producer loop over ``dispatch``."""

    #: Peers that need one OS thread per master say so (see ``limits``).
    thread_per_master = False

    def dispatch(self, work: Any, master: Hashable) -> None:
        raise NotImplementedError

    def produce(self, pairs: Pairs) -> None:
        dispatch = self.dispatch  # hoisted: the loop is the measured hot path
        for work, master in pairs:
            dispatch(work, master)

    def finish(self) -> None:
        raise NotImplementedError


class BareLoop(Contender):
    """The floor: call the handler directly, no threads, no queue."""

    def __init__(self, handler: Handler, max_workers: int | None) -> None:
        self._handler = handler

    def dispatch(self, work: Any, master: Hashable) -> None:
        self._handler(work)

    def produce(self, pairs: Pairs) -> None:
        handler = self._handler
        for work, _master in pairs:
            handler(work)

    def finish(self) -> None:
        pass


class FastDispatch(Contender):
    """fastdispatch, whichever core the process imported, one ``dispatch`` per item."""

    def __init__(self, handler: Handler, max_workers: int | None) -> None:
        from fastdispatch import Dispatcher

        self._d = Dispatcher(handler, max_workers=max_workers)
        # The bound method itself, so the producer loop pays exactly what a user pays.
        self.dispatch = self._d.dispatch  # type: ignore[method-assign]

    def finish(self) -> None:
        self._d.close(wait=True)
        # One call, after the work: a benchmark of a dispatcher that lost or
        # failed items would be meaningless, so say so instead of timing it.
        st = self._d.stats()
        if st.failed or st.cancelled or st.completed != st.dispatched:
            raise RuntimeError(f"fastdispatch did not handle every item: {st}")


class FastDispatchMany(FastDispatch):
    """fastdispatch fed through ``dispatch_many`` (one call per producer)."""

    def produce(self, pairs: Pairs) -> None:
        self._d.dispatch_many(pairs)


class KeyedExecutor(Contender):
    """``ThreadPoolExecutor`` with per-key serial chaining: today's recipe.

    Each busy key has a deque; the dispatch that takes a key from idle to
    busy submits one drain task, which pops that key's items until the deque
    is empty (or ``EXECUTOR_BATCH`` items, then it resubmits itself so other
    keys get a turn). Only the idle/busy transitions take the lock on the
    drain side; producers take it to append, because appending to a deque the
    drain task has just retired would lose the item.
    """

    def __init__(self, handler: Handler, max_workers: int | None) -> None:
        self._handler = handler
        self._pool = ThreadPoolExecutor(max_workers=max_workers)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queues: dict[Hashable, deque[Any]] = {}

    def dispatch(self, work: Any, master: Hashable) -> None:
        with self._lock:
            q = self._queues.get(master)
            if q is not None:
                q.append(work)
                return
            self._queues[master] = q = deque((work,))
        self._pool.submit(self._drain, master, q)

    def _drain(self, master: Hashable, q: deque[Any]) -> None:
        handler = self._handler
        popleft = q.popleft
        for _ in range(EXECUTOR_BATCH):
            try:
                work = popleft()  # only this task pops: atomic, no lock needed
            except IndexError:
                with self._lock:
                    if q:  # a producer appended after we found it empty
                        continue
                    del self._queues[master]
                    if not self._queues:
                        self._idle.notify_all()
                return
            try:
                handler(work)
            except Exception:
                log.exception("handler failed for master %r", master)
        self._pool.submit(self._drain, master, q)

    def finish(self) -> None:
        with self._idle:
            while self._queues:
                self._idle.wait()
        self._pool.shutdown(wait=True)


_STOP = object()


class ThreadPerMaster(Contender):
    """godispatch's shape in Python: one thread and one ``queue.Queue`` per master.

    As in godispatch, a master's thread is started by its first item and lives
    until ``finish`` (Go's ``Close``), which stops and joins them all.
    """

    thread_per_master = True

    def __init__(self, handler: Handler, max_workers: int | None) -> None:
        self._handler = handler
        self._lock = threading.Lock()
        self._queues: dict[Hashable, queue.Queue[Any]] = {}
        self._threads: list[threading.Thread] = []

    def dispatch(self, work: Any, master: Hashable) -> None:
        q = self._queues.get(master)
        if q is None:
            q = self._start(master)
        q.put(work)

    def _start(self, master: Hashable) -> queue.Queue[Any]:
        with self._lock:  # several producers may race to create the same master
            q = self._queues.get(master)
            if q is None:
                q = queue.Queue()
                t = threading.Thread(target=self._serve, args=(q,), daemon=True)
                t.start()
                self._threads.append(t)
                self._queues[master] = q
            return q

    def _serve(self, q: queue.Queue[Any]) -> None:
        handler, get = self._handler, q.get
        while (work := get()) is not _STOP:
            try:
                handler(work)
            except Exception:
                log.exception("handler failed")

    def finish(self) -> None:
        for q in self._queues.values():
            q.put(_STOP)
        for t in self._threads:
            t.join()


class PykkaActors(Contender):
    """Pykka: one ``ThreadingActor`` per master, items sent with ``tell``."""

    thread_per_master = True

    def __init__(self, handler: Handler, max_workers: int | None) -> None:
        import pykka

        class HandlerActor(pykka.ThreadingActor):
            def on_receive(self, message: Any) -> None:
                handler(message)

        self._actor_class = HandlerActor
        self._lock = threading.Lock()
        self._refs: dict[Hashable, Any] = {}

    def dispatch(self, work: Any, master: Hashable) -> None:
        ref = self._refs.get(master)
        if ref is None:
            with self._lock:
                ref = self._refs.get(master)
                if ref is None:
                    ref = self._refs[master] = self._actor_class.start()
        ref.tell(work)

    def finish(self) -> None:
        import pykka

        # Ask all to stop at once (each handles what it has first), then wait.
        pykka.get_all([ref.stop(block=False) for ref in self._refs.values()])


@dataclass(frozen=True)
class Spec:
    """How to run one contender: its class, its row label, the env it needs."""

    factory: Callable[[Handler, int | None], Contender]
    label: str
    env: dict[str, str]
    expect_impl: str | None = None  # fastdispatch.IMPLEMENTATION it must report


_COMPILED = {"FASTDISPATCH_REQUIRE_EXTENSIONS": "1"}
_PURE = {"FASTDISPATCH_NO_EXTENSIONS": "1"}

#: The contenders, in table order. Keys are the names used on the command line.
CONTENDERS: dict[str, Spec] = {
    "fd-cython": Spec(FastDispatch, "fastdispatch compiled", _COMPILED, "cython"),
    "fd-cython-many": Spec(
        FastDispatchMany, "fastdispatch compiled, dispatch_many", _COMPILED, "cython"
    ),
    "fd-python": Spec(FastDispatch, "fastdispatch pure-Python", _PURE, "python"),
    "executor": Spec(KeyedExecutor, "ThreadPoolExecutor + per-key chaining", {}),
    "thread-per-master": Spec(ThreadPerMaster, "thread + queue.Queue per master", {}),
    "pykka": Spec(PykkaActors, "Pykka, actor per master", {}),
    "loop": Spec(BareLoop, "bare for loop (floor)", {}),
}

#: The fastdispatch switches a child must not inherit from the runner's env.
FD_ENV_VARS = ("FASTDISPATCH_REQUIRE_EXTENSIONS", "FASTDISPATCH_NO_EXTENSIONS")


def make(name: str, handler: Handler, max_workers: int | None) -> Contender:
    """Build contender ``name`` around ``handler``."""
    return CONTENDERS[name].factory(handler, max_workers)


def thread_limit() -> tuple[int, str]:
    """The most OS threads this machine lets one user start, and why."""
    import resource

    limits: list[tuple[int, str]] = []
    soft, _hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != resource.RLIM_INFINITY:
        limits.append((soft, "RLIMIT_NPROC"))
    for path in ("/proc/sys/kernel/threads-max", "/proc/sys/kernel/pid_max"):
        try:
            with open(path) as f:
                limits.append((int(f.read()), path.rsplit("/", 1)[1]))
        except (OSError, ValueError):
            pass
    if not limits:
        return (os.cpu_count() or 1) * 10_000, "unknown OS limit"
    return min(limits)
