"""Build the Cython kernels in memrl/_core (metadata lives in pyproject.toml).

MEMRL_CYTHON_DEBUG=1 compiles with bounds, wraparound and initialisation checks on (and -O1 -g),
so an out-of-bounds index in a kernel raises IndexError instead of corrupting memory (CI runs the
test suite once this way). ``memrl._core.DEBUG_BUILD`` tells which way the installed kernels were
built (the C macro MEMRL_DEBUG_BUILD, defined here for every extension).

Generated C never lands next to the .pyx files (so no wheel ships it): each set of Cython
directives gets its own directory, build/cython/<release|debug>-<hash>/, so a debug build never
compiles C that Cython generated for a release build, or the other way round (cythonize itself
only compares timestamps). And because build_ext skips an extension whose .so is newer than its
sources, every extension is rebuilt whenever the build configuration (directives, compiler
flags, macros, Cython and Python versions) differs from the one that built the existing .so files.

The fused updates run paired work on a POSIX thread of their own (-pthread; no OpenMP).

On x86-64 the elementwise kernels are built a second time for x86-64-v3 (ISA_VARIANTS below), which
memrl.isa loads at run time on CPUs that run it.
"""
import glob
import hashlib
import json
import os
import platform
import shutil
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    import Cython
    from Cython.Build import cythonize
except ImportError:
    sys.exit(
        "memrl: building the kernels needs Cython>=3.1, which this environment lacks. "
        "Either let pip install the build requirements (no --no-build-isolation), or first run: "
        "pip install 'setuptools>=70.1' 'Cython>=3.1' 'scipy>=1.11' 'numpy>=1.25'"
    )

if {"dist_info", "bdist_wheel", "editable_wheel"} & set(sys.argv):  # pip, building a wheel
    import setuptools

    if tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit()) < (70, 1):
        try:
            import wheel  # noqa: F401  (provides bdist_wheel to setuptools < 70.1)
        except ImportError:
            sys.exit(
                f"memrl: setuptools {setuptools.__version__} cannot build wheels without the "
                "'wheel' package; first run: pip install 'setuptools>=70.1'"
            )

DEBUG = os.environ.get("MEMRL_CYTHON_DEBUG", "0") not in ("", "0")
MODE = "debug" if DEBUG else "release"
DIRECTIVES = {
    "language_level": 3,
    "embedsignature": True,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "show_performance_hints": not DEBUG,  # with the checks on, every index gets a hint
}
# -fno-trapping-math: floating-point exceptions are never observed (no code reads the FP status
# flags), so GCC may if-convert the clamps of the gate and activation loops and vectorise them
# (with the default -ftrapping-math those loops stay scalar, with a branch per element). It
# changes no value: the same IEEE operations run, in the same order, only several at a time.
# Contraction into FMAs stays off (-ffp-contract=off), so the bits do not depend on the CPU.
# -fno-wrapv undoes the -fwrapv in Python's own CFLAGS: with signed overflow defined to wrap, GCC
# cannot prove that index expressions such as 2 * H + j stay apart, and runs the GRU's gate loops
# on their scalar fallbacks (5-6x slower at H = 16, measured). The kernels' int arithmetic never
# overflows (every index is below the size of an allocated array), and no floating-point operation
# changes.
COMPILE_ARGS = (["-O1", "-g"] if DEBUG else ["-O3", "-fno-math-errno"]) + ["-fno-trapping-math",
                                                                            "-ffp-contract=off",
                                                                            "-fno-wrapv"]
MACROS = [("MEMRL_DEBUG_BUILD", "1" if DEBUG else "0")]

# The fused SAC updates run paired work on a POSIX thread of their own (memrl/_core/_pool.pyx).
THREADED_MODULES = {"memrl/_core/_pool.pyx"}


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


# Where cythonize writes the C: one directory per (mode, directives, Cython version).
C_DIR = os.path.join("build", "cython", f"{MODE}-{_digest([DIRECTIVES, Cython.__version__])}")

# Instruction-set variants: the kernels whose elementwise loops (GRU gates, activations, Adam)
# gain from wider vectors are compiled a second time for x86-64-v3 (AVX2, FMA, BMI; Haswell and
# later) into memrl/_core/_x86_64_v3/, from the same generated C. memrl.isa picks the variant at
# run time when the CPU has it, as NumPy and OpenBLAS dispatch, so the wheel stays portable.
# The x86-64-v3 _gru also computes the GRU's small per-time-step products with the FMA kernels of
# memrl/_core/_small_gemm.h, in the rounding of the OpenBLAS products the baseline calls. A build
# for x86-64-v4 (AVX-512) was no faster at 64 units and slower at the chapter's 16. With
# -ffp-contract=off every variant computes the same bits (tests/test_isa.py); bench/bench_isa.py
# times them against each other.
ISA_VARIANTS = {"x86-64-v3": ["-march=x86-64-v3", "-mtune=generic"]}
ISA_MODULES = ("_adam", "_dense", "_gru")
if platform.machine().lower() not in ("x86_64", "amd64") or sys.platform == "win32":
    ISA_VARIANTS = {}  # GCC/Clang on x86-64 only (MSVC has no -march)


