"""The matrix-product seam against NumPy, over dtype x transposes x route (full grid)."""
import numpy as np
import pytest

from memrl._core import _blas

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("route", ["small", "blas", "auto"])
@pytest.mark.parametrize("mnk", [(1, 1, 1), (4, 48, 16), (7, 5, 3), (33, 65, 17), (200, 48, 16)])
def test_matmul_matches_numpy(dtype, trans_a, trans_b, route, mnk):
    M, N, K = mnk
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
    got = _blas.matmul(A, B, trans_a=trans_a, trans_b=trans_b, route=route)
    want = (A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B).astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype] * np.sqrt(K))


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


def test_small_gemm_threshold_is_settable():
    old = _blas.set_small_gemm_max_work(0)
    try:
        assert _blas.get_small_gemm_max_work() == 0
        A = np.arange(6.0).reshape(2, 3)
        np.testing.assert_allclose(_blas.matmul(A, A.T), A @ A.T)
    finally:
        _blas.set_small_gemm_max_work(old)
    with pytest.raises(ValueError, match="work"):
        _blas.set_small_gemm_max_work(-1)
