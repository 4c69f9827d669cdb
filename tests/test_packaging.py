"""Packaging: memrl imported from a source tree without compiled kernels (a fresh clone next to an
installed copy), the build mode the kernels were compiled in, and setup.py's debug/release
switching (generated C and .so files always follow the mode they are built in)."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import memrl

REPO = Path(__file__).resolve().parent.parent
BUILT_PACKAGE = Path(memrl.__file__).resolve().parent  # the copy these tests run against (built)


def run(args, cwd, env=None, timeout=120):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def clean_env(**extra):
    """The environment without PYTHONPATH and friends, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(extra)
    return env


@pytest.fixture
def unbuilt_clone(tmp_path):
    """A checkout whose ``memrl/`` holds the sources but no compiled kernels (what a fresh clone is)."""
    clone = tmp_path / "clone"
    shutil.copytree(BUILT_PACKAGE, clone / "memrl",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "__pycache__"))
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(REPO / name, clone / name)
    assert not list((clone / "memrl" / "_core").glob("_update*.so"))
    return clone


def not_built_message(clone):
    return (f"memrl's compiled kernels are not built in {clone / 'memrl' / '_core'}: "
            f"run 'pip install .' (or 'pip install -e .') from {clone}")


# ------------------------------------------------------------------ an unbuilt tree on the path


def test_python_m_memrl_in_an_unbuilt_clone_runs_the_built_copy(unbuilt_clone):
    # `python -m memrl` puts the clone's root first on sys.path; the built copy comes after it.
    env = clean_env(PYTHONPATH=str(BUILT_PACKAGE.parent))
    result = run([sys.executable, "-m", "memrl", "--help"], unbuilt_clone, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m memrl [-h] [--version] COMMAND")
    assert result.stderr == ""
    code = ("import sys, memrl, memrl.loop, memrl._core._update as sac\n"
            "print(memrl.__file__); print(memrl.loop.__file__); print(sac.__file__)\n"
            "print(sys.modules['memrl'] is memrl, memrl.__version__)\n")
    result = run([sys.executable, "-c", code], unbuilt_clone, env)
    assert result.returncode == 0, result.stderr
    init, loop, sac, last = result.stdout.splitlines()
    assert Path(init) == BUILT_PACKAGE / "__init__.py"
    assert Path(loop) == BUILT_PACKAGE / "loop.py"
    assert Path(sac).parent == BUILT_PACKAGE / "_core" and Path(sac).name.startswith("_update.")
    assert last == f"True {memrl.__version__}"


def test_an_unbuilt_clone_defers_to_a_meta_path_finder(unbuilt_clone):
    # Like setuptools' editable installs: a finder appended to sys.meta_path maps `memrl` to a
    # built tree that is not on sys.path. Every other way to reach a built memrl is removed.
    code = f"""
import importlib.machinery, importlib.util, sys
BUILT = {str(BUILT_PACKAGE)!r}
def finds_memrl(finder, entry=None):
    try:
        if finder is importlib.machinery.PathFinder:
            return finder.find_spec("memrl", [entry]) is not None
        return finder.find_spec("memrl", None) is not None
    except Exception:
        return False
sys.path[:] = [p for p in sys.path
               if p == "" or not finds_memrl(importlib.machinery.PathFinder, p)]
sys.meta_path[:] = [f for f in sys.meta_path
                    if f is importlib.machinery.PathFinder or not finds_memrl(f)]
class Finder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "memrl":
            return importlib.util.spec_from_file_location(
                name, BUILT + "/__init__.py", submodule_search_locations=[BUILT])
sys.meta_path.append(Finder)
import memrl.loop
print(memrl.__file__); print(memrl.loop.__file__)
"""
    result = run([sys.executable, "-c", code], unbuilt_clone, clean_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(BUILT_PACKAGE / "__init__.py"), str(BUILT_PACKAGE / "loop.py")]


def test_an_unbuilt_clone_without_a_built_copy_says_what_to_run(unbuilt_clone):
    # -S: no site-packages, so no installed or editable memrl can be found.
    env = clean_env()
    result = run([sys.executable, "-S", "-m", "memrl", "train", "memory-chapter"], unbuilt_clone, env)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert lines[0] == (f"{sys.executable}: Error while finding module specification for 'memrl.__main__' "
                        f"(ImportError: {not_built_message(unbuilt_clone)})")
    result = run([sys.executable, "-S", "-c", "import memrl.loop"], unbuilt_clone, env)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"ImportError: {not_built_message(unbuilt_clone)}"


# ------------------------------------------------------------------ the build mode

EXPECT_DEBUG = os.environ.get("MEMRL_EXPECT_DEBUG_BUILD")


@pytest.mark.skipif(EXPECT_DEBUG is None, reason="set MEMRL_EXPECT_DEBUG_BUILD=1 (debug build) or 0 (release)")
def test_the_kernels_were_built_in_the_expected_mode():
    from memrl import _core

    assert EXPECT_DEBUG in ("0", "1"), f"MEMRL_EXPECT_DEBUG_BUILD: expected 0 or 1, got {EXPECT_DEBUG!r}"
    debug = EXPECT_DEBUG == "1"
    assert (_core.DEBUG_BUILD, _core.BOUNDS_CHECKED, _core.WRAPAROUND_CHECKED) == (debug, debug, debug)
    if debug and _core.BOUNDS_CHECKED:  # never index out of bounds without the checks
        from memrl._core import _blas

        # repeat() indexes A[0, 0] without checking that A has a row: out of bounds for (0, 3).
        a = np.zeros((0, 3), np.float32)
        b = np.zeros((3, 2), np.float32)
        out = np.zeros((0, 2), np.float32)
        with pytest.raises(IndexError, match="Out of bounds on buffer access"):
            _blas.repeat(a, b, out)


def test_build_info_is_read_lazily():
    code = ("import sys, memrl._core as c\n"
            "assert 'memrl._core._build' not in sys.modules\n"
            "print(c.DEBUG_BUILD in (True, False), 'memrl._core._build' in sys.modules)\n")
    result = run([sys.executable, "-c", code], REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


# ------------------------------------------------------------------ setup.py switching modes


@pytest.mark.skipif(importlib.util.find_spec("Cython") is None, reason="needs Cython (the build requirements)")
def test_setup_rebuilds_when_the_mode_changes(tmp_path):
    # A tree with one kernel (the build-info module) built in place: release, debug, release.
    # Debug after release must not compile the release C (cythonize compares timestamps only);
    # release after debug must not keep the newer debug .so (build_ext compares timestamps only).
    tree = tmp_path / "tree"
    (tree / "memrl" / "_core").mkdir(parents=True)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    for name in ("__init__.py", "_core/__init__.py", "_core/_build.pyx"):
        shutil.copy(REPO / "memrl" / name, tree / "memrl" / name)
    probe = ("import importlib.util, sys\n"
             "spec = importlib.util.spec_from_file_location('memrl._core._build', sys.argv[1])\n"
             "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
             "print(m.DEBUG_BUILD, m.BOUNDS_CHECKED, m.WRAPAROUND_CHECKED)\n")
    for debug in ("0", "1", "0"):
        env = clean_env(MEMRL_CYTHON_DEBUG=debug)
        built = run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], tree, env, timeout=300)
        assert built.returncode == 0, built.stderr
        (so,) = (tree / "memrl" / "_core").glob("_build.*.so")
        result = run([sys.executable, "-c", probe, str(so)], tree, env)
        assert result.returncode == 0, result.stderr
        flag = "True" if debug == "1" else "False"
        assert result.stdout.split() == [flag, flag, flag], f"MEMRL_CYTHON_DEBUG={debug}"
    assert sorted(p.name for p in (tree / "memrl" / "_core").iterdir() if not p.name.endswith(".so")) == \
        ["__init__.py", "_build.pyx"]  # no generated C next to the sources
    c_dirs = sorted(p.name.split("-")[0] for p in (tree / "build" / "cython").iterdir())
    assert c_dirs == ["debug", "release"]


