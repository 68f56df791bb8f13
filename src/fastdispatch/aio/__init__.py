"""fastdispatch for asyncio: coroutine handlers, one at a time per master, masters concurrently.

>>> import asyncio
>>> from fastdispatch.aio import AsyncDispatcher
>>> async def handle(work):
...     print(work)
>>> async def main():
...     async with AsyncDispatcher(handle) as d:
...         await d.dispatch("hello", master="m1")
>>> asyncio.run(main())
hello

``IMPLEMENTATION`` says which asyncio core is live: ``"cython"`` or ``"python"``.
"""

from .._errors import DispatcherClosed, QueueFull
from .._types import DispatcherStats
from ._core import IMPLEMENTATION
from ._dispatcher import AsyncDispatcher

__all__ = ["IMPLEMENTATION", "AsyncDispatcher", "DispatcherClosed", "DispatcherStats", "QueueFull"]
