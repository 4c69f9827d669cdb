"""Saves checkpoints to one path in a loop until killed (for tests/test_checkpoint.py's kill test).

Usage: python _checkpoint_writer.py PATH N_FLOATS. Version i holds arrays filled with i and
meta {"version": i}; after each save it prints "saved i".
"""
import sys

import numpy as np

from memrl.checkpoint import save_checkpoint


def main(path: str, n_floats: int) -> None:
    version = 0
    while True:
        arrays = {"big": np.full(n_floats, version, np.float64),
                  "small": np.full((3, 4), version, np.int64)}
        save_checkpoint(path, arrays, {"version": version})
        print(f"saved {version}", flush=True)
        version += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
