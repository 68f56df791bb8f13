"""``RayDispatcher``: the keyed contract with masters sharded over Ray actors.

The driver keeps, per shard, a buffer of items not yet sent and the items sent
but not reported done (``sent``): that is what a dead shard's items are failed
or re-sent from. One background thread (the pump) sends timed batches, reads
the shards' acknowledgements and completions, and replaces dead shards.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from .._dispatcher import (
    _check_bool,
    _check_int,
    _check_timeout,
    _guarded,
    _log_failure,
    _register_atexit,
    _resolve_handler,
)
from .._errors import DispatcherClosed, QueueFull
from .._types import DispatcherStats, Master, Work
from ._errors import ShardLost
from ._hashing import shard_index
from ._shard import CANCELLED, FAILED, Shard

__all__ = ["RayDispatcher"]

logger = logging.getLogger("fastdispatch")

_R = TypeVar("_R", bound="RayDispatcher")
OnError = Callable[[BaseException, Work, Master], object]

#: How long one shard ``poll`` call waits for completions before returning empty.
_POLL_SECONDS = 0.2
#: A shard that dies this many times in a row without completing anything is
#: not re-sent its items again (they fail with ShardLost): a poison item, or a
#: handler that cannot start, must not loop forever.
_MAX_FRUITLESS_RESTARTS = 3
#: How long close(cancel_pending=True) waits for batches still on the way to a shard.
_CANCEL_SECONDS = 30.0

# A buffered or sent item: (id, work, master, future or None).
_Entry = tuple[int, Any, Any, "Future[Any] | None"]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("fastdispatch.ray needs Ray: pip install 'fastdispatch[ray]'") from exc
    return ray


def _start_ray(ray: Any) -> None:
    """Join ``RAY_ADDRESS`` if set, else start a local cluster reachable from this machine only."""
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False)


class _Slot:
    """One shard's place: its current actor (a new one after a death) and queues."""

    __slots__ = (
        "actor",
        "buffer",
        "epoch",
        "fruitless",
        "index",
        "inflight",
        "poll_ref",
        "sent",
        "seq",
        "since",
    )

    def __init__(self, index: int, actor: Any) -> None:
        self.index = index
        self.actor = actor
        self.epoch = 0  # bumped when the actor is replaced; stale replies are ignored
        self.seq = 0  # next batch number for this actor
        self.inflight = 0  # batches sent and not yet accepted by the actor
        self.buffer: list[_Entry] = []
        self.since = 0.0  # when the oldest buffered item arrived
        self.sent: dict[int, _Entry] = {}  # insertion order is dispatch order
        self.poll_ref: Any = None
        self.fruitless = 0


