"""GRU layer forward + backward through time: memrl against torch.nn.GRU, one thread.

    python bench/bench_gru.py [--smoke] [--repeats N]

For each (T, B, I, H) prints the median microseconds of one forward + backward (all parameter,
input and initial-state gradients) for memrl (float32, exact gates, and fast gates) and for
torch.nn.GRU (float32, autograd, ``torch.set_num_threads(1)``) when torch is installed, the
ratio torch/memrl, and memrl's GFLOP/s (counting the six products of forward and backward:
12 T B 3H (I + H) flops).
"""
import argparse
import sys

import _common
import numpy as np

import memrl  # noqa: F401  (pins SciPy's OpenBLAS to one thread)
from memrl.nn import GRU, Sequential

SIZES = [(50, 4, 16, 16), (50, 64, 64, 64), (50, 256, 256, 256)]
SMOKE_SIZES = [(5, 2, 3, 4), (8, 4, 8, 8)]


def flops(T, B, I, H):
    return 2 * T * B * 3 * H * (I + H) * 3  # forward: 1 product pair; backward: 2 pairs


def memrl_fn(T, B, I, H, gates):
    model = Sequential([GRU(I, H, gates)], dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)

    def run():
        model.forward(x, check=False)
        model.backward(dy, check=False)

    return run


def torch_fn(T, B, I, H):
    import torch
    torch.set_num_threads(1)
    gru = torch.nn.GRU(I, H)
    x = torch.randn(T, B, I, requires_grad=True)
    h0 = torch.zeros(1, B, H, requires_grad=True)
    dy = torch.randn(T, B, H)

    def run():
        y, _ = gru(x, h0)
        y.backward(dy)

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, few repetitions (CI)")
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args(argv)
    sizes = SMOKE_SIZES if args.smoke else SIZES
    repeats = 3 if args.smoke else args.repeats
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    print(f"# {_common.machine()}; torch {'installed' if have_torch else 'not installed'}")
    print(f"{'T':>3} {'B':>4} {'I':>4} {'H':>4} | {'memrl us':>10} {'GFLOP/s':>8} | {'fast us':>9} | "
          f"{'torch us':>10} {'GFLOP/s':>8} | {'torch/memrl':>11} {'torch/fast':>10}")
    for T, B, I, H in sizes:
        inner = max(1, int(2e7 / flops(T, B, I, H)))
        t_exact = _common.median_time(memrl_fn(T, B, I, H, "exact"), repeats=repeats, inner=inner)
        t_fast = _common.median_time(memrl_fn(T, B, I, H, "fast"), repeats=repeats, inner=inner)
        f = flops(T, B, I, H)
        row = (f"{T:>3} {B:>4} {I:>4} {H:>4} | {t_exact * 1e6:>10.1f} {f / t_exact / 1e9:>8.1f} | "
               f"{t_fast * 1e6:>9.1f} | ")
        if have_torch:
            t_torch = _common.median_time(torch_fn(T, B, I, H), repeats=repeats, inner=inner)
            row += (f"{t_torch * 1e6:>10.1f} {f / t_torch / 1e9:>8.1f} | {t_torch / t_exact:>11.2f} "
                    f"{t_torch / t_fast:>10.2f}")
        else:
            row += f"{'-':>10} {'-':>8} | {'-':>11} {'-':>10}"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
