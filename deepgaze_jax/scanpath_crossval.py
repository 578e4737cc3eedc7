"""Cross-validated training and evaluation of DeepGaze III on MIT1003 scanpaths (the reference's recipe).

    python experiments/deepgaze3_crossval.py --data ../shared/data/MIT1003 --folds 0-9

Per fold of the DeepGaze II split (:func:`deepgaze_jax.data.crossval_splits`; the same images test,
validate and train):

1. **spatial phase**: the static model (``history=0``: saliency network, fixation selection network on
   the priority map alone, finalizer) fitted on the fold's training images from the DeepGaze II
   feature cache, early stopping on its validation images, exactly as DeepGaze II trains;
2. **scanpath phase**: the scanpath network and the selection network's scanpath branch added
   (:meth:`~deepgaze_jax.deepgaze3.DeepGazeIII.extend_head`), the first two layers of the saliency
   network frozen, every target fixation scored on its conditional density given its history
   (:mod:`deepgaze_jax.data.scanpaths`); optionally
3. **joint phase**: everything fine-tuned at a low rate.

The forced initial fixation of MIT1003 is history, never a target; the targets are the conventional
fixations of DeepGaze II's evaluation, so the two models are scored on the same fixations. Test
images touch no model that is scored on them. Each phase checkpoints with orbax in its own folder and
resumes exactly (:func:`deepgaze_jax.train.fit`).

Evaluation of the test images of every fold: the conditional log-likelihood of each fixation given
its history (bits/fixation relative to uniform), its information gain over the static model of the
same fold (the spatial phase, and, where given, the shipped DeepGaze II's heads of that fold), overall
with a bootstrap confidence interval over images and by position in the scanpath, and the AUC and
NSS of the conditional maps.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
import zlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import data as data_lib
from deepgaze_jax import feature_cache, likelihood, provenance, registry
from deepgaze_jax import train as T
from deepgaze_jax.baselines import CenterBias, GoldStandard
from deepgaze_jax.config import TrainConfig
from deepgaze_jax.crossval import Source, centerbias_function
from deepgaze_jax.data.scanpaths import with_histories
from deepgaze_jax.deepgaze3 import DeepGazeIII
from deepgaze_jax.scanpath_evaluation import by_index, grid_scores, summary
from deepgaze_jax.input_pipeline import FixationSet, batches, centerbias_of
from deepgaze_jax.likelihood import LN2
from deepgaze_jax.params_io import load_params, save_params
from deepgaze_jax.pretrained import load_backbone

#: The saliency network's layers that the scanpath phase keeps (the reference freezes them too).
FROZEN_IN_SCANPATH_PHASE = ("saliency/conv0", "saliency/conv1")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The configs of the phases (``joint=None``: no joint phase)."""

    spatial: TrainConfig
    scanpath: TrainConfig
    joint: TrainConfig | None = None

    def to_json(self) -> dict:
        return {name: None if config is None else json.loads(config.to_json())
                for name, config in (("spatial", self.spatial), ("scanpath", self.scanpath), ("joint", self.joint))}


def load_scanpaths(source: Source, cache: pathlib.Path, history: int):
    """The dataset's targets (conventional filter) and their histories, the unfiltered table read once."""
    if source.fixatons:
        unfiltered = data_lib.load_mit1003(source.path, "twosize", data_dir=cache / "tfds", filter_conventional=False)
    else:
        unfiltered = data_lib.load_fixation_csv(source.path, source.name, data_dir=cache / "tfds",
                                                filter_conventional=False)
    return with_histories(unfiltered, history)


def conditional_scores(model: DeepGazeIII, head: dict, data: FixationSet, centerbias, batch_size: int):
    """Per image of ``data`` (split items joined), ``(n_i,)`` arrays of the log-likelihood (bits vs
    uniform), AUC and NSS of each fixation on its conditional map (the static map for ``history=0``)."""
    grid_of = jax.jit(model.grid)
    out = {k: [None] * len(data) for k in ("bits", "auc", "nss")}
    for batch in batches(data, batch_size, seed=None):
        cb = np.broadcast_to(centerbias_of(centerbias, batch), (len(batch.indices),) + batch.shape)
        history = batch.history if batch.history is not None else np.full(batch.xs.shape + (model.history, 2), np.nan,
                                                                           np.float32)
        grid = grid_of(head, batch.features, cb, history)
        grid = jnp.broadcast_to(grid, batch.xs.shape + grid.shape[2:]).reshape((-1,) + grid.shape[2:])
        log_p, auc, nss = (np.asarray(v).reshape(batch.xs.shape)
                           for v in grid_scores(grid, batch.shape, batch.xs.ravel(), batch.ys.ravel()))
        bits = np.asarray(likelihood.bits_relative_to_uniform(log_p, *batch.shape))
        for row, i in enumerate(batch.indices):
            if i >= 0:
                m = batch.mask[row]
                out["bits"][i], out["auc"][i], out["nss"][i] = bits[row, m], auc[row, m], nss[row, m]
    return {k: data.per_image(v) for k, v in out.items()}


