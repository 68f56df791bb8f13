"""The public surface: names, types, the core chooser, the two cores' parity."""

from __future__ import annotations
import __future__

import importlib
import importlib.machinery
import importlib.resources
import inspect
import queue
import types
from typing import Any

import pytest

import fastdispatch
from conftest import load_core, run_python, subprocess_env
from fastdispatch._env import env_flag

PUBLIC = [
    "Dispatcher",
    "Handler",
    "Work",
    "Master",
    "DispatcherStats",
    "DispatcherClosed",
    "QueueFull",
    "IMPLEMENTATION",
    "NewDispatcher",
]


def test_public_names_import() -> None:
    from fastdispatch import (  # noqa: F401
        IMPLEMENTATION,
        Dispatcher,
        DispatcherClosed,
        DispatcherStats,
        Handler,
        Master,
        NewDispatcher,
        QueueFull,
        Work,
    )

    for name in PUBLIC:
        assert hasattr(fastdispatch, name), name


def test_all_lists_public_names() -> None:
    exported = getattr(fastdispatch, "__all__", None)
    assert exported is not None, "fastdispatch should define __all__"
    assert set(PUBLIC) <= set(exported)
    for name in exported:
        assert hasattr(fastdispatch, name), name


def test_implementation_value() -> None:
    assert fastdispatch.IMPLEMENTATION in {"cython", "python"}
    if env_flag("FASTDISPATCH_NO_EXTENSIONS"):
        assert fastdispatch.IMPLEMENTATION == "python"


def test_public_dispatcher_uses_the_advertised_core() -> None:
    from fastdispatch._dispatcher import Dispatcher

    expected = {"cython": "fastdispatch._core_c", "python": "fastdispatch._core_py"}
    assert fastdispatch.Dispatcher is Dispatcher
    assert Dispatcher._Core.__module__ == expected[fastdispatch.IMPLEMENTATION]


@pytest.mark.skipif(
    not env_flag("FASTDISPATCH_REQUIRE_EXTENSIONS"),
    reason="FASTDISPATCH_REQUIRE_EXTENSIONS not set",
)
def test_compiled_core_really_loaded_when_required() -> None:
    assert fastdispatch.IMPLEMENTATION == "cython"
    from fastdispatch import _core_c

    assert _core_c.__file__ is not None
    assert _core_c.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (
        _core_c.__file__
    )


def test_compiled_core_is_compiled() -> None:
    mod = load_core("cython")
    assert mod.__file__ is not None
    assert mod.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), mod.__file__


# -- the core chooser, in fresh interpreters ---------------------------------

SHOW_IMPL = "import fastdispatch, sys; sys.stdout.write(fastdispatch.IMPLEMENTATION)"


def test_no_extensions_selects_python_core_and_prints_nothing() -> None:
    env = subprocess_env("python")
    quiet = run_python("import fastdispatch", env)
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("", "")
    shown = run_python(SHOW_IMPL, env)
    assert shown.returncode == 0, shown.stderr
    assert (shown.stdout, shown.stderr) == ("python", "")


@pytest.mark.parametrize("value", ["0", "false", "off", ""])
def test_no_extensions_off_values_do_not_force_python(value: str) -> None:
    load_core("cython")  # only meaningful where the extension exists
    shown = run_python(SHOW_IMPL, subprocess_env(None, FASTDISPATCH_NO_EXTENSIONS=value))
    assert shown.returncode == 0, shown.stderr
    assert (shown.stdout, shown.stderr) == ("cython", "")


def test_default_import_prints_nothing() -> None:
    quiet = run_python("import fastdispatch", subprocess_env(None), flags=("-W", "error"))
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("", "")


BLOCK_EXTENSION = "import sys; sys.modules['fastdispatch._core_c'] = None\n"


def test_missing_extension_falls_back_quietly() -> None:
    result = run_python(BLOCK_EXTENSION + SHOW_IMPL, subprocess_env(None))
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("python", "")


def test_missing_extension_is_an_import_error_when_required() -> None:
    code = BLOCK_EXTENSION + (
        "try:\n"
        "    import fastdispatch\n"
        "except ImportError:\n"
        "    sys.stdout.write('ImportError')\n"
        "else:\n"
        "    sys.stdout.write('imported ' + fastdispatch.IMPLEMENTATION)\n"
    )
    result = run_python(code, subprocess_env("cython"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ImportError"


# -- env_flag ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("0", False),
        ("", False),
        ("false", False),
        ("False", False),
        ("no", False),
        ("off", False),
        ("OFF", False),
        (" no ", False),
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("anything", True),
    ],
)
def test_env_flag(value: str | None, expected: bool) -> None:
    environ = {} if value is None else {"FLAG": value}
    assert env_flag("FLAG", environ) is expected


def test_env_flag_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTDISPATCH_TEST_FLAG", "yes")
    assert env_flag("FASTDISPATCH_TEST_FLAG") is True
    monkeypatch.setenv("FASTDISPATCH_TEST_FLAG", "off")
    assert env_flag("FASTDISPATCH_TEST_FLAG") is False


# -- types ---------------------------------------------------------------------


