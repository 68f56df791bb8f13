"""fastdispatch: dispatch work to threads, one at a time per master, masters in parallel.

>>> from fastdispatch import Dispatcher
>>> with Dispatcher(print) as d:
...     d.dispatch("hello", master="m1")
hello

``IMPLEMENTATION`` says which core is live: ``"cython"`` (compiled) or
``"python"`` (pure Python; ``FASTDISPATCH_NO_EXTENSIONS=1`` selects it).
"""

from ._control import Retry
from ._core import IMPLEMENTATION
from ._dispatcher import Dispatcher, NewDispatcher
from ._errors import DispatcherClosed, QueueFull
from ._executor import KeyedExecutor
from ._types import DispatcherStats, Handler, Master, Work
from ._version import __version__

__all__ = [
    "IMPLEMENTATION",
    "Dispatcher",
    "DispatcherClosed",
    "DispatcherStats",
    "Handler",
    "KeyedExecutor",
    "Master",
    "NewDispatcher",
    "QueueFull",
    "Retry",
    "Work",
    "__version__",
]
