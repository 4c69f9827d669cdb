"""The matrix-product seam (memrl/_core/_blas.pyx) against NumPy: the full grid.

``C <- alpha op(A) op(B) + beta C`` over dtype x trans_a x trans_b x route (plain loops, SciPy's
BLAS, and the size-based choice) x layout (contiguous rows, or rows inside wider arrays: leading
dimensions larger than the row) x alpha in {0, 1, -0.5, 2} x beta in {0, 1, 0.5}, on shapes on
both sides of the loops/BLAS crossover (1x16 @ 16x2 up to 64x64 @ 64x192) with M, N or K = 1.
beta = 0 must overwrite C without reading it (NaN garbage there never leaks), as BLAS does, and
nothing outside the (M, N) block of C may change, nor anything outside A's and B's blocks be read
(those hold NaN).

The error bound: each entry of the float64 reference (computed from the same rounded inputs)
lies within 2 (K + 2) u (|alpha| |op(A)| |op(B)| + |beta| |C|) of the seam's (u the unit
roundoff of the dtype; Higham, Accuracy and Stability of Numerical Algorithms, 3.5).
"""
import numpy as np
import pytest

from memrl._core import _blas

ROUTES = ["small", "blas", "auto"]
ALPHAS = [0.0, 1.0, -0.5, 2.0]
BETAS = [0.0, 1.0, 0.5]
# (M, N, K): tiny (loops under "auto"), the chapter's recurrent product, odd sizes, large (BLAS
# under "auto"), and the degenerate M = 1, N = 1, K = 1 on both sides of the crossover.
SHAPES = [(1, 2, 16), (1, 1, 1), (4, 48, 16), (7, 5, 3), (3, 1, 5), (33, 65, 17), (64, 192, 64), (1, 192, 64),
          (64, 1, 64), (64, 192, 1), (200, 48, 16)]
# the seam's crossover (M N K <= 128 take the loops under "auto"): both sides are in SHAPES
assert any(m * n * k <= 128 for m, n, k in SHAPES) and any(m * n * k > 128 for m, n, k in SHAPES)

gemm_py = getattr(_blas, "gemm_py", None)
needs_gemm_py = pytest.mark.skipif(
    gemm_py is None, reason="memrl._core._blas has no gemm_py(A, B, C, *, alpha, beta, trans_a, trans_b, route) "
                            "wrapper exposing alpha, beta and leading dimensions yet (issue 12 item 3)")


def operands(rng, dtype, M, N, K, trans_a, trans_b, strided):
    """A (K, M) if trans_a else (M, K), B (N, K) if trans_b else (K, N), C (M, N); with ``strided``
    each is a view of the first columns of a wider array whose other columns hold NaN."""
    shapes = ((K, M) if trans_a else (M, K), (N, K) if trans_b else (K, N), (M, N))
    out = []
    for rows, cols in shapes:
        values = rng.standard_normal((rows, cols)).astype(dtype)
        if strided:
            wide = np.full((rows, cols + 3), np.nan, dtype)
            wide[:, :cols] = values
            values = wide[:, :cols]
        out.append(values)
    return out


def reference(alpha, A, B, beta, C, trans_a, trans_b):
    """alpha op(A) op(B) + beta C in float64, and the entrywise error bound's scale."""
    a = A.T.astype(np.float64) if trans_a else A.astype(np.float64)
    b = B.T.astype(np.float64) if trans_b else B.astype(np.float64)
    c = np.zeros(C.shape) if beta == 0 else C.astype(np.float64)
    return alpha * (a @ b) + beta * c, abs(alpha) * (np.abs(a) @ np.abs(b)) + abs(beta) * np.abs(c)


