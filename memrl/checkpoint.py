"""A checkpoint file format that never executes code on load, written atomically.

A checkpoint is an uncompressed ``.npz`` (a zip of ``.npy`` files): one entry per array, plus
``__manifest__.npy``, a uint8 array holding UTF-8 JSON::

    {"format": "memrl-checkpoint", "format_version": 1, "memrl_version": "0.1.0",
     "meta": {...},                                        # the caller's JSON (config, step, ...)
     "arrays": {"0.W": {"dtype": "<f4", "shape": [16, 1], "sha256": "..."}, ...}}

Loading never unpickles (object arrays are refused) and trusts nothing before checking it: the
zip directory (stored entries only, no duplicate names, sizes within the file), each entry's
``.npy`` header (plain dtypes, C order, a shape whose byte count is exactly the entry's data,
dtype and shape equal to the manifest's) before any array is allocated, then the zip CRC-32
and the SHA-256 of the C-order bytes recorded in the manifest. So a truncated, corrupted or
mixed-up file raises :class:`CheckpointError` (naming the file) instead of loading wrong
numbers, crashing with another exception, allocating memory its size cannot justify, or
hanging; a corruption that loads (e.g. a flipped bit in a zip timestamp) loads exactly the
saved arrays and meta (tests/test_corruption.py).

Saving writes a temporary file in the target directory, fsyncs it, renames it over the target
(``os.replace``, atomic on POSIX) and fsyncs the directory: a process killed while saving leaves
either the previous complete file or the new complete file at ``path``, never a mix.

``meta`` comes back as JSON gives it: tuples become lists and dict keys become strings.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import struct
import tempfile
import zipfile

import numpy as np

FORMAT_NAME = "memrl-checkpoint"
FORMAT_VERSION = 1
MANIFEST_KEY = "__manifest__"
# Plain numbers, booleans and fixed-width strings; never objects or structured records.
ALLOWED_DTYPE_KINDS = "biufcUSmM"
NPY_MAGIC = b"\x93NUMPY"
MAX_NPY_HEADER = 65535   # bytes; memrl's headers are under 200
READ_CHUNK = 1 << 20     # bytes read from an entry at a time


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted, of another format version, or not the one expected."""


