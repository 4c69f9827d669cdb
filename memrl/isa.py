"""Which instruction-set build of memrl's elementwise kernels this process runs.

On x86-64, setup.py compiles the kernels whose loops gain from wider vectors (``_adam``,
``_dense``, ``_gru``: Adam, the activations, the GRU gates) twice: for the x86-64 baseline (SSE2),
and for x86-64-v3 (AVX2, FMA, BMI; Intel Haswell, AMD Excavator and later) into
``memrl/_core/_x86_64_v3/``. At the first import of one of those kernels, a ``sys.meta_path``
finder (installed by ``import memrl``) picks a path for the whole process and loads the chosen
build under the kernel's own name (``memrl._core._gru``), so every module that cimports it gets
it. This is run-time dispatch by CPU, as NumPy and OpenBLAS do it: the wheel stays portable.

Both builds run the same IEEE operations in the same order (``-ffp-contract=off``: no fused
multiply-adds), so they compute the same bits (``tests/test_isa.py`` checks every path against
the baseline). The x86-64-v3 build takes about 8% off a training step of the chapter and of the
POMDP presets (``bench/bench_isa.py``). An x86-64-v4 (AVX-512) build was measured too and is not
built: no faster at 64 units, and slower at the chapter's 16.

``MEMRL_ISA`` (read once): ``auto`` (default: x86-64-v3 when this CPU runs it and this build has
it, else the baseline), ``baseline`` or ``x86-64-v3``. Forcing a path this CPU or this build
lacks raises ImportError at that first import, naming what is missing.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import platform
import sys

ISAS = ("baseline", "x86-64-v3")
"""The instruction-set paths memrl knows, baseline first."""

_CORE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_core")
_PREFIX = "memrl._core."
_selected: str | None = None


def variant_dir(isa: str) -> str:
    """The directory of ``isa``'s kernel builds (setup.py writes the same layout)."""
    return os.path.join(_CORE, "_" + isa.replace("-", "_"))


def variant_file(isa: str, module: str) -> str | None:
    """The extension file of kernel ``module`` (e.g. ``"_gru"``) built for ``isa``, or None."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(variant_dir(isa), module + suffix)
        if os.path.isfile(path):
            return path
    return None


def _built(isa: str) -> bool:
    """Whether this installation holds any kernel built for ``isa``."""
    try:
        names = os.listdir(variant_dir(isa))
    except OSError:
        return False
    return any(name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)) for name in names)


def cpu_supports(isa: str) -> bool:
    """Whether this CPU (and its OS) runs code built for ``isa`` (loads ``memrl._core._build``)."""
    if isa not in ISAS:
        raise ValueError(f"isa: expected one of {ISAS}, got {isa!r}")
    if isa == "baseline":
        return True
    from memrl._core import _build

    return bool(_build.CPU_X86_64_V3)


def selected() -> str:
    """The path this process runs (chosen at the first call, from ``MEMRL_ISA``; see the module
    docstring). Raises ValueError for an unknown ``MEMRL_ISA`` and ImportError for a path this CPU
    or this build lacks."""
    global _selected
    if _selected is None:
        _selected = _choose(os.environ.get("MEMRL_ISA", "auto").strip() or "auto")
    return _selected


def _choose(requested: str) -> str:
    if requested not in ("auto", *ISAS):
        raise ValueError(f"MEMRL_ISA: expected 'auto' or one of {ISAS}, got {requested!r}")
    if requested == "baseline":
        return requested
    for isa in ([requested] if requested != "auto" else reversed(ISAS[1:])):
        if not _built(isa):
            if requested == "auto":
                continue
            raise ImportError(f"MEMRL_ISA={isa}: this build of memrl has no {isa} kernels (in "
                              f"{variant_dir(isa)}; they are built on x86-64 with GCC or Clang, this is "
                              f"{platform.machine() or 'an unknown machine'})")
        if cpu_supports(isa):
            return isa
        if requested != "auto":
            raise ImportError(f"MEMRL_ISA={isa}: this CPU does not run {isa} code (it needs AVX2, FMA "
                              "and BMI); unset MEMRL_ISA or set it to 'baseline'")
    return "baseline"


class _VariantFinder:
    """A ``sys.meta_path`` finder that loads the selected build of each kernel that has one."""

    def find_spec(self, name, path, target=None):
        if not name.startswith(_PREFIX) or "." in name[len(_PREFIX):]:
            return None
        module = name[len(_PREFIX):]
        if module == "_build":  # read by selected() itself; it has no variants
            return None
        isa = selected()
        if isa == "baseline":
            return None
        file = variant_file(isa, module)
        if file is None:
            return None
        return importlib.util.spec_from_file_location(name, file)


def install_finder() -> None:
    """Put the variant finder first on ``sys.meta_path`` (called by ``import memrl``; chooses and
    loads nothing itself)."""
    if not any(isinstance(f, _VariantFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _VariantFinder())
