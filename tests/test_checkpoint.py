"""Checkpoint format: exact round trip, every kind of damage detected, atomic under SIGKILL, rotation."""
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import memrl
from memrl.checkpoint import (FORMAT_VERSION, MANIFEST_KEY, CheckpointError, CheckpointManager,
                              load_checkpoint, save_checkpoint)

WRITER = os.path.join(os.path.dirname(__file__), "_checkpoint_writer.py")


def example_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "params": rng.standard_normal(1000).astype(np.float32),
        "adam_m": rng.standard_normal((10, 7)),
        "step_count": np.array(12345, np.int64),
        "mask": rng.random((4, 5)) < 0.5,
        "empty": np.zeros((0, 3), np.float32),
        "names": np.array(["actor", "critic"]),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4))),
    }


EXAMPLE_META = {"step": 20000, "architecture": [{"type": "gru", "in_dim": 16, "hidden_dim": 16, "gates": "fast"}],
                "config": {"gamma": 0.99, "seed": 1}}


def rewrite(path, *, manifest=None, entries=None):
    """Rebuild a checkpoint zip with a modified manifest and/or replaced entries (valid zip CRCs)."""
    with np.load(path, allow_pickle=False) as npz:
        contents = {name: npz[name] for name in npz.files}
    original = json.loads(contents[MANIFEST_KEY].tobytes())
    if manifest is not None:
        manifest(original)
    contents[MANIFEST_KEY] = np.frombuffer(json.dumps(original).encode(), np.uint8)
    contents.update(entries or {})
    with zipfile.ZipFile(path, "w") as archive:
        for name, a in contents.items():
            with archive.open(name + ".npy", "w") as f:
                np.lib.format.write_array(f, a, allow_pickle=True)


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "ckpt.npz"
    arrays = example_arrays()
    save_checkpoint(path, arrays, EXAMPLE_META)
    loaded, meta = load_checkpoint(path, expect_meta={"architecture": EXAMPLE_META["architecture"]})
    assert meta == EXAMPLE_META
    assert set(loaded) == set(arrays)
    for name, a in arrays.items():
        assert loaded[name].dtype == a.dtype and loaded[name].shape == a.shape, name
        np.testing.assert_array_equal(loaded[name], a, err_msg=name)
    manifest = json.loads(np.load(path, allow_pickle=False)[MANIFEST_KEY].tobytes())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["memrl_version"] == memrl.__version__
    assert manifest["arrays"]["params"]["shape"] == [1000]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_overwrite_replaces_the_previous_version(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"x": np.zeros(3)}, {"v": 1})
    save_checkpoint(path, {"y": np.ones(2)}, {"v": 2})
    arrays, meta = load_checkpoint(path)
    assert meta == {"v": 2} and list(arrays) == ["y"]


def test_truncated_files_are_refused(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, example_arrays(), EXAMPLE_META)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) // 2, len(data) - 1):
        damaged = tmp_path / f"cut{cut}.npz"
        damaged.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="unreadable or corrupted|expected an .npz"):
            load_checkpoint(damaged)


def test_every_single_bit_flip_in_a_sample_of_positions_is_detected(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, example_arrays(), EXAMPLE_META)
    data = path.read_bytes()
    rng = np.random.default_rng(0)
    for position in rng.choice(len(data), size=40, replace=False):
        flipped = bytearray(data)
        flipped[position] ^= 1 << int(rng.integers(8))
        damaged = tmp_path / "flipped.npz"
        damaged.write_bytes(bytes(flipped))
        try:
            arrays, meta = load_checkpoint(damaged)
        except CheckpointError as error:
            assert str(damaged) in str(error)
            continue
        # A flip the zip layer ignores (e.g. a timestamp) must leave the content intact.
        assert meta == EXAMPLE_META, position
        for name, a in example_arrays().items():
            np.testing.assert_array_equal(arrays[name], a)


def test_data_that_disagrees_with_the_checksum_is_refused(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, example_arrays(), {})
    params = example_arrays()["params"].copy()
    params[17] += 1
    rewrite(path, entries={"params": params})  # valid zip, stale manifest checksum
    with pytest.raises(CheckpointError, match=r"array 'params': sha256: expected [0-9a-f]{64}, found [0-9a-f]{64}"):
        load_checkpoint(path)


def test_shape_and_dtype_mismatches_name_the_array(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, example_arrays(), {})
    rewrite(path, entries={"adam_m": example_arrays()["adam_m"].reshape(7, 10)})
    with pytest.raises(CheckpointError, match=r"array 'adam_m': shape: expected \(10, 7\), found \(7, 10\)"):
        load_checkpoint(path)
    save_checkpoint(path, example_arrays(), {})
    rewrite(path, entries={"params": example_arrays()["params"].astype(np.float64)})
    with pytest.raises(CheckpointError, match="array 'params': dtype: expected '<f4', found '<f8'"):
        load_checkpoint(path)


