"""The build paths of setup.py: what each build-time switch does, and the fallback.

setup.py keeps its decisions in plain functions (``build_policy``, ``extensions``,
``on_build_failure``) and one build_ext subclass; the unit tests below drive them
in-process with a faked failure. A few end-to-end runs of ``setup.py bdist_wheel`` in a
copy of the tree (with a one-line stand-in for the real ``.pyx``, so the compile takes a
second) check the same paths through setuptools itself: no compiler -> banner and a
``py3-none-any`` wheel; required -> an error; skipped -> a pure wheel without compiling.

These tests need the source tree: against an installed wheel (no setup.py) they skip.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import types
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP_PY = ROOT / "setup.py"

if not SETUP_PY.exists():
    pytest.skip("setup.py is not here: testing an installed wheel", allow_module_level=True)
setuptools = pytest.importorskip("setuptools")

SWITCHES = ("FASTDISPATCH_NO_EXTENSIONS", "FASTDISPATCH_REQUIRE_EXTENSIONS", "CIBUILDWHEEL")


@pytest.fixture(scope="module")
def setup_module() -> Iterator[types.ModuleType]:
    """setup.py imported as a module (its ``main()`` only runs as ``__main__``)."""
    name = "fastdispatch_setup_under_test"
    spec = importlib.util.spec_from_file_location(name, SETUP_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolves string annotations through sys.modules.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


# --- the policy read from the environment ------------------------------------------------


def test_default_is_an_optional_compile(setup_module: types.ModuleType) -> None:
    policy = setup_module.build_policy({})
    assert policy.compile
    assert not policy.required


@pytest.mark.parametrize("value", ["1", "true", "YES", " on ", "anything"])
def test_no_extensions_skips_the_compile(setup_module: types.ModuleType, value: str) -> None:
    policy = setup_module.build_policy({"FASTDISPATCH_NO_EXTENSIONS": value})
    assert not policy.compile
    assert setup_module.extensions(policy) == []


@pytest.mark.parametrize("value", ["0", "", "false", "No", "OFF", " 0 "])
@pytest.mark.parametrize("name", SWITCHES)
def test_off_values_change_nothing(setup_module: types.ModuleType, name: str, value: str) -> None:
    assert setup_module.build_policy({name: value}) == setup_module.build_policy({})


@pytest.mark.parametrize(
    ("environ", "required_by"),
    [
        ({"FASTDISPATCH_REQUIRE_EXTENSIONS": "1"}, ("FASTDISPATCH_REQUIRE_EXTENSIONS",)),
        ({"CIBUILDWHEEL": "1"}, ("CIBUILDWHEEL",)),
        (
            {"CIBUILDWHEEL": "1", "FASTDISPATCH_REQUIRE_EXTENSIONS": "true"},
            ("FASTDISPATCH_REQUIRE_EXTENSIONS", "CIBUILDWHEEL"),
        ),
    ],
)
def test_require_and_cibuildwheel_make_the_compile_required(
    setup_module: types.ModuleType, environ: dict[str, str], required_by: tuple[str, ...]
) -> None:
    policy = setup_module.build_policy(environ)
    assert policy.compile
    assert policy.required
    assert policy.required_by == required_by


@pytest.mark.parametrize("required", ["FASTDISPATCH_REQUIRE_EXTENSIONS", "CIBUILDWHEEL"])
def test_skipping_and_requiring_at_once_is_an_error(
    setup_module: types.ModuleType, required: str
) -> None:
    with pytest.raises(setup_module.ExtensionRequiredError, match=required):
        setup_module.build_policy({"FASTDISPATCH_NO_EXTENSIONS": "1", required: "1"})


def test_flags_are_parsed_by_the_package_helper(setup_module: types.ModuleType) -> None:
    # One parser for the switches: setup.py loads src/fastdispatch/_env.py, not a copy.
    source = Path(setup_module.env_flag.__code__.co_filename).resolve()
    assert source == ROOT / "src" / "fastdispatch" / "_env.py"


def test_the_extension_declaration(setup_module: types.ModuleType) -> None:
    ext, aio_ext = setup_module.extensions(setup_module.build_policy({}))
    assert ext.name == "fastdispatch._core_c"
    assert aio_ext.name == "fastdispatch.aio._core_c"
    assert Path(aio_ext.sources[0]).stem == "_core_c"
    assert (ROOT / "src" / "fastdispatch" / "aio" / "_core_c.pyx").relative_to(ROOT).as_posix() == (
        setup_module.AIO_EXTENSION_SOURCE
    )
    # setuptools swaps .pyx for .c when Cython is not importable; either names the core.
    assert Path(ext.sources[0]).stem == "_core_c"
    assert (ROOT / "src" / "fastdispatch" / "_core_c.pyx").relative_to(ROOT).as_posix() == (
        setup_module.EXTENSION_SOURCE
    )
    assert "src/fastdispatch" in ext.include_dirs
    assert setup_module.CYTHON_DIRECTIVES == {
        "language_level": 3,
        "freethreading_compatible": True,
        "embedsignature": True,
        "embedsignature.format": "clinic",
    }


# --- what a failure does -----------------------------------------------------------------


def test_banner_is_loud_and_says_what_to_do(setup_module: types.ModuleType) -> None:
    text = setup_module.banner("CompileError: no compiler")
    lines = text.splitlines()
    assert len(lines) >= 10
    assert lines[1] == "*" * 78
    assert "WARNING" in text
    assert "CompileError: no compiler" in text
    assert "pure-Python core" in text
    assert "FASTDISPATCH_REQUIRE_EXTENSIONS=1" in text
    assert "FASTDISPATCH_NO_EXTENSIONS=1" in text


def test_optional_failure_prints_the_banner(setup_module: types.ModuleType) -> None:
    stream = io.StringIO()
    setup_module.on_build_failure(setup_module.BuildPolicy(compile=True), "boom", stream)
    assert stream.getvalue() == setup_module.banner("boom")


def test_required_failure_raises(setup_module: types.ModuleType) -> None:
    stream = io.StringIO()
    policy = setup_module.BuildPolicy(compile=True, required_by=("CIBUILDWHEEL",))
    with pytest.raises(setup_module.ExtensionRequiredError, match=r"CIBUILDWHEEL=1.*boom"):
        setup_module.on_build_failure(policy, "boom", stream)
    assert stream.getvalue() == ""


def _run_build_ext(setup_module: types.ModuleType, policy: object, tmp_path: Path) -> object:
    """Run the build_ext command setup.py would use, on a fresh Distribution."""
    dist = setuptools.Distribution(
        {
            "name": "fastdispatch-build-test",
            "ext_modules": setup_module.extensions(policy),
            "cmdclass": setup_module._make_cmdclass(policy),
        }
    )
    command = dist.get_command_obj("build_ext")
    command.build_temp = str(tmp_path / "temp")
    command.build_lib = str(tmp_path / "lib")
    command.ensure_finalized()
    command.run()
    return command


@pytest.fixture
def no_compiler(setup_module: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cython is fine, the C compile fails as it does when the compiler is missing."""

    def fail(self: object) -> None:
        raise setup_module.CCompilerError("command 'cc' failed: No such file or directory")

    monkeypatch.setattr(setup_module, "_require_cython", lambda: None)
    monkeypatch.setattr(setup_module.OptionalBuildExt, "_cythonize", lambda self: None)
    monkeypatch.setattr(setup_module.build_ext, "run", fail)


