"""Exceptions raised by fastdispatch."""

from __future__ import annotations

import queue


class DispatcherClosed(RuntimeError):
    """Raised when work is offered to a dispatcher that no longer accepts it.

    After ``close()``, and in a child process that inherited the dispatcher
    through ``fork()``. The message says which.
    """


class QueueFull(queue.Full):
    """Raised when a master's queue is at ``capacity`` and the caller won't wait.

    With ``block=False`` at once, otherwise when ``timeout`` runs out; also at
    once when a worker of the same dispatcher would have to wait on itself.
    """


# -- messages ------------------------------------------------------------------
# Both cores build their errors here, so one bad call reads the same whichever
# core is live. The checks themselves stay in each core (the compiled one runs
# them on its hot path); only the raising path comes here.


def describe(obj: object) -> str:
    """``repr(obj)``, or a stand-in when that raises: an error message must not fail."""
    try:
        return repr(obj)
    except BaseException:
        return f"<{type(obj).__name__} object (repr failed)>"


def unhashable_master(master: object, cause: BaseException) -> TypeError:
    error = TypeError(
        f"master must be hashable, got {describe(master)} "
        f"(unhashable type {type(master).__name__!r})"
    )
    error.__cause__ = cause
    return error


def bad_block(block: object) -> TypeError:
    return TypeError(f"block must be a bool, got {describe(block)}")


def bad_timeout(timeout: object) -> TypeError:
    return TypeError(f"timeout must be None or a number of seconds, got {describe(timeout)}")


def nan_timeout() -> ValueError:
    return ValueError("timeout must be a number of seconds, not NaN")


def negative_timeout(timeout: object) -> ValueError:
    return ValueError(f"timeout must be >= 0, got {describe(timeout)}")


def bad_pair(pair: object) -> TypeError:
    return TypeError(f"dispatch_many() expects (work, master) pairs, got {describe(pair)}")


def queue_full(master: object, capacity: object, why: str = "") -> QueueFull:
    """*why*: ``""`` (refused at once), ``"worker"`` or ``"timeout"``."""
    message = f"queue of master {describe(master)} is full ({capacity} items)"
    if why == "worker":
        message += "; the caller is a worker of this dispatcher, so waiting for room would deadlock"
    elif why == "timeout":
        message += "; it was still full when the timeout ran out"
    return QueueFull(message)


# Message templates shared by both cores and the layer, so that the compiled
# and the pure-Python core raise the very same words.
UNHASHABLE_MASTER = "master must be hashable, got {master!r} (unhashable type {kind!r})"
RETRY_ATTEMPTS = "Retry attempts must be an int >= 1, got {value!r}"
RETRY_SECONDS = "Retry {name} must be a finite number of seconds >= 0, got {value!r}"
RETRY_ON = (
    "Retry retry_on must be an exception class or a tuple of exception classes, got {value!r}"
)
RETRY_OPTION = "retry must be None or a fastdispatch.Retry, got {value!r}"
