"""memrl: memory-based deep reinforcement learning (recurrent SAC and TD3) on the CPU.

``memrl.Policy`` (an exported actor) runs with NumPy alone; everything else uses the compiled
kernels in ``memrl._core`` and SciPy's OpenBLAS, which is pinned to one thread here.

When Gymnasium is installed, ``import memrl`` registers memrl's environments with it
(``gymnasium.make("memrl/Memory-v0")``; see ``memrl.envs.gym``), as third-party environment
packages do; without Gymnasium nothing is imported for it.

A source tree whose kernels are not compiled (a fresh clone, say, where ``python -m memrl``
finds the clone's ``memrl/`` before the installed one) hands the import over to another ``memrl``
on the import path that has them: an installed copy, or an editable install's source tree. The
whole package then comes from that copy (``memrl.__file__`` names it). Without one, the import
fails with an ImportError saying what to run.
"""
import importlib.machinery as _machinery
import os as _os
import sys as _sys

__version__ = "0.1.0"

_PACKAGE_DIR = _os.path.dirname(_os.path.abspath(__file__))


def _has_kernels(package_dir: str) -> bool:
    """Whether ``package_dir/_core`` holds a compiled ``_update`` extension for this interpreter."""
    core = _os.path.join(package_dir, "_core")
    return any(_os.path.isfile(_os.path.join(core, "_update" + suffix))
               for suffix in _machinery.EXTENSION_SUFFIXES)


def _built_copy_spec():
    """The spec of another ``memrl`` package with compiled kernels, in import order, or None.

    Looks where the import system looks, minus this tree: each ``sys.path`` entry through the
    path finder, and every other meta-path finder (e.g. setuptools' editable-install finder).
    """
    here = _os.path.realpath(_PACKAGE_DIR)

    def usable(spec):
        if spec is None or not spec.origin or spec.submodule_search_locations is None:
            return False
        package_dir = _os.path.dirname(spec.origin)
        return _os.path.realpath(package_dir) != here and _has_kernels(package_dir)

    for finder in _sys.meta_path:
        if finder is _machinery.PathFinder:
            for entry in list(_sys.path):
                spec = _machinery.PathFinder.find_spec(__name__, [entry])
                if usable(spec):
                    return spec
            continue
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(__name__, None)
        except Exception:  # a third-party finder that cannot answer for this name
            continue
        if usable(spec):
            return spec
    return None


def _not_built_message() -> str:
    root = _os.path.dirname(_PACKAGE_DIR)
    if _os.path.isfile(_os.path.join(root, "setup.py")):
        advice = f"run 'pip install .' (or 'pip install -e .') from {root}"
    else:
        advice = "reinstall memrl with pip"
    return f"memrl's compiled kernels are not built in {_os.path.join(_PACKAGE_DIR, '_core')}: {advice}"


if _has_kernels(_PACKAGE_DIR):
    try:
        from memrl import blas as _blas
        from memrl import isa as _isa

        _isa.install_finder()
        _blas.install_seam_finder()
        _blas.pin_threads()
    except ImportError:  # SciPy missing: only the NumPy-only parts (memrl.policy) are usable
        pass

    import importlib.util as _util

    try:
        _gymnasium_installed = _util.find_spec("gymnasium") is not None
    except ValueError:  # a module object without a spec stands in for gymnasium
        _gymnasium_installed = _sys.modules.get("gymnasium") is not None
    if _gymnasium_installed:
        from memrl.envs.gym import _register_on_import

        _register_on_import()
else:
    _spec = _built_copy_spec()
    if _spec is None:
        # name= makes `python -m memrl` print this as one line, without a traceback
        raise ImportError(_not_built_message(), name=__name__)
    import importlib.util as _util

    # The import statement returns whatever sys.modules holds once this body is done.
    _sys.modules[__name__] = _util.module_from_spec(_spec)
    _spec.loader.exec_module(_sys.modules[__name__])


def __getattr__(name):
    if name == "Policy":
        from memrl.policy import Policy

        return Policy
    raise AttributeError(f"module 'memrl' has no attribute {name!r}")
