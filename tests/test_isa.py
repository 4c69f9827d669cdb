"""Every instruction-set path of the kernels (memrl.isa) computes the baseline's bits.

Each path runs in its own process (the path is chosen once per process, from MEMRL_ISA), which
prints a digest of what the kernels with variants computed: the GRU's forward and backward through
time (both gate modes, hidden sizes whose rows leave vector remainders, resets), the dense layer
over every activation, the activation loops on values around every clamp, Adam with every option,
Polyak averaging, and short training runs of the chapter and of a POMDP preset (every-step
losses, exact gates, 64 units). The test compares each path's digests with the baseline's.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memrl import isa
from memrl._core import ACTIVATIONS

_PROBE = r"""
import hashlib, json, sys
import numpy as np
import memrl
from memrl import isa
from memrl._core import ACTIVATIONS
from memrl._core import _adam, _dense, _gru, ACTIVATIONS

out = {"isa": isa.selected(), "files": {m.__name__: m.__file__ for m in (_adam, _dense, _gru)}}

def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]

rng = np.random.default_rng(7)
for dtype in (np.float32, np.float64):
    # H = 16 with B = 4 and 8 runs both blocks of _small_gemm.h (the x86-64-v3 kernels of the
    # time loop), B = 1 and 3 the shapes it leaves to BLAS; 64 and 37 run BLAS only.
    for T, B, I, H in ((7, 3, 5, 16), (6, 4, 5, 16), (5, 8, 2, 16), (3, 1, 4, 16), (5, 4, 9, 64), (4, 2, 3, 37)):
        for mode in (0, 1):
            x = rng.normal(0, 1.5, (T, B, I)).astype(dtype)
            h0 = rng.normal(0, 0.5, (B, H)).astype(dtype)
            reset = (rng.random((T, B)) < 0.3).astype(np.uint8)
            W_ih, W_hh = (rng.normal(0, 0.6, (3 * H, n)).astype(dtype) for n in (I, H))
            b_ih, b_hh = (rng.normal(0, 0.5, 3 * H).astype(dtype) for _ in range(2))
            h, hn, h_prev = (np.zeros((T, B, H), dtype) for _ in range(3))
            preact, gates = (np.zeros((T, B, 3 * H), dtype) for _ in range(2))
            _gru.forward(x, h0, reset, W_ih, W_hh, b_ih, b_hh, h, preact, gates, hn, h_prev,
                         np.zeros((H, 3 * H), dtype), np.zeros((B, 3 * H), dtype), mode)
            dy = rng.normal(0, 1, (T, B, H)).astype(dtype)
            dW_ih, dW_hh = np.zeros_like(W_ih), np.zeros_like(W_hh)
            db_ih, db_hh = np.zeros_like(b_ih), np.zeros_like(b_hh)
            dx, dh0 = np.zeros_like(x), np.zeros_like(h0)
            _gru.backward(x, reset, W_ih, W_hh, preact, gates, hn, h_prev, dy, dW_ih, dW_hh, db_ih, db_hh,
                          dx, dh0, np.zeros((T, B, 3 * H), dtype), np.zeros((T, B, 3 * H), dtype),
                          np.zeros((B, H), dtype), np.zeros((B, H), dtype), mode)
            hs = h0.copy()
            for t in range(T):
                _gru.step(np.ascontiguousarray(x[t]), hs, np.ascontiguousarray(reset[t]), W_ih, W_hh, b_ih, b_hh,
                          np.zeros((B, 3 * H), dtype), np.zeros((B, 3 * H), dtype), mode)
            out[f"gru {dtype.__name__} {T}x{B}x{I}x{H} mode {mode}"] = digest(
                h, preact, gates, dW_ih, dW_hh, db_ih, db_hh, dx, dh0, hs)
    grid = np.concatenate([np.linspace(-12, 12, 2001), [-9, -3, -1.5, 0, 1.5, 3, 9, -0.0]]).astype(dtype)
    for act, name in enumerate(ACTIVATIONS):
        x = rng.normal(0, 2, (13, 21)).astype(dtype)
        W = rng.normal(0, 0.5, (37, 21)).astype(dtype)
        b = rng.normal(0, 0.5, 37).astype(dtype)
        pre, y = np.zeros((13, 37), dtype), np.zeros((13, 37), dtype)
        _dense.forward(x, W, b, pre, y, act)
        dW, db, dx, dpre = np.zeros_like(W), np.zeros_like(b), np.zeros_like(x), np.zeros_like(pre)
        _dense.backward(x, W, pre, y, rng.normal(0, 1, (13, 37)).astype(dtype), dW, db, dx, dpre, act)
        a, g = np.zeros_like(grid), np.zeros_like(grid)
        _dense.activation(act, grid, a)
        _dense.activation_grad(act, grid, g)
        out[f"dense {dtype.__name__} {name}"] = digest(pre, y, dW, db, dx, dpre, a, g)
    for options in ({}, {"v_hat_floor": 1e-6, "clip": 0.05}, {"weight_decay": 0.01, "bias_lr_factor": 2.0}):
        n = 1003
        p, g = rng.normal(0, 1, n).astype(dtype), rng.normal(0, 1, n).astype(dtype)
        m, v = np.zeros(n, dtype), np.zeros(n, dtype)
        is_bias = (np.arange(n) % 5 == 0).astype(np.uint8)
        for t in range(1, 4):
            _adam.adam_step(p, g * t, m, v, t, 1e-3, is_bias=is_bias, **options)
        target = rng.normal(0, 1, n).astype(dtype)
        _adam.polyak(target, p, 0.005)
        out[f"adam {dtype.__name__} {sorted(options)}"] = digest(p, m, v, target)

