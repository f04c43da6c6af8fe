"""Model files are safe: never unpickled, written atomically, and a bad file changes nothing.

tests/test_nn.py covers the basics (a raw pickle and an object .npy are refused, three truncations,
mismatched names/shapes, os.replace failing). This file extends them: pickles hidden inside an
.npz never run, a crash at any point of a save leaves the old file loading identically (and no
temporary file), readers racing a writer always see a whole model, every truncation and many
byte flips give a ModelFileError (a GraphError) rather than another exception, and a failed load
leaves the model's weights untouched.
"""
import io
import json
import os
import threading
import zipfile

import numpy as np
import pytest

import graphc as gc
from graphc import nn


def _weights(model):
    return [p.value.copy() for p in model.parameters()]


def _assert_weights(model, weights):
    got = _weights(model)
    assert len(got) == len(weights)
    for g, w in zip(got, weights):
        np.testing.assert_array_equal(g, w)


@pytest.fixture
def saved(tmp_path):
    """(model, path, file bytes) of a small saved MLP."""
    model = nn.MLP([4, 6, 3], seed=3)
    path = tmp_path / "model.npz"
    model.save(path)
    return model, path, path.read_bytes()


# -- never unpickle --------------------------------------------------------------------------------
class _Payload:
    """Unpickling this creates a directory: evidence that a pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _npz_with(path, saved_path, **replace):
    with np.load(saved_path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(replace)
    np.savez(path, **arrays)  # object arrays are pickled inside the archive


@pytest.mark.parametrize("where", ["param:0.weight", "param:2.bias", "__config__", "__format__", "extra_member"])
def test_a_pickle_inside_an_npz_is_refused_and_never_runs(tmp_path, saved, where):
    model, path, _ = saved
    marker = tmp_path / "pickle-ran"
    evil = tmp_path / "evil.npz"
    _npz_with(evil, path, **{where: np.array([_Payload(marker)], dtype=object)})
    with zipfile.ZipFile(evil) as zf:  # the archive really holds a pickle
        assert any(b"mkdir" in zf.read(n) for n in zf.namelist())
    before = _weights(model)
    for load in (lambda: nn.Module.load(evil), lambda: model.load_weights(evil)):
        if where == "extra_member":  # an unknown member is never read, so never unpickled
            load()
        else:
            with pytest.raises(nn.ModelFileError, match="refusing to load pickled data") as info:
                load()
            assert isinstance(info.value, gc.GraphError)
    assert not marker.exists()
    if where != "extra_member":
        _assert_weights(model, before)


def test_a_raw_pickle_with_a_payload_never_runs(tmp_path):
    import pickle
    marker = tmp_path / "pickle-ran"
    for name in ("raw.npz", "raw.npy", "raw.pkl"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps({"0.weight": _Payload(marker)}))
        with pytest.raises(nn.ModelFileError, match="pickle"):
            nn.Module.load(path)
    assert not marker.exists()


def test_saving_never_writes_a_pickle(tmp_path, saved):
    """A parameter value that would be pickled (an object array) is refused before writing."""
    model, path, blob = saved
    model.parameters()[0].value = np.array([[_Payload(tmp_path / "x")]], dtype=object)
    with pytest.raises(nn.ModelFileError, match="cannot save parameter '0.weight'"):
        model.save(path)
    assert path.read_bytes() == blob
    fresh = tmp_path / "fresh.npz"
    nn.MLP([4, 6, 3]).save(fresh)
    with zipfile.ZipFile(fresh) as zf:
        for name in zf.namelist():
            header = zf.read(name)[:128]
            assert b"'descr': '|O'" not in header and b"'descr': 'O'" not in header, name


# -- atomic writes ------------------------------------------------------------------------------------
def _crash(exc=None):
    def boom(*args, **kwargs):
        raise exc if exc is not None else OSError("disk full")
    return boom


class _HalfWriter(io.FileIO):
    """A file whose write() puts half the bytes on disk, then fails (a full disk, a crash)."""

    def write(self, data):
        super().write(bytes(data)[: len(data) // 2])
        self.flush()
        raise OSError("No space left on device")


CRASH_POINTS = {
    "np.savez": lambda mp: mp.setattr(nn.np, "savez", _crash()),
    "mkstemp": lambda mp: mp.setattr(nn.tempfile, "mkstemp", _crash(PermissionError("read-only folder"))),
    "half_written": lambda mp: mp.setattr(nn.os, "fdopen", lambda fd, mode: _HalfWriter(fd, "wb", closefd=True)),
    "fsync": lambda mp: mp.setattr(nn.os, "fsync", _crash()),
    "chmod": lambda mp: mp.setattr(nn.os, "chmod", _crash()),
    "keyboard_interrupt_at_fsync": lambda mp: mp.setattr(nn.os, "fsync", _crash(KeyboardInterrupt())),
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_a_crash_at_any_point_of_a_save_leaves_the_old_file(tmp_path, saved, monkeypatch, point):
    model, path, blob = saved
    old = _weights(model)
    other = nn.MLP([4, 6, 3], seed=99)
    with monkeypatch.context() as mp:
        CRASH_POINTS[point](mp)
        with pytest.raises((OSError, KeyboardInterrupt)):
            other.save(path)
    assert path.read_bytes() == blob  # byte for byte the old file
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # and no temporary file left behind
    _assert_weights(nn.Module.load(path), old)
    other.save(path)  # once the fault is gone, the new model goes in whole
    _assert_weights(nn.Module.load(path), _weights(other))


def test_save_into_a_missing_folder_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        nn.MLP([4, 6, 3]).save(tmp_path / "missing" / "model.npz")
    assert os.listdir(tmp_path) == []


def test_saved_file_is_an_ordinary_readable_file(saved):
    _, path, _ = saved
    assert (os.stat(path).st_mode & 0o777) == 0o644


def test_readers_racing_a_writer_always_see_a_whole_model(tmp_path):
    path = tmp_path / "model.npz"
    a, b = nn.MLP([4, 6, 3], seed=1), nn.MLP([4, 6, 3], seed=2)
    a.save(path)
    wa, wb = _weights(a), _weights(b)
    stop, seen, errors = threading.Event(), [], []

    def reader():
        while not stop.is_set():
            try:
                got = _weights(nn.Module.load(path))
            except Exception as exc:  # noqa: BLE001 - any failure is the bug this test looks for
                errors.append(exc)
                return
            same_a = all(np.array_equal(g, w) for g, w in zip(got, wa))
            same_b = all(np.array_equal(g, w) for g, w in zip(got, wb))
            seen.append("a" if same_a else "b" if same_b else "mixed")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(60):
            (b if i % 2 == 0 else a).save(path)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors[:1]
    assert seen and "mixed" not in seen
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


# -- corrupted files -----------------------------------------------------------------------------------
def _load_outcome(path, model):
    """'ok' when the file loads to exactly `model`'s weights, 'error' for a ModelFileError."""
    try:
        loaded = nn.Module.load(path)
    except nn.ModelFileError:
        return "error"
    _assert_weights(loaded, _weights(model))  # loading something is fine only if it is the model
    return "ok"