def assert_within_bound(got, want, scale, K, dtype, what):
    bound = 2 * (K + 2) * np.finfo(dtype).eps / 2 * scale
    err = np.abs(got.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (f"{what}: |error| {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst} "
                                  f"(got {got[worst]!r}, want {want[worst]!r})")


@needs_gemm_py
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("mnk", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm_matches_numpy_over_alpha_and_beta(dtype, trans_a, trans_b, route, layout, mnk):
    M, N, K = mnk
    rng = np.random.default_rng(M * 10007 + N * 101 + K)
    for alpha in ALPHAS:
        for beta in BETAS:
            A, B, C = operands(rng, dtype, M, N, K, trans_a, trans_b, layout == "strided")
            if beta == 0:
                C[...] = np.nan  # stale garbage: beta = 0 must not read it
            C0 = C.copy()
            want, scale = reference(alpha, A, B, beta, C0, trans_a, trans_b)
            gemm_py(A, B, C, alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b, route=route)
            what = f"alpha={alpha}, beta={beta}"
            assert np.all(np.isfinite(C)), f"{what}: non-finite entries {C}"
            assert_within_bound(C, want, scale, K, dtype, what)
            if layout == "strided":  # the columns beside C's block are untouched (still NaN)
                assert np.all(np.isnan(C.base[:, N:])), what


@needs_gemm_py
@pytest.mark.parametrize("route", ROUTES)
def test_gemm_special_cases_are_exact(route):
    """alpha = 0, beta = 0 gives exact zeros over NaN garbage; alpha = 0, beta = 1 leaves C as it
    was; alpha = 1, beta = 0 on integer-valued operands is exact (every sum is representable)."""
    rng = np.random.default_rng(5)
    for M, N, K in ((2, 3, 4), (64, 192, 64)):
        A = rng.integers(-3, 4, (M, K)).astype(np.float32)
        B = rng.integers(-3, 4, (K, N)).astype(np.float32)
        C = np.full((M, N), np.nan, np.float32)
        gemm_py(A, B, C, alpha=0.0, beta=0.0, route=route)
        np.testing.assert_array_equal(C, np.zeros((M, N), np.float32))
        C = rng.standard_normal((M, N)).astype(np.float32)
        C0 = C.copy()
        gemm_py(A, B, C, alpha=0.0, beta=1.0, route=route)
        np.testing.assert_array_equal(C, C0)
        gemm_py(A, B, C, alpha=1.0, beta=0.0, route=route)
        np.testing.assert_array_equal(C, (A.astype(np.int64) @ B.astype(np.int64)).astype(np.float32))


@needs_gemm_py
def test_gemm_column_major_operands_go_through_transposes():
    """A column-major (Fortran) matrix is the row-major transpose of its data: passed as ``X.T``
    with the transpose flag flipped it gives the product; passed as is it is refused (rows not
    contiguous), naming the argument."""
    rng = np.random.default_rng(7)
    A = np.asfortranarray(rng.standard_normal((5, 4)))
    B = np.asfortranarray(rng.standard_normal((4, 6)))
    C = np.zeros((5, 6))
    gemm_py(A.T, B.T, C, alpha=1.0, beta=0.0, trans_a=True, trans_b=True)
    np.testing.assert_allclose(C, A @ B, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="A"):
        gemm_py(A, np.ascontiguousarray(B), C)
    with pytest.raises(ValueError, match="C"):
        gemm_py(np.ascontiguousarray(A), np.ascontiguousarray(B), np.zeros((6, 5)).T)


@needs_gemm_py
def test_gemm_bad_inputs_raise_naming_the_argument():
    A, B, C = np.ones((2, 3)), np.ones((3, 4)), np.zeros((2, 4))
    with pytest.raises(TypeError, match="float32"):
        gemm_py(A.astype(np.float32), B, C)
    with pytest.raises(ValueError, match="inner dimension"):
        gemm_py(A, np.ones((2, 4)), C)
    with pytest.raises(ValueError, match="C"):
        gemm_py(A, B, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="route"):
        gemm_py(A, B, C, route="gpu")


# -- matmul: op(A) @ op(B) (alpha 1, beta 0), the wrapper the benchmarks use ---------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mnk", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_matches_numpy(dtype, trans_a, trans_b, route, mnk):
    M, N, K = mnk
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    A, B, _ = operands(rng, dtype, M, N, K, trans_a, trans_b, strided=False)
    out = np.full((M, N), np.nan, dtype)  # a stale output buffer
    got = _blas.matmul(A, B, trans_a=trans_a, trans_b=trans_b, out=out, route=route)
    assert got is out
    want, scale = reference(1.0, A, B, 0.0, out, trans_a, trans_b)
    assert_within_bound(got, want, scale, K, dtype, "matmul")


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("layout", ["fortran", "strided", "reversed"])
def test_matmul_copies_operands_of_any_layout(route, layout):
    """Operands that are not C-contiguous (column-major, views with strides, negative strides)
    give the same product as their contiguous copies."""
    rng = np.random.default_rng(3)
    A0, B0 = rng.standard_normal((7, 5)), rng.standard_normal((5, 9))
    if layout == "fortran":
        A, B = np.asfortranarray(A0), np.asfortranarray(B0)
    elif layout == "strided":
        A, B = np.repeat(A0, 2, axis=1)[:, ::2], np.repeat(B0, 3, axis=0)[::3]
    else:
        A, B = A0[::-1].copy()[::-1], B0[:, ::-1].copy()[:, ::-1]  # negative row / column strides
    np.testing.assert_array_equal(A, A0)
    got = _blas.matmul(A, B, route=route)
    np.testing.assert_array_equal(got, _blas.matmul(A0, B0, route=route))
    np.testing.assert_allclose(got, A0 @ B0, rtol=1e-13, atol=1e-13)


def test_beta_zero_overwrites_stale_nan():
    A = np.ones((3, 4))
    B = np.ones((4, 5))
    out = np.full((3, 5), np.nan)
    for route in ("small", "blas"):
        _blas.matmul(A, B, out=out, route=route)
        assert np.all(out == 4.0)


def test_bad_inputs_raise():
    with pytest.raises(TypeError, match="float32"):
        _blas.matmul(np.ones((2, 2), np.float32), np.ones((2, 2)))
    with pytest.raises(ValueError, match="inner dimension"):
        _blas.matmul(np.ones((2, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="route"):
        _blas.matmul(np.ones((2, 2)), np.ones((2, 2)), route="gpu")
    with pytest.raises(ValueError, match="out: expected C-contiguous"):
        _blas.matmul(np.ones((2, 3)), np.ones((3, 2)), out=np.zeros((2, 2), order="F"))


def test_small_gemm_threshold_is_settable():
    old = _blas.set_small_gemm_max_work(0)
    try:
        assert _blas.get_small_gemm_max_work() == 0
        A = np.arange(6.0).reshape(2, 3)
        np.testing.assert_allclose(_blas.matmul(A, A.T), A @ A.T)
    finally:
        _blas.set_small_gemm_max_work(old)
    assert _blas.get_small_gemm_max_work() == old
    with pytest.raises(ValueError, match="work"):
        _blas.set_small_gemm_max_work(-1)
