"""3x3 stride-1 convolutions as Winograd minimal filtering, F(2x2, 3x3) and F(4x4, 3x3) (Lavin & Gray 2016).

A 3x3 convolution (cross-correlation, as in CNNs) of an NHWC input with "same" padding 1 is computed
tile by tile: the padded input is cut into overlapping ``(m+2) x (m+2)`` tiles at stride ``m``, each
tile is transformed (``B^T d B``), multiplied elementwise by the transformed filter (``G g G^T``), and
transformed back (``A^T (.) A``) into an ``m x m`` output tile. Over channels the elementwise product is
one batched matrix product per tile position: ``(m+2)^2`` products of ``(tiles, C_in) @ (C_in, C_out)``.
F(2x2, 3x3) needs 16 multiplications per 4 outputs instead of 36 (2.25x fewer), F(4x4, 3x3) 36 per
16 (4x fewer); what the transforms cost in memory traffic decides whether that is faster
(``experiments/BENCHMARKS.md``).

The tiles are cut by reshapes (blocks of ``m`` joined to the next block's first 2 rows or columns) and
each transform is two passes of sums with constant coefficients, one per axis, each stacked into one
array: XLA fuses every pass into one loop over memory, and compiles a layer in about a third of the time
that one fused pass over 36 strided slices took. Padding and odd sizes are exact: the input is padded to
whole tiles and the output cropped.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

#: Output tile sizes supported: F(m x m, 3 x 3).
TILES = (2, 4)

# Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016): interpolation points
# 0, 1, -1 (and infinity) for F(2, 3); 0, 1, -1, 2, -2 (and infinity) for F(4, 3).
_MATRICES = {
    2: dict(
        BT=np.array([[1, 0, -1, 0],
                     [0, 1, 1, 0],
                     [0, -1, 1, 0],
                     [0, 1, 0, -1]], np.float64),
        G=np.array([[1, 0, 0],
                    [0.5, 0.5, 0.5],
                    [0.5, -0.5, 0.5],
                    [0, 0, 1]], np.float64),
        AT=np.array([[1, 1, 1, 0],
                     [0, 1, -1, -1]], np.float64),
    ),
    4: dict(
        BT=np.array([[4, 0, -5, 0, 1, 0],
                     [0, -4, -4, 1, 1, 0],
                     [0, 4, -4, -1, 1, 0],
                     [0, -2, -1, 2, 1, 0],
                     [0, 2, -1, -2, 1, 0],
                     [0, 4, 0, -5, 0, 1]], np.float64),
        G=np.array([[1 / 4, 0, 0],
                    [-1 / 6, -1 / 6, -1 / 6],
                    [-1 / 6, 1 / 6, -1 / 6],
                    [1 / 24, 1 / 12, 1 / 6],
                    [1 / 24, -1 / 12, 1 / 6],
                    [0, 0, 1]], np.float64),
        AT=np.array([[1, 1, 1, 1, 1, 0],
                     [0, 1, -1, 2, -2, 0],
                     [0, 1, 1, 4, 4, 0],
                     [0, 1, -1, 8, -8, 1]], np.float64),
    ),
}


def _check_tile(m: int) -> dict:
    if m not in _MATRICES:
        raise ValueError(f"Winograd output tile must be one of {TILES}, got {m}")
    return _MATRICES[m]


def filter_transform(kernel: jax.Array, m: int) -> jax.Array:
    """``(3, 3, C_in, C_out)`` HWIO kernel -> ``((m+2)^2, C_in, C_out)`` transformed filters ``G g G^T``,
    float32. Done once per frozen kernel (:func:`transform_params`): a concrete kernel by NumPy (nothing to
    compile when a predictor loads), a traced one by JAX."""
    traced = isinstance(kernel, jax.core.Tracer)
    kernel = kernel if traced else np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[:2] != (3, 3):
        raise ValueError(f"Winograd needs a (3, 3, C_in, C_out) kernel, got shape {kernel.shape}")
    xp, options = (jnp, {"precision": jax.lax.Precision.HIGHEST}) if traced else (np, {})
    g = xp.asarray(_check_tile(m)["G"], xp.float32)
    rows = xp.einsum("ai,i...->a...", g, kernel.astype(xp.float32), **options)  # G g
    u = xp.einsum("bj,aj...->ab...", g, rows, **options).reshape((m + 2) ** 2, *kernel.shape[2:])  # (G g) G^T
    return u if traced else jnp.asarray(u)


def _combine(matrix: np.ndarray, parts: Sequence[jax.Array]) -> list[jax.Array]:
    """``[sum_i matrix[k, i] * parts[i] for k]`` with the zero terms left out (a fused elementwise pass)."""
    out = []
    for row in matrix:
        terms = []
        for c, part in zip(row, parts):
            if c == 0:
                continue
            terms.append(part if c == 1 else -part if c == -1 else part * jnp.asarray(c, part.dtype))
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        out.append(total)
    return out


def _tiles(x: jax.Array, axis: int, n: int, m: int) -> jax.Array:
    """The ``n`` overlapping windows of ``m + 2`` along ``axis`` at stride ``m`` (``x`` holds ``(n + 1) m``
    there), as a new axis of ``m + 2`` after it: each block of ``m`` joined to the next block's first 2."""
    shape = x.shape
    blocks = x.reshape(*shape[:axis], n + 1, m, *shape[axis + 1:])
    head = jax.lax.slice_in_dim(blocks, 0, n, axis=axis)
    tail = jax.lax.slice_in_dim(jax.lax.slice_in_dim(blocks, 1, n + 1, axis=axis), 0, 2, axis=axis + 1)
    return jnp.concatenate([head, tail], axis=axis + 1)