def test_every_truncation_is_a_model_file_error(tmp_path, saved):
    model, path, blob = saved
    cuts = sorted(set(range(0, 64)) | set(range(64, len(blob), max(1, len(blob) // 150))))
    bad = tmp_path / "cut.npz"
    for cut in cuts:
        bad.write_bytes(blob[:cut])
        assert _load_outcome(bad, model) == "error", cut


def test_byte_flips_give_a_model_file_error_or_the_same_model(tmp_path, saved):
    model, path, blob = saved
    bad = tmp_path / "flip.npz"
    outcomes = []
    for pos in range(len(blob)):  # every byte of the file, two different flips
        for flip in (0x01, 0xA5):
            data = bytearray(blob)
            data[pos] ^= flip
            bad.write_bytes(bytes(data))
            outcomes.append(_load_outcome(bad, model))
    assert outcomes.count("error") > len(outcomes) // 2  # most flips are detected (CRC, headers)


@pytest.mark.parametrize("tamper, pattern", [
    ({"__config__": np.array("{not json")}, r"corrupt or truncated|not a valid"),
    ({"__config__": np.array(json.dumps({"class": "MLP", "args": {"sizes": "abc"}}))}, r"invalid arguments for MLP"),
    ({"__config__": np.array(json.dumps({"class": "MLP", "args": {"sizes": [4, 10 ** 12, 3]}}))},
     r"invalid arguments for MLP.*MemoryError"),
    ({"__config__": np.array(json.dumps({"class": "Linear", "args": {"bogus": 1}}))}, r"invalid arguments for Linear"),
    ({"__config__": np.array(json.dumps({"class": "Sequential", "args": {}}))}, r"invalid arguments for Sequential"),
    ({"__config__": np.array(json.dumps({"class": "builtins.eval", "args": {}}))}, r"unknown layer class"),
    ({"__config__": np.array(json.dumps(["MLP"]))}, r"unknown layer class"),
    ({"__format__": np.array("graphc-model-v0")}, r"unsupported model format"),
    ({"param:0.weight": np.zeros((4, 6), np.float32)}, r"'0.weight' has shape \(4, 6\)"),
    ({"param:0.weight": np.zeros((6, 4), np.int32)}, r"non-float dtype int32"),
    ({"param:0.weight": np.zeros((6, 4), np.complex64)}, r"non-float dtype complex64"),
    ({"param:9.weight": np.zeros(3, np.float32)}, r"names do not match"),
])
def test_a_tampered_file_is_a_clear_error_and_changes_nothing(tmp_path, saved, tamper, pattern):
    model, path, blob = saved
    before = _weights(model)
    bad = tmp_path / "tampered.npz"
    _npz_with(bad, path, **tamper)
    with pytest.raises(nn.ModelFileError, match=pattern) as info:
        nn.Module.load(bad)
    assert isinstance(info.value, gc.GraphError) and str(bad) in str(info.value)  # names the file
    with pytest.raises(nn.ModelFileError):
        if "__config__" in tamper or "__format__" in tamper:
            nn.Module.load(bad)
        else:
            model.load_weights(bad)  # all or nothing: no weight is replaced
    _assert_weights(model, before)
    assert path.read_bytes() == blob  # the good file next to it is untouched


def test_a_failed_load_weights_leaves_the_model_untouched(tmp_path, saved):
    model, path, _ = saved
    before = _weights(model)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    # the first parameter is fine (and different), the last one has the wrong shape
    arrays["param:0.weight"] = arrays["param:0.weight"] + 1
    arrays["param:2.bias"] = np.zeros(7, np.float32)
    np.savez(tmp_path / "half.npz", **arrays)
    with pytest.raises(nn.ModelFileError, match="'2.bias' has shape"):
        model.load_weights(tmp_path / "half.npz")
    _assert_weights(model, before)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(nn.ModelFileError, match="corrupt or truncated"):
        model.load_weights(truncated)
    _assert_weights(model, before)
