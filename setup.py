"""Declares the compiled core; everything else lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("fastdispatch._core_c", ["src/fastdispatch/_core_c.pyx"])],
        compiler_directives={
            "language_level": 3,
            "freethreading_compatible": True,
            "embedsignature": True,
        },
    ),
)
