"""Evaluate a trained state at a list of NFEs and write the reports (issue 5: ``--mode=eval`` and the end of training).

For each NFE in ``config.eval.nfes`` (``Method.sample``'s ``nfe``: CM steps, or EDM Heun with N = (NFE+1)/2 points),
with the method's configured sampling options, draw ``config.eval.num_samples`` samples with the sampling EMA params and score them against the
held-out split, always next to the noise floor (two real draws of the same size):
* toys:   sliced W1, RBF-MMD, energy distance, and for mixtures mode coverage and log-likelihood (exact metrics);
* digits / mnist5k: Fréchet distance, KID and precision/recall in the in-project classifier's feature space ("FD on an
  in-project classifier", never FID), plus pixel sliced W1;
* other images: pixel sliced W1;
* every image dataset, when ``config.eval.inception_weights`` names pytorch-fid's weights file: ``fid``, the FID of the
  samples against the reference statistics (``config.eval.fid_reference``, or the training split's, computed once and
  cached by :func:`consistency.metrics.features.load_or_compute_reference_stats`).
Writes ``WORKDIR/eval/metrics_<step>.json`` ({"nfe_<n>": {...}}), TensorBoard scalars ``eval/nfe<n>/<metric>`` and a
sample picture ``WORKDIR/samples/eval_<step>_nfe<n>.png``. Idempotent: an existing report for the same NFEs and sample
count is returned as is.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from absl import logging

from consistency.metrics import set_distances, sample_quality
from consistency.core import fileio
from consistency.run import sampling
from consistency.methods import base
from consistency.config import validate_sigma_list

_REFERENCE_CACHE: dict = {}
_INCEPTION_CACHE: dict = {}


def reference_set(config, dataset):
    """The held-out split as numpy (toys: an independent draw), used as the metric reference."""
    from consistency.data import make_dataset
    key = (config.data.name, config.data.resolution, config.data.data_dir, config.data.toy_size,
           config.data.get("test_path", ""), config.data.get("test_fraction", 0.0))
    if key not in _REFERENCE_CACHE:
        try:
            held_out = make_dataset(config.data, config.training.batch_size, config.seed, split="test")
            _REFERENCE_CACHE[key] = np.asarray(held_out.arrays()[0], np.float32)
        except Exception:  # datasets without a test split: fall back to the training split
            _REFERENCE_CACHE[key] = np.asarray(dataset.arrays()[0], np.float32)
    return _REFERENCE_CACHE[key]


def score_samples(config, dataset, samples: np.ndarray, seed: int = 0) -> dict[str, float]:
    """All metrics for ``samples`` with their ``*_floor`` values."""
    reference = reference_set(config, dataset)
    bootstrap = int(config.eval.get("bootstrap", 0))
    if dataset.kind == "toy":
        return sample_quality.evaluate_points(samples, reference, mixture=getattr(dataset, "mixture", None), seed=seed,
                                        bootstrap=bootstrap)
    if config.data.name in ("digits", "mnist5k"):
        from consistency.metrics.features import load_or_train_dataset_features
        features = load_or_train_dataset_features(config.data)
        metrics = sample_quality.evaluate_images(samples, reference, features, seed=seed, bootstrap=bootstrap)
    else:
        metrics = {"pixel_sliced_wasserstein": set_distances.sliced_wasserstein(samples, reference[: len(samples)],
                                                                          seed=seed)}
    if config.eval.inception_weights:
        metrics["fid"] = fid(config, dataset, samples)
    return metrics


def inception(path: str):
    """pytorch-fid's Inception for ``path``, loaded and compiled once per process (keyed by the file's mtime)."""
    from consistency.metrics.features import pytorch_fid_inception
    key = (os.path.abspath(path), os.path.getmtime(path), os.path.getsize(path))
    if key not in _INCEPTION_CACHE:
        _INCEPTION_CACHE.clear()
        _INCEPTION_CACHE[key] = pytorch_fid_inception(path)
    return _INCEPTION_CACHE[key]


def fid_reference_stats(config, dataset, feature_fn) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the real data for FID: ``config.eval.fid_reference`` when set, else the training split's
    statistics (as the papers' reference files, e.g. EDM's, are the training images'), computed once and cached under
    ``$CONSISTENCY_CACHE/features`` keyed by the images and the weights file."""
    from consistency.metrics import features
    if config.eval.fid_reference:
        return features.load_fid_reference(config.eval.fid_reference)
    images = features.images_to_uint8(dataset.arrays()[0])   # model space [-1, 1] → the dataset's uint8 exactly
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(config.data.name))[:40]
    return features.load_or_compute_reference_stats(f"fid-{name}", images, feature_fn)