class RayDispatcher:
    """Dispatch work to shard actors on a Ray cluster, serialised per *master*.

    A master maps to one shard by a stable hash; each shard actor runs a local
    ``Dispatcher`` with *handler*, so one master's items run one at a time in
    dispatch order while masters run in parallel across shards and threads.

    Args:
        handler: as for ``Dispatcher``; pickled (with Ray's serializer) into
            every shard.
        shards: number of shard actors; default the cluster's CPU count.
        workers_per_shard: ``max_workers`` of each shard's ``Dispatcher``.
        capacity: most items queued per master on its shard; a full master
            holds up its shard's batches, which closes the driver's window.
        batch_size: items per batch sent to a shard.
        flush_interval: seconds an item may wait on the driver for its batch
            to fill before the batch is sent anyway.
        max_inflight_batches: batches per shard sent and not yet accepted;
            beyond that, and with a full buffer, ``dispatch`` blocks.
        redeliver: when a shard dies, restart it and re-send its unfinished
            items in order (at-least-once) instead of failing them with
            ``ShardLost`` (at-most-once).
        on_error: ``on_error(exc, work, master)``; runs on the shard for
            handler errors and on the driver for ``ShardLost``. Default: log.
        actor_options: extra ``.options(...)`` for the shard actors
            (``num_cpus``, ``resources``, ``runtime_env``, ...).

    Uses the cluster this process is connected to (``ray.init(address=...)``);
    if there is none, joins ``RAY_ADDRESS`` when it is set, else starts a
    local cluster bound to 127.0.0.1 (it lives until ``ray.shutdown()`` or
    the end of the process).
    """

    def __init__(
        self,
        handler: object,
        *,
        shards: int | None = None,
        workers_per_shard: int | None = None,
        capacity: int | None = None,
        batch_size: int = 1000,
        flush_interval: float = 0.005,
        max_inflight_batches: int = 4,
        redeliver: bool = False,
        on_error: OnError | None = None,
        actor_options: dict[str, Any] | None = None,
    ) -> None:
        _resolve_handler(handler)
        shards = _check_int("shards", shards, optional=True)
        workers_per_shard = _check_int("workers_per_shard", workers_per_shard, optional=True)
        capacity = _check_int("capacity", capacity, optional=True)
        batch_size = _check_int("batch_size", batch_size, optional=False)  # type: ignore[assignment]
        max_inflight_batches = _check_int(  # type: ignore[assignment]
            "max_inflight_batches", max_inflight_batches, optional=False
        )
        if flush_interval.__class__ is bool or not isinstance(flush_interval, (int, float)):
            raise TypeError(f"flush_interval must be a number of seconds, got {flush_interval!r}")
        if not flush_interval >= 0:
            raise ValueError(f"flush_interval must be >= 0, got {flush_interval!r}")
        _check_bool("redeliver", redeliver)
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be None or a callable, got {on_error!r}")
        if actor_options is not None and not isinstance(actor_options, dict):
            raise TypeError(f"actor_options must be None or a dict, got {actor_options!r}")

        ray = _import_ray()
        if not ray.is_initialized():
            _start_ray(ray)
        self._ray = ray
        # the driver's node in this Ray session: after ray.shutdown(), Ray's auto-init
        # may start another cluster on the next Ray call; that is not our cluster
        self._session = ray.get_runtime_context().get_node_id()
        if shards is None:
            shards = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._handler = handler
        self._shard_args = (handler, on_error, workers_per_shard, capacity)
        self._batch_size = batch_size
        self._flush_interval = float(flush_interval)
        self._max_inflight = max_inflight_batches
        self._redeliver = redeliver
        self._on_error = _log_failure if on_error is None else _guarded(on_error)
        self._actor_options = self._options(ray, max_inflight_batches, actor_options or {})
        self._nodes = self._alive_nodes()
        self._actor_class = ray.remote(Shard)

        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # producers wait for buffer room
        self._wake = threading.Condition(self._lock)  # the pump waits for work
        self._idle = threading.Condition(self._lock)  # wait() waits for outstanding == 0
        self._closed = False
        self._flush_now = False
        self._next_id = 0
        self._dispatched = 0
        self._completed = 0
        self._failed = 0
        self._cancelled = 0
        self._refs: dict[Any, tuple[str, int, int]] = {}
        # failures to report outside the lock, and how many reports are under way
        self._later: list[tuple[list[_Entry], BaseException]] = []
        self._delivering = 0
        self._route: dict[Any, int] = {}
        self._slots = [_Slot(i, self._new_actor(i)) for i in range(shards)]
        self._pump = threading.Thread(
            target=self._run_pump, name="fastdispatch-ray-pump", daemon=True
        )
        self._pump.start()
        _live.add(self)

    # -- set-up --------------------------------------------------------------
    @staticmethod
    def _options(ray: Any, inflight: int, extra: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_cpus": 0,  # a shard reserves no CPU unless the user says so
            # pushes in the window + the poll + stats/cancel
            "max_concurrency": inflight + 3,
            "max_restarts": 0,  # the driver replaces dead shards itself
            "max_task_retries": 0,
        }
        options.update(extra)
        return options

    def _alive_nodes(self) -> list[str]:
        return sorted(n["NodeID"] for n in self._ray.nodes() if n.get("Alive"))

    def _new_actor(self, index: int) -> Any:
        options = dict(self._actor_options)
        if len(self._nodes) > 1 and "scheduling_strategy" not in options:
            # SPREAD alone leaves zero-CPU actors on one node, and so did soft node
            # affinity when tried (the head took every shard): pin each shard to a
            # node alive now, round-robin. A shard whose node goes away dies and is
            # replaced on a node alive then.
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            node = self._nodes[index % len(self._nodes)]
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
        return self._actor_class.options(**options).remote(*self._shard_args, index)

    # -- intake ----------------------------------------------------------------
    def _shard_of(self, master: Master) -> int:
        try:
            return self._route[master]
        except KeyError:
            pass
        except TypeError:
            raise TypeError(f"master must be hashable, got {master!r}") from None
        index = shard_index(master, len(self._slots))
        if len(self._route) >= 65536:
            self._route.clear()  # a cache, bounded: one-off masters must not pile up
        self._route[master] = index
        return index

    def _accept(
        self, work: Work, master: Master, future: Future[Any] | None, block: bool, timeout: Any
    ) -> None:
        _check_timeout(timeout)
        index = self._shard_of(master)
        deadline = None if timeout is None else time.monotonic() + timeout
        batch_size = self._batch_size
        with self._lock:
            slot = self._slots[index]
            while True:
                if self._closed:
                    raise DispatcherClosed("dispatcher is closed")
                if len(slot.buffer) < batch_size:
                    break
                if slot.inflight < self._max_inflight:
                    self._send(slot)
                    continue
                if not block:
                    raise QueueFull(f"shard {index} has {slot.inflight} batches in flight")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise QueueFull(
                        f"shard {index} still has {slot.inflight} batches in flight "
                        f"after {timeout} s"
                    )
                self._room.wait(remaining)
            if not slot.buffer:
                slot.since = time.monotonic()
                self._wake.notify()
            slot.buffer.append((self._next_id, work, master, future))
            self._next_id += 1
            self._dispatched += 1
            if len(slot.buffer) >= batch_size and slot.inflight < self._max_inflight:
                self._send(slot)

    def dispatch(
        self, work: Work, master: Master, *, block: bool = True, timeout: float | None = None
    ) -> None:
        """Queue *work* for *master*; it runs on the master's shard after its earlier items.

        Blocks while the shard's buffer is full and ``max_inflight_batches``
        batches are unaccepted (up to *timeout*, then ``QueueFull``; with
        ``block=False`` at once). ``DispatcherClosed`` after ``close()``;
        ``TypeError`` for an unhashable master.
        """
        self._accept(work, master, None, block, timeout)

    def submit(
        self, work: Work, master: Master, *, block: bool = True, timeout: float | None = None
    ) -> Future[Any]:
        """Like ``dispatch``; the future gets the handler's result or exception.

        Results travel back in batches. A dead shard's unfinished items get
        ``ShardLost`` (unless ``redeliver``). Cancelling the future skips the
        item only while it is still buffered on the driver.
        """
        future: Future[Any] = Future()
        self._accept(work, master, future, block, timeout)
        return future

    def flush(self) -> None:
        """Send every buffered item now (blocking while a shard's window is full)."""
        with self._lock:
            for slot in self._slots:
                while slot.buffer:
                    if self._closed and not self._pump.is_alive():
                        return
                    if slot.inflight < self._max_inflight:
                        self._send(slot)
                    else:
                        self._room.wait()

    # -- the wire (called with the lock held) -----------------------------------
    def _send(self, slot: _Slot) -> None:
        batch = slot.buffer[: self._batch_size]
        del slot.buffer[: self._batch_size]
        slot.since = time.monotonic()
        items = []
        for entry in batch:
            item_id, work, master, future = entry
            if future is not None and future.cancelled():
                self._cancelled += 1
                continue
            slot.sent[item_id] = entry
            items.append((item_id, master, work, future is not None))
        if not items:
            self._idle.notify_all()
            return
        try:
            if not self._ray_up():  # Ray would start a new cluster
                raise ShardLost(
                    f"ray.shutdown() was called: shard {slot.index} is gone", slot.index
                )
            ref = slot.actor.push.remote(slot.seq, items)
        except Exception as exc:  # the batch cannot be pickled: its items fail, loudly
            self._fail([slot.sent.pop(i[0]) for i in items], exc, slot.index)
            return
        slot.seq += 1
        slot.inflight += 1
        self._refs[ref] = ("push", slot.index, slot.epoch)
        if slot.poll_ref is None:
            self._poll(slot)

    def _poll(self, slot: _Slot) -> None:
        slot.poll_ref = slot.actor.poll.remote(_POLL_SECONDS)
        self._refs[slot.poll_ref] = ("poll", slot.index, slot.epoch)

    def _fail(self, entries: list[_Entry], exc: BaseException, index: int) -> None:
        """Count *entries* failed; the pump reports *exc* for each, outside the lock."""
        self._failed += len(entries)
        self._later.append((entries, exc))
        self._wake.notify()

    # -- the pump -------------------------------------------------------------------
    def _run_pump(self) -> None:
        ray = self._ray
        tick = min(max(self._flush_interval, 0.001), 0.05)
        while True:
            try:
                if not self._ray_up():
                    # ray.shutdown() under an open dispatcher; every Ray call would
                    # now start a new cluster (Ray's auto-init), so make none
                    raise RuntimeError("ray.shutdown() was called")
                with self._lock:
                    refs = self._pump_step()
                    if refs is None:
                        break
                if refs:
                    ready, rest = ray.wait(refs, num_returns=1, timeout=tick)
                    if ready and rest:
                        more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                        ready += more
                    for ref in ready:
                        self._settle(ref)
                self._report()
            except Exception as exc:
                if not self._ray_up():
                    self._abandon(exc)
                    break
                logger.exception("RayDispatcher: unexpected error in the pump; going on")
                time.sleep(tick)  # not a hot loop if the error repeats
        self._teardown()

    def _abandon(self, exc: BaseException) -> None:
        """Ray was shut down under us: close, and fail everything unfinished, loudly."""
        with self._lock:
            self._closed = True
            self._refs.clear()
            for slot in self._slots:
                entries = [*slot.sent.values(), *slot.buffer]
                slot.sent.clear()
                slot.buffer.clear()
                slot.inflight = 0
                if entries:
                    lost = ShardLost(
                        f"Ray was shut down before shard {slot.index} finished", slot.index
                    )
                    lost.__cause__ = exc
                    self._fail(entries, lost, slot.index)
            self._room.notify_all()
        self._report()

    def _pump_step(self) -> list[Any] | None:
        """Send due batches and polls; sleep when idle; None when closed and drained."""
        while True:
            now = time.monotonic()
            due = now - self._flush_interval
            waiting = False
            for slot in self._slots:
                while (
                    slot.buffer
                    and slot.inflight < self._max_inflight
                    and (self._flush_now or self._closed or slot.since <= due)
                ):
                    self._send(slot)
                if slot.buffer:
                    waiting = True
                if slot.sent and slot.poll_ref is None:
                    self._poll(slot)
            if not waiting:
                self._flush_now = False
            if self._refs or self._later:
                return list(self._refs)
            if waiting:
                self._wake.wait(self._flush_interval)
                continue
            if self._closed and self._outstanding() == 0:
                return None
            self._wake.wait()

    def _settle(self, ref: Any) -> None:
        kind, index, epoch = self._refs.pop(ref, ("gone", 0, -1))
        if kind == "gone":
            return
        if not self._ray_up():
            # ray.wait returns early when Ray shuts down; ray.get now would start a
            # new cluster (Ray's auto-init)
            raise RuntimeError("ray.shutdown() was called")
        try:
            value = self._ray.get(ref)
        except Exception as exc:
            with self._lock:
                self._lost(index, epoch, exc)
            return
        with self._lock:
            slot = self._slots[index]
            if slot.epoch != epoch:
                return
            if kind == "push":
                slot.inflight -= 1
                self._room.notify_all()
                return
            slot.poll_ref = None
            ok, other = value
            resolved: list[tuple[Future[Any], int, Any]] = []
            for item_id in ok:
                entry = slot.sent.pop(item_id, None)
                if entry is not None:
                    self._completed += 1
            for item_id, status, result in other:
                entry = slot.sent.pop(item_id, None)
                if entry is None:
                    continue
                if status == FAILED:
                    self._failed += 1
                elif status == CANCELLED:
                    self._cancelled += 1
                else:
                    self._completed += 1
                if entry[3] is not None:
                    resolved.append((entry[3], status, result))
            if ok or other:
                slot.fruitless = 0
            self._delivering += 1
        try:
            for future, status, result in resolved:
                if future.cancelled():
                    continue
                if status == FAILED:
                    future.set_exception(result)
                elif status == CANCELLED:
                    future.cancel()
                else:
                    future.set_result(result)
        finally:
            self._delivered()

    def _delivered(self) -> None:
        with self._lock:
            self._delivering -= 1
            if self._delivering == 0 and self._outstanding() == 0:
                self._idle.notify_all()

    def _lost(self, index: int, epoch: int, exc: BaseException) -> None:
        """Shard *index* (incarnation *epoch*) failed a call: replace it (lock held)."""
        slot = self._slots[index]
        if slot.epoch != epoch:
            return
        if not self._ray_up():
            raise RuntimeError("ray.shutdown() was called") from exc  # the pump abandons
        logger.warning("shard %d lost (%s: %s)", index, type(exc).__name__, exc)
        try:
            self._ray.kill(slot.actor, no_restart=True)
        except Exception:
            logger.debug("could not kill shard %d", index, exc_info=True)
        for ref in [r for r, (_k, i, _e) in self._refs.items() if i == index]:
            del self._refs[ref]
        slot.epoch += 1
        slot.seq = 0
        slot.inflight = 0
        slot.poll_ref = None
        self._nodes = self._alive_nodes()
        slot.actor = self._new_actor(index)
        self._room.notify_all()
        entries = list(slot.sent.values())
        slot.sent.clear()
        if not entries:
            return
        if self._redeliver and slot.fruitless < _MAX_FRUITLESS_RESTARTS:
            slot.fruitless += 1
            # ahead of what is still buffered: they were dispatched first
            slot.buffer[:0] = entries
            slot.since = 0.0
            return
        lost = ShardLost(f"shard {index} died before these items were reported done", index)
        lost.__cause__ = exc
        self._fail(entries, lost, index)

    def _report(self) -> None:
        """Deliver ShardLost (or send-time) failures to futures and on_error, unlocked."""
        with self._lock:
            later, self._later = self._later, []
            self._delivering += 1
        try:
            for entries, exc in later:
                for _id, work, master, future in entries:
                    if future is None:
                        self._on_error(exc, work, master)
                    elif not future.cancelled():
                        future.set_exception(exc)
        finally:
            self._delivered()

    def _teardown(self) -> None:
        with self._lock:
            actors = [slot.actor for slot in self._slots]
            self._refs.clear()
        if not self._ray_up():
            return  # the shards went with the cluster
        for actor in actors:
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:
                logger.debug("could not kill a shard at close", exc_info=True)

    def _ray_up(self) -> bool:
        """Whether this process is still connected to the Ray session it started in."""
        ray = self._ray
        return bool(
            ray.is_initialized() and ray.get_runtime_context().get_node_id() == self._session
        )

    def _outstanding(self) -> int:
        return self._dispatched - self._completed - self._failed - self._cancelled

    # -- waiting and shutdown ------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Send what is buffered and block until every accepted item is done; False on timeout."""
        _check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._flush_now = True
            self._wake.notify()
            while self._outstanding() > 0 or self._later or self._delivering:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(
        self, wait: bool = True, *, cancel_pending: bool = False
    ) -> list[tuple[Work, Master]]:
        """Stop intake; with *wait*, let every accepted item finish and stop the shards.

        ``dispatch`` then raises ``DispatcherClosed``, also in producers
        blocked on a full window. With ``cancel_pending=True`` the items not
        started (still buffered on the driver or queued on their shard) are
        taken out, their futures cancelled, and returned as ``(work, master)``
        pairs, FIFO within a master. The shard actors are killed once every
        item is done; ``wait=False`` returns at once and that happens in the
        background.
        """
        _check_bool("wait", wait)
        _check_bool("cancel_pending", cancel_pending)
        taken: list[tuple[Work, Master]] = []
        with self._lock:
            self._closed = True
            self._room.notify_all()
            self._wake.notify()
            if cancel_pending:
                held = [(slot, slot.buffer[:], slot.seq, slot.epoch) for slot in self._slots]
                for slot in self._slots:
                    slot.buffer.clear()
        if cancel_pending:
            taken = self._cancel(held)
        if wait:
            self.wait()
            self._pump.join()
        return taken

    def _cancel(
        self, held: list[tuple[_Slot, list[_Entry], int, int]]
    ) -> list[tuple[Work, Master]]:
        taken: list[tuple[Work, Master]] = []
        futures: list[Future[Any]] = []
        calls = []
        for slot, _buffered, seq, _epoch in held:
            try:
                if not self._ray_up():
                    raise RuntimeError("ray.shutdown() was called")
                calls.append(slot.actor.cancel.remote(seq, _CANCEL_SECONDS))
            except Exception:
                calls.append(None)  # Ray is gone: the pump fails what the shard held
        for (slot, buffered, _seq, epoch), call in zip(held, calls, strict=True):
            try:
                if call is None:
                    raise RuntimeError("no shard to ask")
                ids = self._ray.get(call)
            except Exception:
                ids = []  # the shard died: the pump fails or re-sends its items
            with self._lock:
                entries = []
                if slot.epoch == epoch:
                    entries = [e for e in map(slot.sent.pop, sorted(ids), [None] * len(ids)) if e]
                for entry in entries + buffered:
                    self._cancelled += 1
                    taken.append((entry[1], entry[2]))
                    if entry[3] is not None:
                        futures.append(entry[3])
                self._idle.notify_all()
                self._wake.notify()
        for future in futures:
            future.cancel()
        return taken

    @property
    def closed(self) -> bool:
        """Whether intake has stopped."""
        return self._closed

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(wait=True)

    # -- introspection -------------------------------------------------------------------
    def stats(self) -> DispatcherStats:
        """Counters over the whole dispatcher: the shards' plus what the driver still holds.

        ``running``, ``workers`` and ``active_masters`` are asked of the
        shards (a dead shard counts zero); the item counts are the driver's.
        """
        with self._lock:
            actors = [slot.actor for slot in self._slots]
            buffered = {e[2] for slot in self._slots for e in slot.buffer}
            counts = (self._dispatched, self._completed, self._failed, self._cancelled)
        running = workers = active = 0
        for actor in actors if self._ray_up() else ():
            try:
                call = actor.stats.remote()
                s = DispatcherStats(*self._ray.get(call, timeout=_CANCEL_SECONDS)[:8])
            except Exception:
                continue  # a dead shard (or Ray shut down) runs nothing
            running += s.running
            workers += s.workers
            active += s.active_masters
        dispatched, completed, failed, cancelled = counts
        outstanding = dispatched - completed - failed - cancelled
        running = min(running, outstanding)
        return DispatcherStats(
            dispatched=dispatched,
            completed=completed,
            failed=failed,
            cancelled=cancelled,
            pending=outstanding - running,
            running=running,
            active_masters=active + len(buffered),
            workers=workers,
        )

    @property
    def shards(self) -> int:
        """How many shard actors masters are spread over."""
        return len(self._slots)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {'closed' if self._closed else 'open'} "
            f"shards={len(self._slots)} handler={self._handler!r} "
            f"dispatched={self._dispatched} completed={self._completed} "
            f"failed={self._failed} cancelled={self._cancelled}>"
        )

    # -- Go-style names ------------------------------------------------------------------
    #: Alias of ``dispatch`` (godispatch's ``Dispatch``).
    Dispatch = dispatch
    #: Alias of ``close`` (godispatch's ``Close``).
    Close = close


_live: weakref.WeakSet[RayDispatcher] = weakref.WeakSet()


def _python_exit() -> None:
    """At interpreter exit drain every open RayDispatcher, before Ray shuts down."""
    for dispatcher in list(_live):
        try:
            dispatcher.close(wait=True)
        except Exception:
            logger.exception("could not close %r at interpreter exit", dispatcher)


_register_atexit(_python_exit)