# --------------------------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` and the JSON-serialisable dict ``meta`` to ``path`` atomically (see module doc).

    Raises TypeError/ValueError naming ``arrays[name]`` or ``meta`` for values it cannot store.
    """
    path = os.fspath(path)
    checked = _check_arrays(arrays)
    if not isinstance(meta, dict):
        raise TypeError(f"meta: expected a dict (a JSON object), got {type(meta).__name__}")
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
    """Read and verify a checkpoint; returns ``(arrays, meta)`` (``meta`` a dict).

    Raises :class:`CheckpointError`, with a message that starts ``checkpoint <path>:`` and says
    what does not match, for anything at ``path`` that is not an intact checkpoint: a directory
    or other non-regular file, an empty, truncated or corrupted file, a damaged zip directory or
    ``.npy`` header, a manifest that is not the expected JSON (format name and version, an
    ``arrays`` object describing each array's dtype, shape and SHA-256, a ``meta`` object), an
    array whose dtype, shape or checksum differs from the manifest, a missing, extra or
    duplicated entry, or (``expect_meta``) a meta key whose value differs from the expected one.
    A path that does not exist raises ``FileNotFoundError`` (nothing there, as opposed to
    something broken; :class:`CheckpointManager` and resuming tell the two apart).
    """
    path = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO placed at the path must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path}: expected a checkpoint file, found a directory") from None
    except OSError as error:
        raise CheckpointError(f"checkpoint {path}: cannot be opened ({type(error).__name__}: {error})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise CheckpointError(f"checkpoint {path}: expected a checkpoint file, found a directory")
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"checkpoint {path}: expected a regular file, found another kind of file")
    except BaseException:
        os.close(fd)
        raise
    size = info.st_size
    with os.fdopen(fd, "rb") as f:
        try:
            magic = f.read(4)
            if magic != b"PK\x03\x04":  # what a zip starts with; anything else is not a checkpoint
                raise CheckpointError(f"checkpoint {path}: expected an .npz (zip) archive, "
                                      f"found a file starting {magic!r}")
            f.seek(0)
            arrays, manifest = _read_archive(path, f, size)
        except CheckpointError:
            raise
        except Exception as error:  # zipfile.BadZipFile (CRC), EOFError, OSError, ValueError, ...
            raise CheckpointError(f"checkpoint {path}: unreadable or corrupted "
                                  f"({type(error).__name__}: {error})") from error
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


def _read_archive(path: str, f, size: int) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and manifest of the zip open in ``f`` (``size`` bytes), every layer checked."""
    with zipfile.ZipFile(f) as archive:
        entries: dict[str, zipfile.ZipInfo] = {}
        for info in archive.infolist():
            where = f"checkpoint {path}: zip entry {info.filename!r}"
            if not info.filename.endswith(".npy"):
                raise CheckpointError(f"{where}: expected a .npy entry")
            name = info.filename[:-len(".npy")]
            if name in entries:
                raise CheckpointError(f"{where}: appears more than once")
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise CheckpointError(f"{where}: expected a stored (uncompressed, unencrypted) entry, found "
                                      f"compression method {info.compress_type}, flags {info.flag_bits:#x}")
            if info.file_size != info.compress_size or info.file_size > size:
                raise CheckpointError(f"{where}: declares {info.file_size} bytes ({info.compress_size} stored) "
                                      f"in a file of {size} bytes")
            entries[name] = info
        if MANIFEST_KEY not in entries:
            raise CheckpointError(f"checkpoint {path}: no {MANIFEST_KEY} entry (not a memrl checkpoint)")
        raw = _read_npy(path, archive, entries[MANIFEST_KEY], MANIFEST_KEY, None)
        manifest = _parse_manifest(path, raw)
        described = manifest["arrays"]
        stored = set(entries) - {MANIFEST_KEY}
        if stored != set(described):
            missing, extra = sorted(set(described) - stored), sorted(stored - set(described))
            raise CheckpointError(f"checkpoint {path}: arrays do not match the manifest "
                                  f"(missing {missing}, unlisted {extra})")
        arrays = {name: _read_npy(path, archive, entries[name], name, expected)
                  for name, expected in described.items()}
    return arrays, manifest


def _read_npy(path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str,
              expected: dict | None) -> np.ndarray:
    """One ``.npy`` entry, checked against ``expected`` (the manifest's description; None for the
    manifest itself, which must be 1-D uint8) before its data is allocated and read."""
    where = f"checkpoint {path}: " + ("manifest" if expected is None else f"array {name!r}")
    with archive.open(info) as entry:
        head = entry.read(len(NPY_MAGIC) + 2)
        if len(head) != len(NPY_MAGIC) + 2 or head[:len(NPY_MAGIC)] != NPY_MAGIC:
            raise CheckpointError(f"{where}: expected a .npy header, found {head!r}")
        version = (head[-2], head[-1])
        if version not in ((1, 0), (2, 0)):
            raise CheckpointError(f"{where}: .npy format version {version} (memrl writes 1.0 or 2.0)")
        length_format = "<H" if version == (1, 0) else "<I"
        raw_length = entry.read(struct.calcsize(length_format))
        if len(raw_length) != struct.calcsize(length_format):
            raise CheckpointError(f"{where}: .npy header truncated")
        header_length = struct.unpack(length_format, raw_length)[0]
        header_end = len(head) + len(raw_length) + header_length
        if header_length > MAX_NPY_HEADER or header_end > info.file_size:
            raise CheckpointError(f"{where}: .npy header of {header_length} bytes in an entry of "
                                  f"{info.file_size} bytes")
        header = entry.read(header_length)
        if len(header) != header_length:
            raise CheckpointError(f"{where}: .npy header truncated")
        dtype, shape = _parse_npy_header(where, header)
        if expected is None:
            if dtype != np.uint8 or len(shape) != 1:
                raise CheckpointError(f"{where}: expected a 1-D uint8 array, got {dtype} {shape}")
        else:
            if dtype.str != expected["dtype"]:
                raise CheckpointError(f"{where}: dtype: expected {expected['dtype']!r}, found {dtype.str!r}")
            if list(shape) != expected["shape"]:
                raise CheckpointError(f"{where}: shape: expected {tuple(expected['shape'])}, found {shape}")
        nbytes = dtype.itemsize
        for n in shape:
            nbytes *= n
        if header_end + nbytes != info.file_size:  # also bounds the allocation by the file's size
            raise CheckpointError(f"{where}: header declares {nbytes} data bytes, the entry holds "
                                  f"{info.file_size - header_end}")
        array = np.empty(shape, dtype)
        buffer = array.reshape(-1).view(np.uint8) if nbytes else None
        position = 0
        while position < nbytes:
            chunk = entry.read(min(READ_CHUNK, nbytes - position))
            if not chunk:
                raise CheckpointError(f"{where}: data truncated after {position} of {nbytes} bytes")
            buffer[position:position + len(chunk)] = np.frombuffer(chunk, np.uint8)
            position += len(chunk)
        if entry.read(1):  # reading to the end also makes zipfile compare the CRC-32
            raise CheckpointError(f"{where}: data continues past the {nbytes} bytes its header declares")
    if expected is not None:
        digest = _sha256(array)
        if digest != expected["sha256"]:
            raise CheckpointError(f"{where}: sha256: expected {expected['sha256']}, found {digest} (data corrupted)")
    return array


# The header numpy's write_array produces: "{'descr': '<f4', 'fortran_order': False, 'shape': (16, 1), }"
# padded with spaces and a newline. Parsed by this pattern rather than evaluated.
_NPY_HEADER = re.compile(r"\{'descr': '([^'\\]*)', 'fortran_order': (False|True), 'shape': \(([0-9, ]*)\), \} *\n",
                         re.ASCII)
_NPY_SHAPE = re.compile(r"|[0-9]+,|[0-9]+(, [0-9]+)+", re.ASCII)


def _parse_npy_header(where: str, header: bytes) -> tuple[np.dtype, tuple[int, ...]]:
    """dtype and shape of a ``.npy`` header as numpy writes it; only plain C-order arrays."""
    match = _NPY_HEADER.fullmatch(header.decode("latin1"))
    if match is None or _NPY_SHAPE.fullmatch(match.group(3)) is None:
        raise CheckpointError(f"{where}: .npy header is not numpy's dict of descr, fortran_order and shape: "
                              f"{header[:120]!r}")
    descr, fortran_order, shape_text = match.groups()
    dtype = _plain_dtype(where, descr)
    if fortran_order != "False":
        raise CheckpointError(f"{where}: .npy header: expected fortran_order False (memrl writes C order), "
                              f"got {fortran_order}")
    shape = tuple(int(n) for n in shape_text.split(",") if n.strip())
    return dtype, shape


def _plain_dtype(where: str, descr: str) -> np.dtype:
    try:
        dtype = np.dtype(descr)
    except Exception:  # TypeError, ValueError, ... for strings that name no dtype
        raise CheckpointError(f"{where}: dtype {descr!r:.100} is not a NumPy dtype") from None
    if dtype.kind == "O":
        raise CheckpointError(f"{where}: dtype {descr!r}: object arrays would need pickle, which is never used")
    if dtype.kind not in ALLOWED_DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise CheckpointError(f"{where}: dtype {descr!r}: expected a numeric, boolean or string dtype")
    return dtype


def _is_count(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _parse_manifest(path: str, raw: np.ndarray) -> dict:
    """The manifest's JSON, with every field the loader relies on checked for its type."""
    where = f"checkpoint {path}: manifest"
    try:
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{where} is not valid JSON ({type(error).__name__}: {error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(f"checkpoint {path}: format: expected {FORMAT_NAME!r}, found {found!r:.200}")
    version = manifest.get("format_version")
    if not _is_count(version) or version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format_version: expected {FORMAT_VERSION}, found {version!r:.100} "
                              f"(written by memrl {manifest.get('memrl_version')!r:.100})")
    described = manifest.get("arrays")
    if not isinstance(described, dict) or not isinstance(manifest.get("meta"), dict):
        raise CheckpointError(f"{where}: expected an 'arrays' object and a 'meta' object, found "
                              f"{type(described).__name__} and {type(manifest.get('meta')).__name__}")
    for name, entry in described.items():
        at = f"{where}: arrays[{name!r:.100}]"
        if not name or name == MANIFEST_KEY:
            raise CheckpointError(f"{at}: expected a non-empty name other than {MANIFEST_KEY!r}")
        if not isinstance(entry, dict):
            raise CheckpointError(f"{at}: expected an object, found {type(entry).__name__}")
        dtype, shape, digest = entry.get("dtype"), entry.get("shape"), entry.get("sha256")
        if not isinstance(dtype, str):
            raise CheckpointError(f"{at}.dtype: expected a dtype string, found {dtype!r:.100}")
        _plain_dtype(at, dtype)
        if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
            raise CheckpointError(f"{at}.shape: expected a list of non-negative integers, found {shape!r:.100}")
        if not isinstance(digest, str) or not re.fullmatch("[0-9a-f]{64}", digest):
            raise CheckpointError(f"{at}.sha256: expected 64 hexadecimal digits, found {digest!r:.100}")
    return manifest


def _check_expected_meta(path: str, meta, expect_meta: dict) -> None:
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: meta: expected an object, found {type(meta).__name__}")
    for key, value in expect_meta.items():
        if key not in meta:
            raise CheckpointError(f"checkpoint {path}: meta[{key!r}]: expected {value!r}, found no such key")
        # Compare as JSON sees it, so (1, 2) and [1, 2] are the same value.
        expected = json.loads(json.dumps(value))
        difference = first_difference(expected, meta[key], f"meta[{key!r}]")
        if difference is not None:
            where, want, got = difference
            raise CheckpointError(f"checkpoint {path}: {where}: expected {want!r}, found {got!r}")


def first_difference(expected, found, where: str, *, dotted: bool = False):
    """``(where, expected, found)`` at the first place two JSON values differ, or None.

    ``where`` names the place like ``meta['a'][0]``, or ``a.b[0]`` with ``dotted``; a key one side
    lacks shows as ``"<missing>"``. Numbers compare by value (1 equals 1.0), other types must match.
    """
    def key_at(key):
        return f"{where}.{key}" if dotted else f"{where}[{key!r}]"

    if isinstance(expected, dict) and isinstance(found, dict):
        for key in expected:
            if key not in found:
                return key_at(key), expected[key], "<missing>"
            d = first_difference(expected[key], found[key], key_at(key), dotted=dotted)
            if d is not None:
                return d
        for key in found:
            if key not in expected:
                return key_at(key), "<missing>", found[key]
        return None
    if isinstance(expected, list) and isinstance(found, list) and len(expected) == len(found):
        for i, (e, f) in enumerate(zip(expected, found)):
            d = first_difference(e, f, f"{where}[{i}]", dotted=dotted)
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
