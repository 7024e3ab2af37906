"""An LPIPS-like feature distance on a frozen in-project classifier (docs/methods.md §1.3; CM paper's LPIPS metric).

LPIPS (Zhang et al. 2018) compares unit-normalised activations of a frozen VGG at several depths, weighted by linear
heads learned from human judgements. Neither VGG nor those heads can be downloaded here, so this distance uses the
in-project classifier of :mod:`consistency.metrics.features` (trained on the dataset's own training split) with uniform
weights: d(a, b) = Σ_l mean_{h,w} ‖n(φ_l(a)) − n(φ_l(b))‖², n = division by the channel norm. The classifier params are
an argument of the compiled step (``state.frozen['features']``), never a baked-in constant.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _unit_normalise(h, eps: float = 1e-10):
    return h / jnp.sqrt(jnp.sum(h ** 2, axis=-1, keepdims=True) + eps)


def layer_activations(model, params, x):
    """Activations of every conv layer and the penultimate features (``FeatureNet`` via ``capture_intermediates``)."""
    _, state = model.apply({"params": params}, x, capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]
    convs = [inter[name]["__call__"][0] for name in sorted(inter) if name.startswith("Conv")]
    return convs


def feature_distance(model, params, a, b):
    """Per-example Σ_l mean_{h,w} ‖n(φ_l(a)) − n(φ_l(b))‖² (LPIPS form with uniform layer weights)."""
    total = jnp.zeros((a.shape[0],), a.dtype)
    for fa, fb in zip(layer_activations(model, params, a), layer_activations(model, params, b)):
        diff = _unit_normalise(fa) - _unit_normalise(fb)
        total = total + jnp.mean(jnp.sum(diff ** 2, axis=-1), axis=(1, 2))
    return total


def resize_to(x, resolution: int):
    """NHWC ``x`` bilinearly resized to resolution × resolution (antialiased when shrinking; differentiable), as
    PaGoDA resizes images to its feature nets' input size (docs/methods.md §9)."""
    if x.shape[1] == resolution and x.shape[2] == resolution:
        return x
    return jax.image.resize(x, (x.shape[0], resolution, resolution, x.shape[3]), method="bilinear")


def make_feature_distance(config, example_shape, field: str = "cm.distance", resize: bool = False):
    """(distance(params, a, b) -> [B], params) for ``config.data``; the classifier trains once and is cached. Images
    at another resolution than the classifier's are refused, or with ``resize`` resized to it first."""
    from consistency.core.errors import ConfigError
    from consistency.metrics.features import load_or_train_dataset_features
    if len(example_shape) != 3:
        raise ConfigError(f"config.{field}: 'feature' needs image data; use l2, l1 or pseudo_huber for toys")
    feats = load_or_train_dataset_features(config.data)
    if example_shape[0] != feats.resolution and not resize:
        raise ConfigError(f"config.{field}: the feature classifier runs at {feats.resolution}×{feats.resolution}; "
                          f"train at data.resolution=0 (native) or use another distance")

    def distance(params, a, b):
        return feature_distance(feats.model, params, resize_to(a, feats.resolution), resize_to(b, feats.resolution))
    return distance, jax.tree.map(jnp.asarray, feats.params)
