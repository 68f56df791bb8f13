"""The protocol and value types of the public API."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, NamedTuple, Protocol, TypeAlias, runtime_checkable

#: A unit of work: any object.
Work: TypeAlias = Any
#: The key that serialises work: any hashable object.
Master: TypeAlias = Hashable


@runtime_checkable
class Handler(Protocol):
    """What a dispatcher calls for every work item (godispatch's ``Handler``)."""

    def handle(self, work: Work, /) -> object:
        """Handle one work item; for one master, calls never overlap."""


class DispatcherStats(NamedTuple):
    """A snapshot of a dispatcher's counters.

    At every quiet moment
    ``dispatched == completed + failed + cancelled + pending + running``.
    """

    dispatched: int
    completed: int
    failed: int
    cancelled: int
    pending: int
    running: int
    active_masters: int
    workers: int
    #: Extra runs made under ``retry`` (outside the identity above).
    retried: int = 0
    #: How many masters are paused (``pause_on_error``) and not resumed.
    paused_masters: int = 0