@pytest.mark.usefixtures("no_compiler")
def test_no_compiler_falls_back_with_banner(
    setup_module: types.ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = _run_build_ext(setup_module, setup_module.build_policy({}), tmp_path)
    err = capsys.readouterr().err
    assert (
        setup_module.banner("C compile/link error: command 'cc' failed: No such file or directory")
        in err
    )
    assert "No such file" in command.fallback_reason
    # Nothing left to install or to tag the wheel with.
    assert command.extensions == []
    assert command.distribution.ext_modules == []
    assert not command.distribution.has_ext_modules()


@pytest.mark.usefixtures("no_compiler")
@pytest.mark.parametrize(
    "environ", [{"FASTDISPATCH_REQUIRE_EXTENSIONS": "1"}, {"CIBUILDWHEEL": "1"}], ids=str
)
def test_no_compiler_is_an_error_when_required(
    setup_module: types.ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    environ: dict[str, str],
) -> None:
    policy = setup_module.build_policy(environ)
    with pytest.raises(setup_module.ExtensionRequiredError, match="No such file") as info:
        _run_build_ext(setup_module, policy, tmp_path)
    assert isinstance(info.value.__cause__, setup_module.CCompilerError)
    assert "WARNING" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("cython", "reason"),
    [
        (None, "Cython>=3.1 is not installed"),
        (types.SimpleNamespace(__version__="0.29.37"), "Cython 0.29.37 is installed"),
    ],
    ids=["missing", "too-old"],
)
def test_cython_missing_or_old_falls_back_or_fails(
    setup_module: types.ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    cython: object,
    reason: str,
) -> None:
    def must_not_compile(self: object) -> None:
        raise AssertionError("compiled although Cython is unusable")

    monkeypatch.setitem(sys.modules, "Cython", cython)
    monkeypatch.setattr(setup_module.build_ext, "run", must_not_compile)
    command = _run_build_ext(setup_module, setup_module.build_policy({}), tmp_path / "a")
    assert reason in capsys.readouterr().err
    assert reason in command.fallback_reason

    policy = setup_module.build_policy({"FASTDISPATCH_REQUIRE_EXTENSIONS": "1"})
    with pytest.raises(setup_module.ExtensionRequiredError, match=reason):
        _run_build_ext(setup_module, policy, tmp_path / "b")


# --- end to end: setup.py bdist_wheel in a copy of the tree -------------------------------
# The successful compile is not repeated here: scripts/check_wheel.py and `nox -s tests`
# build the real extension (and fail if the wheel comes out pure).

