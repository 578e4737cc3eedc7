"""Maximum-likelihood training of the DeepGaze readout (the backbone stays frozen): the sharded
trainer and :func:`fit`.

The backbone is run once per image (:mod:`deepgaze_jax.feature_cache`); training then needs only the
cached features, the fixations and the center bias, batched by :mod:`deepgaze_jax.input_pipeline`;
the config is :class:`~deepgaze_jax.config.TrainConfig`. The loss is the negative log-likelihood in
bits per fixation relative to uniform, averaged per image
(:func:`deepgaze_jax.likelihood.per_image_log_likelihood`). One jitted step updates the head parameters
and the optimizer state (donated); the frozen backbone never enters it. Batches are sharded over all
devices along the batch axis (``jax.sharding``), multi-host through ``jax.distributed``
(:mod:`deepgaze_jax.distributed`: every process runs :func:`fit` on the same data). Checkpoints are
written with orbax after every epoch (the latest, for resuming) and whenever validation improves (the
best); the config and the data split are saved as JSON beside them.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pathlib
import types
import zlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from deepgaze_jax import atomic_write, distributed, likelihood
from deepgaze_jax import model as model_lib
from deepgaze_jax.config import TrainConfig
from deepgaze_jax.input_pipeline import Batch, CenterBiases, FixationSet, batches, centerbias_of, loss_weights

# --- the step --------------------------------------------------------------------------------


def make_optimizer(config: TrainConfig, steps_per_epoch: int, anchor: dict | None = None) -> optax.GradientTransformation:
    """Adam (AdamW with ``config.weight_decay``, on kernels only) under the config's schedule. ``anchor``:
    head params that the weight decay pulls the kernels toward instead of zero (L2-SP; AdamW's
    decoupled form, so a zero anchor is AdamW exactly)."""
    if config.schedule == "step":
        boundaries = {e * steps_per_epoch: config.decay_factor for e in config.decay_epochs}
        lr = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
    elif config.schedule == "cosine":
        lr = optax.cosine_decay_schedule(config.learning_rate, config.max_epochs * steps_per_epoch)
    else:
        lr = config.learning_rate
    if config.weight_decay == 0:
        tx = optax.adam(lr)
    else:
        kernels_only = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
            lambda path, _: path[-1] == jax.tree_util.DictKey("kernel"), params)
        if anchor is None:
            tx = optax.adamw(lr, weight_decay=config.weight_decay, mask=kernels_only)
        else:
            tx = optax.chain(optax.scale_by_adam(), _decay_toward(anchor, config.weight_decay, kernels_only),
                             optax.scale_by_learning_rate(lr))
    if config.frozen:
        tx = optax.chain(tx, optax.masked(optax.set_to_zero(), _frozen_mask(config.frozen)))
    return _standard_promotion(tx)


def _decay_toward(anchor: dict, weight_decay: float, mask) -> optax.GradientTransformation:
    """``optax.add_decayed_weights`` toward ``anchor`` rather than zero: adds ``weight_decay * (params -
    anchor)`` where ``mask(params)`` is true."""
    anchor = jax.tree.map(jnp.asarray, anchor)

    def update(updates, state, params):
        decayed = jax.tree.map(lambda u, p, a, m: u + weight_decay * (p - a) if m else u,
                               updates, params, anchor, mask(params))
        return decayed, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _frozen_mask(prefixes: Sequence[str]):
    """The pytree mask of the head leaves under any of the ``/``-joined path ``prefixes``."""
    wanted = [tuple(p.strip("/").split("/")) for p in prefixes]

    def mask(params):
        def frozen(path, _):
            keys = tuple(str(getattr(k, "key", k)) for k in path)
            return any(keys[: len(w)] == w for w in wanted)

        return jax.tree_util.tree_map_with_path(frozen, params)

    return mask


def _standard_promotion(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` whose update runs under JAX's standard dtype promotion: optax's Adam computes
    ``decay ** count`` (a Python float and an int32 step count), which strict promotion (the tests'
    setting) refuses. The numbers are the same either way."""

    def update(updates, state, params=None):
        with jax.numpy_dtype_promotion("standard"):
            return tx.update(updates, state, params)

    return optax.GradientTransformation(tx.init, update)


