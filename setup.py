"""Build the Cython kernels in memrl/_core (metadata lives in pyproject.toml).

MEMRL_CYTHON_DEBUG=1 compiles with bounds, wraparound and initialisation checks on, so an
out-of-bounds index in a kernel raises IndexError instead of corrupting memory (CI runs the
test suite once this way).
"""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("MEMRL_CYTHON_DEBUG", "0") not in ("", "0")
DIRECTIVES = {
    "language_level": 3,
    "embedsignature": True,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
}
COMPILE_ARGS = ["-O3", "-fno-math-errno"] if not DEBUG else ["-O1", "-g"]

# The fused SAC updates run paired work on a POSIX thread of their own (memrl/_core/_sac.pyx).
THREADED_MODULES = {"memrl/_core/_sac.pyx"}

modules = sorted(glob.glob("memrl/_core/_*.pyx"))
extensions = []
for path in modules:
    threaded = path in THREADED_MODULES
    extensions.append(Extension(
        path[:-4].replace("/", "."), [path],
        extra_compile_args=COMPILE_ARGS + (["-pthread"] if threaded else []),
        extra_link_args=["-pthread"] if threaded else [],
    ))
setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES, quiet=True))