def run(recipe: Recipe, data_dir: pathlib.Path, folds: Sequence[int], cache: pathlib.Path,
        results_dir: pathlib.Path | None = None, heads_path: pathlib.Path | None = None,
        static_heads: pathlib.Path | None = None, command: str = "", max_images: int | None = None,
        fold_store: pathlib.Path | None = None, tag: str = "") -> dict:
    """Train DeepGaze III on the given folds (:data:`Recipe` phases) and evaluate every test image.

    ``static_heads``: a predictor file of a static model trained on the same folds (e.g. the shipped
    DeepGaze II, ``deepgaze_jax/assets/deepgaze2_vgg16.safetensors``) that the conditional model is
    compared with too, each fold's test images by that fold's heads. Writes
    ``<results>/deepgaze3_vgg16_crossval[_<tag>].{json,md}`` and, with ``heads_path``, a predictor file
    of the fold models (an ensemble) with the center bias fitted on all images.

    ``fold_store``: a folder that keeps each trained fold (its head, its test images' scores and its
    own stamp; :func:`save_fold`), keyed on the recipe and the data. A fold found there is read, not
    trained again, so the folds of one cross-validation can be trained by several runs (on machines
    too slow for all 10 at once) and joined by a last run over all of them. The center bias, gold
    standard and static comparison are recomputed every run.
    """
    started, commit = time.time(), provenance.git_commit()
    source = Source(data_dir)
    model = recipe.scanpath.build_model()
    if not isinstance(model, DeepGazeIII):
        raise ValueError(f"{recipe.scanpath.model} is not a scanpath model (one of {registry.SCANPATH})")
    scan = load_scanpaths(source, cache, model.history)
    dataset = scan.dataset
    histories = scan.histories
    suffix = ""
    if max_images is not None and max_images < len(dataset):
        keep = np.isin(dataset.fixations.image_index, np.arange(max_images))
        dataset, histories, suffix = dataset.subset(range(max_images)), histories[keep], f"_first{max_images}"
    backbone = load_backbone(model.backbone, None)
    features = feature_cache.cached_features(model.spatial, backbone, dataset, cache, source.cache_name + suffix,
                                             conv_impl=recipe.spatial.feature_conv_impl)
    static_set = FixationSet.from_dataset(dataset, features)
    scan_set = FixationSet.from_dataset(dataset, features, histories=histories)
    index_of = [dataset.fixations.index[r] for r in data_lib.rows_by_image(dataset)]
    length_of = [(~np.isnan(histories[r][..., 0])).sum(axis=1) for r in data_lib.rows_by_image(dataset)]
    feature_seconds = time.time() - started
    gold = GoldStandard.fit(dataset)
    rows = data_lib.rows_by_image(dataset)
    gold_nats = gold.log_likelihoods(dataset)

    comparison = None
    if static_heads is not None and suffix:
        raise ValueError("the static predictor's folds split all of the dataset, not its first images: its fold "
                         "models trained on some of these test images; drop max_images or the static comparison")
    if static_heads is not None:
        from deepgaze_jax.crossval import fold_heads
        from deepgaze_jax.predict import model_from_json

        tree, meta = load_params(static_heads)
        if "cross-validation" not in meta.get("trained_on", "") or "folds" not in meta:
            raise ValueError(f"{static_heads}: not a cross-validation predictor (no folds in its metadata); its "
                             "fold models cannot be matched to these test images")
        comparison = (model_from_json(meta["model_config"]), fold_heads(tree["heads"], meta), meta)

    # The spatial phase depends on its own config only: runs that differ in the later phases share it.
    spatial_key = zlib.crc32(json.dumps([recipe.to_json()["spatial"], source.name, suffix]).encode())
    spatial_dir = cache / "runs" / f"{recipe.scanpath.model}{suffix}_spatial_{spatial_key:08x}"
    run_key = zlib.crc32(json.dumps([recipe.to_json(), source.name, suffix]).encode())
    # The fold store outlives the caches: its key holds the data's counts too.
    store_key = zlib.crc32(json.dumps([recipe.to_json(), source.describe(dataset), suffix]).encode())
    runs_dir = cache / "runs" / f"{recipe.scanpath.model}{suffix}_{run_key:08x}"
    per_image: dict[str, dict[int, np.ndarray]] = {k: {} for k in (
        "conditional", "spatial", "static", "center_bias", "gold", "auc", "nss", "spatial_auc", "spatial_nss",
        "index", "history_length")}
    records, heads = [], []
    for fold in folds:
        split = data_lib.crossval_splits(len(dataset), fold)
        test = split["test"]
        center_bias = CenterBias.fit(dataset.subset(split["train"]))
        cb = centerbias_function(center_bias)
        stored = None if fold_store is None else fold_store / f"{recipe.scanpath.model}{suffix}_fold{fold}_{store_key:08x}.safetensors"
        if stored is not None and stored.is_file():
            head, scores, trained = load_fold(stored, test)
            print(f"fold {fold}: trained at commit {trained['commit']}, read from {stored}", flush=True)
        else:
            split_ids = {k: [dataset.image_ids[i] for i in v] for k, v in split.items()}
            head, scores, trained = _train_fold(recipe, model, static_set, scan_set, split, split_ids, cb,
                                                spatial_dir / f"fold{fold}", runs_dir / f"fold{fold}")
            trained.update(provenance.stamp(command, commit))
            if stored is not None:
                save_fold(stored, head, scores, test, trained)
        for name, values in scores.items():
            for j, i in enumerate(test):
                per_image[name][i] = values[j]
        for i in test:
            per_image["center_bias"][i] = likelihood.bits_at(cb(static_set.shapes[i]), static_set.xs[i], static_set.ys[i])
            per_image["gold"][i] = gold_nats[rows[i]] / LN2
            per_image["index"][i], per_image["history_length"][i] = index_of[i], length_of[i]
        if comparison is not None:
            static_model, by_fold, _ = comparison
            if fold in by_fold:
                evaluator = T.Evaluator(static_model)
                bits = likelihood.ensemble_bits([evaluator.fixation_log_likelihoods(
                    h, static_set.subset(test), cb, recipe.scanpath.batch_size) for h in by_fold[fold]])
                for j, i in enumerate(test):
                    per_image["static"][i] = bits[j]
        record = {"fold": fold, **_summary(per_image, test), **trained}
        records.append(record)
        heads.append(head)
        print(f"fold {fold}: conditional LL {record['conditional_log_likelihood']:.3f}, spatial "
              f"{record['spatial_log_likelihood']:.3f}, IG over spatial {record['information_gain_over_spatial']:.3f} "
              f"bits/fixation ({record['seconds']:.0f} s)", flush=True)

    done = sorted(per_image["conditional"])
    total = _summary(per_image, done)
    by_position = {k: [per_image[k][i] for i in done] for k in ("conditional", "spatial", "index")}
    if all(i in per_image["static"] for i in done):
        by_position["static"] = [per_image["static"][i] for i in done]
    results = {
        "model": recipe.scanpath.model,
        "target": source.name,
        "forced_start": source.fixatons,
        "recipe": recipe.to_json(),
        "dataset": source.describe(dataset) + f"; targets with 0..{model.history} previous fixations as history",
        "static_comparison": None if comparison is None else {"file": str(static_heads),
                                                              "trained_on": comparison[2].get("trained_on", "")},
        "folds": records,
        "total": total,
        "by_index": by_index(by_position, ("spatial", "static")),
        "gold_standard": {"bandwidth": gold.bandwidth, "weights": list(gold.weights)},
        "paper": registry.MODELS[recipe.scanpath.model].paper,
        "seconds": {"features": feature_seconds, "total": time.time() - started},
        **provenance.stamp(command, commit),
    }
    if results_dir is not None:
        provenance.write_results(results_dir / f"{recipe.scanpath.model}{suffix}_crossval{'_' + tag if tag else ''}",
                                 results, markdown(results))
    if heads_path is not None:
        from deepgaze_jax.predict import save_predictor_heads

        save_predictor_heads(heads_path, model, heads, CenterBias.fit(dataset), {
            "trained_on": f"{source.name} twosize scanpaths, cross-validation (spatial, then scanpath phase)",
            "folds": ",".join(str(f) for f in folds), "seeds_per_fold": "1", "command": command,
            "commit": results["commit"]})
    return results