class Evaluator:
    """Jitted fixation log-likelihoods of a model's heads, sharded over the batch axis (no optimizer).

    ``devices`` (default: all of them, those of every process) form the mesh. Step outputs are
    replicated, so every process can read them whole.
    """

    def __init__(self, model: model_lib.DeepGaze, devices: Sequence[jax.Device] | None = None):
        self.model = model
        devices = list(devices) if devices is not None else jax.devices()
        self.mesh = jax.sharding.Mesh(np.array(devices), ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        self.fixation_step = jax.jit(functools.partial(likelihood.fixation_bits, model),
                                    out_shardings=self.replicated)

    def put_batch(self, batch: Batch, centerbias: np.ndarray) -> tuple:
        """Device arrays for a batch: the batch axis sharded over the mesh.

        Every process holds the whole batch and puts on its devices the rows the mesh gives them,
        whatever the order of the devices in the mesh.
        """
        def shard(x):
            return jax.make_array_from_callback(x.shape, self.batch_sharding, lambda index: x[index])

        cb = jax.device_put(np.asarray(centerbias, np.float32), self.replicated)
        loss_weight = batch.weight if batch.loss_weight is None else batch.loss_weight
        history = None if batch.history is None else shard(batch.history)
        return (shard(batch.features), cb, shard(batch.xs), shard(batch.ys), shard(batch.mask), shard(batch.weight),
                shard(loss_weight), history)

    def fixation_log_likelihoods(self, head: dict, data: FixationSet,
                                 centerbias: CenterBiases, batch_size: int) -> list[np.ndarray]:
        """Per image, the ``(n_i,)`` log-likelihood of each fixation, bits relative to uniform (images
        split into items joined again: :meth:`FixationSet.per_image`)."""
        out: list[np.ndarray | None] = [None] * len(data)
        head = jax.device_put(head, self.replicated)
        for batch in batches(data, _round_up(batch_size, self.mesh.size), seed=None):
            features, cb, xs, ys, mask, _, _, history = self.put_batch(batch, centerbias_of(centerbias, batch))
            bits = np.asarray(jax.device_get(self.fixation_step(head, features, cb, xs, ys, history)))
            for row, i in enumerate(batch.indices):
                if i >= 0:
                    out[i] = bits[row, batch.mask[row]]
        return data.per_image(out)

    def evaluate(self, head: dict, data: FixationSet, centerbias: CenterBiases,
                 batch_size: int) -> np.ndarray:
        """``(len(data),)`` per-image log-likelihoods, bits/fixation relative to uniform (0 without fixations)."""
        return likelihood.image_means(self.fixation_log_likelihoods(head, data, centerbias, batch_size))


class Trainer(Evaluator):
    """An :class:`Evaluator` with a jitted train step for one optimizer (the state donated).

    ``dropout`` (see :class:`TrainConfig`) applies to the features of train steps only, with masks
    drawn from ``seed`` and the step count.
    """

    def __init__(self, model: model_lib.DeepGaze, optimizer: optax.GradientTransformation,
                 devices: Sequence[jax.Device] | None = None, dropout: float = 0.0,
                 dropout_channels: bool = False, seed: int = 0):
        super().__init__(model, devices)
        self.optimizer = optimizer
        self.dropout, self.dropout_channels = dropout, dropout_channels
        self.dropout_key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x64726F70)  # "drop"
        self.train_step = jax.jit(self._train_step, donate_argnums=0,
                                  out_shardings=(self.replicated, self.replicated))

    def init_state(self, head: dict) -> dict:
        state = {"params": head, "opt_state": self.optimizer.init(head), "step": jnp.zeros((), jnp.int32)}
        return jax.device_put(state, self.replicated)

    def _loss(self, head, features, centerbias, xs, ys, mask, weight, loss_weight, history=None):
        # Normalised by the count of real images, so that loss weights keep their relative size across batches.
        ll = likelihood.per_image_log_likelihood(self.model, head, features, centerbias, xs, ys, mask, history)
        return -(ll * loss_weight).sum() / jnp.maximum(weight.sum(), 1.0)

    def _drop(self, features: jax.Array, step: jax.Array) -> jax.Array:
        b, _, _, c = features.shape
        shape = (b, 1, 1, c) if self.dropout_channels else features.shape
        keep = jax.random.bernoulli(jax.random.fold_in(self.dropout_key, step), 1.0 - self.dropout, shape)
        return jnp.where(keep, features / (1.0 - self.dropout), 0.0).astype(features.dtype)

    def _train_step(self, state, features, centerbias, xs, ys, mask, weight, loss_weight, history=None):
        if self.dropout > 0:
            features = self._drop(features, state["step"])
        loss, grads = jax.value_and_grad(self._loss)(state["params"], features, centerbias, xs, ys, mask, weight,
                                                     loss_weight, history)
        updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, loss


