"""Choose the core once, at import: the compiled one when it can be used.

* ``FASTDISPATCH_NO_EXTENSIONS`` on, or an interpreter other than CPython:
  the pure-Python core.
* Otherwise the compiled ``_core_c``; if it cannot be imported, the
  pure-Python core, quietly (importing never prints), unless
  ``FASTDISPATCH_REQUIRE_EXTENSIONS`` is on: then the ImportError propagates,
  so CI can never test the pure core twice by accident.
"""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Literal

from ._env import env_flag

__all__ = ["IMPLEMENTATION", "Core"]

if TYPE_CHECKING:
    from ._core_py import Core

IMPLEMENTATION: Literal["cython", "python"]


def _choose() -> tuple[type[Core], Literal["cython", "python"]]:
    if env_flag("FASTDISPATCH_NO_EXTENSIONS") or platform.python_implementation() != "CPython":
        from ._core_py import Core as PyCore

        return PyCore, "python"
    try:
        from ._core_c import Core as CCore
    except ImportError as exc:
        if env_flag("FASTDISPATCH_REQUIRE_EXTENSIONS"):
            raise ImportError(
                "FASTDISPATCH_REQUIRE_EXTENSIONS is set, but the compiled core "
                f"fastdispatch._core_c cannot be imported ({exc}); the extension is "
                "required: build it (pip install . / setup.py build_ext --inplace) or "
                "unset FASTDISPATCH_REQUIRE_EXTENSIONS"
            ) from exc
        from ._core_py import Core as PyCore

        return PyCore, "python"
    return CCore, "cython"  # type: ignore[return-value]  # structurally the same class


Core, IMPLEMENTATION = _choose()  # type: ignore[misc]
