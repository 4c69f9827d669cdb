"""Corrupted checkpoint and policy files are refused with CheckpointError naming the file: never
another exception, never a hang, never a large allocation, never a silent load of other numbers.

The originals are a real training checkpoint (``Trainer.save`` of a small pendulum-sac run that
has trained a few steps) and a real exported policy (``export_policy`` of its actor). Each test
damages a copy and calls ``assert_refused_or_identical``: the loader (``load_checkpoint``, and
``Policy.load`` for policy files) runs under a 10 s alarm and tracemalloc; it must either raise
CheckpointError whose message contains the path, or return exactly the original arrays (dtype,
shape, bytes) and meta (e.g. a flipped bit in a zip timestamp changes nothing). A path that does
not exist raises FileNotFoundError naming it; a directory raises CheckpointError.
"""
import contextlib
import io
import json
import os
import signal
import struct
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from memrl.checkpoint import MANIFEST_KEY, CheckpointError, load_checkpoint
from memrl.config import preset
from memrl.loop import Trainer
from memrl.policy import Policy, export_policy

KINDS = ("trainer", "policy")
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Deadline(BaseException):
    """Raised by the alarm; a BaseException so no ``except Exception`` in the loader can hide it."""


@contextlib.contextmanager
def deadline(seconds):
    def expire(signum, frame):
        raise Deadline(f"the loader did not answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------------------------
# The originals
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("originals")
    config = preset("pendulum-sac").replace(total_steps=200, n_warmup_steps=10, n_warmup_steps_critic=10,
                                            n_warmup_steps_actor=10, actor_hidden_dim=4, critic_hidden_dim=4,
                                            batch_size=8)
    trainer = Trainer(config, seed=0)
    for _ in range(16):
        trainer.step()
    paths = {"trainer": root / "trainer.npz", "policy": root / "policy.npz"}
    trainer.save(str(paths["trainer"]))
    export_policy(paths["policy"], trainer.agent.actor, action_dim=trainer.action_dim,
                  meta={"environment": "pendulum", "step": trainer.step_count, "seed": 0})
    found = {}
    for kind, path in paths.items():
        arrays, meta = load_checkpoint(path)
        assert any(np.any(a != 0) for name, a in arrays.items() if "adam_m" in name) or kind == "policy"
        with zipfile.ZipFile(path) as archive:
            entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
        found[kind] = {"bytes": path.read_bytes(), "arrays": arrays, "meta": meta, "entries": entries}
    found["dir"] = tmp_path_factory.mktemp("damaged")
    return found


def write(originals, kind, data, tag="damaged"):
    path = originals["dir"] / f"{kind}-{tag}.npz"
    path.write_bytes(data)
    return path


def same_arrays(got, want):
    assert set(got) == set(want)
    for name, a in want.items():
        b = got[name]
        assert b.dtype == a.dtype and b.shape == a.shape, name
        assert b.tobytes() == a.tobytes(), name


def assert_refused_or_identical(originals, kind, path):
    """Load ``path`` (and Policy.load it for policies): CheckpointError naming it, or the original."""
    original = originals[kind]
    limit = 2 * 2**20 + 4 * len(original["bytes"])
    loaders = [("load_checkpoint", load_checkpoint)] + ([("Policy.load", Policy.load)] if kind == "policy" else [])
    for label, load in loaders:
        tracemalloc.start()
        try:
            with deadline(10):
                result = load(path)
        except CheckpointError as error:
            message = str(error)
            assert str(path) in message, f"{label}: message does not name the file: {message}"
            assert "MemoryError" not in message, message
            continue
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak <= limit, f"{label} allocated {peak} bytes for a {len(original['bytes'])}-byte file"
        if label == "load_checkpoint":
            arrays, meta = result
            same_arrays(arrays, original["arrays"])
            assert meta == original["meta"]
        else:
            same_arrays(result.params, original["arrays"])
            assert result.meta == original["meta"]["user"] and result.layers == original["meta"]["layers"]


# ---------------------------------------------------------------------------------------------
# Zip and .npy building blocks
# ---------------------------------------------------------------------------------------------

def rezip(entries):
    """A valid zip (correct CRCs) of (name, payload bytes); duplicate names allowed."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for name, payload in entries:
                archive.writestr(zipfile.ZipInfo(name), payload)
    return buffer.getvalue()


def npy(descr, fortran_order, shape, data, *, version=(1, 0), header_length=None):
    """Raw .npy bytes with an arbitrary header (numpy's layout: magic, version, length, dict, padding)."""
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran_order!r}, 'shape': {shape!r}, }}".encode("latin1")
    length_size = 2 if version == (1, 0) else 4
    pad = -(len(header) + 1 + 8 + length_size) % 64
    header = header + b" " * pad + b"\n"
    n = len(header) if header_length is None else header_length
    length = struct.pack("<H" if length_size == 2 else "<I", n % (1 << (8 * length_size)))
    return b"\x93NUMPY" + bytes(version) + length + header + data