#: The scores a trained fold keeps in the fold store (per test image, one value per target fixation).
STORED_SCORES = ("conditional", "auc", "nss", "spatial", "spatial_auc", "spatial_nss")


def _train_fold(recipe: Recipe, model: DeepGazeIII, static_set: FixationSet, scan_set: FixationSet,
                split: dict, split_ids: dict, cb, spatial_dir: pathlib.Path, workdir: pathlib.Path):
    """Both (or all three) phases of one fold, then its test images scored -> ``(head, scores, trained)``:
    ``scores[name]`` per test image (:data:`STORED_SCORES`), ``trained`` the seconds and phase histories."""
    start_time = time.time()
    spatial_model = model.with_history(0)
    spatial = T.fit(recipe.spatial, static_set.subset(split["train"]), static_set.subset(split["val"]), cb,
                    workdir=spatial_dir, split=split_ids, model=spatial_model)
    m = recipe.scanpath.max_fixations or None
    train = scan_set.subset(split["train"]).split(m) if m else scan_set.subset(split["train"])
    val = scan_set.subset(split["val"]).split(m) if m else scan_set.subset(split["val"])
    start = model.extend_head(spatial.best_params, jax.random.PRNGKey(recipe.scanpath.seed))
    phase = T.fit(recipe.scanpath, train, val, cb, workdir=workdir / "scanpath", split=split_ids,
                  init_head=start, model=model)
    phases = {"spatial": spatial, "scanpath": phase}
    if recipe.joint is not None:
        phase = T.fit(recipe.joint, train, val, cb, workdir=workdir / "joint", split=split_ids,
                      init_head=phase.best_params, model=model)
        phases["joint"] = phase
    head = phase.best_params
    test_scan = scan_set.subset(split["test"])
    test_scan = test_scan.split(m) if m else test_scan
    batch = recipe.scanpath.batch_size
    cond = conditional_scores(model, head, test_scan, cb, batch)
    stat = conditional_scores(spatial_model, spatial.best_params, test_scan, cb, batch)
    scores = {"conditional": cond["bits"], "auc": cond["auc"], "nss": cond["nss"],
              "spatial": stat["bits"], "spatial_auc": stat["auc"], "spatial_nss": stat["nss"]}
    trained = {"seconds": time.time() - start_time,
               "phases": {name: {"epochs": r.epochs, "best_val_log_likelihood_per_image": r.best_val,
                                 "history": r.history} for name, r in phases.items()}}
    return head, scores, trained


