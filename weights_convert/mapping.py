"""Applying an explicit key table to a flat source dict, over a skeleton of expected shapes.

A :class:`Rule` maps one source key (a regex matched against the whole key) to one target path
(``"/"``-joined) with a named transform. Every source key must match exactly one rule or one ignore
pattern; every skeleton path must be filled exactly once with an array of exactly the skeleton's shape.
All violations are gathered and raised together in one ``ValueError`` that names each key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from deepgaze_jax.params_io import unflatten_params

Shape = tuple[int, ...]
#: Flat target layout: ``"conv1/kernel"`` -> expected shape.
Skeleton = Mapping[str, Shape]


@dataclasses.dataclass(frozen=True)
class Transform:
    """How a source tensor becomes a target tensor.

    ``apply`` converts the array; ``source_shape`` gives the source shape that yields a target shape,
    so a wrong source tensor is reported in the source's own layout.
    """

    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    source_shape: Callable[[Shape], Shape]


IDENTITY = Transform("identity", lambda a: a, lambda s: s)
#: PyTorch conv weight (out, in, kh, kw) -> Flax kernel (kh, kw, in, out).
OIHW_TO_HWIO = Transform(
    "oihw_to_hwio",
    lambda a: np.transpose(a, (2, 3, 1, 0)),
    lambda s: (s[3], s[2], s[0], s[1]),
)
#: A one-element vector (1,) -> a scalar ().
SQUEEZE_TO_SCALAR = Transform("squeeze_to_scalar", lambda a: a.reshape(()), lambda s: (1,))


@dataclasses.dataclass(frozen=True)
class Rule:
    """Source key regex (full match) -> target path, via ``transform``."""

    source: str
    target: str
    transform: Transform = IDENTITY


def _to_numpy(key: str, value: Any) -> np.ndarray:
    """Torch tensor or array-like -> float32 numpy, without importing torch."""
    if hasattr(value, "detach"):  # torch.Tensor; .float() also covers bf16, which numpy lacks
        if not value.is_floating_point():
            raise ValueError(f"{key}: expected a floating-point tensor, got dtype {value.dtype}")
        value = value.detach().cpu().float().numpy()
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise ValueError(f"{key}: expected a floating-point array, got dtype {array.dtype}")
    # A copy, so the tree never aliases the caller's tensors; np.array (not ascontiguousarray) keeps 0-d.
    return np.array(array, dtype=np.float32, order="C", copy=True)


def _display(pattern: str) -> str:
    """A rule's regex as the literal key it matches (our tables escape only dots)."""
    return re.sub(r"\\(.)", r"\1", pattern)


def apply_rules(
    source: Mapping[str, Any],
    rules: Sequence[Rule],
    skeleton: Skeleton,
    ignore: Sequence[str] = (),
    source_name: str = "state dict",
) -> dict[str, Any]:
    """Convert ``source`` (flat ``key -> tensor``) into the nested tree described by ``skeleton``.

    Args:
      source: flat mapping of source keys to torch tensors or arrays.
      rules: the key table; each source key must fully match exactly one rule's regex.
      skeleton: target path -> expected shape; every path must be produced once.
      ignore: regexes (full match) of source keys that are known and deliberately dropped.
      source_name: how to name the source in error messages (e.g. a file path).

    Returns:
      Nested dict of float32 numpy arrays with exactly the skeleton's paths and shapes.

    Raises:
      ValueError: listing every unexpected key, missing target, wrong shape or wrong dtype by name.
    """
    compiled = [(re.compile(rule.source), rule) for rule in rules]
    ignored = [re.compile(p) for p in ignore]
    for rule in rules:
        if rule.target not in skeleton:
            raise ValueError(f"key table bug: rule {rule.source!r} targets {rule.target!r}, not in the skeleton")

    out: dict[str, np.ndarray] = {}
    filled_by: dict[str, str] = {}
    errors: list[str] = []
    for key, value in source.items():
        matches = [rule for pattern, rule in compiled if pattern.fullmatch(key)]
        if not matches:
            if not any(p.fullmatch(key) for p in ignored):
                errors.append(f"unexpected key {key!r}")
            continue
        if len(matches) > 1:
            errors.append(f"key {key!r} matches several rules: {[r.source for r in matches]}")
            continue
        rule = matches[0]
        if rule.target in filled_by:
            errors.append(f"key {key!r} and key {filled_by[rule.target]!r} both map to {rule.target!r}")
            continue
        filled_by[rule.target] = key
        try:
            array = _to_numpy(key, value)
        except ValueError as e:
            errors.append(str(e))
            continue
        want = rule.transform.source_shape(tuple(skeleton[rule.target]))
        if array.shape != want:
            errors.append(
                f"key {key!r} (-> {rule.target!r}): expected shape {want}, got {tuple(array.shape)}"
            )
            continue
        out[rule.target] = np.asarray(rule.transform.apply(array), order="C")

    for target in skeleton:
        if target not in filled_by:
            sources = [_display(r.source) for r in rules if r.target == target] or ["?"]
            errors.append(f"missing key {sources[0]!r} (-> {target!r}, shape {tuple(skeleton[target])})")

    if errors:
        raise ValueError(f"cannot convert {source_name}: " + "; ".join(errors))
    return unflatten_params(out)