def manifest_of(originals, kind):
    payload = dict(originals[kind]["entries"])[MANIFEST_KEY + ".npy"]
    return json.loads(payload[payload.index(b"\n") + 1:])


def with_manifest(originals, kind, manifest_bytes, *, descr="|u1", shape=None, entries=None):
    """The original entries (or ``entries``) with the manifest entry's payload replaced."""
    entries = [(n, p) for n, p in (entries or originals[kind]["entries"]) if n != MANIFEST_KEY + ".npy"]
    shape = (len(manifest_bytes),) if shape is None else shape
    return rezip([(MANIFEST_KEY + ".npy", npy(descr, False, shape, manifest_bytes))] + entries)


def zip_fields(data):
    """(offset, width) of every length/offset/count field of the zip's records (and zip64 extras)."""
    fields = []
    layouts = {b"PK\x03\x04": [(4, 2), (6, 2), (8, 2), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2)],
               b"PK\x01\x02": [(6, 2), (8, 2), (10, 2), (16, 4), (20, 4), (24, 4), (28, 2), (30, 2), (32, 2),
                               (34, 2), (42, 4)],
               b"PK\x05\x06": [(4, 2), (6, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2)],
               b"PK\x06\x06": [(4, 8), (24, 4), (28, 4), (32, 8), (40, 8), (48, 8), (56, 8)],
               b"PK\x06\x07": [(4, 4), (8, 8), (16, 4)]}
    for signature, layout in layouts.items():
        start = data.find(signature)
        while start >= 0:
            fields += [(start + o, w) for o, w in layout if start + o + w <= len(data)]
            if signature == b"PK\x03\x04" and start + 30 <= len(data):  # zip64 extra: 8-byte sizes
                name_len, extra_len = struct.unpack_from("<HH", data, start + 26)
                extra = start + 30 + name_len
                if extra + 4 <= len(data) and data[extra:extra + 2] == b"\x01\x00":
                    fields += [(extra + 2, 2)] + [(extra + 4 + 8 * k, 8) for k in range(2)
                                                  if extra + 12 + 8 * k <= len(data)]
            start = data.find(signature, start + 1)
    return fields


# ---------------------------------------------------------------------------------------------
# Whole-file damage
# ---------------------------------------------------------------------------------------------

def test_originals_load(originals):
    for kind in KINDS:
        assert_refused_or_identical(originals, kind, write(originals, kind, originals[kind]["bytes"], "intact"))
    assert Policy.load(write(originals, "policy", originals["policy"]["bytes"], "intact")).batch_size is None


def test_empty_file_directory_and_missing_path(originals, tmp_path):
    for kind in KINDS:
        path = write(originals, kind, b"", "empty")
        with pytest.raises(CheckpointError,
                           match=rf"checkpoint {path}: expected an .npz \(zip\) archive, found a file starting b''"):
            load_checkpoint(path)
    directory = tmp_path / "policy.npz"
    directory.mkdir()
    with pytest.raises(CheckpointError, match=rf"checkpoint {directory}: expected a checkpoint file, found a directory"):
        load_checkpoint(directory)
    with pytest.raises(CheckpointError, match=rf"policy {directory}: a directory, expected a policy file; export one"):
        Policy.load(directory)
    for load in (load_checkpoint, Policy.load):
        with pytest.raises(FileNotFoundError, match=rf"checkpoint {tmp_path / 'missing.npz'}: no such file"):
            load(tmp_path / "missing.npz")
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    with deadline(10):  # opening a FIFO without a writer must not block
        with pytest.raises(CheckpointError, match=rf"checkpoint {fifo}: expected a regular file"):
            load_checkpoint(fifo)