def test_missing_and_unlisted_arrays_are_refused(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"a": np.zeros(2)}, {})
    rewrite(path, entries={"b": np.zeros(2)})
    with pytest.raises(CheckpointError, match=r"missing \[\], unlisted \['b'\]"):
        load_checkpoint(path)


def test_wrong_format_version_and_name_are_refused(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"a": np.zeros(2)}, {})
    rewrite(path, manifest=lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match=f"format_version: expected {FORMAT_VERSION}, found {FORMAT_VERSION + 1}"):
        load_checkpoint(path)
    rewrite(path, manifest=lambda m: m.update(format="something-else"))
    with pytest.raises(CheckpointError, match="format: expected 'memrl-checkpoint', found 'something-else'"):
        load_checkpoint(path)


def test_plain_npz_files_are_not_checkpoints(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="no __manifest__ entry"):
        load_checkpoint(path)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(CheckpointError, match=r"expected an .npz \(zip\) archive, found a file starting b'\\x93NUM'"):
        load_checkpoint(single)


def test_object_arrays_are_refused_on_save_and_on_load(tmp_path):
    with pytest.raises(TypeError, match=r"arrays\['bad'\]: expected a numeric, boolean or string dtype, got object"):
        save_checkpoint(tmp_path / "x.npz", {"bad": np.array([{"a": 1}], dtype=object)}, {})
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"a": np.zeros(2)}, {})
    rewrite(path, manifest=lambda m: m["arrays"]["a"].update(dtype="|O"),
            entries={"a": np.array([None, os.system], dtype=object)})
    with pytest.raises(CheckpointError, match="(?i)pickle"):
        load_checkpoint(path)


def test_expect_meta_names_the_key_and_both_values(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"a": np.zeros(2)}, EXAMPLE_META)
    other = [dict(EXAMPLE_META["architecture"][0], hidden_dim=32)]
    with pytest.raises(CheckpointError, match=r"meta\['architecture'\]\[0\]\['hidden_dim'\]: expected 32, found 16"):
        load_checkpoint(path, expect_meta={"architecture": other})
    with pytest.raises(CheckpointError, match=r"meta\['step'\]: expected 5, found 20000"):
        load_checkpoint(path, expect_meta={"step": 5})
    with pytest.raises(CheckpointError, match=r"meta\['env'\]: expected 'memory', found no such key"):
        load_checkpoint(path, expect_meta={"env": "memory"})
    with pytest.raises(CheckpointError, match=r"meta\['architecture'\]: expected \[\], found"):
        load_checkpoint(path, expect_meta={"architecture": []})
    # Tuples and lists are the same JSON value; 1 and 1.0 are equal numbers.
    save_checkpoint(path, {"a": np.zeros(2)}, {"shape": (2, 3), "lr": 1})
    load_checkpoint(path, expect_meta={"shape": (2, 3), "lr": 1.0})


def test_invalid_inputs_to_save(tmp_path):
    with pytest.raises(TypeError, match="meta: expected JSON-serialisable"):
        save_checkpoint(tmp_path / "x.npz", {"a": np.zeros(2)}, {"f": object()})
    with pytest.raises(ValueError, match="string keys other than '__manifest__'"):
        save_checkpoint(tmp_path / "x.npz", {MANIFEST_KEY: np.zeros(2)}, {})
    with pytest.raises(TypeError, match=r"arrays\['a'\]: expected a numpy.ndarray, got list"):
        save_checkpoint(tmp_path / "x.npz", {"a": [1, 2]}, {})
    with pytest.raises(TypeError, match="meta: expected a dict"):
        save_checkpoint(tmp_path / "x.npz", {"a": np.zeros(2)}, [1, 2])
    assert os.listdir(tmp_path) == []  # nothing written, no temporary file left
    with pytest.raises(FileNotFoundError, match=f"checkpoint {tmp_path / 'missing.npz'}: no such file"):
        load_checkpoint(tmp_path / "missing.npz")


def test_manifest_fields_of_the_wrong_type_are_refused(tmp_path):
    """Found by tests/test_corruption.py: a manifest with "meta": null used to load (meta None)."""
    path = tmp_path / "ckpt.npz"
    cases = [(lambda m: m.update(meta=None), r"manifest: expected an 'arrays' object and a 'meta' object, "
                                             r"found dict and NoneType"),
             (lambda m: m.update(format_version=True), "format_version: expected 1, found True"),
             (lambda m: m["arrays"]["a"].update(shape=[-2]), r"arrays\['a'\]\.shape: expected a list of non-negative"),
             (lambda m: m["arrays"]["a"].update(shape="2"), r"arrays\['a'\]\.shape: expected a list of non-negative"),
             (lambda m: m["arrays"]["a"].update(dtype=8), r"arrays\['a'\]\.dtype: expected a dtype string"),
             (lambda m: m["arrays"]["a"].update(sha256=None), r"arrays\['a'\]\.sha256: expected 64 hexadecimal")]
    for change, message in cases:
        save_checkpoint(path, {"a": np.zeros(2)}, {"step": 1})
        rewrite(path, manifest=change)
        with pytest.raises(CheckpointError, match=f"checkpoint {path}: .*{message}"):
            load_checkpoint(path)


