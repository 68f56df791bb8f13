"""The exception of the Ray front door."""

from __future__ import annotations

__all__ = ["ShardLost"]


class ShardLost(RuntimeError):
    """An item's shard actor died before reporting the item done.

    The item may have run partly, wholly or not at all; it is not run again
    unless the ``RayDispatcher`` was made with ``redeliver=True``. ``shard``
    is the shard's index; ``__cause__`` is Ray's error, when there was one.
    """

    def __init__(self, message: str, shard: int) -> None:
        super().__init__(message)
        self.shard = shard