def test_the_kernels_load_without_scipy_linalg_and_scipy_linalg_still_imports_after():
    """memrl's GEMM seam loads SciPy's cython_blas alone (scipy.linalg's package costs ~25 MB of
    resident memory); a later ``import scipy.linalg`` is the ordinary one, and both compute."""
    code = (
        "import sys, numpy as np\n"
        "import memrl, memrl.loop, memrl.sac\n"
        "from memrl._core import _blas\n"
        "print('scipy.linalg' in sys.modules, 'scipy.linalg.cython_blas' in sys.modules)\n"
        "a = np.arange(12, dtype=np.float32).reshape(3, 4) / 7\n"
        "print(np.allclose(_blas.matmul(a, a.T, route='blas'), a.astype(np.float64) @ a.T, rtol=1e-6))\n"
        "import scipy.linalg\n"
        "print(scipy.linalg.cython_blas.__name__, float(scipy.linalg.blas.sgemm(1.0, a, a.T)[1, 2]))\n"
        "print(float(_blas.matmul(a, a.T, route='blas')[1, 2]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "False False"
    assert lines[1] == "True"
    name, value = lines[2].split()
    assert name == "scipy.linalg.cython_blas"
    expected = float(np.float32((np.arange(12, dtype=np.float32).reshape(3, 4) / 7)[1]
                                @ (np.arange(12, dtype=np.float32).reshape(3, 4) / 7)[2]))
    assert float(value) == pytest.approx(expected, rel=1e-6)
    assert float(lines[3]) == pytest.approx(expected, rel=1e-6)


def test_the_console_scripts_name_callables():
    """pyproject's [project.scripts] entries ("memrl" for python -m memrl) resolve to functions."""
    import importlib
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["memrl"] == "memrl.__main__:console_main"
    for target in scripts.values():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), target
