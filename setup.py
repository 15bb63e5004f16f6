"""Build of the compiled TA reductions; everything else is configured in ``pyproject.toml``."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("operators._reduce", ["operators/_reduce.pyx"], extra_compile_args=["-O2"])],
        compiler_directives={"language_level": 3},
    )
)
