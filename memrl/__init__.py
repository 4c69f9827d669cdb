"""memrl: memory-based deep reinforcement learning (recurrent SAC and TD3) on the CPU."""
from memrl import blas as _blas

_blas.pin_threads()

__version__ = "0.1.0"
