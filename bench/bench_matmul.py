"""The README's matrix-product table: both routes of memrl's BLAS seam, per product, in a C loop.

    python bench/bench_matmul.py [--repeats 51] [--sweep] [--smoke]

For each product memrl's kernels compute (the chapter's GRU, the Pendulum networks, acting) prints
the time of one product through ``gemm_small`` (plain loops) and ``gemm_blas``
(``scipy.linalg.cython_blas``, SciPy's OpenBLAS pinned to one thread), float32, each the median
over ``--repeats`` of a C loop of the same product (``memrl._core._blas.repeat``), in the form
the kernels call it (``A @ B`` or ``A @ B^T`` with B stored (N, K)), OpenBLAS's multiply-adds
per second, and the route ``gemm`` takes for it (``SMALL_GEMM_MAX_WORK``). ``--sweep`` adds the
crossover table over many sizes (with NumPy's matmul, one Python call per product, for
reference), which is how ``SMALL_GEMM_MAX_WORK`` in memrl/_core/_blas.pyx was chosen. A second table times the
GRU's per-time-step products as the time loops compute them (``memrl._core._gru.step_product``):
on the x86-64-v3 path the register-blocked kernels of memrl/_core/_small_gemm.h take the small
ones, against OpenBLAS in the same run.
"""
import argparse
import sys

import _common  # noqa: F401  (pins threads before numpy loads)
import numpy as np

import memrl  # noqa: F401  (pins SciPy's OpenBLAS to one thread)
from memrl import isa
from memrl._core import _blas, _gru

# (M, K, N, B stored transposed, what computes it)
PRODUCTS = [
    (4, 16, 48, False, "chapter recurrent step"),
    (204, 16, 48, True, "chapter input projection"),
    (64, 64, 192, False, "recurrent step, B 64, H 64"),
    (256, 256, 768, False, "recurrent step, B 256, H 256"),
    (100, 64, 64, True, "Pendulum hidden layer, forward"),
    (100, 64, 64, False, "Pendulum hidden layer, input gradient"),
    (1, 16, 2, True, "acting: the chapter's policy output"),
]
# The GRU's per-time-step products, (M, K, N): B rows of the state times W_hh^T (forward) and the
# gate gradients times W_hh (backward), for the chapter (H 16), wider batches, and the POMDP and
# POPGym presets (B 16 or 32, H 64).
STEP_PRODUCTS = [(4, 16, 48), (4, 48, 16), (1, 16, 48), (8, 16, 48), (8, 48, 16), (16, 16, 48), (4, 64, 192),
                 (16, 64, 192), (16, 192, 64), (32, 64, 192), (32, 192, 64)]
SMOKE_PRODUCTS = [(4, 16, 48, False, "chapter recurrent step"), (1, 16, 2, True, "acting: the chapter's policy output")]
SWEEP = [(1, 16, 2), (1, 8, 8), (4, 4, 4), (2, 16, 4), (4, 8, 8), (8, 8, 8), (4, 16, 48), (4, 48, 16), (16, 16, 16), (4, 64, 192), (16, 16, 48), (24, 24, 24), (32, 32, 32),
         (204, 16, 48), (48, 204, 16), (48, 48, 48), (100, 64, 64), (64, 64, 192), (256, 256, 768)]


def label(M, K, N, trans_b, what):
    shape = f"{M}x{K} @ ({N}x{K})^T" if trans_b else f"{M}x{K} @ {K}x{N}"
    return f"{shape} ({what})" if what else shape


def time_routes(M, K, N, trans_b, repeats, rng):
    """Seconds per product through the loops and through BLAS (medians of C loops)."""
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    out = np.zeros((M, N), np.float32)
    inner = max(1, int(2e6 / (M * N * K + 1000)))
    t = {}
    for route in ("small", "blas"):
        t[route] = _common.median_time(
            lambda: _blas.repeat(A, B, out, trans_b=trans_b, route=route, n=inner), repeats=repeats) / inner
    return t["small"], t["blas"], A, B, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=51)
    parser.add_argument("--sweep", action="store_true", help="also print the crossover table over many sizes")
    parser.add_argument("--smoke", action="store_true", help="two products, few repetitions (CI)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats: expected a positive integer")
    products = SMOKE_PRODUCTS if args.smoke else PRODUCTS
    repeats = 3 if args.smoke else args.repeats
    limit = _blas.get_small_gemm_max_work()
    rng = np.random.default_rng(0)
    print(f"# {_common.machine()}; load average {_common.load()}; float32, one thread, median of {repeats}")
    rows = []
    for M, K, N, trans_b, what in products:
        t_small, t_blas, *_ = time_routes(M, K, N, trans_b, repeats, rng)
        rows.append([label(M, K, N, trans_b, what), _common.fmt_time(t_small), _common.fmt_time(t_blas),
                     f"{M * K * N / t_blas / 1e9:.1f} G", "plain loops" if M * N * K <= limit else "OpenBLAS"])
    print(_common.markdown_table(["product", "plain loops", "SciPy OpenBLAS", "OpenBLAS multiply-adds/s",
                                  "`gemm` uses"], rows))
    rows = []
    for M, K, N in STEP_PRODUCTS[:2] if args.smoke else STEP_PRODUCTS:
        _, t_blas, A, B, out = time_routes(M, K, N, False, repeats, rng)
        inner = max(1, int(2e6 / (M * N * K + 1000)))
        kernel = _gru.step_product(A, B, out)
        t_step = _common.median_time(lambda: _gru.step_product(A, B, out, repeats=inner), repeats=repeats) / inner
        rows.append([label(M, K, N, False, ""), _common.fmt_time(t_blas), _common.fmt_time(t_step),
                     f"{t_step / t_blas:.2f}", "_small_gemm.h" if kernel else "gemm"])
    print(f"\nThe GRU's time-loop products on the {isa.selected()} path (memrl/_core/_small_gemm.h: "
          f"same bits as OpenBLAS; summation order: {_gru.small_kernel_order() or 'none matches, gemm'})")
    print(_common.markdown_table(["product", "SciPy OpenBLAS", "time loop", "time loop / OpenBLAS", "computed by"],
                                 rows))
    if args.sweep or args.smoke:
        sweep = [(4, 16, 48), (8, 8, 8)] if args.smoke else SWEEP
        rows = []
        for M, K, N in sweep:
            for trans_b in (False, True):
                t_small, t_blas, A, B, out = time_routes(M, K, N, trans_b, repeats, rng)
                Bn = B.T if trans_b else B
                t_np = _common.median_time(lambda: np.matmul(A, Bn, out=out), repeats=repeats, inner=10)
                rows.append([label(M, K, N, trans_b, ""), M * N * K, _common.fmt_time(t_small),
                             _common.fmt_time(t_blas), _common.fmt_time(t_np), f"{t_small / t_blas:.2f}"])
        print(f"\nCrossover (`gemm` uses the loops up to {limit} multiply-adds; NumPy: one Python call per product)")
        print(_common.markdown_table(["product", "multiply-adds", "plain loops", "SciPy OpenBLAS", "NumPy matmul",
                                      "loops / OpenBLAS"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