MAX_RESTARTS = 3


def readout_is_dead(model: model_lib.DeepGaze, head: dict, features: np.ndarray) -> bool:
    """Whether the readout's output is one constant on ``(B, h, w, C)`` features: with a ReLU layer
    whose every unit is inactive, no gradient reaches the layers below it again."""
    out = np.asarray(model.readout(head, jnp.asarray(features)))
    return bool(out.max() == out.min())


def _step(meta: dict) -> int:
    """Checkpoint step: epochs run in all, those of restarted runs included (orbax needs it to grow)."""
    return meta["epoch"] + meta.get("epochs_lost", 0)


def _round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def fingerprint(config: TrainConfig, *parts: FixationSet) -> int:
    """CRC32 of what every process of a run must agree on: the config (seed included) and, per image,
    its size, feature shape and fixations; with them, the data order of every epoch. Feature values
    are left out (gigabytes to read, and not bit-identical across accelerators)."""
    crc = zlib.crc32(config.to_json().encode())
    for part in parts:
        crc = zlib.crc32(np.array([len(part), part.max_fixations]).tobytes(), crc)
        if part.sources is not None:
            crc = zlib.crc32(np.asarray(part.sources, np.int64).tobytes(), crc)
        for shape, features, xs, ys in zip(part.shapes, part.features, part.xs, part.ys):
            crc = zlib.crc32(np.array([*shape, *features.shape, len(xs)]).tobytes(), crc)
            crc = zlib.crc32(np.ascontiguousarray(xs, np.float32).tobytes(), crc)
            crc = zlib.crc32(np.ascontiguousarray(ys, np.float32).tobytes(), crc)
    return crc


# --- the loop --------------------------------------------------------------------------------


