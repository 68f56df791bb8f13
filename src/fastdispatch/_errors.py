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
