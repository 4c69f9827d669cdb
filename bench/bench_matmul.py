"""Where plain loops beat BLAS: time the seam's two routes over square-ish product sizes.

    python bench/bench_matmul.py [--smoke]

Prints microseconds per product for ``A (M, K) @ B (K, N)`` (the GRU's NN shape) and
``A @ B.T`` through ``gemm_small`` and ``gemm_blas`` (scipy.linalg.cython_blas), float32, one
thread, median of many repetitions, plus NumPy's matmul for reference. The crossover sets
``SMALL_GEMM_MAX_WORK`` in memrl/_core/_blas.pyx.
"""
import argparse
import sys

import _common  # noqa: F401  (pins threads before numpy loads)
import numpy as np

import memrl  # noqa: F401  (pins SciPy's OpenBLAS to one thread)
from memrl._core import _blas


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, few repetitions (CI)")
    args = parser.parse_args(argv)
    shapes = [(4, 48, 16), (8, 8, 8)] if args.smoke else [
        (4, 48, 16), (4, 16, 48), (16, 16, 16), (4, 192, 64), (16, 48, 16), (24, 24, 24), (32, 32, 32),
        (204, 48, 16), (48, 16, 204), (48, 48, 48), (100, 64, 64), (64, 192, 64), (256, 768, 256)]
    repeats = 3 if args.smoke else 51
    print(f"# {_common.machine()}")
    print(f"{'M':>5} {'N':>5} {'K':>5} {'work':>10} | {'trans_b':>7} | {'small us':>9} {'blas us':>9} "
          f"{'numpy us':>9} | {'small/blas':>10}")
    rng = np.random.default_rng(0)
    for M, N, K in shapes:
        for trans_b in (False, True):
            A = rng.standard_normal((M, K)).astype(np.float32)
            B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
            out = np.zeros((M, N), np.float32)
            inner = max(1, int(2e6 / (M * N * K + 1000)))
            t_small = _common.median_time(
                lambda: _blas.repeat(A, B, out, trans_b=trans_b, route="small", n=inner), repeats=repeats) / inner
            t_blas = _common.median_time(
                lambda: _blas.repeat(A, B, out, trans_b=trans_b, route="blas", n=inner), repeats=repeats) / inner
            Bn = B.T if trans_b else B
            t_np = _common.median_time(lambda: np.matmul(A, Bn, out=out), repeats=repeats, inner=10)
            print(f"{M:>5} {N:>5} {K:>5} {M * N * K:>10} | {str(trans_b):>7} | {t_small * 1e6:>9.2f} "
                  f"{t_blas * 1e6:>9.2f} {t_np * 1e6:>9.2f} | {t_small / t_blas:>10.2f}")
    print("(small and blas: per product, timed in a C loop as the kernels call them; numpy: one Python call each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