def save_fold(path: pathlib.Path, head: dict, scores: dict[str, list[np.ndarray]], test: Sequence[int],
              trained: dict) -> None:
    """Write one trained fold to the fold store (safetensors, atomically): its head, the
    :data:`STORED_SCORES` of its ``test`` images (dataset indices) concatenated with their counts,
    and ``trained`` (seconds, phase histories, the stamp of the run that trained it) as JSON."""
    counts = np.asarray([len(v) for v in scores["conditional"]], np.int64)
    for name in STORED_SCORES:
        if [len(v) for v in scores[name]] != counts.tolist():
            raise ValueError(f"fold scores {name!r} do not have one value per target fixation of each test image")
    tree = {"head": head, "test_images": np.asarray(test, np.int64), "counts": counts,
            "scores": {name: np.concatenate([np.asarray(v, np.float32) for v in scores[name]])
                       for name in STORED_SCORES}}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_params(path, tree, {"trained": json.dumps(trained)})


def load_fold(path: pathlib.Path, test: Sequence[int]) -> tuple[dict, dict[str, list[np.ndarray]], dict]:
    """A fold written by :func:`save_fold` -> ``(head, scores, trained)``; ``test`` the images this run
    expects (a ValueError where the stored fold scored others)."""
    tree, meta = load_params(path)
    stored = tree["test_images"].tolist()
    if stored != list(test):
        raise ValueError(f"{path}: its fold scored test images {stored[:5]}..., this split has {list(test)[:5]}...; "
                         "the dataset or the split changed, so remove the file to train the fold again")
    bounds = np.cumsum(tree["counts"])[:-1]
    scores = {name: np.split(tree["scores"][name], bounds) for name in STORED_SCORES}
    return tree["head"], scores, json.loads(meta["trained"])


