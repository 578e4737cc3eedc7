"""Cross-validated training of DeepGaze I / II on MIT1003, as in the papers (``deepgaze train``).

    deepgaze train --model deepgaze1 --data ../shared/data/MIT1003 --folds 0-9 --results experiments/results

Images and fixations come from the ``twosize`` config (every image resized to 1024x768 or 768x1024,
fixations scaled, as the published training recipe). Splits: indices shuffled with RandomState(42),
fold k tests, fold k-1 validates. Per fold a center bias is fitted on the training images only
(the cross-validated baseline); the gold standard is fitted once on all images (leave-one-observer-out).
The frozen backbone runs once per image (feature cache in ``--cache``); only the readout is trained.
Writes ``<results>/<model>_crossval.json`` and ``.md``, and a predictor file holding the fold models
(an ensemble) with the center bias fitted on all images (``--heads``; ``--ship`` writes
``deepgaze_jax/assets/<model>.safetensors``, the default predictor).

In a multi-process run (:mod:`deepgaze_jax.distributed`) every process runs all of this; process 0
builds the caches first (the others then read them) and alone prints and writes the results.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
import zlib
from collections.abc import Sequence

import jax
import numpy as np

from deepgaze_jax import data as data_lib
from deepgaze_jax import distributed, feature_cache, likelihood, provenance, registry
from deepgaze_jax import train as T
from deepgaze_jax.baselines import CenterBias, GoldStandard
from deepgaze_jax.config import TrainConfig
from deepgaze_jax.input_pipeline import FixationSet
from deepgaze_jax.likelihood import LN2
from deepgaze_jax.predict import save_predictor_heads
from deepgaze_jax.pretrained import load_backbone


@dataclasses.dataclass(frozen=True)
class Source:
    """A fixation dataset on disk: a FixaTons folder (``STIMULI/`` and ``SCANPATHS/``, read as MIT1003
    in the papers' ``twosize`` config) or a folder with ``STIMULI/`` and ``fixations.csv`` (any dataset,
    at its images' own sizes; :func:`deepgaze_jax.data.load_fixation_csv`).

    Attributes:
      path: the folder.
      name: short name for file names and results (default: the folder's name, lower case).
    """

    path: pathlib.Path
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "path", pathlib.Path(self.path))
        if not self.name:
            object.__setattr__(self, "name", "".join(c if c.isalnum() else "_" for c in self.path.name.lower()))

    @property
    def fixatons(self) -> bool:
        return (self.path / "SCANPATHS").is_dir() or (self.path / "MIT1003" / "SCANPATHS").is_dir()

    def load(self, cache: pathlib.Path):
        """The dataset (tfds build cached in ``cache/tfds``), conventional filter applied."""
        if not self.path.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.path}")
        if self.fixatons:
            return data_lib.load_mit1003(self.path, "twosize", data_dir=cache / "tfds")
        if not (self.path / "fixations.csv").is_file():
            raise FileNotFoundError(f"{self.path}: neither a FixaTons folder (SCANPATHS/) nor a CSV dataset "
                                    "(fixations.csv and STIMULI/)")
        return data_lib.load_fixation_csv(self.path, self.name, data_dir=cache / "tfds")

    @property
    def cache_name(self) -> str:
        """The dataset's name in the feature cache (with its configuration)."""
        return f"{self.name}_twosize" if self.fixatons else self.name

    def describe(self, dataset) -> str:
        size = "twosize (1024x768 / 768x1024)" if self.fixatons else "images at their own sizes"
        return (f"{self.name} {size}, conventional filtering, {len(dataset)} images, "
                f"{len(dataset.fixations)} fixations")


def _print(message: str) -> None:
    if distributed.is_main():
        print(message, flush=True)


def centerbias_function(center_bias: CenterBias):
    maps: dict[tuple, np.ndarray] = {}

    def log_density(shape):
        shape = tuple(int(s) for s in shape)
        if shape not in maps:
            maps[shape] = np.asarray(center_bias.log_density(shape), np.float32)
        return maps[shape]

    return log_density


def summarise(model_bits, cb_bits, gold_bits) -> dict:
    """Per-fixation averages (bits/fixation relative to uniform) and information gains, from per image
    the ``(n_i,)`` bits of the model, the center bias and the gold standard."""
    ll, cb, gold = (likelihood.average_bits(b, "fixation") for b in (model_bits, cb_bits, gold_bits))
    return {
        "log_likelihood": ll,
        "log_likelihood_per_image": likelihood.average_bits(model_bits, "image"),
        "center_bias_log_likelihood": cb,
        "gold_standard_log_likelihood": gold,
        "information_gain": ll - cb,
        "gold_standard_information_gain": gold - cb,
        "explained_information_gain": (ll - cb) / (gold - cb),
        "fixations": int(sum(len(b) for b in model_bits)),
        "images": len(model_bits),
    }


def fold_bits(evaluator: T.Evaluator, heads: Sequence[dict], fixations: FixationSet, test: Sequence[int],
              centerbias, gold_nats: np.ndarray, rows: Sequence[np.ndarray],
              batch_size: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per test image of a fold (in the order of ``test``, indices into ``fixations``), the ``(n_i,)``
    bits relative to uniform of each fixation under the model (the ensemble of ``heads``, densities
    averaged), the fold's center bias (``centerbias``: ``(H, W) -> (H, W)`` log density, nats) and the
    gold standard (``gold_nats``: per row of the dataset's fixation table, nats; ``rows``: per image
    its rows, :func:`deepgaze_jax.data.rows_by_image`)."""
    part = fixations.subset(test)
    model_bits = likelihood.ensemble_bits([evaluator.fixation_log_likelihoods(h, part, centerbias, batch_size)
                                           for h in heads])
    cb_bits = [likelihood.bits_at(centerbias(part.shapes[j]), part.xs[j], part.ys[j]) for j in range(len(part))]
    gold_bits = [gold_nats[rows[i]] / LN2 for i in test]
    return model_bits, cb_bits, gold_bits


def results_name(model: str, seeds: int, target: str = "mit1003", extras: Sequence[str] = (),
                 recipe: str = "joint", tag: str = "") -> str:
    """The stem of a run's result files: the model, ``_<K>seeds`` for seed ensembles, ``_<recipe>_<extra
    datasets>`` where more data was used, ``_on_<dataset>`` where the folds are not MIT1003's, ``_<tag>``
    for a named variant."""
    name = model if seeds == 1 else f"{model}_{seeds}seeds"
    if extras:
        name += f"_{recipe}_{'_'.join(extras)}"
    name = name if target == "mit1003" else f"{name}_on_{target}"
    return f"{name}_{tag}" if tag else name


def parse_folds(text: str, n_folds: int = 10) -> list[int]:
    """``"0-9"``, ``"3"`` or ``"0,4,7"`` -> fold indices."""
    try:
        if "-" in text:
            first, last = (int(t) for t in text.split("-"))
            folds = list(range(first, last + 1))
        else:
            folds = [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"folds: expected e.g. 0-9 or 0,3,5, got {text!r}") from None
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad or not folds:
        raise ValueError(f"folds: {bad or text!r} not in 0..{n_folds - 1}")
    return folds


RECIPES = ("joint", "pretrain")


def load_with_features(model, backbone: dict, data_dir: pathlib.Path, cache: pathlib.Path, flip: bool = False,
                       conv_impl: str = feature_cache.DEFAULT_CONV_IMPL):
    """The dataset of ``data_dir`` (:class:`Source`) and its backbone features (``flip``: of the mirrored
    images; ``conv_impl``: as :func:`~deepgaze_jax.feature_cache.cached_features`), from the feature
    cache in ``cache`` where computed before."""
    source = Source(data_dir)
    dataset = source.load(cache)
    return dataset, feature_cache.cached_features(model, backbone, dataset, cache, source.cache_name, flip=flip,
                                                  conv_impl=conv_impl)


def _fixation_set(config: TrainConfig, model, backbone, source: Source, dataset, cache: pathlib.Path,
                  suffix: str = "") -> FixationSet:
    features = feature_cache.cached_features(model, backbone, dataset, cache, source.cache_name + suffix,
                                             conv_impl=config.feature_conv_impl)
    flipped = None if not config.flip else feature_cache.cached_features(
        model, backbone, dataset, cache, source.cache_name + suffix, flip=True, conv_impl=config.feature_conv_impl)
    return FixationSet.from_dataset(dataset, features, flipped=flipped)


def run(config: TrainConfig, data_dir: pathlib.Path, folds: list[int], cache: pathlib.Path,
        results_dir: pathlib.Path | None = None, heads_path: pathlib.Path | None = None,
        backbone_path: pathlib.Path | None = None, command: str = "", max_images: int | None = None,
        seeds: int = 1, extra_data: Sequence[pathlib.Path] = (), recipe: str = "joint", tag: str = "") -> dict:
    """Train ``config`` on the given folds of a dataset (MIT1003 twosize, or a CSV dataset; see
    :class:`Source`) and evaluate each on its test images.

    Checkpoints go to ``cache/runs/<name>_<digest of config and datasets>/fold<k>`` (an interrupted run
    resumes; ``fold<k>_seed<s>`` for the extra seeds), the backbone features to ``cache``. Returns the results (also written to
    ``results_dir`` as JSON and Markdown, named by :func:`results_name`); the fold models are written
    as one predictor file to ``heads_path``. ``max_images`` keeps only the first images (a quick trial
    run). ``seeds`` > 1 trains every fold from that many seeds (``config.seed`` and the ones after it)
    and predicts its test images with their ensemble (densities averaged).

    ``tag``: appended to the results' name (a variant of a config, e.g. ``"l2sp"``).

    ``extra_data``: more datasets whose images are all training images (never tested here), each with
    its own center bias fitted on all of it. ``recipe="joint"``: each fold's readout is fitted on the
    fold's training images and every extra image together (``config.weighting`` weighs the datasets);
    ``"pretrain"``: one readout is first fitted on the extra datasets alone (early stopping on a tenth
    of the first extra dataset, its fold-0 test images, which it does not train on), and each fold
    continues from it on its own training images. Early stopping is always on the fold's validation
    images, and no test image of a fold reaches the models that are scored on it.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    started, commit = time.time(), provenance.git_commit()  # the code this run started from
    target = Source(data_dir)
    extras = [Source(p) for p in extra_data]
    names = [target.name] + [e.name for e in extras]
    if len(set(names)) != len(names) or len({e.path.resolve() for e in [target, *extras]}) != len(names):
        raise ValueError(f"the datasets must differ (in folder and name), got {names}")
    with distributed.main_first("deepgaze_jax.crossval: tfds"):
        dataset = target.load(cache)
        extra_sets = [e.load(cache) for e in extras]
    for source, ds in zip([target, *extras], [dataset, *extra_sets]):
        if len(ds.subjects) < 2:
            raise ValueError(f"{source.path}: {len(ds.subjects)} observer; the gold standard (leave one observer "
                             "out) needs at least 2")
    suffix = ""
    if max_images is not None and max_images < len(dataset):
        dataset, suffix = dataset.subset(range(max_images)), f"_first{max_images}"
    model = config.build_model()
    backbone = load_backbone(model.backbone, backbone_path)
    with distributed.main_first("deepgaze_jax.crossval: features"):
        fixations = _fixation_set(config, model, backbone, target, dataset, cache, suffix)
        extra_fixations = [_fixation_set(config, model, backbone, e, ds, cache) for e, ds in zip(extras, extra_sets)]
    features = fixations.features
    rows = data_lib.rows_by_image(dataset)
    extra_cbs = [centerbias_function(CenterBias.fit(ds)) for ds in extra_sets]
    feature_seconds = time.time() - started

    gold = GoldStandard.fit(dataset)
    gold_nats = gold.log_likelihoods(dataset)
    _print(f"gold standard: bandwidth {gold.bandwidth:.4f}, weights {gold.weights}")

    name = results_name(config.model, seeds, target.name, [e.name for e in extras], recipe, tag)
    # Checkpoints of another config (or other datasets) live apart: a run resumes only its own.
    run_key = zlib.crc32(json.dumps([json.loads(config.to_json()), names, recipe]).encode())
    runs_dir = cache / "runs" / f"{name}{suffix}_{run_key:08x}"
    pretrained = None
    if extras and recipe == "pretrain":
        pretrained = _pretrain(config, extra_fixations, extra_cbs, runs_dir, seeds)

    evaluator = T.Evaluator(model)
    model_bits, cb_bits, gold_bits, records, heads, center_biases = {}, {}, {}, [], [], {}
    for fold in folds:
        split = data_lib.crossval_splits(len(dataset), fold)
        center_bias = center_biases[fold] = CenterBias.fit(dataset.subset(split["train"]))
        cb = centerbias_function(center_bias)
        fold_start = time.time()
        train, val = fixations.subset(split["train"]), fixations.subset(split["val"])
        if extras and recipe == "joint":
            train = FixationSet.join([train, *extra_fixations])
        split_ids = {k: [dataset.image_ids[i] for i in v] for k, v in split.items()}
        if extras:
            split_ids["extra_datasets"] = [str(e.path) for e in extras]
        members = []
        for offset in range(seeds):
            seeded = dataclasses.replace(config, seed=config.seed + offset)
            run_name = f"fold{fold}" if offset == 0 else f"fold{fold}_seed{seeded.seed}"
            members.append(T.fit(seeded, train, val, [cb, *extra_cbs] if recipe == "joint" else cb,
                                 workdir=runs_dir / run_name, split=split_ids,
                                 init_head=None if pretrained is None else pretrained[offset]))
        fold_model, fold_cb, fold_gold = fold_bits(evaluator, [m.best_params for m in members], fixations,
                                                   split["test"], cb, gold_nats, rows, config.batch_size)
        for j, i in enumerate(split["test"]):
            model_bits[i], cb_bits[i], gold_bits[i] = fold_model[j], fold_cb[j], fold_gold[j]
        runs = [{"seed": config.seed + offset, "epochs": m.epochs, "restarts": m.restarts,
                 "best_val_log_likelihood_per_image": m.best_val,
                 "sigma": float(m.best_params["finalizer"]["sigma"]),
                 "center_bias_weight": float(m.best_params["finalizer"]["center_bias_weight"]),
                 "history": m.history} for offset, m in enumerate(members)]
        first = {k: v for k, v in runs[0].items() if k != "seed"}  # the fields of single-seed runs
        record = {"fold": fold, **summarise(fold_model, fold_cb, fold_gold), **first,
                  "seconds": time.time() - fold_start,
                  "center_bias_bandwidth": center_bias.bandwidth,
                  "center_bias_uniform_weight": center_bias.uniform_weight}
        if seeds > 1:
            record["members"] = runs
        records.append(record)
        heads.append([m.best_params for m in members])
        _print(f"fold {fold}: LL {record['log_likelihood']:.3f} IG {record['information_gain']:.3f} "
               f"explained {100 * record['explained_information_gain']:.1f} % ({record['epochs']} epochs, "
               f"{record['seconds']:.0f} s)")

    evaluation = test_metrics(model, dict(zip(folds, heads)), center_biases, dataset, features, None, config.model)
    done = sorted(model_bits)
    total = summarise([model_bits[i] for i in done], [cb_bits[i] for i in done], [gold_bits[i] for i in done])
    results = {
        "model": config.model,
        "name": name,
        "config": json.loads(config.to_json()),
        "seeds_per_fold": seeds,
        "target": target.name,
        "dataset": target.describe(dataset),
        "folds": records,
        "total": total,
        "metrics": evaluation.summary,
        "gold_standard": {"bandwidth": gold.bandwidth, "weights": list(gold.weights)},
        "paper": registry.MODELS[config.model].paper if target.fixatons else "none on this dataset",
        "seconds": {"features": feature_seconds, "total": time.time() - started},
        **provenance.stamp(command, commit),
    }
    if extras:
        results["extra_data"] = [{"name": e.name, "dataset": e.describe(ds)} for e, ds in zip(extras, extra_sets)]
        results["recipe"] = recipe
    if results_dir is not None and distributed.is_main():
        provenance.write_results(results_dir / f"{name}_crossval", results, markdown(results))
        evaluation.write(results_dir, stem=f"{name}_crossval_metrics", stamp=provenance.stamp(command, commit))
        plot_training_curves(results_dir / f"{name}_training_curves.png", results)
    if heads_path is not None and distributed.is_main():
        trained_on = f"{target.name} twosize, cross-validation" if target.fixatons else f"{target.name}, cross-validation"
        if extras:
            trained_on += f", with {' + '.join(e.name for e in extras)} ({recipe})"
        save_predictor_heads(heads_path, model, [h for fold_heads in heads for h in fold_heads],
                             CenterBias.fit(dataset),
                             {"trained_on": trained_on, "folds": ",".join(str(f) for f in folds),
                              "seeds_per_fold": str(seeds), "command": command, "commit": results["commit"]})
    return results


def _pretrain(config: TrainConfig, parts: list[FixationSet], centerbiases: list, runs_dir: pathlib.Path,
              seeds: int) -> list[dict]:
    """One readout per seed fitted on the extra datasets alone; the first one's fold-0 test images (a tenth
    of it) stop it early and are not trained on."""
    held_out = data_lib.crossval_splits(len(parts[0]), 0)["test"]
    rest = np.setdiff1d(np.arange(len(parts[0])), held_out)
    train = FixationSet.join([parts[0].subset(rest), *parts[1:]])
    val = parts[0].subset(held_out)
    out = []
    for offset in range(seeds):
        seeded = dataclasses.replace(config, seed=config.seed + offset)
        result = T.fit(seeded, train, val, centerbiases, workdir=runs_dir / f"pretrain_seed{seeded.seed}")
        _print(f"pretrained (seed {seeded.seed}): validation LL {result.best_val:.3f} after {result.epochs} epochs")
        out.append(result.best_params)
    return out


def fold_heads(heads: dict, metadata: dict[str, str], take: int | None = None) -> dict[int, list[dict]]:
    """The stacked ``heads`` of a predictor file that :func:`run` wrote, by fold: ``seeds_per_fold`` members
    each, stored fold after fold in the order of ``metadata["folds"]`` (``take``: the first seeds only)."""
    folds = [int(f) for f in metadata["folds"].split(",")]
    seeds = int(metadata.get("seeds_per_fold", "1"))
    if take is not None and not 1 <= take <= seeds:
        raise ValueError(f"take {take} seeds per fold, but there are {seeds}")
    member = lambda k: jax.tree.map(lambda x: x[k], heads)  # noqa: E731
    return {fold: [member(n * seeds + s) for s in range(take or seeds)] for n, fold in enumerate(folds)}


def fold_center_biases(dataset, folds: Sequence[int]) -> dict[int, CenterBias]:
    """The center bias of each fold, fitted on its training images (as :func:`run` does)."""
    return {fold: CenterBias.fit(dataset.subset(data_lib.crossval_splits(len(dataset), fold)["train"]))
            for fold in folds}


def test_metrics(model, heads: dict[int, list[dict]], center_biases: dict[int, CenterBias], dataset,
                 features: list[np.ndarray], results_dir: pathlib.Path | None, name: str):
    """Every metric (:func:`deepgaze_jax.evaluation.evaluate`) on the test images of the given folds,
    each image predicted by the model of the fold that tests it (the ensemble of the fold's heads,
    densities averaged, where it has several), the fold's center bias as baseline."""
    from deepgaze_jax.evaluation import evaluate

    fold_of = {}
    for fold in heads:
        for i in data_lib.crossval_splits(len(dataset), fold)["test"]:
            fold_of[int(i)] = fold
    images = sorted(fold_of)
    cbs = {fold: centerbias_function(cb) for fold, cb in center_biases.items()}
    sizes = [tuple(int(v) for v in dataset.sizes[i]) for i in images]
    stacked = {fold: jax.tree.map(lambda *leaves: np.stack(leaves), *members) for fold, members in heads.items()}

    def prediction(n):
        i = images[n]
        cb = cbs[fold_of[i]](sizes[n])
        return np.asarray(model.head_ensemble(stacked[fold_of[i]], features[i][None], cb[None])[0])

    f = dataset.fixations
    local = {i: n for n, i in enumerate(images)}
    keep = np.isin(f.image_index, images)
    return evaluate(
        prediction, sizes, f.x[keep], f.y[keep], np.array([local[i] for i in f.image_index[keep]]),
        baseline_log_densities=lambda n: cbs[fold_of[images[n]]](sizes[n]),
        image_names=[dataset.image_ids[i] for i in images], model_name=name,
        out_dir=None if results_dir is None else results_dir,
    )


def plot_training_curves(path: pathlib.Path, results: dict) -> None:
    """Train and validation log-likelihood per epoch, one line per fold, as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for record in results["folds"]:
        epochs = [h["epoch"] for h in record["history"]]
        for ax, key in zip(axes, ("train_ll", "val_ll")):
            ax.plot(epochs, [h[key] for h in record["history"]], lw=1, label=f"fold {record['fold']}")
    for ax, title in zip(axes, ("training images", "validation images")):
        ax.set_title(f"{results['model']}: {title}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("LL, bits/fixation vs uniform")
    axes[1].legend(fontsize=7, ncol=2)
    fig.savefig(path)


def markdown(results: dict) -> str:
    t = results["total"]
    seeds = results.get("seeds_per_fold", 1)
    ensemble = f", each fold the ensemble of {seeds} seeds" if seeds > 1 else ""
    target = {"mit1003": "MIT1003", "osie": "OSIE"}.get(results.get("target", "mit1003"), results.get("target"))
    extra = ""
    if results.get("extra_data"):
        how = {"joint": "trained jointly with", "pretrain": "pre-trained on"}[results["recipe"]]
        extra = f", {how} {' + '.join(e['name'] for e in results['extra_data'])}"
    stamp = [f"Commit: {results['commit']}, {results['date']}  "] if "commit" in results else []
    lines = [
        f"# {results['model']}: 10-fold cross-validation on {target}{ensemble}{extra}",
        "",
        f"Command: `{results['command']}`  ",
        *stamp,
        f"Machine: {results['machine']}  ",
        f"Time: features {results['seconds']['features']:.0f} s, total {results['seconds']['total']:.0f} s  ",
        f"Data: {results['dataset']}" + "".join(f"; extra: {e['dataset']}" for e in results.get("extra_data", [])),
        "",
        "| fold | LL (bits/fix) | IG over CV center bias | explained IG | epochs |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["folds"]:
        lines.append(f"| {r['fold']} | {r['log_likelihood']:.3f} | {r['information_gain']:.3f} | "
                     f"{100 * r['explained_information_gain']:.1f} % | {r['epochs']} |")
    lines += [
        f"| **all** | **{t['log_likelihood']:.3f}** | **{t['information_gain']:.3f}** | "
        f"**{100 * t['explained_information_gain']:.1f} %** | |",
        "",
        f"Center bias (cross-validated) LL: {t['center_bias_log_likelihood']:.3f} bits/fix; gold standard LL: "
        f"{t['gold_standard_log_likelihood']:.3f} bits/fix (IG {t['gold_standard_information_gain']:.3f}).  ",
        f"Paper: {results['paper']}.",
        "",
    ]
    if "metrics" in results:
        m = results["metrics"]
        names = [k for k in ("IG", "AUC", "sAUC", "NSS", "AUC_Judd", "CC", "KLDiv", "SIM") if k in m]
        lines += [
            "All test images, each predicted by its fold's model, each metric given its metric-specific map "
            "(IG over the fold's center bias; CC, KLDiv, SIM against the empirical map blurred with 24 px; "
            "per-fixation metrics averaged over fixations):",
            "",
            "| " + " | ".join(names) + " |",
            "| " + " | ".join("---:" for _ in names) + " |",
            "| " + " | ".join(f"{m[k]:.4f}" for k in names) + " |",
            "",
        ]
    if "run_note" in results:  # how the run went, added by hand to the JSON where it needs saying
        lines += [results["run_note"], ""]
    return "\n".join(lines)

