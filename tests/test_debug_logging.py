"""The debug switch and logging: one handler at most, env parsing, silence when off.

Switching debug on changes the process-wide logger, so these tests run in
fresh interpreters (one per case) and leave this process's logging alone.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

# Prints {"handlers": [...], "debug_enabled": bool} for logger "fastdispatch"
# after building dispatchers with the given keyword arguments.
PROBE = r"""
import json, logging, sys
from fastdispatch import Dispatcher
kwargs_list = json.loads(sys.argv[1])
handled = []
ds = [Dispatcher(handled.append, **kw) for kw in kwargs_list]
for i, d in enumerate(ds):
    d.dispatch(i, "m")
    d.close()
log = logging.getLogger("fastdispatch")
sys.stdout.write(json.dumps({
    "handlers": [
        [
            "StreamHandler" if isinstance(h, logging.StreamHandler) else type(h).__name__,
            getattr(getattr(h, "stream", None), "name", None),
        ]
        for h in log.handlers
    ],
    "debug_enabled": log.isEnabledFor(logging.DEBUG),
    "handled": handled,
}))
"""


def probe(python_in: Any, kwargs_list: list[dict[str, Any]], **env: str) -> tuple[dict, str]:
    result = python_in(PROBE, json.dumps(kwargs_list), **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_debug_true_attaches_exactly_one_stderr_handler(python_in: Any) -> None:
    info, err = probe(python_in, [{"debug": True}, {"debug": True}])
    assert info["handlers"] == [["StreamHandler", "<stderr>"]]
    assert info["debug_enabled"] is True
    assert info["handled"] == [0, 1]
    assert err != "", "debug mode should log something"


def test_debug_false_adds_no_handler(python_in: Any) -> None:
    info, err = probe(python_in, [{"debug": False}, {}])
    assert info["handlers"] == []
    assert err == ""


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "On", " on "])
def test_env_switches_debug_on(python_in: Any, value: str) -> None:
    info, _ = probe(python_in, [{}, {"debug": None}], FASTDISPATCH_DEBUG=value)
    assert info["handlers"] == [["StreamHandler", "<stderr>"]]
    assert info["debug_enabled"] is True


@pytest.mark.parametrize("value", ["0", "", "false", "no", "OFF"])
def test_env_off_values_keep_debug_off(python_in: Any, value: str) -> None:
    info, err = probe(python_in, [{}], FASTDISPATCH_DEBUG=value)
    assert info["handlers"] == []
    assert err == ""


def test_debug_false_wins_over_env(python_in: Any) -> None:
    info, err = probe(python_in, [{"debug": False}], FASTDISPATCH_DEBUG="1")
    assert info["handlers"] == []
    assert err == ""


def test_debug_true_wins_over_env_off(python_in: Any) -> None:
    info, _ = probe(python_in, [{"debug": True}], FASTDISPATCH_DEBUG="0")
    assert info["handlers"] == [["StreamHandler", "<stderr>"]]


QUIET_RUN = r"""
from fastdispatch import Dispatcher, QueueFull, DispatcherClosed
errors = []
with Dispatcher(lambda w: 1 / 0 if w == 3 else None, capacity=2,
                on_error=lambda e, w, m: errors.append(w)) as d:
    for i in range(500):
        d.dispatch(i, i % 10)
    d.submit(3, "s")
    try:
        d.dispatch_many([(1, [1])])
    except TypeError:
        pass
d.close()
try:
    d.dispatch(1, 1)
except DispatcherClosed:
    pass
assert errors, errors
"""


def test_debug_off_produces_no_output(python_in: Any) -> None:
    result = python_in(QUIET_RUN)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


ERRORING = r"""
from fastdispatch import Dispatcher
def handle(w):
    raise ValueError("visible-handler-error-" + str(w))
with Dispatcher(handle) as d:
    d.dispatch(7, "m")
"""


def test_handler_errors_reach_stderr_with_no_logging_configured(python_in: Any) -> None:
    result = python_in(ERRORING)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "visible-handler-error-7" in result.stderr
    assert "Traceback" in result.stderr


def test_handler_errors_reach_stderr_in_debug_mode_once(python_in: Any) -> None:
    result = python_in(ERRORING, FASTDISPATCH_DEBUG="1")
    assert result.returncode == 0, result.stderr
    assert (
        result.stderr.count("visible-handler-error-7\n")
        + result.stderr.count("ValueError: visible-handler-error-7")
        >= 1
    )
    assert result.stderr.count("Traceback") == 1, result.stderr
