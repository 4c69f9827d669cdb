"""A checkpoint file format that never executes code on load, written atomically.

A checkpoint is an uncompressed ``.npz`` (a zip of ``.npy`` files): one entry per array, plus
``__manifest__.npy``, a uint8 array holding UTF-8 JSON::

    {"format": "memrl-checkpoint", "format_version": 1, "memrl_version": "0.1.0",
     "meta": {...},                                        # the caller's JSON (config, step, ...)
     "arrays": {"0.W": {"dtype": "<f4", "shape": [16, 1], "sha256": "..."}, ...}}

Loading reads with ``allow_pickle=False`` (object arrays are refused, nothing is unpickled) and
checks every array against the manifest (dtype, shape, SHA-256 of its C-order bytes), so a
truncated, corrupted or mixed-up file raises :class:`CheckpointError` instead of loading wrong
numbers. Saving writes a temporary file in the target directory, fsyncs it, renames it over the
target (``os.replace``, atomic on POSIX) and fsyncs the directory: a process killed while saving
leaves either the previous complete file or the new complete file at ``path``, never a mix.

``meta`` comes back as JSON gives it: tuples become lists and dict keys become strings.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile

import numpy as np

FORMAT_NAME = "memrl-checkpoint"
FORMAT_VERSION = 1
MANIFEST_KEY = "__manifest__"
# Plain numbers, booleans and fixed-width strings; never objects or structured records.
ALLOWED_DTYPE_KINDS = "biufcUSmM"


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted, of another format version, or not the one expected."""