def test_handler_protocol_is_runtime_checkable() -> None:
    class H:
        def handle(self, work: Any) -> None:
            pass

    assert isinstance(H(), fastdispatch.Handler)
    assert not isinstance(object(), fastdispatch.Handler)
    assert not isinstance(lambda w: None, fastdispatch.Handler)


def test_dispatcher_stats_fields() -> None:
    assert fastdispatch.DispatcherStats._fields == (
        "dispatched",
        "completed",
        "failed",
        "cancelled",
        "pending",
        "running",
        "active_masters",
        "workers",
        "retried",
        "paused_masters",
    )
    assert issubclass(fastdispatch.DispatcherStats, tuple)


def test_exception_hierarchy() -> None:
    assert issubclass(fastdispatch.DispatcherClosed, RuntimeError)
    assert issubclass(fastdispatch.QueueFull, queue.Full)
    assert not issubclass(fastdispatch.QueueFull, fastdispatch.DispatcherClosed)


def test_py_typed_is_shipped() -> None:
    assert importlib.resources.files("fastdispatch").joinpath("py.typed").is_file()


def test_version() -> None:
    from fastdispatch._version import __version__

    assert isinstance(__version__, str) and __version__


# -- the two cores are twins ---------------------------------------------------


@pytest.fixture(scope="module")
def cores() -> tuple[types.ModuleType, types.ModuleType]:
    return load_core("cython"), load_core("python")


def _public_names(mod: types.ModuleType) -> set[str]:
    """Names a core defines for others: no dunders, no imports."""
    names = set()
    for name in dir(mod):
        if name.startswith("__"):
            continue
        obj = getattr(mod, name)
        if isinstance(obj, (types.ModuleType, __future__._Feature)):
            continue
        owner = getattr(obj, "__module__", None)
        if (inspect.isclass(obj) or callable(obj)) and owner not in (None, mod.__name__):
            continue  # imported from elsewhere
        names.add(name)
    return {n for n in names if not n.startswith("_")}


def test_cores_expose_the_same_names(cores: tuple[types.ModuleType, ...]) -> None:
    c, py = cores
    assert _public_names(c) == _public_names(py)
    assert {"Core", "BATCH"} <= _public_names(py)


def test_batch(cores: tuple[types.ModuleType, ...]) -> None:
    c, py = cores
    assert c.BATCH == py.BATCH == 1024


def _core_members(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


CONTRACT_MEMBERS = {
    "dispatch",
    "submit",
    "dispatch_many",
    "run_worker",
    "is_worker_thread",
    "closed",
    "close_intake",
    "cancel_pending",
    "wait",
    "after_fork_in_child",
    "pending",
    "stats",
}


def test_core_classes_expose_the_same_members(cores: tuple[types.ModuleType, ...]) -> None:
    c, py = cores
    assert _core_members(c.Core) == _core_members(py.Core)
    assert _core_members(py.Core) >= CONTRACT_MEMBERS


def _shape(sig: inspect.Signature) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def _method_shape(sig: inspect.Signature) -> list[tuple[str, Any, Any]]:
    # What a caller sees on an instance: the compiled core's hot methods are
    # non-binding builtins whose unbound `self` is positional-only, which no
    # caller can tell apart once the method is bound.
    params = list(sig.parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return [(p.name, p.kind, p.default) for p in params]


def test_core_method_signatures_match(cores: tuple[types.ModuleType, ...]) -> None:
    c, py = cores
    for name in sorted(_core_members(py.Core)):
        py_attr = inspect.getattr_static(py.Core, name)
        c_attr = inspect.getattr_static(c.Core, name)
        if inspect.isdatadescriptor(py_attr):
            assert inspect.isdatadescriptor(c_attr), f"{name}: property in python core only"
            continue
        py_fn, c_fn = getattr(py.Core, name), getattr(c.Core, name)
        assert callable(c_fn) and callable(py_fn), name
        try:
            c_sig = inspect.signature(c_fn)
        except (TypeError, ValueError) as exc:
            pytest.fail(f"Core.{name} of the compiled core has no signature: {exc}")
        assert _method_shape(c_sig) == _method_shape(inspect.signature(py_fn)), name


def test_module_callables_signatures_match(cores: tuple[types.ModuleType, ...]) -> None:
    c, py = cores
    for name in sorted(_public_names(py)):
        obj = getattr(py, name)
        if callable(obj) and not inspect.isclass(obj):
            assert _shape(inspect.signature(getattr(c, name))) == _shape(inspect.signature(obj))


def test_core_constructor_parameters_match(cores: tuple[types.ModuleType, ...]) -> None:
    c, py = cores
    kwargs = {
        "handler": lambda w: None,
        "on_error": lambda e, w, m: None,
        "spawn": lambda: None,
        "capacity": None,
        "max_workers": 1,
    }
    for mod in cores:
        by_keyword = mod.Core(**kwargs)
        assert by_keyword.closed is False
        mod.Core(*kwargs.values())
        with pytest.raises(TypeError):
            mod.Core(**kwargs, bogus=1)
    try:
        c_sig = inspect.signature(c.Core)
    except (TypeError, ValueError):
        return  # a compiled __init__ may carry no introspectable signature
    if [p.kind for p in c_sig.parameters.values()] != [
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.VAR_KEYWORD,
    ]:
        assert _shape(c_sig) == _shape(inspect.signature(py.Core))