from memrl.config import preset
from memrl.loop import Trainer
for name, changes in (("memory-chapter", dict(total_steps=240, n_warmup_steps=60, n_warmup_steps_critic=60,
                                              n_warmup_steps_actor=120)),
                      ("pendulum-v-sac", dict(total_steps=90, n_warmup_steps=60, n_warmup_steps_critic=60,
                                              n_warmup_steps_actor=60, sequence_length=16, batch_size=4))):
    trainer = Trainer(preset(name).replace(**changes, checkpoint_interval=None), seed=3)
    while trainer.step():
        pass
    out[f"train {name}"] = digest(*(net.params for net in trainer.agent.networks().values()))
print(json.dumps(out))
"""


def _probe(path: str) -> dict:
    env = dict(os.environ, MEMRL_ISA=path)
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _runnable():
    return [p for p in isa.ISAS[1:] if isa.variant_file(p, "_gru") is not None and isa.cpu_supports(p)]


@pytest.fixture(scope="module")
def baseline():
    return _probe("baseline")


def test_baseline_loads_the_baseline_build(baseline):
    assert baseline["isa"] == "baseline"
    for file in baseline["files"].values():
        assert os.path.dirname(file) == os.path.dirname(isa.variant_dir("baseline"))


@pytest.mark.parametrize("path", isa.ISAS[1:])
def test_every_path_computes_the_baseline_bits(path, baseline):
    if path not in _runnable():
        pytest.skip(f"this build or this CPU has no {path} path")
    got = _probe(path)
    assert got["isa"] == path
    for module, file in got["files"].items():  # the variants were loaded, not the baseline
        assert os.path.dirname(file) == isa.variant_dir(path), module
    keys = [k for k in baseline if k not in ("isa", "files")]
    assert len(keys) == 2 * (6 * 2 + len(ACTIVATIONS) + 3) + 2  # per dtype: GRU shapes x modes, activations, Adam
    differing = [k for k in keys if got[k] != baseline[k]]
    assert not differing, f"{path} differs from the baseline in: {differing}"


def test_auto_picks_the_widest_path_this_machine_runs():
    expected = (_runnable() or ["baseline"])[-1]
    code = "import memrl, memrl.isa; from memrl._core import _gru; print(memrl.isa.selected(), _gru.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "MEMRL_ISA"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    chosen, file = done.stdout.split()
    assert chosen == expected
    assert os.path.dirname(file) == (isa.variant_dir(expected) if expected != "baseline"
                                     else os.path.dirname(isa.variant_dir("baseline")))


def test_an_unknown_path_is_refused_with_the_known_ones():
    env = dict(os.environ, MEMRL_ISA="avx9000")
    done = subprocess.run([sys.executable, "-c", "import memrl; from memrl._core import _gru"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "MEMRL_ISA: expected 'auto' or one of ('baseline', 'x86-64-v3'), got 'avx9000'" in done.stderr


def test_a_missing_path_is_refused_naming_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(isa, "variant_dir", lambda path: str(tmp_path / path))  # a build without variants
    with pytest.raises(ImportError, match="MEMRL_ISA=x86-64-v3: this build of memrl has no x86-64-v3 kernels"):
        isa._choose("x86-64-v3")
    assert isa._choose("auto") == "baseline"
    monkeypatch.undo()
    if isa.variant_file("x86-64-v3", "_gru") is not None:
        monkeypatch.setattr(isa, "cpu_supports", lambda path: path == "baseline")  # an older CPU
        with pytest.raises(ImportError, match="this CPU does not run x86-64-v3 code"):
            isa._choose("x86-64-v3")
        assert isa._choose("auto") == "baseline"


_STEP_PRODUCTS = r"""
import json, sys
import numpy as np
import memrl
from memrl._core import _blas, _gru
rng = np.random.default_rng(11)
differ, kernel = [], []
for M in (*range(1, 10), 11, 12, 13, 16, 20, 24, 28, 31, 32, 33, 36):
    for N in (8, 16, 24, 32, 48, 64, 80, 192, 256, 272):
        for K in (1, 2, 3, 7, 15, 16, 17, 31, 48, 63, 64, 65, 192, 256, 257):
            for accumulate in (False, True):
                A, B, C0 = (rng.normal(0, 2, s).astype(np.float32) for s in ((M, K), (K, N), (M, N)))
                want = _blas.gemm_py(A, B, C0.copy(), beta=1.0 if accumulate else 0.0)
                got = C0.copy()
                if _gru.step_product(A, B, got, accumulate=accumulate):
                    kernel.append((M, N, K))
                if got.tobytes() != want.tobytes():
                    differ.append((M, N, K, accumulate))