# --------------------------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` and the JSON-serialisable ``meta`` to ``path`` atomically (see module doc)."""
    path = os.fspath(path)
    checked = _check_arrays(arrays)
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "memrl_version": _memrl_version(),
        "meta": meta,
        "arrays": {name: _describe(a) for name, a in checked.items()},
    }
    try:
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise TypeError(f"meta: expected JSON-serialisable values, got {error}") from None

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
                _write_entry(archive, MANIFEST_KEY, np.frombuffer(manifest_bytes, np.uint8))
                for name, a in checked.items():
                    _write_entry(archive, name, a)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def load_checkpoint(path: str | os.PathLike, *, expect_meta: dict | None = None
                    ) -> tuple[dict[str, np.ndarray], dict]:
    """Read and verify a checkpoint; returns ``(arrays, meta)``.

    Raises :class:`CheckpointError` naming what does not match: an unreadable or truncated file,
    a format name or version other than this module's, an array whose dtype, shape or checksum
    differs from the manifest, a missing or extra array, or (``expect_meta``) a meta key whose
    value differs from the expected one. A missing file raises ``FileNotFoundError``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # what np.load takes for an .npz; anything else is not a checkpoint
        raise CheckpointError(f"checkpoint {path}: expected an .npz (zip) archive, found a file starting {magic!r}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            if MANIFEST_KEY not in names:
                raise CheckpointError(f"checkpoint {path}: no {MANIFEST_KEY} entry (not a memrl checkpoint)")
            manifest = _parse_manifest(path, npz[MANIFEST_KEY])
            described = manifest["arrays"]
            stored = names - {MANIFEST_KEY}
            if stored != set(described):
                missing, extra = sorted(set(described) - stored), sorted(stored - set(described))
                raise CheckpointError(f"checkpoint {path}: arrays do not match the manifest "
                                      f"(missing {missing}, unlisted {extra})")
            arrays = {}
            for name, expected in described.items():
                arrays[name] = _verified(path, name, npz[name], expected)
    except CheckpointError:
        raise
    except Exception as error:  # zipfile.BadZipFile, EOFError, OSError, ValueError from a damaged entry
        raise CheckpointError(f"checkpoint {path}: unreadable or corrupted ({type(error).__name__}: {error})") from error
    meta = manifest["meta"]
    if expect_meta is not None:
        _check_expected_meta(path, meta, expect_meta)
    return arrays, meta


# --------------------------------------------------------------------------------------------
# A directory of checkpoints
# --------------------------------------------------------------------------------------------

class CheckpointManager:
    """Numbered checkpoints ``directory/step_<step:012d>.npz``, keeping the newest ``keep``.

    Meant for one writer per directory: ``save`` also removes temporary files left by a writer
    that was killed mid-save.
    """

    FILE_PATTERN = re.compile(r"^step_(\d{12})\.npz$")

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep: expected an integer >= 1, got {keep!r}")
        self.directory = os.fspath(directory)
        self.keep = keep
        os.makedirs(self.directory, exist_ok=True)

    def path_for(self, step: int) -> str:
        return os.path.join(self.directory, f"step_{step:012d}.npz")

    def paths(self) -> list[str]:
        """Checkpoint files in the directory, oldest (lowest step) first."""
        found = []
        for name in os.listdir(self.directory):
            match = self.FILE_PATTERN.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(self.directory, name)))
        return [p for _, p in sorted(found)]

    def save(self, step: int, arrays: dict[str, np.ndarray], meta: dict) -> str:
        """Write the checkpoint of ``step`` atomically, then delete the oldest beyond ``keep``.

        The file just written is never deleted, even if older checkpoints have higher steps.
        """
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < 10**12:
            raise ValueError(f"step: expected an integer in [0, 10**12), got {step!r}")
        path = self.path_for(int(step))
        save_checkpoint(path, arrays, meta)
        others = [p for p in self.paths() if p != path]
        for old in others[:max(0, len(others) - (self.keep - 1))]:
            _remove(old)
        for name in os.listdir(self.directory):
            if name.startswith(".step_") and name.endswith(".tmp"):
                _remove(os.path.join(self.directory, name))
        return path

    def latest(self, *, expect_meta: dict | None = None) -> str | None:
        """The newest checkpoint that loads (corrupt ones skipped), or None."""
        found = self.load_latest(expect_meta=expect_meta)
        return None if found is None else found[0]

    def load_latest(self, *, expect_meta: dict | None = None
                    ) -> tuple[str, dict[str, np.ndarray], dict] | None:
        """``(path, arrays, meta)`` of the newest checkpoint that loads, or None."""
        for path in reversed(self.paths()):
            try:
                arrays, meta = load_checkpoint(path, expect_meta=expect_meta)
            except (CheckpointError, FileNotFoundError):
                continue
            return path, arrays, meta
        return None


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _memrl_version() -> str:
    import memrl

    return memrl.__version__


def _check_arrays(arrays) -> dict[str, np.ndarray]:
    if not isinstance(arrays, dict):
        raise TypeError(f"arrays: expected a dict of name -> numpy.ndarray, got {type(arrays).__name__}")
    checked = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name or name == MANIFEST_KEY or "\x00" in name:
            raise ValueError(f"arrays: expected non-empty string keys other than {MANIFEST_KEY!r}, got {name!r}")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"arrays[{name!r}]: expected a numpy.ndarray, got {type(value).__name__}")
        if value.dtype.kind not in ALLOWED_DTYPE_KINDS or value.dtype.fields is not None:
            raise TypeError(f"arrays[{name!r}]: expected a numeric, boolean or string dtype, got {value.dtype}")
        # Not np.ascontiguousarray, which turns 0-d arrays into 1-d ones.
        checked[name] = value if value.flags.c_contiguous else value.copy(order="C")
    return checked


def _sha256(a: np.ndarray) -> str:
    flat = (a if a.flags.c_contiguous else a.copy(order="C")).reshape(-1)
    return hashlib.sha256(flat.view(np.uint8)).hexdigest()


def _describe(a: np.ndarray) -> dict:
    return {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _sha256(a)}


def _write_entry(archive: zipfile.ZipFile, name: str, a: np.ndarray) -> None:
    with archive.open(name + ".npy", "w", force_zip64=True) as entry:
        np.lib.format.write_array(entry, a, allow_pickle=False)


def _parse_manifest(path: str, raw: np.ndarray) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"checkpoint {path}: manifest: expected a 1-D uint8 array, got {raw.dtype} {raw.shape}")
    try:
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {path}: manifest is not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(f"checkpoint {path}: format: expected {FORMAT_NAME!r}, found {found!r}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format_version: expected {FORMAT_VERSION}, found {version!r} "
                              f"(written by memrl {manifest.get('memrl_version')!r})")
    if not isinstance(manifest.get("arrays"), dict) or "meta" not in manifest:
        raise CheckpointError(f"checkpoint {path}: manifest: expected 'arrays' and 'meta' entries")
    return manifest


def _verified(path: str, name: str, a: np.ndarray, expected: dict) -> np.ndarray:
    where = f"checkpoint {path}: array {name!r}"
    if not isinstance(expected, dict):
        raise CheckpointError(f"{where}: manifest entry is not an object")
    if a.dtype.str != expected.get("dtype"):
        raise CheckpointError(f"{where}: dtype: expected {expected.get('dtype')!r}, found {a.dtype.str!r}")
    if list(a.shape) != expected.get("shape"):
        raise CheckpointError(f"{where}: shape: expected {tuple(expected.get('shape') or ())}, found {a.shape}")
    digest = _sha256(a)
    if digest != expected.get("sha256"):
        raise CheckpointError(f"{where}: sha256: expected {expected.get('sha256')}, found {digest} (data corrupted)")
    return a


def _check_expected_meta(path: str, meta, expect_meta: dict) -> None:
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: meta: expected an object, found {type(meta).__name__}")
    for key, value in expect_meta.items():
        if key not in meta:
            raise CheckpointError(f"checkpoint {path}: meta[{key!r}]: expected {value!r}, found no such key")
        # Compare as JSON sees it, so (1, 2) and [1, 2] are the same value.
        expected = json.loads(json.dumps(value))
        difference = _first_difference(expected, meta[key], f"meta[{key!r}]")
        if difference is not None:
            where, want, got = difference
            raise CheckpointError(f"checkpoint {path}: {where}: expected {want!r}, found {got!r}")


def _first_difference(expected, found, where: str):
    """``(where, expected, found)`` at the first place two JSON values differ, or None."""
    if isinstance(expected, dict) and isinstance(found, dict):
        for key in expected:
            if key not in found:
                return f"{where}[{key!r}]", expected[key], "<missing>"
            d = _first_difference(expected[key], found[key], f"{where}[{key!r}]")
            if d is not None:
                return d
        for key in found:
            if key not in expected:
                return f"{where}[{key!r}]", "<missing>", found[key]
        return None
    if isinstance(expected, list) and isinstance(found, list) and len(expected) == len(found):
        for i, (e, f) in enumerate(zip(expected, found)):
            d = _first_difference(e, f, f"{where}[{i}]")
            if d is not None:
                return d
        return None
    if type(expected) is not type(found) and not (_is_number(expected) and _is_number(found)):
        return where, expected, found
    return None if expected == found else (where, expected, found)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _file_mode(path: str) -> int:
    """Keep the permissions of the file being replaced; new files get 0o644."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        return 0o644


def _fsync_directory(directory: str) -> None:
    """Make the rename durable; some platforms cannot open directories (then nothing to do)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