@pytest.mark.parametrize("kind", KINDS)
def test_truncation_at_every_length_is_refused(originals, kind):
    """Every prefix of the policy file; of the (larger) training checkpoint every 61st, and every
    one of the last 2048 bytes (the zip's central directory and end records)."""
    data = originals[kind]["bytes"]
    cuts = range(len(data)) if kind == "policy" else sorted(set(range(0, len(data), 61))
                                                            | set(range(len(data) - 2048, len(data))))
    for cut in cuts:
        path = write(originals, kind, data[:cut])
        with deadline(10):
            with pytest.raises(CheckpointError, match=f"checkpoint {path}: "):
                load_checkpoint(path)


@EXAMPLES
@given(st.sampled_from(KINDS), st.data())
def test_flipped_bits_anywhere(originals, kind, data):
    raw = bytearray(originals[kind]["bytes"])
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    assert_refused_or_identical(originals, kind, write(originals, kind, bytes(raw)))


@EXAMPLES
@given(st.sampled_from(KINDS), st.data())
def test_overwritten_byte_ranges(originals, kind, data):
    raw = bytearray(originals[kind]["bytes"])
    start = data.draw(st.integers(0, len(raw) - 1))
    garbage = data.draw(st.binary(min_size=1, max_size=64))
    raw[start:start + len(garbage)] = garbage
    assert_refused_or_identical(originals, kind, write(originals, kind, bytes(raw)))


@EXAMPLES
@given(st.sampled_from(KINDS), st.data())
def test_wrong_lengths_offsets_and_counts_in_zip_headers(originals, kind, data):
    raw = bytearray(originals[kind]["bytes"])
    fields = zip_fields(bytes(raw))
    for _ in range(data.draw(st.integers(1, 3))):
        offset, width = data.draw(st.sampled_from(fields))
        current = int.from_bytes(raw[offset:offset + width], "little")
        top = (1 << (8 * width)) - 1
        value = data.draw(st.one_of(st.just(0), st.just(top), st.integers(0, top),
                                    st.integers(-64, 64).map(lambda d: min(max(current + d, 0), top))))
        raw[offset:offset + width] = value.to_bytes(width, "little")
    assert_refused_or_identical(originals, kind, write(originals, kind, bytes(raw)))


@EXAMPLES
@given(st.sampled_from(KINDS), st.data())
def test_swapped_payload_bytes_in_place(originals, kind, data):
    """Two equally long stretches of the file exchanged (zip CRCs then disagree, or nothing changed)."""
    raw = bytearray(originals[kind]["bytes"])
    n = data.draw(st.integers(1, 512))
    a = data.draw(st.integers(0, len(raw) - n))
    b = data.draw(st.integers(0, len(raw) - n))
    raw[a:a + n], raw[b:b + n] = raw[b:b + n], raw[a:a + n]
    assert_refused_or_identical(originals, kind, write(originals, kind, bytes(raw)))


# ---------------------------------------------------------------------------------------------
# Valid zips with wrong contents (CRCs correct: the .npy and manifest checks must catch them)
# ---------------------------------------------------------------------------------------------

@EXAMPLES
@given(st.sampled_from(KINDS), st.data())
def test_swapped_missing_and_extra_entries(originals, kind, data):
    entries = list(originals[kind]["entries"])
    names = [n for n, _ in entries]
    action = data.draw(st.sampled_from(["swap", "drop", "add", "duplicate", "rename", "non-npy"]))
    i = data.draw(st.integers(0, len(entries) - 1))
    j = data.draw(st.integers(0, len(entries) - 1))
    if action == "swap":  # payloads exchanged, names kept
        entries[i], entries[j] = (names[i], entries[j][1]), (names[j], entries[i][1])
    elif action == "drop":
        del entries[i]
    elif action == "add":
        entries.insert(i, (data.draw(st.text("abc/_.", min_size=1, max_size=8)) + ".npy", entries[j][1]))
    elif action == "duplicate":  # a second entry of the same name, possibly other content
        entries.insert(data.draw(st.integers(0, len(entries))), (names[i], entries[j][1]))
    elif action == "rename":
        entries[i] = (data.draw(st.text("abc/_.", min_size=1, max_size=8)) + ".npy", entries[i][1])
    else:
        entries.insert(i, ("notes.txt", b"hello"))
    assert_refused_or_identical(originals, kind, write(originals, kind, rezip(entries)))