def fid(config, dataset, samples: np.ndarray) -> float:
    """FID (pytorch-fid's Inception, 2048-d pool3; Fréchet distance of Heusel et al. 2017) of ``samples`` (NHWC in
    [-1, 1], quantised to uint8 like saved PNGs) against :func:`fid_reference_stats`. Papers use 50k samples
    (``config.eval.num_samples=50000``); fewer samples bias FID upwards."""
    feature_fn = inception(config.eval.inception_weights)
    mu_ref, sigma_ref = fid_reference_stats(config, dataset, feature_fn)
    mu, sigma = set_distances.gaussian_stats(feature_fn(samples))
    return set_distances.frechet_distance(mu, sigma, mu_ref, sigma_ref)


def evaluation_nfes(config, method) -> list[int]:
    """``config.eval.nfes``, or the method's own default list when that is empty (EDM (35,), CMs (1, 2), …)."""
    nfes = tuple(config.eval.nfes) or tuple(method.default_nfes)
    return [int(n) for n in nfes]


def evaluate_state(config, method, state, dataset, step: int, workdir: str, writer=None, force: bool = False,
                   extra: dict | None = None) -> dict[str, Any]:
    """Evaluate at every NFE of ``config.eval.nfes``; write JSON (with ``extra`` entries merged in), TensorBoard
    scalars and pictures (see module doc)."""
    nfes = evaluation_nfes(config, method)
    num = int(config.eval.num_samples)
    path = os.path.join(workdir, "eval", f"metrics_{step}.json")
    if not force and fileio.exists(path):
        cached = fileio.read_json(path)
        if (cached.get("nfes") == nfes and cached.get("num_samples") == num
                and cached.get("scoring") == sample_quality.IMAGE_SCORING):   # older reports scored unclipped images
            return cached
    report: dict[str, Any] = {**(extra or {}), "step": int(step), "method": config.method, "nfes": nfes,
                              "num_samples": num, "scoring": sample_quality.IMAGE_SCORING}
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 10_000_019)
    reference = sampling.reference_points(dataset, num_points=2000)
    for nfe in nfes:
        sampler = sampling.make_sampler(method, num, nfe, method.options)
        samples, _ = sampling.draw_samples(config, method, state, rng, num, sampler=sampler)
        metrics = {"finite_fraction": float(np.mean(np.isfinite(samples)))}
        report[f"sampler_nfe_{nfe}"] = method.describe_sampler(nfe, method.options)  # e.g. a CM sampler's σ list
        if metrics["finite_fraction"] == 1.0:
            metrics.update(score_samples(config, dataset, samples, seed=config.seed))
        report[f"nfe_{nfe}"] = metrics
        if "num_reference" in metrics:
            logging.info("eval step %d, NFE %d: %s", step, nfe, sample_quality.sizes_line(metrics))
        if writer is not None:
            writer.write_scalars(step, {f"eval/nfe{nfe}/{k}": v for k, v in metrics.items() if np.isscalar(v)})
        sampling.write_sample_grid(None, workdir, f"eval_{step}_nfe{nfe}", step, samples[:100], dataset, reference)
    if jax.process_index() == 0:
        fileio.write_json(path, _jsonable(report), indent=2, sort_keys=True)  # atomic: never half a report
    return report


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def guidance_sweep(config, method, state, dataset, scales, num_samples: int, seed: int = 0) -> list[dict]:
    """One row per guidance scale w of a class-conditional model whose sampling options hold ``guidance`` (PaGoDA's
    w-conditioned generator) or ``cfg_scale`` (a CFG-trained EDM teacher, D_∅ + w(D_c − D_∅), Ho & Salimans'
    classifier-free guidance): the metrics of :func:`score_samples` on ``num_samples`` balanced-label samples at w, and
    on digits / MNIST the in-project classifier's accuracy at recognising the requested class and its mean confidence in
    it — guidance should raise both while lowering recall (CFG's quality/diversity trade)."""
    labels = sampling.sample_labels(config, num_samples)
    if labels is None:
        raise ValueError("guidance_sweep needs a class-conditional model (config.model.num_classes > 0)")
    classifier = None
    if config.data.name in ("digits", "mnist5k"):
        from consistency.metrics.features import load_or_train_dataset_features
        classifier = load_or_train_dataset_features(config.data)
    takes = [f.name for f in dataclasses.fields(method.options)]
    keyword = "guidance" if "guidance" in takes else "cfg_scale"
    if keyword not in takes:
        raise ValueError(f"guidance_sweep: method {method.name!r} samples without a guidance scale")
    rows = []
    for w in scales:
        options = base.sampling_options(method, **{keyword: float(w)})
        sampler = sampling.make_sampler(method, int(num_samples), method.sampling_nfe, options)
        x = np.asarray(sampling.to_host(sampler(state, jax.random.PRNGKey(seed), {"labels": jnp.asarray(labels)})),
                       np.float32)
        row = {"w": float(w), **{k: float(v) for k, v in score_samples(config, dataset, x, seed).items()
                                 if np.isscalar(v)}}
        if classifier is not None:
            logits = classifier.logits(x)
            probs = np.exp(logits - logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            row["class_accuracy"] = float(np.mean(np.argmax(logits, 1) == labels))
            row["class_confidence"] = float(np.mean(probs[np.arange(len(labels)), labels]))
        rows.append(row)
    return rows


def resample_sigma_lists(config, method, state, dataset, sigma_lists: dict, seeds, metric: str) -> list[dict]:
    """One row per named descending σ list (a multistep CM sampler, NFE = its length): ``metric`` from
    :func:`score_samples` on ``config.eval.num_samples`` samples for each sampling seed, with their mean and
    standard deviation — the seed spread that a 2-vs-4-step difference must exceed to mean anything."""
    num = int(config.eval.num_samples)
    rows = []
    for name, sigmas in sigma_lists.items():
        sigmas = tuple(float(s) for s in sigmas)
        validate_sigma_list(config, sigmas)
        sampler = sampling.make_sampler(method, num, len(sigmas), base.sampling_options(method, sigmas=sigmas))
        values = []
        for seed in seeds:
            x, _ = sampling.draw_samples(config, method, state, jax.random.PRNGKey(int(seed)), num, sampler=sampler)
            values.append(float(score_samples(config, dataset, np.asarray(x, np.float32), seed=int(seed))[metric]))
        rows.append({"name": name, "sigmas": list(sigmas), "values": values, "mean": float(np.mean(values)),
                     "std": float(np.std(values))})
    return rows


def guidance_table(rows: list[dict]) -> str:
    """The sweep as a markdown table (the columns every row has)."""
    keys = [k for k in ("fd", "precision", "recall", "class_accuracy", "class_confidence", "swd") if k in rows[0]]
    lines = ["| w | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {r['w']:g} | " + " | ".join(f"{r[k]:.4g}" for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def merge_json(path: str, entries: dict) -> dict:
    """Write ``entries`` over the JSON object at ``path`` (created if absent) under an exclusive lock on
    ``path + '.lock'``, atomically; returns what was written. Two processes adding keys to one cache at once (two
    ``launch/science.py`` questions) each keep the other's keys."""
    import fcntl
    import json
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = {}
        if os.path.exists(path):
            with open(path) as f:
                merged = json.load(f)
        merged.update(entries)
        with open(path + ".tmp", "w") as f:
            json.dump(merged, f, indent=1, sort_keys=True)
        os.replace(path + ".tmp", path)
    return merged


def replace_block(page: str, key: str, body: str, namespace: str = "science") -> str:
    """``page`` with the text between ``<!-- namespace:key -->`` and ``<!-- /namespace:key -->`` replaced by ``body``
    (the markers appended at the end when absent)."""
    start, end = f"<!-- {namespace}:{key} -->", f"<!-- /{namespace}:{key} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(page):
        return pattern.sub(lambda _: block, page)
    return page.rstrip() + "\n\n" + block + "\n"
