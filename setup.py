"""Build of the compiled TA hot paths (Cython); everything else is in ``pyproject.toml``."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(name, [name.replace(".", "/") + ".pyx"], extra_compile_args=["-O2"])
            for name in (
                "operators._reduce",
                "torghut.ta._bar_stats",
                "torghut.clickhouse._row_binary",
            )
        ],
        compiler_directives={"language_level": 3},
    )
)
