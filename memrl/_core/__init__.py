"""Compiled kernels (Cython over NumPy buffers). Import the Python API from ``memrl`` instead.

``ACTIVATIONS`` and ``GATE_MODES`` name the codes the kernels take (plain Python, so settings
can be checked without loading them). How the kernels were built, read lazily from the tiny ``_build`` extension (importing this package
loads nothing compiled):

* ``DEBUG_BUILD``: built with ``MEMRL_CYTHON_DEBUG=1`` (bounds, wraparound and initialisation
  checks compiled in, ``-O1 -g``), from the C macro setup.py defines for every kernel;
* ``BOUNDS_CHECKED``, ``WRAPAROUND_CHECKED``: whether the generated C really checks memoryview
  indices, probed at import (see ``memrl/_core/_build.pyx``).
"""

ACTIVATIONS = ("identity", "relu", "tanh", "sigmoid", "fast_tanh", "fast_sigmoid")
"""Activation names; a name's index is its code in the kernels (``_activations.pxd``)."""
GATE_MODES = ("exact", "fast")
"""GRU gate modes: libm's sigmoid and tanh, or RLtools' Pade approximations; index = code."""

_BUILD_INFO = ("DEBUG_BUILD", "BOUNDS_CHECKED", "WRAPAROUND_CHECKED")


def __getattr__(name):
    if name in _BUILD_INFO:
        from memrl._core import _build

        return getattr(_build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_BUILD_INFO])
