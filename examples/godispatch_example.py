"""godispatch's README example, ported to fastdispatch.

godispatch (Go) dispatches ``MyWork`` items to a ``MyHandlerStruct`` keyed by
``MyMaster``: four masters, four work items each, then ``Close()``. Work for
one master is handled in order, one at a time; the masters run in parallel.

Run it::

    python examples/godispatch_example.py

Differences from the Go original, on purpose: the Go example dispatches from
one goroutine per item (``go d.Dispatch(w, m)``), so its order is whatever
the scheduler picks, and it sleeps before ``Close()``; here one loop
dispatches, so the per-master order is the loop's, and leaving the
``with`` block closes the dispatcher after everything was handled.
"""

# No ``from __future__ import annotations``: dataclasses then needs the module in
# sys.modules, which is not the case when a test loads this file by path.
import sys
import threading
from collections import defaultdict
from dataclasses import dataclass, replace

from fastdispatch import Dispatcher, NewDispatcher


@dataclass(frozen=True)
class MyWork:
    """A work item (godispatch's ``MyWork``)."""

    master_id: str
    work_id: int
    done: bool = False


@dataclass(frozen=True)
class MyMaster:
    """A master: frozen, hence hashable, as a key must be (godispatch's ``MyMaster``)."""

    master_id: str


class MyHandler:
    """Handles work by marking it done and collecting it (godispatch's ``MyHandlerStruct``).

    Calls for one master never overlap, but calls for different masters do,
    so the shared list is guarded by a lock.
    """

    def __init__(self, echo: bool = True) -> None:
        self._lock = threading.Lock()
        self.finished: list[MyWork] = []
        self.echo = echo

    def handle(self, work: MyWork) -> None:
        finished = replace(work, done=True)  # "Do some work..."
        with self._lock:
            self.finished.append(finished)
            if self.echo:
                # One write per line, under the lock: lines never interleave.
                sys.stdout.write(f"master {work.master_id}: handled work {work.work_id}\n")

    def by_master(self) -> dict[str, list[int]]:
        """The handled work ids per master, in the order they were handled."""
        result: dict[str, list[int]] = defaultdict(list)
        with self._lock:
            for work in self.finished:
                result[work.master_id].append(work.work_id)
        return dict(result)


class GoStyleHandler:
    """A handler with only Go's method name, ``Handle`` (accepted as well)."""

    def __init__(self, echo: bool = True) -> None:
        self.collector = MyHandler(echo)

    def Handle(self, work: MyWork) -> None:
        self.collector.handle(work)


def main(echo: bool = True, masters: int = 4, works: int = 4) -> dict[str, list[int]]:
    """The example, the Python way; returns the handled work ids per master."""
    handler = MyHandler(echo)
    with Dispatcher(handler) as d:
        for m in (MyMaster(str(n)) for n in range(1, masters + 1)):
            for i in range(1, works + 1):
                d.dispatch(MyWork(m.master_id, i), m)
    # Leaving the block closed the dispatcher: everything dispatched was handled.
    return handler.by_master()


def main_go_style(echo: bool = True, masters: int = 4, works: int = 4) -> dict[str, list[int]]:
    """The example with godispatch's names: NewDispatcher, Handle, Dispatch, Close."""
    h = GoStyleHandler(echo)
    d = NewDispatcher(h)  # debug off, as godispatch's default
    for m in (MyMaster(f"go-{n}") for n in range(1, masters + 1)):
        for i in range(1, works + 1):
            d.Dispatch(MyWork(m.master_id, i), m)
    d.Close()
    return h.collector.by_master()


if __name__ == "__main__":
    results = {**main(), **main_go_style()}
    print()
    for master_id, work_ids in results.items():
        print(f"master {master_id} handled {len(work_ids)} items in order: {work_ids}")
    assert all(ids == sorted(ids) for ids in results.values())
