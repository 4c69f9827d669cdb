"""The README's GRU table: one GRU layer's forward + backward through time, memrl against torch.nn.GRU.

    python bench/bench_gru.py [--repeats 31] [--smoke]

For each (T, B, I, H) prints the median time of one forward + backward (all parameter, input and
initial-state gradients) for memrl (float32, exact gates, with its GFLOP/s, and fast gates) and
for torch.nn.GRU (float32, autograd, ``torch.set_num_threads(1)``) when torch is installed, and
the ratio torch / memrl (exact gates). GFLOP/s counts the six products of forward and backward:
2 * 3 * T * B * 3H * (I + H) flops.
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
    if args.repeats < 1:
        parser.error("--repeats: expected a positive integer")
    sizes = SMOKE_SIZES if args.smoke else SIZES
    repeats = 3 if args.smoke else args.repeats
    try:
        import torch
        have_torch = True
    except ImportError:
        torch, have_torch = None, False
    print(f"# {_common.machine()}; load average {_common.load()}; torch "
          f"{torch.__version__ if have_torch else 'not installed'}; float32, one thread, median of {repeats}")
    rows = []
    for T, B, I, H in sizes:
        inner = 5 if args.smoke else max(1, int(2e7 / flops(T, B, I, H)))
        t_exact = _common.median_time(memrl_fn(T, B, I, H, "exact"), repeats=repeats, inner=inner)
        t_fast = _common.median_time(memrl_fn(T, B, I, H, "fast"), repeats=repeats, inner=inner)
        row = [f"{T}, {B}, {I}, {H}", f"{_common.fmt_time(t_exact)} ({flops(T, B, I, H) / t_exact / 1e9:.1f} GFLOP/s)",
               _common.fmt_time(t_fast)]
        if have_torch:
            t_torch = _common.median_time(torch_fn(T, B, I, H), repeats=repeats, inner=inner)
            row += [_common.fmt_time(t_torch), _common.fmt_ratio(t_torch / t_exact)]
        else:
            row += ["-", "-"]
        rows.append(row)
    print(_common.markdown_table(["T, B, I, H", "memrl (exact gates)", "memrl (fast gates)", "torch.nn.GRU",
                                  "torch / memrl"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
