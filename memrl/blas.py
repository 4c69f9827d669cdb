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
import os

_DEFAULT_THREADS = 1
_lib = None
_setter = None


def _find_openblas():
    global _lib, _setter
    if _setter is not None:
        return _setter
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library)

    scipy_dir = os.path.dirname(os.path.dirname(scipy.linalg.cython_blas.__file__))
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