def _summary(per_image: dict[str, dict[int, np.ndarray]], images: Sequence[int]) -> dict:
    """:func:`~deepgaze_jax.scanpath_evaluation.summary` of ``images`` (indices into the dataset)."""
    return summary({k: [v[i] for i in images if i in v] for k, v in per_image.items()},
                   baselines=("spatial", "static", "center_bias"))


def markdown(results: dict) -> str:
    t = results["total"]
    lo, hi = t["information_gain_over_spatial_ci95"]
    lines = [
        f"# {results['model']}: 10-fold cross-validation on {results.get('target', 'mit1003').upper()} scanpaths"
        + ("" if len(results["folds"]) == 10 else f", folds {', '.join(str(r['fold']) for r in results['folds'])} of 10"),
        "",
        f"Command: `{results['command']}`  ",
        f"Commit: {results['commit']}, {results['date']}  ",
        f"Machine: {results['machine']}  ",
        f"Time: features {results['seconds']['features']:.0f} s, total {results['seconds']['total']:.0f} s  ",
        f"Data: {results['dataset']}",
        "",
        "Log-likelihoods in bits/fixation relative to uniform, on each fold's test images. *Conditional*: "
        "DeepGaze III given each fixation's history; *spatial*: the same fold's static model (the spatial "
        "phase); *static*: the comparison predictor's fold heads (DeepGaze II)." ,
        "",
        "| fold | conditional LL | spatial LL | IG over spatial | static LL | IG over static | AUC | NSS | epochs |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def f(v, digits=3):
        return "—" if v is None else f"{v:.{digits}f}"

    for r in results["folds"]:
        epochs = ", ".join(f"{k} {v['epochs']}" for k, v in r["phases"].items())
        lines.append(f"| {r['fold']} | {f(r['conditional_log_likelihood'])} | {f(r['spatial_log_likelihood'])} | "
                     f"{f(r['information_gain_over_spatial'])} | {f(r['static_log_likelihood'])} | "
                     f"{f(r.get('information_gain_over_static'))} | {f(r['conditional_auc'], 4)} | "
                     f"{f(r['conditional_nss'])} | {epochs} |")
    lines += [
        f"| **all** | **{f(t['conditional_log_likelihood'])}** | {f(t['spatial_log_likelihood'])} | "
        f"**{f(t['information_gain_over_spatial'])}** | {f(t['static_log_likelihood'])} | "
        f"{f(t.get('information_gain_over_static'))} | {f(t['conditional_auc'], 4)} | {f(t['conditional_nss'])} | |",
        "",
    ]
    elsewhere = [r for r in results["folds"] if r.get("commit", results["commit"]) != results["commit"]]
    if elsewhere:
        lines += ["Folds trained by earlier runs and read from the fold store: " + "; ".join(
            f"fold {r['fold']} by `{r['command']}` at commit {(r['commit'] or 'unknown')[:7]}, {r['date']}, {r['machine']}, "
            f"{r['seconds']:.0f} s" for r in elsewhere) + ".", ""]
    lines += [
        f"Information gain of the history over the spatial model: {t['information_gain_over_spatial']:.3f} "
        f"bits/fixation, 95 % bootstrap interval over images [{lo:.3f}, {hi:.3f}].  ",
    ]
    if "information_gain_over_static_ci95" in t:
        lo, hi = t["information_gain_over_static_ci95"]
        lines.append(f"Over the static DeepGaze II: {t['information_gain_over_static']:.3f} bits/fixation "
                     f"[{lo:.3f}, {hi:.3f}].  ")
    lines += [
        f"Spatial model: AUC {f(t['spatial_auc'], 4)}, NSS {f(t['spatial_nss'])}; center bias LL "
        f"{f(t['center_bias_log_likelihood'])}, gold standard LL {f(t['gold_standard_log_likelihood'])}.  ",
        f"Paper: {results['paper']}.",
        "",
        "By position in the scanpath (0-based"
        + ("; index 0 is the forced start, never a target):" if results.get("forced_start", True) else "):"),
        "",
        "| index | fixations | conditional LL | spatial LL | IG over spatial | IG over static |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["by_index"]:
        label = f"{r['index']}+" if r["pooled_from_here"] else str(r["index"])
        lines.append(f"| {label} | {r['fixations']} | {r['conditional_log_likelihood']:.3f} | "
                     f"{r['spatial_log_likelihood']:.3f} | {r['information_gain_over_spatial']:.3f} | "
                     f"{f(r.get('information_gain_over_static'))} |")
    lines.append("")
    return "\n".join(lines)
