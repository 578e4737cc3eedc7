"""Atomic writes: the old file or the whole new one, never half of one, and the usual permissions."""

import os
import stat

import numpy as np
import pytest

from deepgaze_jax import atomic_write


def _interrupt(monkeypatch):
    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_write.os, "replace", interrupted)


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path, monkeypatch):
    path = tmp_path / "AUC" / "x.npy"
    atomic_write.write_bytes(path, b"old")
    _interrupt(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        atomic_write.write_bytes(path, b"\x93NUMPY" + bytes(1000))
    assert path.read_bytes() == b"old"
    assert list(path.parent.iterdir()) == [path]


def test_a_writer_that_fails_inside_the_block_changes_nothing(tmp_path):
    path = tmp_path / "features.npz"
    with pytest.raises(ValueError, match="half way"):
        with atomic_write.replacing(path, suffix=".npz") as tmp:
            np.savez(tmp, a=np.arange(3))
            raise ValueError("half way")
    assert list(tmp_path.iterdir()) == []


def test_a_named_writer_gets_a_path_with_the_suffix_it_would_add(tmp_path):
    path = tmp_path / "features.npz"
    with atomic_write.replacing(path, suffix=".npz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".npz")
        np.savez(tmp, a=np.arange(3))
    np.testing.assert_array_equal(np.load(path)["a"], np.arange(3))
    assert list(tmp_path.iterdir()) == [path]


def test_written_files_get_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write.write_text(tmp_path / "a" / "b.json", "{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "b.json").read_text() == "{}\n"
    assert stat.S_IMODE((tmp_path / "a" / "b.json").stat().st_mode) == 0o640
