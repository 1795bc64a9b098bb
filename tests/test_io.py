"""Shared I/O: atomic writes leave the previous version intact; arrays never need pickle."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from tasks.io import atomic_path, file_digest, load_array, save_arrays, sha256_array, write_json, write_text
from tests.conftest import snapshot


def test_atomic_path_keeps_target_when_block_fails(tmp_path):
    target = tmp_path / "out" / "report.json"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_write_json_round_trip(tmp_path):
    target = tmp_path / "r.json"
    write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_save_arrays_is_all_or_nothing(tmp_path):
    folder = tmp_path / "data" / "raw"
    save_arrays(folder, {"a": np.arange(3), "b": np.ones(2)})
    before = snapshot(tmp_path)
    with pytest.raises(TypeError, match="object arrays need pickle"):
        save_arrays(folder, {"a": np.arange(5), "b": np.array([{}], dtype=object)})
    assert snapshot(tmp_path) == before


def test_save_arrays_replaces_the_whole_folder(tmp_path):
    folder = tmp_path / "raw"
    save_arrays(folder, {"a": np.arange(3), "stale": np.zeros(1)})
    save_arrays(folder, {"a": np.arange(4)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    assert sorted(p.name for p in folder.iterdir()) == ["a.npy"]
    assert load_array(folder / "a.npy").tolist() == [0, 1, 2, 3]


def test_load_array_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"evil\.npy: refused to load"):
        load_array(path)


def test_load_array_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing: run the stage that produces it"):
        load_array(tmp_path / "x.npy")


def test_sha256_array_is_the_digest_of_the_c_ordered_bytes():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert sha256_array(array) == hashlib.sha256(array.tobytes()).hexdigest()
    fortran = np.asfortranarray(array)
    assert sha256_array(fortran) == sha256_array(array)
    assert sha256_array(array[:, ::-1]) == hashlib.sha256(np.ascontiguousarray(array[:, ::-1]).tobytes()).hexdigest()


def test_file_digest(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert file_digest(path) == hashlib.md5(b"abc").hexdigest()
    assert file_digest(Path(path), "sha256") == hashlib.sha256(b"abc").hexdigest()
