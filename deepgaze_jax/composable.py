"""DeepGaze as a differentiable part of another JAX model: a pure saliency function, Flax wrappers, losses.

::

    from deepgaze_jax import composable
    from deepgaze_jax.predict import load_predictor

    predictor = load_predictor("deepgaze1")
    saliency, params = composable.from_predictor(predictor)     # static description, params pytree
    cb = predictor.centerbias((H, W))                           # (H, W) nats, once per image size

    @jax.jit
    def loss(images):                                           # (B, H, W, 3) float, 0..255
        log_p = saliency(params, images, cb)                    # (B, H, W) nats
        return -composable.log_attention_mass(log_p, mask).mean()

    grad = jax.grad(loss)(images)                               # (B, H, W, 3)

The backbone is frozen: its params pass through ``jax.lax.stop_gradient``, so ``jax.grad`` w.r.t. them
is exactly zero, and so is the readout's unless ``from_predictor(..., train_readout=True)``. The
forward pass is the model's own (:meth:`deepgaze_jax.model.DeepGaze.apply_ensemble` for a stacked
ensemble, mixed in probability space as :meth:`deepgaze_jax.predict.Predictor.log_density`;
:meth:`~deepgaze_jax.model.DeepGaze.apply` for one head).

:class:`SaliencyFn` is a frozen, hashable dataclass registered as a static pytree: pass it to ``jax.jit``
as a static argument, as an ordinary argument (it has no leaves), or close over it. It works under
``jax.vmap`` (a single ``(H, W, 3)`` image maps to ``(H, W)``) and on sharded inputs (the batch axis of
``images`` and ``centerbias`` over a ``jax.sharding.NamedSharding``; params replicated).
:class:`DeepGazeLinen` and :class:`DeepGazeNNX` hold the frozen params where the Flax optimizers do not
look (a ``"deepgaze"`` collection; :class:`Frozen` variables).

Input checks run before any compute, each a :class:`CompositionInputError` of one line: images must be
float (integer images are refused: gradients need floats, so cast them yourself, e.g.
``images.astype(jnp.float32)``), of shape ``(B, H, W, 3)`` or ``(H, W, 3)``, the center bias float of
shape ``(B, H, W)`` or ``(H, W)``. The value range (0..255) is checked only where the images are
concrete (called outside ``jit``); inside ``jit`` they are tracers and pass unchecked, so keep an
optimised image in range yourself (e.g. ``jnp.clip(x, 0, 255)``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deepgaze_jax import model as model_lib

Params = dict
#: The linen variable collection :class:`DeepGazeLinen` keeps the frozen params in (not ``"params"``).
FROZEN_COLLECTION = "deepgaze"


class CompositionInputError(ValueError):
    """Images, center bias or target maps of the wrong dtype, shape or range for :class:`SaliencyFn`."""


@dataclasses.dataclass(frozen=True)
class SaliencyFn:
    """A DeepGaze saliency model as a pure function ``(params, images, centerbias) -> log density``.

    Attributes:
      model: the :class:`~deepgaze_jax.model.DeepGaze` description.
      ensemble: ``params["heads"]`` is a stacked ensemble (a leading axis of the K members on every
        leaf), mixed in probability space.
      train_readout: let gradients reach ``params["heads"]`` (readout, blur sigma, center-bias weight);
        False stops them there as at the backbone.
    """

    model: model_lib.DeepGaze
    ensemble: bool = True
    train_readout: bool = False

    def __call__(self, params: Params, images: jax.Array, centerbias: jax.Array) -> jax.Array:
        """Log density of fixations on the images.

        Args:
          params: ``{"backbone": ..., "heads": ...}`` from :func:`from_predictor`.
          images: ``(B, H, W, 3)`` or one ``(H, W, 3)`` float RGB image, values 0..255.
          centerbias: ``(B, H, W)``, or ``(H, W)`` for every image of the batch: the center-bias log
            density, nats (e.g. ``predictor.centerbias((H, W))``).

        Returns:
          ``(B, H, W)`` (``(H, W)`` for one image) float32 log density in nats, logsumexp over pixels 0.
        """
        images = check_images(images)
        centerbias = check_centerbias(images, centerbias)
        single = images.ndim == 3
        if single:
            images, centerbias = images[None], centerbias[None]
        backbone = jax.lax.stop_gradient(params["backbone"])
        heads = params["heads"] if self.train_readout else jax.lax.stop_gradient(params["heads"])
        if self.ensemble:
            out = self.model.apply_ensemble(backbone, heads, images, centerbias)
        else:
            out = self.model.apply({"backbone": backbone, "head": heads}, images, centerbias)
        return out[0] if single else out


jax.tree_util.register_static(SaliencyFn)


def from_predictor(predictor: Any, train_readout: bool = False) -> tuple[SaliencyFn, Params]:
    """The saliency function of a :class:`~deepgaze_jax.predict.Predictor` (e.g.
    ``load_predictor("deepgaze1")`` or ``"deepgaze2_vgg16"``) and its params
    ``{"backbone": ..., "heads": ...}`` as device arrays. The center bias stays with the predictor:
    ``predictor.centerbias((H, W))`` is the ``(H, W)`` log density (nats) to pass."""
    if not isinstance(getattr(predictor, "model", None), model_lib.DeepGaze):
        raise TypeError(f"expected a static DeepGaze Predictor (load_predictor(..., kind='static')), got "
                        f"{type(predictor).__name__}")
    params = {"backbone": jax.tree.map(jnp.asarray, predictor.backbone),
              "heads": jax.tree.map(jnp.asarray, predictor.heads)}
    return SaliencyFn(predictor.model, bool(predictor.ensemble), train_readout), params


# --- input checks ---------------------------------------------------------------------------------


def _concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_images(images: jax.Array) -> jax.Array:
    """``images`` if they are float ``(B, H, W, 3)`` or ``(H, W, 3)``; where concrete, also finite and in
    0..255 (and not apparently 0..1), else a :class:`CompositionInputError` of one line."""
    shape, dtype = tuple(np.shape(images)), jnp.result_type(images)
    if len(shape) not in (3, 4) or shape[-1] != 3:
        raise CompositionInputError(f"images must have shape (B, H, W, 3) or (H, W, 3) (RGB), got {shape}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise CompositionInputError(f"images must be float (values 0..255; gradients need floats), got dtype "
                                    f"{dtype}: cast them, e.g. images.astype(jnp.float32)")
    if _concrete(images):
        low, high = float(jnp.min(images)), float(jnp.max(images))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise CompositionInputError("images hold NaN or infinite values")
        if low < 0 or high > 255:
            raise CompositionInputError(f"image values must lie in 0..255, got {low:g}..{high:g}")
        if 0 < high <= 1:
            raise CompositionInputError(f"image values lie in {low:g}..{high:g}: DeepGaze takes 0..255, not 0..1 "
                                        f"(multiply by 255)")
    return images


def check_centerbias(images: jax.Array, centerbias: jax.Array) -> jax.Array:
    """The center bias as float32 of the images' ``(B, H, W)`` shape (one ``(H, W)`` map broadcast over
    the batch), or a :class:`CompositionInputError` naming both shapes."""
    shape, cb_shape = tuple(np.shape(images)), tuple(np.shape(centerbias))
    if cb_shape not in (shape[:-1], shape[-3:-1]):
        raise CompositionInputError(f"center bias of shape {cb_shape} does not fit images of shape {shape}: "
                                    f"expected {shape[:-1]} or {shape[-3:-1]}")
    if not jnp.issubdtype(jnp.result_type(centerbias), jnp.floating):
        raise CompositionInputError(f"the center bias must be a float log density (nats), got dtype "
                                    f"{jnp.result_type(centerbias)}")
    return jnp.broadcast_to(jnp.asarray(centerbias, jnp.float32), shape[:-1])


def _check_map(log_density: jax.Array, other: jax.Array, what: str) -> jax.Array:
    """``other`` broadcast to the ``(B, H, W)`` shape of ``log_density`` (from ``(B, H, W)`` or ``(H, W)``)."""
    shape, other_shape = tuple(np.shape(log_density)), tuple(np.shape(other))
    if len(shape) != 3:
        raise CompositionInputError(f"the log density must have shape (B, H, W), got {shape}")
    if other_shape not in (shape, shape[1:]):
        raise CompositionInputError(f"{what} of shape {other_shape} does not fit the log density of shape {shape}: "
                                    f"expected {shape} or {shape[1:]}")
    return jnp.broadcast_to(jnp.asarray(other, jnp.result_type(log_density)), shape)


# --- losses ---------------------------------------------------------------------------------------


def attention_mass(log_density: jax.Array, mask: jax.Array) -> jax.Array:
    """The probability that a fixation lands in the target region: ``sum_p mask[p] * exp(log_density[p])``.

    Args:
      log_density: ``(B, H, W)`` normalised log density, nats (a :class:`SaliencyFn` output).
      mask: ``(B, H, W)`` or ``(H, W)`` weights in 0..1 (1 inside the region).

    Returns:
      ``(B,)`` masses in 0..1.
    """
    mask = _check_map(log_density, mask, "mask")
    return jnp.sum(mask * jnp.exp(log_density), axis=(1, 2))


def log_attention_mass(log_density: jax.Array, mask: jax.Array) -> jax.Array:
    """``log(attention_mass(log_density, mask))``, ``(B,)`` nats, computed as a logsumexp: the better
    loss to maximise when the mass is small (its gradient does not vanish with the mass). ``mask``
    weights must be >= 0; an all-zero mask gives ``-inf``."""
    mask = _check_map(log_density, mask, "mask")
    return jax.nn.logsumexp(log_density, axis=(1, 2), b=mask)


def expected_log_density(log_density: jax.Array, weights: jax.Array) -> jax.Array:
    """The mean log density over the target region, ``sum_p w[p] log_density[p] / sum_p w[p]``: the
    log-likelihood (nats per fixation) of fixations spread over the region as ``weights``, i.e. minus
    the cross-entropy from the normalised ``weights`` to the model.

    Args:
      log_density: ``(B, H, W)`` log density, nats.
      weights: ``(B, H, W)`` or ``(H, W)`` non-negative weights, not all zero per image.

    Returns:
      ``(B,)`` nats.
    """
    weights = _check_map(log_density, weights, "weights")
    return jnp.sum(weights * log_density, axis=(1, 2)) / jnp.sum(weights, axis=(1, 2))


def kl_divergence(target_log_density: jax.Array, log_density: jax.Array) -> jax.Array:
    """``KL(target || model) = sum_p q[p] (log q[p] - log p[p])`` in nats, ``(B,)``; 0 where the model
    predicts the target exactly.

    Args:
      target_log_density: ``(B, H, W)`` or ``(H, W)`` target log density, nats (normalised here by its
        logsumexp; ``-inf`` where the target has no mass, which then adds nothing).
      log_density: ``(B, H, W)`` model log density, nats (a :class:`SaliencyFn` output).
    """
    target = _check_map(log_density, target_log_density, "target log density")
    target = target - jax.nn.logsumexp(target, axis=(1, 2), keepdims=True)
    q = jnp.exp(target)
    inside = q > 0
    safe_target = jnp.where(inside, target, jnp.zeros_like(target))  # no inf - inf, no NaN gradients
    return jnp.sum(jnp.where(inside, q * (safe_target - log_density), jnp.zeros_like(q)), axis=(1, 2))


# --- Flax wrappers --------------------------------------------------------------------------------


class DeepGazeLinen(nn.Module):
    """A :class:`SaliencyFn` as a linen module: ``module(images, centerbias) -> (B, H, W)`` nats.

    The frozen params live in the ``"deepgaze"`` collection (:data:`FROZEN_COLLECTION`), not in
    ``"params"``, so an optimizer over ``variables["params"]`` never sees them; pass the collection to
    ``apply`` with the rest of the variables. With ``train_readout`` the heads are a ``"params"``
    entry (``heads``) and train with the model around them; the backbone stays in ``"deepgaze"``.
    Gradients to the frozen collection are zero in any case (``stop_gradient``).

    Attributes:
      saliency: the saliency function (:func:`from_predictor`).
      init_params: its params, read only by ``init``.
    """

    saliency: SaliencyFn
    init_params: Params | None = None

    def _initial(self, key: str) -> Any:
        if self.init_params is None:
            raise CompositionInputError("DeepGazeLinen.init needs init_params (the params from from_predictor)")
        return self.init_params[key]

    @nn.compact
    def __call__(self, images: jax.Array, centerbias: jax.Array) -> jax.Array:
        """``(B, H, W, 3)`` float images 0..255 and a ``(B, H, W)`` or ``(H, W)`` center bias (nats)
        -> ``(B, H, W)`` log density, nats."""
        backbone = self.variable(FROZEN_COLLECTION, "backbone", self._initial, "backbone").value
        if self.saliency.train_readout:
            heads = self.param("heads", lambda _rng: self._initial("heads"))
        else:
            heads = self.variable(FROZEN_COLLECTION, "heads", self._initial, "heads").value
        return self.saliency({"backbone": backbone, "heads": heads}, images, centerbias)


class Frozen(nnx.Variable):
    """An NNX variable that ``nnx.grad`` (which differentiates ``nnx.Param`` by default) and
    ``nnx.Optimizer(..., wrt=nnx.Param)`` skip: DeepGaze's frozen params."""


class DeepGazeNNX(nnx.Module):
    """A :class:`SaliencyFn` as an NNX module: ``module(images, centerbias) -> (B, H, W)`` nats.

    The backbone (and, unless ``saliency.train_readout``, the heads) are :class:`Frozen` variables, not
    ``nnx.Param``, so ``nnx.grad`` and an ``nnx.Optimizer(..., wrt=nnx.Param)`` leave them alone; with
    ``train_readout`` the heads are an ``nnx.Param`` and train with the model around them.
    """

    def __init__(self, saliency: SaliencyFn, params: Params):
        self.saliency = saliency
        self.backbone = Frozen(params["backbone"])
        self.heads = (nnx.Param if saliency.train_readout else Frozen)(params["heads"])

    def __call__(self, images: jax.Array, centerbias: jax.Array) -> jax.Array:
        """``(B, H, W, 3)`` float images 0..255 and a ``(B, H, W)`` or ``(H, W)`` center bias (nats)
        -> ``(B, H, W)`` log density, nats."""
        return self.saliency({"backbone": self.backbone.get_value(), "heads": self.heads.get_value()},
                             images, centerbias)
