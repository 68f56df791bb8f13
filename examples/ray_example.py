"""RayDispatcher: the keyed contract over a Ray cluster (a local one here).

    pip install 'fastdispatch[ray]'
    python examples/ray_example.py

Each user's events are handled one at a time, in order, on the shard actor that
the user's name hashes to; different users run in parallel across shards.
"""

from __future__ import annotations

import os

# Keep the example's cluster on this machine and quiet (Ray reads these at import).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray

from fastdispatch.ray import RayDispatcher


class Totals:
    """Keeps a running total per user on its shard; returns the total after each event."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}

    def handle(self, work: tuple[str, int]) -> int:
        user, amount = work
        self.totals[user] = self.totals.get(user, 0) + amount
        return self.totals[user]


def main() -> dict[str, list[int]]:
    started = not ray.is_initialized()
    if started:  # or ray.init(address="ray://...") to use an existing cluster
        ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False)
    try:
        with RayDispatcher(Totals(), shards=2) as rd:
            futures = {
                user: [rd.submit((user, n), user) for n in range(1, 6)]
                for user in ("alice", "bob", "carol")
            }
            running = {u: [f.result(timeout=60) for f in fs] for u, fs in futures.items()}
            print(rd.stats())
    finally:
        if started:
            ray.shutdown()
    # in order per user: 1, 1+2, 1+2+3, ...
    assert all(totals == [1, 3, 6, 10, 15] for totals in running.values()), running
    return running


if __name__ == "__main__":
    print(main())