def npy_headers():
    """(descr, fortran_order, shape, version, header_length override) of damaged .npy headers."""
    shapes = st.one_of(st.lists(st.integers(-5, 2**62), max_size=4).map(tuple),
                       st.tuples(st.just(2**40)), st.tuples(st.integers(0, 64), st.integers(0, 64)),
                       st.just("(3,"), st.just([4]), st.just((1.5,)), st.just((True,)))
    descrs = st.one_of(st.sampled_from(["<f4", "<f8", ">f8", "|u1", "|b1", "<i8", "|O", "V8", "<U5", "|S0",
                                        "float128x", "", "<f8 ", "M8[s]"]),
                       st.just([("a", "<f8")]), st.just(("<f8", (2**40,))), st.integers())
    return st.tuples(descrs, st.sampled_from([False, True, 0, "no"]), shapes,
                     st.sampled_from([(1, 0), (2, 0), (3, 0), (9, 9)]), st.one_of(st.none(), st.integers(0, 70000)))


@EXAMPLES
@given(st.sampled_from(KINDS), st.data(), npy_headers())
def test_wrong_npy_headers(originals, kind, data, header):
    """One entry's .npy header replaced: wrong shape (huge, negative, other rank), dtype (objects,
    structured, garbage), order, version or header length; its data kept, cut or extended."""
    descr, fortran_order, shape, version, header_length = header
    entries = list(originals[kind]["entries"])
    i = data.draw(st.integers(0, len(entries) - 1))
    name, payload = entries[i]
    body = payload[payload.index(b"\n") + 1:]
    body = data.draw(st.sampled_from([body, body[:len(body) // 2], body + b"\x00" * 8, b""]))
    entries[i] = (name, npy(descr, fortran_order, shape, body, version=version, header_length=header_length))
    assert_refused_or_identical(originals, kind, write(originals, kind, rezip(entries)))


def test_huge_declared_shapes_are_refused_before_allocating(originals):
    """Shapes claiming 4 TB in a 30 kB file: refused by the checks, no allocation attempted."""
    for kind in KINDS:
        entries = list(originals[kind]["entries"])
        name, payload = entries[1]
        body = payload[payload.index(b"\n") + 1:]
        entries[1] = (name, npy("<f4", False, (2**40,), body))
        path = write(originals, kind, rezip(entries), "huge")
        with pytest.raises(CheckpointError, match=rf"checkpoint {path}: array '.*': shape: expected "
                                                  r"\([\d, ]+\), found \(1099511627776,\)"):
            load_checkpoint(path)
        # Manifest and header both changed to agree on the huge shape: the entry's size refutes it.
        manifest = manifest_of(originals, kind)
        manifest["arrays"][name[:-len(".npy")]]["shape"] = [2**40]
        path = write(originals, kind, with_manifest(originals, kind, json.dumps(manifest).encode(),
                                                    entries=entries), "huge-both")
        with pytest.raises(CheckpointError, match=rf"checkpoint {path}: array '.*': header declares "
                                                  r"4398046511104 data bytes, the entry holds \d+"):
            load_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# Manifests: garbage, other JSON, fields of the wrong type
# ---------------------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                    | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=12)


@EXAMPLES
@given(st.sampled_from(KINDS), st.one_of(st.binary(max_size=300), JSON.map(lambda v: json.dumps(v).encode()),
                                         st.just(b"{" * 100000), st.just(b"[" * 5000 + b"]" * 5000),
                                         st.just(b'{"format": "memrl-checkpoint", "format_version": 1}')))
def test_manifest_replaced_by_garbage_or_other_json(originals, kind, payload):
    assert_refused_or_identical(originals, kind, write(originals, kind, with_manifest(originals, kind, payload)))


def manifest_paths(manifest):
    names = sorted(manifest["arrays"])
    paths = [("format",), ("format_version",), ("arrays",), ("meta",)]
    for name in names[:3] + names[-2:]:
        paths += [("arrays", name), ("arrays", name, "dtype"), ("arrays", name, "shape"), ("arrays", name, "sha256")]
    return paths


@EXAMPLES
@given(st.sampled_from(KINDS), st.data())
def test_manifest_fields_of_the_wrong_type_or_value(originals, kind, data):
    """One structural field of the real manifest replaced (or deleted). ``meta`` only by non-objects:
    another meta object is a valid, different file."""
    manifest = manifest_of(originals, kind)
    where = data.draw(st.sampled_from(manifest_paths(manifest)))
    parent = manifest
    for key in where[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()):
        del parent[where[-1]]
    else:
        candidates = JSON.filter(lambda v: not isinstance(v, dict)) if where == ("meta",) else JSON
        special = {"format_version": st.sampled_from([True, 1.0, "1", 2, 0, -1, [1]]),
                   "shape": st.sampled_from([[2**40], [-1], [1.5], [True], "3", [[3]], [], [0]]),
                   "dtype": st.sampled_from(["|O", "<f8", "V8", "float64", "", "<U999999999999"]),
                   "sha256": st.sampled_from(["0" * 64, "A" * 64, "", 5])}
        parent[where[-1]] = data.draw(st.one_of(candidates, special.get(where[-1], candidates)))
    payload = json.dumps(manifest).encode()
    assert_refused_or_identical(originals, kind, write(originals, kind, with_manifest(originals, kind, payload)))


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_stored_as_another_dtype_or_shape(originals, kind):
    payload = json.dumps(manifest_of(originals, kind)).encode()
    for descr, shape in (("<i8", (len(payload) // 8,)), ("|u1", (1, len(payload))), ("|i1", (len(payload),))):
        body = payload[:8 * (len(payload) // 8)] if descr == "<i8" else payload
        path = write(originals, kind, with_manifest(originals, kind, body, descr=descr, shape=shape), "dtype")
        with pytest.raises(CheckpointError, match=rf"checkpoint {path}: manifest: expected a 1-D uint8 array"):
            load_checkpoint(path)


def test_object_dtype_in_manifest_and_header_is_refused_without_unpickling(originals):
    manifest = manifest_of(originals, "policy")
    name = sorted(manifest["arrays"])[0]
    manifest["arrays"][name]["dtype"] = "|O"
    path = write(originals, "policy", with_manifest(originals, "policy", json.dumps(manifest).encode()), "object")
    with pytest.raises(CheckpointError, match=rf"checkpoint {path}: manifest: arrays\['{name}'\]: dtype '\|O': "
                                              r"object arrays would need pickle"):
        load_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# Policy files whose (valid) meta has the wrong shape
# ---------------------------------------------------------------------------------------------

POLICY_FIELDS = ["kind", "policy_version", "layers", "observation_dim", "action_dim", "log_std_min", "log_std_max",
                 "memory_reset_interval", "user"]


@EXAMPLES
@given(st.data())
def test_policy_meta_of_the_wrong_shape_raises_only_checkpoint_errors(originals, data):
    """Policy.load on a policy file whose meta field (or a layer's field) holds another JSON value:
    CheckpointError naming the file, or a loaded Policy (a valid, different file); nothing else."""
    manifest = manifest_of(originals, "policy")
    meta = manifest["meta"]
    if data.draw(st.booleans()):
        key = data.draw(st.sampled_from(POLICY_FIELDS))
        target = meta
    else:
        target = meta["layers"][data.draw(st.integers(0, len(meta["layers"]) - 1))]
        key = data.draw(st.sampled_from(sorted(target)))
    if data.draw(st.booleans()):
        del target[key]
    else:
        target[key] = data.draw(JSON)
    path = write(originals, "policy", with_manifest(originals, "policy", json.dumps(manifest).encode()), "meta")
    try:
        with deadline(10):
            Policy.load(path)
    except CheckpointError as error:
        assert str(path) in str(error)
