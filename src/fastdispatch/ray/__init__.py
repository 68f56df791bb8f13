"""``RayDispatcher``: the keyed contract over a Ray cluster (``pip install 'fastdispatch[ray]'``).

Masters are spread over shard actors by a stable hash; each shard runs a local
``Dispatcher``. Ray itself is imported only when a ``RayDispatcher`` is made.
"""

from ._dispatcher import RayDispatcher
from ._errors import ShardLost
from ._hashing import shard_index, stable_hash

__all__ = ["RayDispatcher", "ShardLost", "shard_index", "stable_hash"]
