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
_lib = None
_setter = None


CYTHON_BLAS = "scipy.linalg.cython_blas"
_cython_blas_file = None


def import_kernels():
    """Import ``memrl._core._blas`` (the GEMM seam that cimports ``scipy.linalg.cython_blas``)
    without running ``scipy.linalg``'s package initialisation; returns the path of SciPy's
    ``cython_blas`` module file.

    Importing ``scipy.linalg`` loads all of SciPy's linear algebra (about 25 MB of resident memory
    and 0.2 s); the kernels need only the function pointers of that one extension module. It is
    loaded from its file, entered in ``sys.modules`` while the seam initialises (the seam's own
    import finds it there and keeps the pointers), and removed again, so that a later ``import
    scipy.linalg`` is the ordinary one. Falls back to the plain import if SciPy's layout is not
    the expected one. Raises ImportError if SciPy is not installed.
    """
    global _cython_blas_file
    if _cython_blas_file is not None:
        return _cython_blas_file
    if CYTHON_BLAS in sys.modules or "memrl._core._blas" in sys.modules:
        import scipy.linalg.cython_blas as module  # noqa: PLC0415  (already loaded: free)
        import memrl._core._blas  # noqa: F401, PLC0415

        _cython_blas_file = module.__file__
        return _cython_blas_file
    try:
        scipy_spec = importlib.util.find_spec("scipy")  # finds the package without importing it
        linalg = os.path.join(scipy_spec.submodule_search_locations[0], "linalg")
        paths = [p for suffix in importlib.machinery.EXTENSION_SUFFIXES
                 for p in glob.glob(os.path.join(linalg, "cython_blas" + suffix))]
        spec = importlib.util.spec_from_file_location(CYTHON_BLAS, paths[0])
        module = importlib.util.module_from_spec(spec)
    except Exception:  # not the layout expected: the ordinary import
        import scipy.linalg.cython_blas as module  # noqa: PLC0415
        import memrl._core._blas  # noqa: F401, PLC0415

        _cython_blas_file = module.__file__
        return _cython_blas_file
    sys.modules[CYTHON_BLAS] = module
    try:
        spec.loader.exec_module(module)
        import memrl._core._blas  # noqa: F401, PLC0415
    finally:
        sys.modules.pop(CYTHON_BLAS, None)
    _cython_blas_file = module.__file__
    return _cython_blas_file


def _find_openblas():
    global _lib, _setter
    if _setter is not None:
        return _setter
    scipy_dir = os.path.dirname(os.path.dirname(import_kernels()))
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
    fn = _find_openblas()
    if fn is None:
        return False
    fn(n)
    return True


def pin_threads() -> None:
    """Pin SciPy's OpenBLAS to ``MEMRL_BLAS_THREADS`` threads (default 1)."""
    raw = os.environ.get("MEMRL_BLAS_THREADS", str(_DEFAULT_THREADS))
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"MEMRL_BLAS_THREADS: expected a positive integer, got {raw!r}") from None
    set_num_threads(n)
