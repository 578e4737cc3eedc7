"""The ``deepgaze`` command's persistent compilation cache (:mod:`deepgaze_jax.compile_cache`)."""

import logging
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image

from deepgaze_jax import compile_cache


def _predict(tmp_path, image, out, **env):
    """``deepgaze predict IMAGE`` (DeepGaze I, no picture) in a fresh process; returns its stderr."""
    done = subprocess.run([sys.executable, "-m", "deepgaze_jax.cli", "predict", str(image), "--no-png",
                           "--out", str(out)], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def _image(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(path)
    return path


def test_a_second_run_reads_what_the_first_compiled_and_predicts_the_same(tmp_path):
    image, cache = _image(tmp_path), tmp_path / "cache"
    env = {compile_cache.ENV: str(cache), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    _predict(tmp_path, image, tmp_path / "first", **env)
    entries = sorted(p.name for p in cache.iterdir())
    assert any(name.startswith("jit_apply_ensemble-") for name in entries), entries
    mtimes = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    _predict(tmp_path, image, tmp_path / "second", **env)
    # the model's program was read, not written again; the prediction is the same, bit for bit
    again = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    model_entries = [name for name in entries if name.startswith("jit_apply_ensemble-") and name.endswith("-cache")]
    assert model_entries
    assert all(again[name] == mtimes[name] for name in model_entries)
    np.testing.assert_array_equal(np.load(tmp_path / "first" / "photo.npy"), np.load(tmp_path / "second" / "photo.npy"))
    assert not (tmp_path / "xdg" / "deepgaze-jax").exists()


def test_off_writes_nothing_and_a_cache_given_to_jax_itself_is_kept(tmp_path):
    image, xdg = _image(tmp_path), tmp_path / "xdg"
    _predict(tmp_path, image, tmp_path / "out", **{compile_cache.ENV: "off", "XDG_CACHE_HOME": str(xdg)})
    assert not (xdg / "deepgaze-jax").exists()
    own = tmp_path / "jax-own"
    env = {compile_cache.ENV: "", "XDG_CACHE_HOME": str(xdg), "JAX_COMPILATION_CACHE_DIR": str(own),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    _predict(tmp_path, image, tmp_path / "out2", **env)
    assert any(p.name.startswith("jit_apply_ensemble-") for p in own.iterdir())
    assert not (xdg / "deepgaze-jax").exists()


def test_the_default_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.default_dir() == tmp_path / "deepgaze-jax" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert compile_cache.default_dir().parts[-3:] == (".cache", "deepgaze-jax", "xla")


def test_a_folder_that_cannot_be_made_leaves_the_cache_off_with_a_warning(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = jax.config.jax_compilation_cache_dir
    with caplog.at_level(logging.WARNING, logger="deepgaze_jax.compile_cache"):
        assert compile_cache.enable(blocker / "cache") is None
    assert jax.config.jax_compilation_cache_dir == before
    assert len(caplog.records) == 1 and str(blocker / "cache") in caplog.records[0].getMessage()
    assert compile_cache.ENV in caplog.records[0].getMessage()
