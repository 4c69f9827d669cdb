"""Matrix products: the one seam every kernel goes through.

Row-major (C order) semantics, as NumPy: ``C = alpha * op(A) @ op(B) + beta * C`` with
``op(A)`` of shape (M, K), ``op(B)`` of shape (K, N) and C of shape (M, N). ``lda``, ``ldb``,
``ldc`` are row strides in elements. ``beta == 0`` overwrites C without reading it (so stale
NaNs in an output buffer never leak), as BLAS does.

Two routes, chosen by size (``bench/bench_matmul.py`` measures the crossover):

* ``gemm_small``: plain loops the C compiler vectorises (rows of C updated by axpy, or short
  dot products for ``A @ B.T``). No call overhead, which is what matters for the chapter's
  batch-4, hidden-16 products inside the GRU time loop.
* ``gemm_blas``: ``scipy.linalg.cython_blas`` (OpenBLAS shipped with SciPy), callable without
  the GIL at about 0.2 us a call; its thread pool is pinned to one thread by ``memrl.blas``.

``gemm`` routes products with ``M * N * K <= SMALL_GEMM_MAX_WORK`` to ``gemm_small``.

Measured (bench/bench_matmul.py, float32, AMD EPYC with AVX-512, one thread, per product in a C
loop): SciPy's OpenBLAS wins from a few hundred multiply-adds up, even at the chapter's
recurrent product (4, 16) @ (16, 48): 0.10 us against 0.52 us for the loops, 204x16 @ 16x48:
3.2 us against 25.5 us, 256x256 @ 256x768: 1.0 ms against 7.2 ms. The loops (compiled for the
baseline x86-64 ISA, no -march) only win below about 128 multiply-adds, where BLAS's call
overhead (~30-80 ns) dominates: (1, 16) @ (16, 2)^T takes 17 ns against 78 ns.
"""
import sys

from scipy.linalg.cython_blas cimport sgemm, dgemm

# Crossover measured with bench/bench_matmul.py (see the module docstring and the README).
cdef long SMALL_GEMM_MAX_WORK = 128


def set_small_gemm_max_work(long work):
    """Change the size (M*N*K) up to which products use the plain loops; returns the old value."""
    global SMALL_GEMM_MAX_WORK
    if work < 0:
        raise ValueError(f"work: expected a non-negative integer, got {work}")
    old = SMALL_GEMM_MAX_WORK
    SMALL_GEMM_MAX_WORK = work
    return old


def get_small_gemm_max_work():
    return SMALL_GEMM_MAX_WORK


# SciPy's OpenBLAS threads, as memrl.blas.set_num_threads last set them (one unless asked). With
# more than one, OpenBLAS splits a product of more than BLAS_SINGLE_THREAD_MAX_WORK multiply-adds
# across its threads (its interface/gemm.c: SMP_THRESHOLD_MIN 65536 x GEMM_MULTITHREAD_THRESHOLD 4),
# and each thread blocks its own slice, which changes the rounding.
cdef int BLAS_THREADS = sys.modules["memrl.blas"].blas_threads_set() if "memrl.blas" in sys.modules else 1
cdef long BLAS_SINGLE_THREAD_MAX_WORK = 262144


def note_blas_threads(int n):
    """Record that SciPy's OpenBLAS now runs ``n`` threads (memrl.blas.set_num_threads calls it)."""
    global BLAS_THREADS
    if n < 1:
        raise ValueError(f"n: expected a positive integer, got {n}")
    BLAS_THREADS = n


def blas_threads():
    """SciPy's OpenBLAS threads, as memrl.blas.set_num_threads last set them."""
    return BLAS_THREADS


cdef bint blas_single_threaded(long work) noexcept nogil:
    """Whether OpenBLAS computes a product of ``work`` = M*N*K multiply-adds on one thread."""
    return BLAS_THREADS == 1 or work <= BLAS_SINGLE_THREAD_MAX_WORK


cdef bint routes_to_blas(long work) noexcept nogil:
    """Whether ``gemm`` sends a product of ``work`` = M*N*K multiply-adds to BLAS."""
    return work > SMALL_GEMM_MAX_WORK