def isa_package(isa: str) -> str:
    """memrl/_core/_x86_64_v3 for "x86-64-v3" (memrl.isa reads the same layout)."""
    return "_" + isa.replace("-", "_")


# C headers the kernels include (the generated C compiles in C_DIR, so memrl/_core is on the
# include path); a change to one rebuilds every module.
HEADERS = sorted(glob.glob("memrl/_core/*.h"))

extensions = []
for path in sorted(glob.glob("memrl/_core/_*.pyx")):
    threaded = path in THREADED_MODULES
    extensions.append(Extension(
        path[:-4].replace("/", "."), [path],
        include_dirs=["memrl/_core"], depends=HEADERS,
        define_macros=list(MACROS),
        extra_compile_args=COMPILE_ARGS + (["-pthread"] if threaded else []),
        extra_link_args=["-pthread"] if threaded else [],
    ))
variants = {}  # variant extension name -> (the base extension's name, the ISA)
for isa, flags in ISA_VARIANTS.items():
    for module in ISA_MODULES:
        if not os.path.isfile(f"memrl/_core/{module}.pyx"):  # a partial tree (tests/test_packaging.py)
            continue
        name = f"memrl._core.{isa_package(isa)}.{module}"
        variants[name] = (f"memrl._core.{module}", isa)
        extensions.append(Extension(name, [f"memrl/_core/{module}.pyx"], define_macros=list(MACROS),
                                    include_dirs=["memrl/_core"], depends=HEADERS,
                                    extra_compile_args=COMPILE_ARGS + flags))

# Everything that makes two builds of the same sources differ.
SIGNATURE = _digest({
    "c_dir": C_DIR,
    "python": sys.version,
    "extensions": [[e.name, e.define_macros, e.extra_compile_args, e.extra_link_args] for e in extensions],
})
SIGNATURE_FILE = "memrl-build-signature.json"


class BuildKernels(build_ext):
    """build_ext that cythonizes into C_DIR and rebuilds everything when the configuration changed.

    The signature of the configuration that built the .so files in ``build_lib`` is kept in
    ``build_temp``; it is removed before building and written back only after every extension
    built, so an interrupted build forces a full rebuild next time.
    """

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:  # compile the modules in parallel (pip passes no -j)
            self.parallel = os.cpu_count() or 1

    def run(self):
        generated = cythonize(
            [ext for ext in self.extensions if ext.name not in variants], build_dir=C_DIR,
            compiler_directives=DIRECTIVES, quiet=True, force=bool(self.force),
            nthreads=self.parallel if self.parallel > 1 else 0,
        )
        c_sources = {ext.name: ext.sources for ext in generated}
        for name, (base, isa) in variants.items():
            # A variant is its base module's C (the module keeps its name, memrl._core._gru, and
            # memrl.isa loads it under that name), compiled from a copy of its own so that the
            # two object files do not collide.
            copies = []
            for source in c_sources[base]:
                copy = os.path.join(C_DIR, isa, os.path.relpath(source, C_DIR))
                os.makedirs(os.path.dirname(copy), exist_ok=True)
                if not os.path.exists(copy) or os.path.getmtime(copy) < os.path.getmtime(source):
                    shutil.copy2(source, copy)
                copies.append(copy)
            c_sources[name] = copies
        for ext in self.extensions:  # keep the objects build_ext prepared, with the C sources
            ext.sources = c_sources[ext.name]
        stamp_path = os.path.join(self.build_temp, SIGNATURE_FILE)
        build_lib = os.path.abspath(self.build_lib)
        try:
            with open(stamp_path) as f:
                stamps = json.load(f)
        except (OSError, ValueError):
            stamps = {}
        if stamps.pop(build_lib, None) != SIGNATURE:
            self.force = True
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp_path, "w") as f:
            json.dump(stamps, f)
        if self.inplace:  # the variants' directory (memrl/_core/_x86_64_v3) belongs to no package
            for name in variants:
                os.makedirs(os.path.dirname(name.replace(".", os.sep)), exist_ok=True)
        super().run()
        stamps[build_lib] = SIGNATURE
        with open(stamp_path, "w") as f:
            json.dump(stamps, f)


setup(ext_modules=extensions, cmdclass={"build_ext": BuildKernels})