def test_directory_compressed_and_duplicate_entries_are_refused(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(CheckpointError, match="expected a checkpoint file, found a directory"):
        load_checkpoint(tmp_path / "dir.npz")
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"a": np.arange(5.0)}, {})
    with zipfile.ZipFile(path) as archive:
        entries = [(i.filename, archive.read(i)) for i in archive.infolist()]
    compressed = tmp_path / "compressed.npz"
    with zipfile.ZipFile(compressed, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in entries:
            archive.writestr(name, payload)
    with pytest.raises(CheckpointError, match=r"zip entry '__manifest__.npy': expected a stored \(uncompressed"):
        load_checkpoint(compressed)
    duplicated = tmp_path / "duplicated.npz"
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(duplicated, "w") as archive:
            for name, payload in entries + entries[1:]:
                archive.writestr(name, payload)
    with pytest.raises(CheckpointError, match=r"zip entry 'a.npy': appears more than once"):
        load_checkpoint(duplicated)


def test_sigkill_while_saving_leaves_one_complete_version(tmp_path):
    """Kill a process that overwrites one path in a loop at random moments; the file stays whole."""
    path = str(tmp_path / "ckpt.npz")
    n_floats = 500_000  # 4 MB per checkpoint
    rng = np.random.default_rng(1234)
    deadline = time.monotonic() + 8.0
    kills, versions = 0, []
    while kills < 6 and time.monotonic() < deadline:
        writer = subprocess.Popen([sys.executable, WRITER, path, str(n_floats)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline().startswith("saved"), writer.stderr.read()
            time.sleep(float(rng.uniform(0.0, 0.25)))
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait()
            writer.stdout.close()
            writer.stderr.close()
        kills += 1
        arrays, meta = load_checkpoint(path)
        version = meta["version"]
        versions.append(version)
        assert set(arrays) == {"big", "small"}
        assert arrays["big"].shape == (n_floats,)
        assert (arrays["big"] == version).all() and (arrays["small"] == version).all()
    assert kills >= 3, "the kill test needs at least three kills to mean anything"
    assert max(versions) > 0, versions
    # Each kill during a save leaves its temporary file: evidence that kills landed mid-write
    # (a save spends most of its time with the temporary file open, so this is near certain).
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")], "no kill landed during a save"


def test_manager_keeps_the_newest_and_finds_the_latest(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpts", keep=3)
    assert manager.paths() == [] and manager.latest() is None
    for step in (1000, 2000, 3000, 4000, 5000):
        written = manager.save(step, {"x": np.full(4, step)}, {"step": step})
        assert os.path.basename(written) == f"step_{step:012d}.npz"
    names = [os.path.basename(p) for p in manager.paths()]
    assert names == ["step_000000003000.npz", "step_000000004000.npz", "step_000000005000.npz"]
    assert manager.latest() == manager.path_for(5000)
    path, arrays, meta = manager.load_latest()
    assert meta == {"step": 5000} and (arrays["x"] == 5000).all()


def test_manager_skips_corrupt_checkpoints_and_stray_files(tmp_path):
    manager = CheckpointManager(tmp_path, keep=5)
    manager.save(1, {"x": np.zeros(3)}, {"step": 1})
    manager.save(2, {"x": np.ones(3)}, {"step": 2})
    newest = manager.path_for(3)
    with open(newest, "wb") as f:  # a corrupt newest checkpoint (e.g. copied half-way)
        f.write(b"PK\x03\x04 not really a zip")
    (tmp_path / ".step_000000000004.npz.abc123.tmp").write_bytes(b"partial")  # killed writer
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert manager.latest() == manager.path_for(2)
    assert manager.latest(expect_meta={"step": 1}) == manager.path_for(1)
    manager.save(5, {"x": np.ones(3)}, {"step": 5})
    assert not (tmp_path / ".step_000000000004.npz.abc123.tmp").exists()


def test_manager_never_deletes_the_checkpoint_it_just_wrote(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (10, 20, 30):
        manager.save(step, {"x": np.zeros(1)}, {})
    manager.save(5, {"x": np.zeros(1)}, {})  # e.g. a run restarted from an earlier step
    assert [os.path.basename(p) for p in manager.paths()] == ["step_000000000005.npz", "step_000000000030.npz"]


def test_manager_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="keep: expected an integer >= 1, got 0"):
        CheckpointManager(tmp_path, keep=0)
    with pytest.raises(ValueError, match="step: expected an integer"):
        CheckpointManager(tmp_path).save(-1, {}, {})
