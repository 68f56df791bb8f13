"""Build script: declares the optional compiled core and what happens when it cannot be built.

Everything else (metadata, packages, package data) lives in pyproject.toml.

The compiled core ``fastdispatch._core_c`` is optional: fastdispatch has a pure-Python core
with the same behaviour. So is the asyncio core ``fastdispatch.aio._core_c``, built and
skipped together with it. Build-time switches (parsed by ``fastdispatch._env.env_flag``):

``FASTDISPATCH_NO_EXTENSIONS=1``
    Do not compile; build the pure-Python package (a ``py3-none-any`` wheel).
``FASTDISPATCH_REQUIRE_EXTENSIONS=1`` (or ``CIBUILDWHEEL=1``, set by cibuildwheel)
    A failed compile is an error.
neither
    A failed compile (no C compiler, Cython missing or too old, a compiler error) still
    installs fastdispatch, with the pure-Python core, after a loud warning banner.

The decisions are plain functions (``build_policy``, ``extensions``, ``on_build_failure``)
so that tests/test_build.py can check them without a real compile.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError, ExecError, PlatformError

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1: no built-in bdist_wheel, the pure-tag fix is skipped
    bdist_wheel = None

ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = ROOT / "src" / "fastdispatch"

EXTENSION_NAME = "fastdispatch._core_c"
# Relative paths: setuptools wants them so for sdists and in-tree builds.
EXTENSION_SOURCE = "src/fastdispatch/_core_c.pyx"
EXTENSION_INCLUDE_DIR = "src/fastdispatch"  # _atomic.h, _parking.h, _pycompat.h
# The asyncio core, an extension of its own in the fastdispatch.aio package.
AIO_EXTENSION_NAME = "fastdispatch.aio._core_c"
AIO_EXTENSION_SOURCE = "src/fastdispatch/aio/_core_c.pyx"
MIN_CYTHON = (3, 1)
CYTHON_DIRECTIVES: dict[str, object] = {
    "language_level": 3,
    "freethreading_compatible": True,
    "embedsignature": True,
    # Argument-clinic style docstrings give the non-binding (fast) methods an
    # inspect.signature() too.
    "embedsignature.format": "clinic",
}

NO_EXTENSIONS = "FASTDISPATCH_NO_EXTENSIONS"
REQUIRE_EXTENSIONS = "FASTDISPATCH_REQUIRE_EXTENSIONS"
CIBUILDWHEEL = "CIBUILDWHEEL"


def _load_env_flag() -> Callable[..., bool]:
    """Load ``env_flag`` from src/fastdispatch/_env.py by path.

    Importing the package itself is not possible before it is built, and copying the
    parser here would give the switches two definitions.
    """
    spec = importlib.util.spec_from_file_location(
        "_fastdispatch_build_env", PACKAGE_DIR / "_env.py"
    )
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships with the sdist
        raise RuntimeError(f"cannot load {PACKAGE_DIR / '_env.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.env_flag  # type: ignore[no-any-return]


env_flag = _load_env_flag()


class ExtensionRequiredError(BaseError):
    """The compiled core failed to build where it is required (CI, cibuildwheel)."""


class CythonUnavailableError(Exception):
    """Cython is missing or older than MIN_CYTHON."""


@dataclass(frozen=True)
class BuildPolicy:
    """What the build does with the compiled core.

    ``compile``: try to build it at all. ``required_by``: the switches that make a
    failed compile an error (empty: fall back to the pure-Python core with a banner).
    """

    compile: bool
    required_by: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return bool(self.required_by)


def build_policy(environ: Mapping[str, str]) -> BuildPolicy:
    """Read the build-time switches from *environ*.

    Asking to skip the compile and to require it at once is a contradiction, reported
    as an error rather than silently resolved one way.
    """
    env = dict(environ)
    skip = env_flag(NO_EXTENSIONS, env)
    required_by = tuple(name for name in (REQUIRE_EXTENSIONS, CIBUILDWHEEL) if env_flag(name, env))
    if skip and required_by:
        raise ExtensionRequiredError(
            f"{NO_EXTENSIONS}=1 (skip the compiled core) contradicts "
            f"{', '.join(f'{name}=1' for name in required_by)} (require it); unset one of them"
        )
    return BuildPolicy(compile=not skip, required_by=required_by)


def extensions(policy: BuildPolicy) -> list[Extension]:
    """The extension modules to declare: none when the compile is skipped.

    Declaring none is what makes setuptools tag the wheel ``py3-none-any``.
    """
    if not policy.compile:
        return []
    depends = sorted(
        str(path.relative_to(ROOT)).replace(os.sep, "/")
        for pattern in ("*.pxd", "*.pxi", "*.h")
        for path in PACKAGE_DIR.glob(pattern)
    )
    return [
        Extension(
            EXTENSION_NAME,
            sources=[EXTENSION_SOURCE],
            include_dirs=[EXTENSION_INCLUDE_DIR],
            depends=depends,
        ),
        Extension(AIO_EXTENSION_NAME, sources=[AIO_EXTENSION_SOURCE]),
    ]


def banner(reason: str) -> str:
    """The multi-line warning printed when the build falls back to the pure-Python core."""
    rule = "*" * 78
    return "\n".join(
        [
            "",
            rule,
            "WARNING: fastdispatch's compiled core (fastdispatch._core_c) could not be built.",
            "",
            f"    Reason: {reason}",
            "",
            "fastdispatch is being installed with its pure-Python core instead: the same",
            "behaviour, lower throughput; fastdispatch.IMPLEMENTATION will be 'python'.",
            "",
            "To get the compiled core, install a C compiler (and Cython>=3.1 if you build",
            "without build isolation) and reinstall. To make this an error instead, set",
            f"{REQUIRE_EXTENSIONS}=1; to skip the compile on purpose, set",
            f"{NO_EXTENSIONS}=1.",
            rule,
            "",
        ]
    )


def on_build_failure(policy: BuildPolicy, reason: str, stream: TextIO | None = None) -> None:
    """Raise if the compiled core is required, otherwise print the fallback banner."""
    if policy.required:
        raise ExtensionRequiredError(
            f"building {EXTENSION_NAME} failed and "
            f"{', '.join(f'{name}=1' for name in policy.required_by)} requires it: {reason}"
        )
    stream = sys.stderr if stream is None else stream
    stream.write(banner(reason))
    stream.flush()


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def _require_cython() -> None:
    try:
        import Cython
    except ImportError as exc:
        raise CythonUnavailableError(
            f"Cython>={'.'.join(map(str, MIN_CYTHON))} is not installed"
        ) from exc
    if _version_tuple(Cython.__version__) < MIN_CYTHON:
        raise CythonUnavailableError(
            f"Cython {Cython.__version__} is installed, "
            f"fastdispatch needs Cython>={'.'.join(map(str, MIN_CYTHON))}"
        )


def _failure_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this machine cannot build the extension", not a bug here."""
    types: list[type[BaseException]] = [
        CCompilerError,  # compile/link errors, including a missing compiler executable
        ExecError,
        PlatformError,  # e.g. no MSVC on Windows
        CythonUnavailableError,
    ]
    try:
        from Cython.Compiler.Errors import CompileError as CythonCompileError
    except ImportError:
        pass
    else:
        types.append(CythonCompileError)
    return tuple(types)