@functools.partial(jax.jit, static_argnums=3)
def conv3x3(x: jax.Array, transformed: jax.Array, bias: jax.Array | None, m: int) -> jax.Array:
    """A 3x3, stride-1, padding-1 convolution of ``(B, H, W, C_in)`` ``x`` by Winograd F(m x m, 3 x 3).

    Args:
      x: NHWC input, float32 or bfloat16 (the products accumulate in float32).
      transformed: ``((m+2)^2, C_in, C_out)`` from :func:`filter_transform`.
      bias: ``(C_out,)`` or None.
      m: output tile size, 2 or 4.
    Returns:
      ``(B, H, W, C_out)`` in ``x``'s dtype.
    """
    mats = _check_tile(m)
    a = m + 2
    batch, height, width, cin = x.shape
    if transformed.shape[:2] != (a * a, cin):
        raise ValueError(f"transformed filters of shape {transformed.shape} do not fit F({m}x{m}, 3x3) on "
                         f"{cin} input channels (expected ({a * a}, {cin}, C_out))")
    th, tw = -(-height // m), -(-width // m)
    # Pad 1 (the convolution's own padding) plus whatever completes the last tiles and one more block,
    # so that the overlapping tiles are whole blocks of m plus the next block's first 2 rows (columns).
    # The input transform runs in float32 (bfloat16 rounds only its result, the products' operand).
    xp = jnp.pad(x.astype(jnp.float32),
                 ((0, 0), (1, (th + 1) * m - height - 1), (1, (tw + 1) * m - width - 1), (0, 0)))
    rows = _tiles(xp, 1, th, m)                                             # (B, th, a, Wq, C)
    rows = jnp.stack(_combine(mats["BT"], [rows[:, :, i] for i in range(a)]))  # (a, B, th, Wq, C)
    cols = _tiles(rows, 3, tw, m)                                           # (a, B, th, tw, a, C)
    v = jnp.stack(_combine(mats["BT"], [cols[..., j, :] for j in range(a)]), axis=1)  # (a, a, B, th, tw, C)
    v = v.reshape(a * a, batch * th * tw, cin).astype(x.dtype)
    prod = jnp.einsum("tnc,tco->tno", v, transformed.astype(x.dtype), preferred_element_type=jnp.float32)
    cout = prod.shape[-1]
    prod = prod.reshape(a, a, batch, th, tw, cout)
    out_rows = jnp.stack(_combine(mats["AT"], [prod[i] for i in range(a)]))  # (m, a, B, th, tw, O)
    y = jnp.stack(_combine(mats["AT"], [out_rows[:, j] for j in range(a)]), axis=1)  # (m, m, B, th, tw, O)
    y = y.transpose(2, 3, 0, 4, 1, 5).reshape(batch, th * m, tw * m, cout)[:, :height, :width]
    if bias is not None:
        y = y + bias.astype(jnp.float32).reshape(1, 1, 1, cout)
    return y.astype(x.dtype)


# --- which layers use it ---------------------------------------------------------------------------

#: Values of ``conv_impl`` (:class:`deepgaze_jax.backbones.Backbone`, :class:`deepgaze_jax.model.DeepGaze`).
IMPLS = ("xla", "winograd2", "winograd4", "auto")


def check_impl(impl: str) -> None:
    """A ``ValueError`` naming ``impl`` unless it is one of :data:`IMPLS`."""
    if impl not in IMPLS:
        raise ValueError(f"conv_impl must be one of {IMPLS}, got {impl!r}")


@dataclasses.dataclass(frozen=True)
class Rule:
    """Where ``"auto"`` uses Winograd on a platform: 3x3 stride-1 layers whose input has at least
    ``min_channels`` channels and at most ``max_pixels`` pixels (``H * W``) per image, with output tile
    ``tile``; everything else runs as XLA's convolution."""

    tile: int
    min_channels: int
    max_pixels: int


#: ``"auto"``'s rules by (platform, dtype), read off ``experiments/results/winograd_layers_vgg16_768x1024.md``
#: and ``..._alexnet_768x1024.md`` (per-layer timings on the quiet 2-core CPU): F(4x4, 3x3) beat XLA's
#: convolution on VGG-16's blocks 4 and 5 (2.2-2.4x), on block 3's 256-channel layers (1.05x) and on
#: AlexNet's conv3-5 (192-384 channels, 1.2-1.3x), lost on every layer with 128 or fewer input channels
#: or more pixels (the transforms' memory traffic: 226 MB written for conv1_2 against 101 MB for the direct
#: convolution's input and output). In bfloat16 F(4x4, 3x3) rounds up to 20x worse than a direct bfloat16
#: convolution (tests/test_winograd.py), so bfloat16 uses F(2x2, 3x3), 1.1-3x faster on the same layers.
#: Platforms without a rule (GPUs: cuDNN) use XLA.
AUTO_RULES: dict[tuple[str, str], Rule] = {
    ("cpu", "float32"): Rule(tile=4, min_channels=192, max_pixels=96 * 128),
    ("cpu", "bfloat16"): Rule(tile=2, min_channels=192, max_pixels=96 * 128),
}


def auto_rule(dtype, platform: str | None = None) -> Rule | None:
    """``"auto"``'s rule for ``dtype`` on ``platform`` (default: JAX's), None where it keeps XLA."""
    return AUTO_RULES.get((platform or jax.default_backend(), jnp.dtype(dtype).name))


def tile_for(impl: str, kernel: int, stride: int, padding: int, input_shape: Sequence[int],
             dtype, platform: str | None = None) -> int:
    """The Winograd output tile a conv layer uses under ``impl`` (0: XLA's convolution). Only 3x3,
    stride-1, padding-1 layers can; ``input_shape`` is the layer's NHWC input."""
    check_impl(impl)
    if impl == "xla" or (kernel, stride, padding) != (3, 1, 1):
        return 0
    if impl != "auto":
        return int(impl[-1])
    rule = auto_rule(dtype, platform)
    _, height, width, channels = input_shape
    return rule.tile if rule and channels >= rule.min_channels and height * width <= rule.max_pixels else 0


def tiles_needed(impl: str, channels: int, dtype, platform: str | None = None) -> tuple[int, ...]:
    """The tiles a 3x3 layer of ``channels`` input channels may use under ``impl`` at some image size."""
    check_impl(impl)
    if impl == "xla":
        return ()
    if impl != "auto":
        return (int(impl[-1]),)
    rule = auto_rule(dtype, platform)
    return (rule.tile,) if rule is not None and channels >= rule.min_channels else ()


def transform_params(params: dict, arch: str, impl: str, dtype="float32", platform: str | None = None) -> dict:
    """The backbone params with each 3x3 stride-1 layer's transformed kernel added (``winograd2`` /
    ``winograd4`` beside ``kernel`` and ``bias``) for the tiles ``impl`` may use, so a frozen backbone
    transforms its filters once rather than on every call. The original leaves are kept as they are."""
    from deepgaze_jax import backbones  # backbones imports this module

    out = dict(params)
    channels = 3
    for name, kind, args in backbones.ARCHITECTURES[arch]:
        if kind != "conv":
            continue
        features, kernel, stride, padding = args
        if (kernel, stride, padding) == (3, 1, 1):
            layer = dict(params[name])
            for tile in tiles_needed(impl, channels, dtype, platform):
                layer[f"winograd{tile}"] = filter_transform(layer["kernel"], tile)
            out[name] = layer
        channels = features
    return out


def describe(impl: str, dtype="float32", platform: str | None = None) -> dict:
    """What ``impl`` computes on ``platform`` (default: JAX's), for cache keys: the impl and, for
    ``"auto"``, the platform and its rule."""
    check_impl(impl)
    platform = platform or jax.default_backend()
    doc: dict = {"impl": impl}
    if impl == "auto":
        rule = auto_rule(dtype, platform)
        doc.update(platform=platform, rule=dataclasses.asdict(rule) if rule else None)
    return doc
