"""The one parser for fastdispatch's environment switches."""

from __future__ import annotations

import os

_OFF = frozenset({"", "0", "false", "no", "off"})


def env_flag(name: str, environ: os._Environ[str] | dict[str, str] | None = None) -> bool:
    """Return whether the switch *name* is on.

    Unset, empty, ``0``, ``false``, ``no`` and ``off`` (any case, surrounding
    blanks ignored) mean off; any other value means on.
    """
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        return False
    return value.strip().lower() not in _OFF