def fit(
    config: TrainConfig,
    train: FixationSet,
    val: FixationSet,
    centerbias: CenterBiases,
    workdir: str | os.PathLike | None = None,
    split: dict | None = None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    init_head: dict | None = None,
    model: model_lib.DeepGaze | None = None,
) -> types.SimpleNamespace:
    """Train a head by maximum likelihood with early stopping on the validation log-likelihood.

    In a multi-process run (:mod:`deepgaze_jax.distributed`) every process calls this with the same
    arguments (checked: :func:`fingerprint`); ``workdir`` must be a folder they all see. Process 0
    writes the JSON files and shows progress; all return the same result.

    Args:
      config: hyper-parameters.
      train, val: cached features and fixations (:class:`~deepgaze_jax.input_pipeline.FixationSet`).
      centerbias: ``(H, W) -> (H, W)`` center-bias log density (nats) for an image size, or a sequence
        of them, one per source of ``train`` and ``val`` (:attr:`FixationSet.sources`).
      workdir: checkpoint folder; an existing one is resumed (its config must match).
      split: the data split (e.g. image ids per part), saved as JSON in ``workdir``.
      stop_after_epochs: end this call after that many epochs (to simulate an interruption).
      init_head: start from these head params (e.g. pre-trained on another dataset) instead of the
        seed's initialisation; the seed still sets the data order.
      model: the model description to train instead of ``config.build_model()``, e.g. a variant of
        ``config.model`` that reads more backbone layers (``registry.build(name, layers=...)``); it
        must keep the config's backbone dtype. Not saved with the checkpoints: resume with the same.

    Raises:
      FloatingPointError: the training loss or the validation log-likelihood turned non-finite (the
        run's checkpoints keep the last finite epoch; no heads are returned).

    Returns:
      ``best_params`` (head), ``best_val`` (bits/fixation, per image), ``history`` (per-epoch dicts),
      ``epochs`` (run in total), ``restarts`` (how often a readout that died in its first epoch was
      started over from another initialisation and data order; at most ``MAX_RESTARTS``).
    """
    if len(train) == 0 or train.fixation_count == 0:
        raise ValueError("the training split has no fixations")
    if len(val) == 0 or val.fixation_count == 0:
        raise ValueError("the validation split has no fixations")
    if config.flip and train.flipped is None:
        raise ValueError("config.flip needs the features of the mirrored training images (FixationSet.flipped)")
    if model is None:
        model = config.build_model()
    elif model.dtype != config.feature_dtype:
        raise ValueError(f"the model's dtype {model.dtype} differs from the config's feature_dtype "
                         f"{config.feature_dtype}")
    expected = train.features[0].shape[-1]
    if expected != model.feature_channels:
        raise ValueError(f"cached features have {expected} channels, {config.model} needs {model.feature_channels}")
    if jax.process_count() > 1:
        distributed.assert_same_everywhere(fingerprint(config, train, val), "the config or the data")
    global_batch = _round_up(config.batch_size, jax.device_count())
    steps_per_epoch = len(batches(train, global_batch, seed=config.seed, epoch=0))
    weights = None if (config.weighting == "image" and not config.source_weights
                       and train.images is None) else loss_weights(train, config.weighting, config.source_weights)
    anchor = init_head if config.decay_to_init and init_head is not None else None
    trainer = Trainer(model, make_optimizer(config, steps_per_epoch, anchor), dropout=config.dropout,
                      dropout_channels=config.dropout_channels, seed=config.seed)
    if init_head is not None:
        expected_tree = jax.tree.structure(model.init_head(jax.random.PRNGKey(0)))
        if jax.tree.structure(init_head) != expected_tree:
            raise ValueError(f"init_head does not fit {config.model}'s head")
    state = trainer.init_state(model.init_head(jax.random.PRNGKey(config.seed)) if init_head is None
                               else jax.tree.map(jnp.asarray, init_head))
    meta = {"epoch": 0, "best_val": -math.inf, "since_best": 0, "history": []}
    best_params = jax.device_get(state["params"])

    latest = best = None
    if workdir is not None:
        workdir = pathlib.Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        config_path = workdir / "config.json"
        with distributed.main_first("deepgaze_jax.train.fit: config.json"):
            if config_path.exists():
                saved = TrainConfig.from_json(config_path.read_text())
                if saved != config:
                    raise ValueError(f"{workdir} holds a run with another config; use a new folder")
            elif distributed.is_main():
                atomic_write.write_text(config_path, json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True))
            if split is not None and distributed.is_main():
                atomic_write.write_text(workdir / "split.json", json.dumps(split, indent=2, sort_keys=True))
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
        latest = ocp.CheckpointManager(workdir / "latest", options=options)
        best = ocp.CheckpointManager(workdir / "best", options=options)
        if latest.latest_step() is not None:
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
            restored = latest.restore(latest.latest_step(), args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
            state = jax.device_put(restored["state"], trainer.replicated)
            meta = restored["meta"]
            if best.latest_step() is not None:
                best_params = best.restore(best.latest_step(), args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, best_params))
                ))["params"]

    probe = batches(train, global_batch, seed=None)[0].features

    def save_latest() -> None:  # the state and meta of this moment, at step _step(meta)
        if latest is not None:
            latest.save(_step(meta), args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
            latest.wait_until_finished()

    epochs_run = 0
    bar = tqdm(total=config.max_epochs, initial=meta["epoch"], desc=config.model,
               disable=not progress or not distributed.is_main())
    while meta["epoch"] < config.max_epochs and meta["since_best"] < config.patience:
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
            break
        epoch = meta["epoch"]
        restarts = meta.get("restarts", 0)
        losses, sizes = [], []
        for batch in batches(train, global_batch, seed=config.seed, epoch=epoch, stream=restarts, flip=config.flip,
                             weights=weights):
            cb = centerbias_of(centerbias, batch)
            state, loss = trainer.train_step(state, *trainer.put_batch(batch, np.ascontiguousarray(cb[:, ::-1]) if batch.flipped else cb))
            losses.append(loss)
            sizes.append(batch.weight.sum())
        train_loss = float(np.dot(jax.device_get(losses), sizes) / np.sum(sizes))
        val_ll = trainer.evaluate(state["params"], val, centerbias, global_batch)
        val_image = float(val_ll.mean())
        if not (math.isfinite(train_loss) and math.isfinite(val_image)):
            raise FloatingPointError(
                f"{config.model}: the training loss ({-train_loss}) or validation log-likelihood ({val_image}) "
                f"turned non-finite in epoch {epoch + 1}; lower the learning rate (the last finite epoch's "
                "checkpoint is kept, no heads are written)")
        record = {"epoch": epoch + 1, "train_ll": -train_loss, "val_ll": val_image,
                  "val_ll_fixation": likelihood.average(val_ll, [len(x) for x in val.per_image(val.xs)], "fixation")}
        meta["history"].append(record)
        meta["epoch"] = epoch + 1
        if meta["epoch"] == 1 and readout_is_dead(model, jax.device_get(state["params"]), probe):
            # Every unit of a ReLU layer went inactive: no gradient reaches the readout again. Start
            # over from another initialisation and data order (counted, saved, and resumed as such).
            restarts += 1
            if restarts > MAX_RESTARTS:
                raise RuntimeError(f"the readout died in the first epoch {restarts} times; lower the learning rate")
            if distributed.is_main():
                print(f"the readout died in the first epoch; restart {restarts} with a new initialisation", flush=True)
            state = trainer.init_state(model.init_head(jax.random.fold_in(jax.random.PRNGKey(config.seed), restarts)))
            best_params = jax.device_get(state["params"])
            meta = {"epoch": 0, "best_val": -math.inf, "since_best": 0, "history": [], "restarts": restarts,
                    "epochs_lost": meta.get("epochs_lost", 0) + 1}
            save_latest()
            epochs_run += 1
            continue
        improved = val_image > meta["best_val"]
        if improved:
            meta["best_val"], meta["since_best"] = val_image, 0
            best_params = jax.device_get(state["params"])
        else:
            meta["since_best"] += 1
        if improved and best is not None:
            best.save(_step(meta), args=ocp.args.Composite(params=ocp.args.StandardSave(best_params)))
            best.wait_until_finished()
        save_latest()
        epochs_run += 1
        bar.update(1)
        bar.set_postfix(train=f"{-train_loss:.3f}", val=f"{val_image:.3f}", best=f"{meta['best_val']:.3f}")
    bar.close()
    for manager in (latest, best):
        if manager is not None:
            manager.close()
    return types.SimpleNamespace(
        best_params=jax.device_get(best_params),
        best_val=meta["best_val"],
        history=meta["history"],
        epochs=meta["epoch"],
        restarts=meta.get("restarts", 0),
        final_state=jax.device_get(state),
    )
