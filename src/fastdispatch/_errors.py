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


# Message templates shared by both cores and the layer, so that the compiled
# and the pure-Python core raise the very same words.
UNHASHABLE_MASTER = "master must be hashable, got {master!r} (unhashable type {kind!r})"
RETRY_ATTEMPTS = "Retry attempts must be an int >= 1, got {value!r}"
RETRY_SECONDS = "Retry {name} must be a finite number of seconds >= 0, got {value!r}"
RETRY_ON = (
    "Retry retry_on must be an exception class or a tuple of exception classes, got {value!r}"
)
RETRY_OPTION = "retry must be None or a fastdispatch.Retry, got {value!r}"