STUB_PYX = "def answer():\n    return 42\n"


def _can_build_wheels() -> str | None:
    """Why the end-to-end builds cannot run here, or None."""
    if os.name != "posix":
        return "CC=false as a failing compiler is POSIX-only"
    version = tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit())
    if version < (77,):
        return f"setuptools {setuptools.__version__} < 77 cannot read this pyproject.toml"
    if importlib.util.find_spec("Cython") is None:
        return "Cython is not installed"
    return None


needs_wheel_build = pytest.mark.skipif(
    _can_build_wheels() is not None, reason=str(_can_build_wheels())
)


def _copy_tree(copy: Path) -> Path:
    """A copy of the buildable tree with a one-function stand-in for the compiled core."""
    copy.mkdir()
    for name in ("setup.py", "pyproject.toml", "LICENSE", "README.md", "MANIFEST.in"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, copy / name)
    if not (copy / "README.md").exists():
        (copy / "README.md").write_text("fastdispatch\n")
    shutil.copytree(
        ROOT / "src" / "fastdispatch",
        copy / "src" / "fastdispatch",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "*.c", "*.html"),
    )
    (copy / "src" / "fastdispatch" / "_core_c.pyx").write_text(STUB_PYX)
    return copy


@dataclass
class WheelBuild:
    returncode: int
    stderr: str
    wheels: list[Path]


# CC=false stands in for a missing compiler (any compile attempt fails at once);
# NO_CYTHON makes `import Cython` fail (a Cython package that raises ImportError).
NO_CYTHON = "NO_CYTHON"
BUILD_SCENARIOS: dict[str, dict[str, str]] = {
    "no-compiler": {"CC": "false"},
    "no-cython-required": {NO_CYTHON: "1", "FASTDISPATCH_REQUIRE_EXTENSIONS": "1"},
    "no-extensions": {"CC": "false", "FASTDISPATCH_NO_EXTENSIONS": "1"},
}


@pytest.fixture(scope="module")
def wheel_builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, WheelBuild]:
    """``setup.py bdist_wheel`` for every scenario, run concurrently (each ~1-2 s of CPU)."""
    base = {k: v for k, v in os.environ.items() if k not in SWITCHES and k != "PYTHONPATH"}
    hide_cython = tmp_path_factory.mktemp("no-cython")
    (hide_cython / "Cython").mkdir()
    (hide_cython / "Cython" / "__init__.py").write_text('raise ImportError("hidden by a test")\n')
    running = {}
    for name, scenario in BUILD_SCENARIOS.items():
        tree = _copy_tree(tmp_path_factory.mktemp("build") / name)
        env = dict(scenario)
        if env.pop(NO_CYTHON, None):
            env["PYTHONPATH"] = str(hide_cython)
        process = subprocess.Popen(
            [sys.executable, "setup.py", "bdist_wheel", "--dist-dir", "dist"],
            cwd=tree,
            env={**base, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        running[name] = (tree, process)
    builds = {}
    for name, (tree, process) in running.items():
        try:
            _, stderr = process.communicate(timeout=120)
        finally:
            process.kill()
        builds[name] = WheelBuild(process.returncode, stderr, sorted((tree / "dist").glob("*.whl")))
    return builds


def binaries(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return [n for n in archive.namelist() if n.endswith((".so", ".pyd"))]


@needs_wheel_build
def test_wheel_without_compiler_is_pure_with_banner(wheel_builds: dict[str, WheelBuild]) -> None:
    build = wheel_builds["no-compiler"]
    assert build.returncode == 0, build.stderr
    assert "could not be built" in build.stderr
    assert "Reason: C compile/link error:" in build.stderr
    assert "'false'" in build.stderr
    assert len(build.wheels) == 1
    assert build.wheels[0].name.endswith("-py3-none-any.whl")
    assert binaries(build.wheels[0]) == []


@needs_wheel_build
def test_wheel_without_cython_fails_when_required(wheel_builds: dict[str, WheelBuild]) -> None:
    build = wheel_builds["no-cython-required"]
    assert build.returncode != 0
    assert (
        "FASTDISPATCH_REQUIRE_EXTENSIONS=1 requires it: Cython>=3.1 is not installed"
        in build.stderr
    )
    assert "could not be built" not in build.stderr
    assert build.wheels == []


@needs_wheel_build
def test_no_extensions_builds_a_pure_wheel_without_compiling(
    wheel_builds: dict[str, WheelBuild],
) -> None:
    build = wheel_builds["no-extensions"]
    assert build.returncode == 0, build.stderr
    assert "not compiling fastdispatch._core_c" in build.stderr
    # With CC=false, any compile attempt would have produced the fallback banner.
    assert "could not be built" not in build.stderr
    assert len(build.wheels) == 1
    assert build.wheels[0].name.endswith("-py3-none-any.whl")
    assert binaries(build.wheels[0]) == []
