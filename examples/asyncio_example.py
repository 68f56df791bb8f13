"""fastdispatch for asyncio: a chat server's per-user message ordering, in miniature.

Each user's messages must be processed in the order they arrived, one at a
time (the handler awaits I/O, here ``asyncio.sleep``); different users are
processed concurrently, at most ``max_concurrency`` at once. A producer
thread (say, a Kafka consumer) feeds the loop through ``dispatch_threadsafe``.

Run it::

    python examples/asyncio_example.py
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections import defaultdict

from fastdispatch.aio import AsyncDispatcher


class MessageHandler:
    """Stores each user's messages; ``handle`` is a coroutine."""

    def __init__(self) -> None:
        self.by_user: dict[str, list[int]] = defaultdict(list)

    async def handle(self, message: tuple[str, int]) -> str:
        user, seq = message
        await asyncio.sleep(random.random() / 1000)  # the I/O of handling one message
        self.by_user[user].append(seq)
        return f"{user}#{seq}"


async def run(echo: bool = True) -> dict[str, list[int]]:
    handler = MessageHandler()
    async with AsyncDispatcher(handler, max_concurrency=8, capacity=100) as d:
        # From the loop: dispatch waits only while that user's queue is full.
        for seq in range(1, 6):
            for user in ("alice", "bob", "carol"):
                await d.dispatch((user, seq), master=user)
        # A result: submit returns a future of the handler's return value.
        receipt = await d.submit(("dave", 1), master="dave")
        if echo:
            print("handled", await receipt)

        # From another thread: dispatch_threadsafe.
        def consumer() -> None:
            for seq in range(2, 6):
                d.dispatch_threadsafe(("dave", seq), master="dave")

        thread = threading.Thread(target=consumer)
        thread.start()
        await asyncio.to_thread(thread.join)
    # Leaving the block waited for everything accepted (aclose()).
    if echo:
        for user, seqs in sorted(handler.by_user.items()):
            print(user, seqs)
        print(d.stats())
    return dict(handler.by_user)


def main() -> int:
    result = asyncio.run(run())
    return 0 if all(seqs == [1, 2, 3, 4, 5] for seqs in result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