print(json.dumps({"differ": differ, "kernel": sorted(set(kernel)), "in_use": _gru.small_kernel_in_use(),
                  "order": _gru.small_kernel_order()}))
"""


@pytest.mark.parametrize("path", isa.ISAS)
def test_the_time_loop_products_compute_gemms_bits(path):
    # The GRU's per-time-step products (_gru._step_product: the register-blocked kernels of
    # _small_gemm.h where they apply) give gemm's bits for every shape around the kernels' range.
    if path != "baseline" and path not in _runnable():
        pytest.skip(f"this build or this CPU has no {path} path")
    env = dict(os.environ, MEMRL_ISA=path)
    done = subprocess.run([sys.executable, "-c", _STEP_PRODUCTS], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["differ"] == []
    kernel = {tuple(s) for s in got["kernel"]}
    # The kernels run exactly where one of their summation orders reproduces OpenBLAS's bits (one
    # chain: its AVX-512 sgemm kernels; haswell: its Haswell kernel, which CPUs with AVX2 but no
    # AVX-512 get).
    assert got["in_use"] == (got["order"] is not None)
    assert got["order"] in (None, "one chain", "haswell")
    if path == "baseline":
        assert got["order"] is None and kernel == set()
    elif not got["in_use"]:
        assert kernel == set()
    else:  # the chapter's two products (B 4, H 16) take the kernels; shapes outside their range do not
        assert {(4, 48, 16), (4, 16, 48), (8, 48, 16), (8, 32, 64)} <= kernel
        assert (3, 48, 16) not in kernel and (4, 48, 65 if got["order"] == "one chain" else 257) not in kernel
        if got["order"] == "one chain":
            assert all(M in (4, 8) and N % 16 == 0 and N <= 64 and K <= 64 for M, N, K in kernel)
        else:  # and the POMDP presets' (B 16 or 32, H 64)
            assert {(16, 192, 64), (16, 64, 192), (32, 192, 64), (32, 256, 256), (12, 48, 17)} <= kernel
            assert all(M % 4 == 0 and M <= 32 and N % 16 == 0 and N <= 256 and K <= 256 for M, N, K in kernel)


def _haswell_paired(M, N):
    """(M, N) bool: the elements the Haswell order sums as paired chains (the others as one
    chain), from the blocking the header of _small_gemm.h describes: rows in blocks of 12 while 12
    are left, then of 4; in a block of 12, rows 0-5 pair columns 0-7 and then run 16-column blocks
    from column 8, rows 6-11 run 16-column blocks from column 0, and either half pairs an 8-column
    block left over at its end; blocks of 4 rows pair everything."""
    paired = np.ones((M, N), bool)
    blocks, i = N // 8, 0
    while M - i >= 12:
        paired[i:i + 12] = False
        paired[i:i + 6, :8] = True
        if (blocks - 1) % 2:
            paired[i:i + 6, -8:] = True
        if blocks % 2:
            paired[i + 6:i + 12, -8:] = True
        i += 12
    return paired


def _fma32(a, b, c):
    """float32 fma(a, b, c), rounded once: the float64 product of float32 inputs is exact, and the
    float64 sum is rounded to odd (TwoSum's error decides) before float32, so it rounds once."""
    p = a.astype(np.float64) * b.astype(np.float64)
    c = np.broadcast_to(c, p.shape).astype(np.float64)
    s = p + c
    t = s - p
    err = (p - (s - t)) + (c - t)
    even = (s.view(np.int64) & 1) == 0
    return np.where((err != 0) & even, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s).astype(np.float32)


def _written_out(A, B, C0, order, accumulate):
    """A @ B (+ C0) in float32, summed over k in ``order`` as the header of _small_gemm.h defines
    it, each fused multiply-add rounded once (``_fma32``)."""
    (M, K), N = A.shape, B.shape[1]
    one = np.zeros((M, N), np.float32)
    for k in range(K):
        one = _fma32(A[:, k:k + 1], B[k:k + 1], one)
    if order == "one chain":
        s = one
    else:
        chains = [np.zeros((M, N), np.float32), np.zeros((M, N), np.float32)]
        whole = K - K % 8
        for k in range(K):
            c = k % 2 if k < whole else 0
            chains[c] = _fma32(A[:, k:k + 1], B[k:k + 1], chains[c])
        s = np.where(_haswell_paired(M, N), chains[0] + chains[1], one)
    return C0 + s if accumulate else s


@settings(max_examples=60, deadline=None)
@given(M=st.sampled_from([4, 8, 12, 16, 20, 24, 28, 32]), N=st.sampled_from([16, 32, 48, 64, 80, 192, 256]),
       K=st.integers(1, 256), order=st.sampled_from(["one chain", "haswell"]), accumulate=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_the_small_product_kernels_compute_their_documented_order(M, N, K, order, accumulate, seed):
    # Each summation order of _small_gemm.h, whichever this machine's OpenBLAS uses, against its
    # written-out definition (the test above checks the order in use against gemm).
    from memrl._core import _gru
    if isa.selected() != "x86-64-v3":
        pytest.skip("the small-product kernels are on the x86-64-v3 path only")
    rng = np.random.default_rng(seed)
    A, B, C0 = (rng.normal(0, 2, s).astype(np.float32) for s in ((M, K), (K, N), (M, N)))
    got = C0.copy()
    takes = _gru.small_kernel_product(A, B, got, order, accumulate=accumulate)
    if order == "one chain":
        assert takes == (M <= 8 and N <= 64 and K <= 64)
    else:
        assert takes
    if not takes:
        assert got.tobytes() == C0.tobytes()
        return
    want = _written_out(A, B, C0, order, accumulate)
    np.testing.assert_array_equal(got, want)
    # the two orders differ somewhere, so neither stands in for the other
    if K >= 16:
        other = _written_out(A, B, C0, "haswell" if order == "one chain" else "one chain", accumulate)
        assert got.tobytes() != other.tobytes()


def test_the_small_product_kernels_refuse_unknown_orders_and_take_their_shapes_only():
    from memrl._core import _gru
    A, B, out = np.ones((4, 16), np.float32), np.ones((16, 48), np.float32), np.zeros((4, 48), np.float32)
    with pytest.raises(ValueError, match="order: expected one of"):
        _gru.small_kernel_product(A, B, out, "no such order")
    assert not _gru.small_kernel_product(np.ones((3, 16), np.float32), B, np.zeros((3, 48), np.float32),
                                         "one chain")
    assert _gru.small_kernel_product(A, B, out, "haswell") == (isa.selected() == "x86-64-v3")
    assert not _gru.small_kernel_product(np.ones((4, 16), np.float32), np.ones((16, 40), np.float32),
                                         np.zeros((4, 40), np.float32), "haswell")


def test_products_openblas_would_split_across_threads_go_to_openblas():
    # With more than one OpenBLAS thread, OpenBLAS splits products over 262144 multiply-adds across
    # them, which changes its rounding; the time loop then leaves those to OpenBLAS.
    from memrl import blas
    from memrl._core import _blas, _gru
    if _gru.small_kernel_order() != "haswell":
        pytest.skip("only the haswell order takes products that large")
    rng = np.random.default_rng(3)
    A, B = rng.normal(0, 1, (32, 64)).astype(np.float32), rng.normal(0, 1, (64, 192)).astype(np.float32)
    if blas.blas_threads_set() != 1:
        pytest.skip("needs OpenBLAS on one thread to start with (MEMRL_BLAS_THREADS unset or 1)")
    assert _gru.step_product(A, B, np.zeros((32, 192), np.float32))  # 393216 multiply-adds
    assert blas.set_num_threads(2)
    try:
        assert _blas.blas_threads() == 2
        got = np.zeros((32, 192), np.float32)
        assert not _gru.step_product(A, B, got)
        assert got.tobytes() == _blas.gemm_py(A, B, np.zeros((32, 192), np.float32), beta=0.0).tobytes()
        assert _gru.step_product(A[:16], B, np.zeros((16, 192), np.float32))  # 196608: one thread
    finally:
        blas.set_num_threads(1)
    assert _blas.blas_threads() == 1
    assert _gru.step_product(A, B, np.zeros((32, 192), np.float32))