def describe_failure(exc: BaseException) -> str:
    """A one-line reason for the banner. (distutils' error classes have unhelpful names.)"""
    if isinstance(exc, CythonUnavailableError):
        return str(exc)
    if isinstance(exc, CCompilerError):
        kind = "C compile/link error"
    elif isinstance(exc, PlatformError):
        kind = "no usable C compiler"
    elif isinstance(exc, ExecError):
        kind = "could not run the compiler"
    else:
        kind = "Cython could not compile the core"
    return f"{kind}: {exc}" if str(exc) else kind


class OptionalBuildExt(build_ext):
    """build_ext that cythonizes explicitly and applies the BuildPolicy to failures."""

    policy = BuildPolicy(compile=True)
    fallback_reason: str | None = None

    def run(self) -> None:
        if not self.extensions:
            super().run()
            return
        failures = _failure_types()
        try:
            _require_cython()
            self._cythonize()
            super().run()
        except failures as exc:
            reason = describe_failure(exc)
            try:
                on_build_failure(self.policy, reason)
            except ExtensionRequiredError as error:
                raise error from exc
            self._drop_extensions(reason)

    def _cythonize(self) -> None:
        from Cython.Build import cythonize

        # Generated C goes to the per-interpreter build_temp, not next to the .pyx: builds
        # for several Pythons in one tree never share (or ship) a generated file.
        # Only the sources are swapped: the Extension objects carry setuptools' own state.
        for ext in self.extensions:
            (generated,) = cythonize(
                [ext],
                compiler_directives=CYTHON_DIRECTIVES,
                build_dir=self.build_temp,
                force=bool(self.force),
                quiet=not self.verbose,
            )
            ext.sources = generated.sources

    def _drop_extensions(self, reason: str) -> None:
        # With no ext_modules left, install/bdist_wheel neither expect the .so nor tag the
        # wheel for this platform.
        self.fallback_reason = reason
        self.extensions[:] = []
        self.distribution.ext_modules = []


def _make_cmdclass(policy: BuildPolicy) -> dict[str, type]:
    build_ext_cls = type("OptionalBuildExt", (OptionalBuildExt,), {"policy": policy})
    cmdclass: dict[str, type] = {"build_ext": build_ext_cls}
    if bdist_wheel is not None:
        cmdclass["bdist_wheel"] = PureWhenNoExtensionWheel
    return cmdclass


if bdist_wheel is not None:

    class PureWhenNoExtensionWheel(bdist_wheel):
        """bdist_wheel that tags the wheel ``py3-none-any`` if the extension fell back.

        bdist_wheel decides purity before building; build first, then decide from what
        is actually left in ext_modules.
        """

        def run(self) -> None:
            if not self.skip_build:
                # What bdist_wheel.run does before building, then build once here.
                build_scripts = self.reinitialize_command("build_scripts")
                build_scripts.executable = "python"
                build_scripts.force = True
                self.reinitialize_command("build_ext").inplace = False
                self.run_command("build")
                self.skip_build = True
            self.root_is_pure = not (
                self.distribution.has_ext_modules() or self.distribution.has_c_libraries()
            )
            super().run()


def main() -> None:
    try:
        policy = build_policy(os.environ)
    except ExtensionRequiredError as exc:
        sys.exit(f"error: {exc}")
    if not policy.compile:
        print(
            f"fastdispatch: {NO_EXTENSIONS} is set: not compiling {EXTENSION_NAME}, "
            "building the pure-Python package",
            file=sys.stderr,
        )
    setup(ext_modules=extensions(policy), cmdclass=_make_cmdclass(policy))


if __name__ == "__main__":
    main()