cdef void gemm(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
               const floating* A, int lda, const floating* B, int ldb,
               floating beta, floating* C, int ldc) noexcept nogil:
    if M <= 0 or N <= 0:
        return
    if not routes_to_blas(<long>M * <long>N * <long>K):
        gemm_small(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
    else:
        gemm_blas(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)


cdef void gemm_blas(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
                    const floating* A, int lda, const floating* B, int ldb,
                    floating beta, floating* C, int ldc) noexcept nogil:
    # Column-major BLAS sees the row-major C as C^T (N, M) = op(B)^T op(A)^T.
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int i, j
    if M <= 0 or N <= 0:
        return
    if K <= 0:
        for i in range(M):
            for j in range(N):
                C[i * ldc + j] = 0 if beta == 0 else beta * C[i * ldc + j]
        return
    if floating is float:
        sgemm(&tb, &ta, &N, &M, &K, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &N, &M, &K, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)


cdef void gemm_small(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
                     const floating* A, int lda, const floating* B, int ldb,
                     floating beta, floating* C, int ldc) noexcept nogil:
    cdef int i, j, k
    cdef floating a, s0, s1, s2, s3
    cdef floating* c
    cdef const floating* b
    cdef const floating* arow
    for i in range(M):
        c = C + i * ldc
        if beta == 0:
            for j in range(N):
                c[j] = 0
        elif beta != 1:
            for j in range(N):
                c[j] = beta * c[j]
        if not trans_b:
            # c[i, :] += alpha * sum_k op(A)[i, k] * B[k, :]  (contiguous axpy over N)
            for k in range(K):
                a = alpha * (A[k * lda + i] if trans_a else A[i * lda + k])
                b = B + k * ldb
                for j in range(N):
                    c[j] += a * b[j]
        elif not trans_a:
            # c[i, j] += alpha * dot(A[i, :], B[j, :])  (B stored (N, K))
            arow = A + i * lda
            for j in range(N):
                b = B + j * ldb
                s0 = 0
                s1 = 0
                s2 = 0
                s3 = 0
                k = 0
                while k + 4 <= K:
                    s0 += arow[k] * b[k]
                    s1 += arow[k + 1] * b[k + 1]
                    s2 += arow[k + 2] * b[k + 2]
                    s3 += arow[k + 3] * b[k + 3]
                    k += 4
                while k < K:
                    s0 += arow[k] * b[k]
                    k += 1
                c[j] += alpha * ((s0 + s1) + (s2 + s3))
        else:
            for j in range(N):
                s0 = 0
                for k in range(K):
                    s0 += A[k * lda + i] * B[j * ldb + k]
                c[j] += alpha * s0


def matmul(A, B, *, bint trans_a=False, bint trans_b=False, out=None, route="auto"):
    """``op(A) @ op(B)`` through the seam (for tests and benchmarks); returns ``out``.

    ``route`` is "auto" (size-based), "small" (plain loops) or "blas".
    """
    import numpy as np
    if A.dtype != B.dtype or A.dtype not in (np.float32, np.float64):
        raise TypeError(f"A, B: expected both float32 or both float64, got {A.dtype} and {B.dtype}")
    if A.ndim != 2 or B.ndim != 2:
        raise ValueError(f"A, B: expected 2-D arrays, got shapes {A.shape} and {B.shape}")
    M, K = (A.shape[1], A.shape[0]) if trans_a else A.shape
    K2, N = (B.shape[1], B.shape[0]) if trans_b else B.shape
    if K != K2:
        raise ValueError(f"B: inner dimension {K2} does not match A's {K}")
    if out is None:
        out = np.zeros((M, N), dtype=A.dtype)
    if out.shape != (M, N) or out.dtype != A.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out: expected C-contiguous {A.dtype} of shape {(M, N)}, got {out.dtype} {out.shape}")
    A = np.ascontiguousarray(A)
    B = np.ascontiguousarray(B)
    if route not in ("auto", "small", "blas"):
        raise ValueError(f"route: expected 'auto', 'small' or 'blas', got {route!r}")
    if A.dtype == np.float32:
        _matmul_f(A, B, out, trans_a, trans_b, route)
    else:
        _matmul_d(A, B, out, trans_a, trans_b, route)
    return out


cdef _matmul_f(const float[:, ::1] A, const float[:, ::1] B, float[:, ::1] C,
               bint trans_a, bint trans_b, str route):
    _matmul_any(A, B, C, trans_a, trans_b, route)


cdef _matmul_d(const double[:, ::1] A, const double[:, ::1] B, double[:, ::1] C,
               bint trans_a, bint trans_b, str route):
    _matmul_any(A, B, C, trans_a, trans_b, route)


cdef _matmul_any(const floating[:, ::1] A, const floating[:, ::1] B, floating[:, ::1] C,
                 bint trans_a, bint trans_b, str route):
    cdef int M = C.shape[0], N = C.shape[1]
    cdef int K = A.shape[0] if trans_a else A.shape[1]
    cdef int lda = A.shape[1], ldb = B.shape[1], ldc = C.shape[1]
    cdef int which = 0 if route == "auto" else (1 if route == "small" else 2)
    if M == 0 or N == 0:
        return
    if K == 0:
        C[:, :] = 0
        return
    with nogil:
        if which == 0:
            gemm(trans_a, trans_b, M, N, K, <floating>1, &A[0, 0], lda, &B[0, 0], ldb, <floating>0, &C[0, 0], ldc)
        elif which == 1:
            gemm_small(trans_a, trans_b, M, N, K, <floating>1, &A[0, 0], lda, &B[0, 0], ldb, <floating>0, &C[0, 0], ldc)
        else:
            gemm_blas(trans_a, trans_b, M, N, K, <floating>1, &A[0, 0], lda, &B[0, 0], ldb, <floating>0, &C[0, 0], ldc)


def repeat(A, B, out, *, bint trans_a=False, bint trans_b=False, route="auto", long n=1):
    """Run the same product ``n`` times inside C (benchmarks: per-call cost without Python)."""
    import numpy as np
    if route not in ("auto", "small", "blas"):
        raise ValueError(f"route: expected 'auto', 'small' or 'blas', got {route!r}")
    if A.dtype != np.float32 or B.dtype != np.float32 or out.dtype != np.float32:
        raise TypeError("A, B, out: expected float32")
    _repeat_f(A, B, out, trans_a, trans_b, 0 if route == "auto" else (1 if route == "small" else 2), n)


cdef _repeat_f(const float[:, ::1] A, const float[:, ::1] B, float[:, ::1] C, bint trans_a, bint trans_b,
               int which, long n):
    cdef int M = C.shape[0], N = C.shape[1]
    cdef int K = A.shape[0] if trans_a else A.shape[1]
    cdef int lda = A.shape[1], ldb = B.shape[1], ldc = C.shape[1]
    cdef long i
    with nogil:
        for i in range(n):
            if which == 0:
                gemm(trans_a, trans_b, M, N, K, <float>1, &A[0, 0], lda, &B[0, 0], ldb, <float>0, &C[0, 0], ldc)
            elif which == 1:
                gemm_small(trans_a, trans_b, M, N, K, <float>1, &A[0, 0], lda, &B[0, 0], ldb, <float>0, &C[0, 0], ldc)
            else:
                gemm_blas(trans_a, trans_b, M, N, K, <float>1, &A[0, 0], lda, &B[0, 0], ldb, <float>0, &C[0, 0], ldc)


def gemm_py(A, B, C, *, double alpha=1.0, double beta=0.0, bint trans_a=False, bint trans_b=False,
            route="auto"):
    """``C <- alpha * op(A) @ op(B) + beta * C`` through the seam, in place (tests); returns C.

    A, B, C: 2-D arrays of one dtype (float32 or float64) whose rows are contiguous (unit stride
    along axis 1) and whose row strides, the leading dimensions ``lda``, ``ldb``, ``ldc``, may
    exceed the row length (views of the first columns of wider arrays). ``op(A)`` is (M, K), ``op(B)``
    (K, N), C (M, N). ``route`` as for ``matmul``. beta == 0 never reads C. Raises TypeError for
    mixed or other dtypes and ValueError naming the argument for shapes, layouts or the route.
    """
    import numpy as np
    if not (A.dtype == B.dtype == C.dtype) or A.dtype not in (np.float32, np.float64):
        raise TypeError(f"A, B, C: expected one dtype, float32 or float64, got {A.dtype}, {B.dtype} and {C.dtype}")
    lds = []
    for name, X in (("A", A), ("B", B), ("C", C)):
        if X.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D array, got shape {X.shape}")
        rows, cols = X.shape
        item = X.itemsize
        row_stride = X.strides[0] if rows > 1 else max(cols, 1) * item
        if (cols > 1 and X.strides[1] != item) or row_stride % item or row_stride < max(cols, 1) * item:
            raise ValueError(f"{name}: expected rows of contiguous elements with a row stride of at least the "
                             f"row length (C order, or a view of a wider C-order array), got strides {X.strides} "
                             f"for shape {X.shape}")
        lds.append(row_stride // item)
    M, K = (A.shape[1], A.shape[0]) if trans_a else A.shape
    K2, N = (B.shape[1], B.shape[0]) if trans_b else B.shape
    if K != K2:
        raise ValueError(f"B: inner dimension {K2} does not match A's {K}")
    if C.shape != (M, N):
        raise ValueError(f"C: expected shape {(M, N)}, got {C.shape}")
    if not C.flags.writeable:
        raise ValueError("C: expected a writeable array")
    if route not in ("auto", "small", "blas"):
        raise ValueError(f"route: expected 'auto', 'small' or 'blas', got {route!r}")
    which = 0 if route == "auto" else (1 if route == "small" else 2)
    if A.dtype == np.float32:
        _gemm_f(A, B, C, lds[0], lds[1], lds[2], <float>alpha, <float>beta, trans_a, trans_b, which)
    else:
        _gemm_d(A, B, C, lds[0], lds[1], lds[2], alpha, beta, trans_a, trans_b, which)
    return C


cdef _gemm_f(const float[:, :] A, const float[:, :] B, float[:, :] C, int lda, int ldb, int ldc, float alpha,
             float beta, bint trans_a, bint trans_b, int which):
    _gemm_any(A, B, C, lda, ldb, ldc, alpha, beta, trans_a, trans_b, which)


cdef _gemm_d(const double[:, :] A, const double[:, :] B, double[:, :] C, int lda, int ldb, int ldc, double alpha,
             double beta, bint trans_a, bint trans_b, int which):
    _gemm_any(A, B, C, lda, ldb, ldc, alpha, beta, trans_a, trans_b, which)


cdef _gemm_any(const floating[:, :] A, const floating[:, :] B, floating[:, :] C, int lda, int ldb, int ldc,
               floating alpha, floating beta, bint trans_a, bint trans_b, int which):
    cdef int M = C.shape[0], N = C.shape[1]
    cdef int K = A.shape[0] if trans_a else A.shape[1]
    cdef int i, j
    if M == 0 or N == 0:
        return
    if K == 0:  # an empty sum: C <- beta C (without reading C when beta is 0)
        for i in range(M):
            for j in range(N):
                C[i, j] = 0 if beta == 0 else beta * C[i, j]
        return
    with nogil:
        if which == 0:
            gemm(trans_a, trans_b, M, N, K, alpha, &A[0, 0], lda, &B[0, 0], ldb, beta, &C[0, 0], ldc)
        elif which == 1:
            gemm_small(trans_a, trans_b, M, N, K, alpha, &A[0, 0], lda, &B[0, 0], ldb, beta, &C[0, 0], ldc)
        else:
            gemm_blas(trans_a, trans_b, M, N, K, alpha, &A[0, 0], lda, &B[0, 0], ldb, beta, &C[0, 0], ldc)
