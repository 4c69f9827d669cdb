"""memrl: memory-based deep reinforcement learning (recurrent SAC and TD3) on the CPU.

``memrl.Policy`` (an exported actor) runs with NumPy alone; everything else uses the compiled
kernels in ``memrl._core`` and SciPy's OpenBLAS, which is pinned to one thread here.
"""
__version__ = "0.1.0"

try:
    from memrl import blas as _blas

    _blas.pin_threads()
except ImportError:  # SciPy missing: only the NumPy-only parts (memrl.policy) are usable
    pass


def __getattr__(name):
    if name == "Policy":
        from memrl.policy import Policy

        return Policy
    raise AttributeError(f"module 'memrl' has no attribute {name!r}")
