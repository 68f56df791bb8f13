"""Go-style names: NewDispatcher, Dispatch, Close, Handle; handler resolution."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import fastdispatch
from helpers import WAIT, wait_ok


class GoHandler:
    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.lock = threading.Lock()

    def Handle(self, work: Any) -> None:
        with self.lock:
            self.seen.append(work)


def test_new_dispatcher_dispatch_close() -> None:
    h = GoHandler()
    d = fastdispatch.NewDispatcher(h, False, max_workers=2)
    try:
        assert isinstance(d, fastdispatch.Dispatcher)
        for i in range(100):
            d.Dispatch((i % 3, i), i % 3)
    finally:
        assert d.Close() == []
    assert d.closed
    for m in range(3):
        assert [w[1] for w in h.seen if w[0] == m] == list(range(m, 100, 3))


def test_new_dispatcher_keyword_debug_and_options() -> None:
    d = fastdispatch.NewDispatcher(GoHandler(), debug=False, capacity=3)
    try:
        d.Dispatch(1, "m")
        assert d.wait(timeout=WAIT)
    finally:
        d.Close()


def test_go_aliases_on_the_core_under_test(make: Any) -> None:
    h = GoHandler()
    d = make(h, max_workers=2)
    d.Dispatch("w", "m")
    assert d.Close() == []
    assert h.seen == ["w"]
    with pytest.raises(fastdispatch.DispatcherClosed):
        d.Dispatch("late", "m")


def test_handle_wins_over_Handle(make: Any) -> None:
    calls: list[str] = []

    class Both:
        def handle(self, work: Any) -> None:
            calls.append("handle")

        def Handle(self, work: Any) -> None:
            calls.append("Handle")

    d = make(Both())
    d.dispatch(1, "m")
    wait_ok(d)
    assert calls == ["handle"]


def test_callable_with_handle_is_called_through_handle(make: Any) -> None:
    calls: list[str] = []

    class CallableHandler:
        def handle(self, work: Any) -> str:
            calls.append("handle")
            return "via-handle"

        def __call__(self, work: Any) -> str:
            calls.append("call")
            return "via-call"

    d = make(CallableHandler())
    assert d.submit(1, "m").result(timeout=WAIT) == "via-handle"
    assert calls == ["handle"]


def test_plain_callables_are_handlers(make: Any) -> None:
    seen: list[Any] = []

    class Obj:
        def __call__(self, work: Any) -> None:
            seen.append(("obj", work))

    def fn(work: Any) -> None:
        seen.append(("fn", work))

    for h in (fn, Obj(), seen.append):
        d = make(h)
        d.dispatch(1, "m")
        assert d.close() == []
    assert seen == [("fn", 1), ("obj", 1), 1]


def test_handler_protocol_instances_are_accepted(make: Any) -> None:
    class H:
        def handle(self, work: Any) -> Any:
            return work + 1

    assert isinstance(H(), fastdispatch.Handler)
    d = make(H())
    assert d.submit(1, "m").result(timeout=WAIT) == 2
