"""A stable master -> shard mapping: the same in every process and every run.

Python's ``hash()`` of str and bytes is salted per process (``PYTHONHASHSEED``),
so two producers, or one producer restarted, would send one master to two
shards and lose its order. Masters are encoded to bytes instead and hashed
with BLAKE2b. Keys equal as dict keys land together: ``1``, ``1.0`` and
``True`` encode alike, as do ``0.0`` and ``-0.0``.
"""

from __future__ import annotations

import hashlib
import pickle
import struct

__all__ = ["shard_index", "stable_hash"]

_INT = b"i"
_FLOAT = b"f"


def _encode(master: object, out: list[bytes]) -> None:
    # Exact type checks: a subclass may redefine __eq__/__hash__, so it goes
    # through pickle (its class name is part of the bytes).
    cls = master.__class__
    if master is None:
        out.append(b"N")
    elif cls is bool or cls is int:
        digits = str(int(master)).encode()  # type: ignore[call-overload]
        out.append(_INT + struct.pack("<I", len(digits)) + digits)
    elif cls is float:
        value: float = master  # type: ignore[assignment]
        if value.is_integer():
            _encode(int(value), out)
        else:
            out.append(_FLOAT + struct.pack("<d", value))
    elif cls is str:
        data = master.encode("utf-8", "surrogatepass")  # type: ignore[attr-defined]
        out.append(b"s" + struct.pack("<I", len(data)) + data)
    elif cls is bytes:
        out.append(b"b" + struct.pack("<I", len(master)) + master)  # type: ignore[arg-type, operator]
    elif cls is tuple:
        out.append(b"t" + struct.pack("<I", len(master)))  # type: ignore[arg-type]
        for part in master:  # type: ignore[attr-defined]
            _encode(part, out)
    else:
        # Stable only where the pickle is (a frozenset's is not: its order
        # follows the salted hash of its members).
        data = pickle.dumps(master, protocol=4)
        out.append(b"p" + struct.pack("<I", len(data)) + data)


def stable_hash(master: object) -> int:
    """A 64-bit hash of *master* that does not depend on the process or run.

    Covers None, bool, int, float, str, bytes and tuples of these exactly;
    any other picklable master hashes by its pickle. Raises ``TypeError`` for
    a master that cannot be pickled.
    """
    out: list[bytes] = []
    try:
        _encode(master, out)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise TypeError(f"master {master!r} cannot be hashed stably: {exc}") from exc
    return int.from_bytes(hashlib.blake2b(b"".join(out), digest_size=8).digest(), "little")


def shard_index(master: object, shards: int) -> int:
    """The shard (``0 <= i < shards``) that *master* always maps to."""
    return stable_hash(master) % shards
