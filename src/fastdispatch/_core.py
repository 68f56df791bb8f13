"""Choose a core once, at import: the compiled one when it can be used.

``choose()`` is the one rule, shared by the thread core (here) and the asyncio
core (``fastdispatch.aio._core``):

* ``FASTDISPATCH_NO_EXTENSIONS`` on, or an interpreter other than CPython:
  the pure-Python core.
* Otherwise the compiled module; if it cannot be imported, the pure-Python
  core, quietly (importing never prints), unless
  ``FASTDISPATCH_REQUIRE_EXTENSIONS`` is on: then the ImportError propagates,
  so CI can never test the pure core twice by accident.
"""

from __future__ import annotations

import importlib
import platform
from typing import TYPE_CHECKING, Any, Literal

from ._env import env_flag

__all__ = ["IMPLEMENTATION", "Core", "choose"]

if TYPE_CHECKING:
    from ._core_py import Core

IMPLEMENTATION: Literal["cython", "python"]


def choose(compiled: str, pure: str, name: str) -> tuple[Any, Literal["cython", "python"]]:
    """Return ``(module.<name>, implementation)`` from the *compiled* or the *pure* module.

    *compiled* and *pure* are absolute module names.
    """
    if env_flag("FASTDISPATCH_NO_EXTENSIONS") or platform.python_implementation() != "CPython":
        return getattr(importlib.import_module(pure), name), "python"
    try:
        module = importlib.import_module(compiled)
    except ImportError as exc:
        if env_flag("FASTDISPATCH_REQUIRE_EXTENSIONS"):
            raise ImportError(
                f"FASTDISPATCH_REQUIRE_EXTENSIONS is set, but the compiled core "
                f"{compiled} cannot be imported ({exc}); the extension is "
                "required: build it (pip install . / setup.py build_ext --inplace) or "
                "unset FASTDISPATCH_REQUIRE_EXTENSIONS"
            ) from exc
        return getattr(importlib.import_module(pure), name), "python"
    return getattr(module, name), "cython"


Core, IMPLEMENTATION = choose("fastdispatch._core_c", "fastdispatch._core_py", "Core")  # type: ignore[misc]
