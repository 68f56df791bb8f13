"""Semantic 11: bad input gets a clear exception and changes nothing."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import pytest

from fastdispatch import QueueFull
from helpers import WAIT, wait_ok

UNHASHABLE = ["unhashable-master", 1]


class BadHash:
    def __hash__(self) -> int:
        raise ZeroDivisionError("hash exploded")

    def __repr__(self) -> str:
        return "<BadHash>"


def _pairs_with(bad: Any) -> list[Any]:
    return [("w1", "ok"), ("w2", "ok"), bad, ("w3", "ok")]


CALLS: list[tuple[str, Callable[[Any], Any], type[BaseException]]] = [
    ("dispatch-unhashable", lambda d: d.dispatch("w", UNHASHABLE), TypeError),
    ("dispatch-dict-master", lambda d: d.dispatch("w", {"k": 1}), TypeError),
    ("submit-unhashable", lambda d: d.submit("w", UNHASHABLE), TypeError),
    ("pending-unhashable", lambda d: d.pending(UNHASHABLE), TypeError),
    ("dispatch-hash-raises", lambda d: d.dispatch("w", BadHash()), ZeroDivisionError),
    ("dispatch-negative-timeout", lambda d: d.dispatch("w", "m", timeout=-1), ValueError),
    ("dispatch-negative-timeout-float", lambda d: d.dispatch("w", "m", timeout=-0.5), ValueError),
    ("dispatch-nan-timeout", lambda d: d.dispatch("w", "m", timeout=float("nan")), ValueError),
    ("dispatch-str-timeout", lambda d: d.dispatch("w", "m", timeout="1"), TypeError),
    ("dispatch-list-timeout", lambda d: d.dispatch("w", "m", timeout=[1]), TypeError),
    ("submit-negative-timeout", lambda d: d.submit("w", "m", timeout=-1), ValueError),
    ("submit-str-timeout", lambda d: d.submit("w", "m", timeout="1"), TypeError),
    ("dispatch-block-str", lambda d: d.dispatch("w", "m", block="yes"), TypeError),
    ("dispatch-block-int", lambda d: d.dispatch("w", "m", block=1), TypeError),
    ("dispatch-block-none", lambda d: d.dispatch("w", "m", block=None), TypeError),
    ("submit-block-str", lambda d: d.submit("w", "m", block="no"), TypeError),
    ("many-block-str", lambda d: d.dispatch_many([("w", "m")], block="yes"), TypeError),
    ("many-negative-timeout", lambda d: d.dispatch_many([("w", "m")], timeout=-1), ValueError),
    ("many-str-timeout", lambda d: d.dispatch_many([("w", "m")], timeout="1"), TypeError),
    ("many-not-iterable", lambda d: d.dispatch_many(42), TypeError),
    ("dispatch-positional-block", lambda d: d.dispatch("w", "m", True), TypeError),
    ("dispatch-missing-master", lambda d: d.dispatch("w"), TypeError),
    ("wait-negative-timeout", lambda d: d.wait(timeout=-1), ValueError),
    ("wait-str-timeout", lambda d: d.wait(timeout="1"), TypeError),
]


@pytest.fixture
def handled() -> list[Any]:
    """What the fixture dispatcher ``d`` handled, in order."""
    return []


@pytest.fixture
def d(make: Any, handled: list[Any]) -> Any:
    d = make(handled.append, max_workers=2, capacity=4)
    d.dispatch("warm-up", "ok")
    wait_ok(d)
    return d


def _still_works(d: Any, handled: list[Any], before: Any) -> None:
    assert d.stats() == before, "bad input changed the counters"
    assert d.closed is False
    assert d.submit("after", "ok").result(timeout=WAIT) is None
    wait_ok(d)
    assert handled[-1] == "after"


@pytest.mark.parametrize(("call", "exc"), [c[1:] for c in CALLS], ids=[c[0] for c in CALLS])
def test_bad_call_raises_and_changes_nothing(
    d: Any, handled: list[Any], call: Callable[[Any], Any], exc: type[BaseException]
) -> None:
    before = d.stats()
    with pytest.raises(exc):
        call(d)
    _still_works(d, handled, before)


@pytest.mark.parametrize(
    "master", [UNHASHABLE, {"k": 1}, {1, 2}, bytearray(b"ab")], ids=lambda m: type(m).__name__
)
def test_unhashable_master_message_names_it(d: Any, handled: list[Any], master: Any) -> None:
    before = d.stats()
    for call in (
        lambda: d.dispatch("w", master),
        lambda: d.submit("w", master),
        lambda: d.dispatch("w", master, block=False),
    ):
        with pytest.raises(TypeError, match=re.escape(repr(master))):
            call()
    _still_works(d, handled, before)


@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        (42, TypeError),
        (("only-one",), TypeError),
        (("a", "b", "c"), TypeError),
        (("w", UNHASHABLE), TypeError),
    ],
    ids=["int", "1-tuple", "3-tuple", "unhashable"],
)
def test_dispatch_many_bad_pair_reports_accepted(
    d: Any, handled: list[Any], bad: Any, exc: type
) -> None:
    before = d.stats()
    with pytest.raises(exc) as info:
        d.dispatch_many(_pairs_with(bad))
    assert info.value.accepted == 2
    wait_ok(d)
    after = d.stats()
    assert after.dispatched == before.dispatched + 2
    assert after.completed == before.completed + 2
    assert handled[-2:] == ["w1", "w2"]  # accepted items run; the rest does not


def test_dispatch_many_iterator_raising_reports_accepted(d: Any, handled: list[Any]) -> None:
    def pairs() -> Any:
        yield ("w1", "ok")
        raise LookupError("producer failed")

    before = d.stats()
    with pytest.raises(LookupError) as info:
        d.dispatch_many(pairs())
    accepted = getattr(info.value, "accepted", None)
    assert accepted in (1, None)  # the caller's own exception may be left untouched
    wait_ok(d)
    assert d.stats().dispatched == before.dispatched + 1
    assert handled[-1] == "w1"


# -- construction ------------------------------------------------------------------


class NoHandle:
    handle = 42  # not callable


BAD_OPTIONS: list[tuple[str, Any, dict[str, Any], type[BaseException]]] = [
    ("handler-none", None, {}, TypeError),
    ("handler-int", 42, {}, TypeError),
    ("handler-object", object(), {}, TypeError),
    ("handler-noncallable-handle", NoHandle(), {}, TypeError),
    ("max_workers-0", print, {"max_workers": 0}, ValueError),
    ("max_workers-neg", print, {"max_workers": -1}, ValueError),
    ("max_workers-float", print, {"max_workers": 1.5}, TypeError),
    ("max_workers-str", print, {"max_workers": "2"}, TypeError),
    ("max_workers-bool", print, {"max_workers": True}, TypeError),
    ("capacity-0", print, {"capacity": 0}, ValueError),
    ("capacity-neg", print, {"capacity": -3}, ValueError),
    ("capacity-str", print, {"capacity": "3"}, TypeError),
    ("capacity-float", print, {"capacity": 2.0}, TypeError),
    ("capacity-bool", print, {"capacity": True}, TypeError),
    ("on_error-int", print, {"on_error": 42}, TypeError),
    ("on_error-str", print, {"on_error": "log"}, TypeError),
    ("debug-str", print, {"debug": "yes"}, TypeError),
    ("debug-int", print, {"debug": 1}, TypeError),
    ("prefix-int", print, {"thread_name_prefix": 42}, TypeError),
    ("unknown-option", print, {"workers": 2}, TypeError),
]


@pytest.mark.parametrize(
    ("handler", "options", "exc"), [b[1:] for b in BAD_OPTIONS], ids=[b[0] for b in BAD_OPTIONS]
)
def test_bad_construction(
    Dispatcher: type, handler: Any, options: dict[str, Any], exc: type
) -> None:
    with pytest.raises(exc):
        Dispatcher(handler, **options)


def test_bad_handler_message_is_clear(Dispatcher: type) -> None:
    with pytest.raises(TypeError, match="handle"):
        Dispatcher(object())


def test_options_are_keyword_only(Dispatcher: type) -> None:
    with pytest.raises(TypeError):
        Dispatcher(print, 4)


def test_good_options_accepted(make: Any) -> None:
    d = make(print, max_workers=1, capacity=1, debug=False, on_error=None, thread_name_prefix="x")
    assert d.stats().dispatched == 0
    d2 = make(lambda w: None, max_workers=None, capacity=None, debug=None)
    d2.dispatch(1, "m", block=True, timeout=None)
    d2.dispatch(2, "m", block=False)
    d2.dispatch(3, "m", timeout=0)
    d2.dispatch(4, "m", timeout=2.5)
    d2.dispatch(5, "m", timeout=1)
    wait_ok(d2)
    assert d2.stats().completed == 5


class EqRaises:
    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        raise ValueError("eq exploded")


def test_master_whose_eq_raises(make: Any) -> None:
    gate = make.gate()
    started = threading.Event()
    handled: list[Any] = []
    d = make(lambda w: (started.set(), gate.wait(WAIT), handled.append(w)), max_workers=1)
    first = EqRaises()
    d.dispatch("first", first)  # running and blocked: its mailbox exists
    d.dispatch("second", first)  # same object: found by identity, __eq__ not needed
    # the snapshot must not race the worker taking "first" (pending 2 -> running 1)
    assert started.wait(WAIT)
    before = d.stats()
    with pytest.raises(ValueError, match="eq exploded"):
        d.dispatch("other", EqRaises())  # same hash, different object: __eq__ runs
    assert d.stats() == before
    gate.set()
    wait_ok(d)
    assert handled == ["first", "second"]


# Inputs whose handling is a policy choice: both cores must make the same one.
EDGE_PAIRS: list[tuple[str, Any]] = [
    ("list-pair", ["w", "m"]),
    ("str-pair", "wm"),
    ("namedtuple-pair", __import__("collections").namedtuple("P", "work master")("w", "m")),
    ("tuple-subclass", type("T", (tuple,), {})(("w", "m"))),
    ("dict", {"w": "m"}),
    ("none", None),
]


def _outcome(core: Any, pair: Any) -> tuple[str, Any]:
    handled: list[Any] = []
    from fastdispatch._dispatcher import Dispatcher as Base

    cls = type("D", (Base,), {"_Core": core.Core})
    with cls(handled.append, max_workers=1) as d:
        try:
            n = d.dispatch_many([pair])
        except Exception as exc:
            return type(exc).__name__, getattr(exc, "accepted", None)
    return f"accepted {n}", handled


@pytest.mark.parametrize("pair", [p[1] for p in EDGE_PAIRS], ids=[p[0] for p in EDGE_PAIRS])
def test_cores_agree_on_edge_pairs(pair: Any) -> None:
    from conftest import load_core

    c, py = load_core("cython"), load_core("python")
    assert _outcome(c, pair) == _outcome(py, pair)


# The interpreter words arity errors itself (differently for a compiled and a
# Python function); every message fastdispatch writes must read the same.
ARITY = {"dispatch-positional-block", "dispatch-missing-master"}
WORDED = [c for c in CALLS if c[0] not in ARITY] + [
    ("many-bad-pair", lambda d: d.dispatch_many([("w", "m"), 42]), TypeError),
    ("many-3-tuple", lambda d: d.dispatch_many([("w", "m", "x")]), TypeError),
    ("many-unhashable", lambda d: d.dispatch_many([("w", UNHASHABLE)]), TypeError),
    ("full-no-block", lambda d: d.dispatch("w", "busy", block=False), QueueFull),
    ("full-timeout", lambda d: d.dispatch("w", "busy", timeout=0.001), QueueFull),
    ("full-submit", lambda d: d.submit("w", "busy", block=False), QueueFull),
]


def _message(core_name: str, call: Callable[[Any], Any]) -> tuple[str, str]:
    from conftest import load_core
    from fastdispatch._dispatcher import Dispatcher as Base

    cls = type("Dispatcher", (Base,), {"_Core": load_core(core_name).Core})
    gate = threading.Event()
    d = cls(lambda w: gate.wait(WAIT), capacity=1, max_workers=1)
    try:
        # capacity counts queued items: the second dispatch waits until the
        # worker has taken "running" (held by the gate), so "busy" is now full.
        d.dispatch("running", "busy")
        d.dispatch("queued", "busy")
        try:
            call(d)
        except BaseException as exc:
            return type(exc).__name__, str(exc)
        return "no error", ""
    finally:
        gate.set()
        d.close()


@pytest.mark.parametrize("call", [c[1] for c in WORDED], ids=[c[0] for c in WORDED])
def test_both_cores_word_each_error_alike(call: Callable[[Any], Any]) -> None:
    compiled, pure = _message("cython", call), _message("python", call)
    assert compiled == pure
    assert compiled[0] != "no error"
