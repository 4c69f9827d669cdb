"""The BLAS memrl uses (SciPy's OpenBLAS) and its thread pool.

memrl's kernels call ``scipy.linalg.cython_blas`` for products too large for the plain loops.
SciPy's OpenBLAS keeps its own thread pool, separate from NumPy's; two pools with default
threading on a 2-core machine slow a mid-sized sgemm by two orders of magnitude. memrl therefore
runs SciPy's OpenBLAS with one thread unless asked otherwise (``set_num_threads``), and uses the
second core for work it schedules itself.
"""
from __future__ import annotations

import ctypes
import glob
import importlib.machinery
import importlib.util
import os
import sys

_DEFAULT_THREADS = 1
_threads = 1
_lib = None
_setter = None


CYTHON_BLAS = "scipy.linalg.cython_blas"
SEAM = "memrl._core._blas"


def _cython_blas_spec():
    """The spec of SciPy's ``cython_blas`` extension file, found without importing ``scipy``."""
    scipy_spec = importlib.util.find_spec("scipy")
    linalg = os.path.join(scipy_spec.submodule_search_locations[0], "linalg")
    paths = [p for suffix in importlib.machinery.EXTENSION_SUFFIXES
             for p in glob.glob(os.path.join(linalg, "cython_blas" + suffix))]
    return importlib.util.spec_from_file_location(CYTHON_BLAS, paths[0])


class _SeamLoader:
    """Loads the GEMM seam with SciPy's ``cython_blas`` entered alone in ``sys.modules`` (and
    removed again once the seam has taken its function pointers), so that ``scipy.linalg``'s
    package, about 25 MB of resident memory and 0.2 s, is never initialised for it. A later
    ``import scipy.linalg`` is the ordinary one."""

    def __init__(self, inner):
        self.inner = inner

    def _with_cython_blas_alone(self, fn, arg):
        if CYTHON_BLAS in sys.modules or "scipy.linalg" in sys.modules:
            return fn(arg)
        try:
            spec = _cython_blas_spec()
            module = importlib.util.module_from_spec(spec)
            sys.modules[CYTHON_BLAS] = module
            spec.loader.exec_module(module)
        except Exception:  # not SciPy's usual layout: the seam's own import does the usual thing
            sys.modules.pop(CYTHON_BLAS, None)
            return fn(arg)
        try:
            return fn(arg)
        finally:
            sys.modules.pop(CYTHON_BLAS, None)

    def create_module(self, spec):
        return self._with_cython_blas_alone(self.inner.create_module, spec)

    def exec_module(self, module):
        return self._with_cython_blas_alone(self.inner.exec_module, module)


class _SeamFinder:
    """A ``sys.meta_path`` finder for the GEMM seam only; every other module is left to the rest."""

    def find_spec(self, name, path, target=None):
        if name != SEAM:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            return spec
        spec.loader = _SeamLoader(spec.loader)
        return spec


def install_seam_finder():
    """Make the GEMM seam's import skip ``scipy.linalg``'s package (see ``_SeamLoader``); called by
    ``import memrl``, loads nothing itself."""
    if not any(isinstance(f, _SeamFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SeamFinder())


def _find_openblas():
    global _lib, _setter
    if _setter is not None:
        return _setter
    try:
        scipy_dir = importlib.util.find_spec("scipy").submodule_search_locations[0]
    except (AttributeError, TypeError, ValueError):  # no SciPy package to look in
        return None
    candidates = glob.glob(os.path.join(scipy_dir, "..", "scipy.libs", "*openblas*"))
    candidates += glob.glob(os.path.join(scipy_dir, ".dylibs", "*openblas*"))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads", "openblas_set_num_threads",
                     "scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                fn.restype = None
                _lib, _setter = lib, fn
                return fn
    return None


def set_num_threads(n: int) -> bool:
    """Set the number of threads of SciPy's OpenBLAS; returns False if it cannot be found."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    global _threads
    fn = _find_openblas()
    if fn is None:
        return False
    fn(n)
    _threads = n
    seam = sys.modules.get(SEAM)  # loaded later, it reads _threads itself (blas_threads_set)
    if seam is not None:
        seam.note_blas_threads(n)
    return True


def blas_threads_set() -> int:
    """SciPy's OpenBLAS threads as ``set_num_threads`` last set them (1 before any call)."""
    return _threads


def pin_threads() -> None:
    """Pin SciPy's OpenBLAS to ``MEMRL_BLAS_THREADS`` threads (default 1)."""
    raw = os.environ.get("MEMRL_BLAS_THREADS", str(_DEFAULT_THREADS))
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"MEMRL_BLAS_THREADS: expected a positive integer, got {raw!r}") from None
    set_num_threads(n)
