"""The asyncio core in use: compiled ``_core_c`` or the pure-Python twin ``_core_py``.

Chosen by the same rule and environment switches as the thread core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from .._core import choose

__all__ = ["IMPLEMENTATION", "Core"]

if TYPE_CHECKING:
    from ._core_py import Core

IMPLEMENTATION: Literal["cython", "python"]

Core, IMPLEMENTATION = choose(  # type: ignore[misc]
    "fastdispatch.aio._core_c", "fastdispatch.aio._core_py", "Core"
)
