"""The projected discriminator that ADD, CTM's GAN stage and PaGoDA share: trainable heads (``config.discriminator``,
consistency/nets/heads.py) on frozen features — the in-project digits classifier (DINOv2's / StyleGAN-XL's feature
networks' stand-in), the teacher's encoder, or the raw input — with DiffAugment on real and fake inputs alike
(Projected GAN; StyleGAN-T), and its hinge loss with the optional R1 penalty (ADD §3.2; docs/methods.md §11)."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from consistency.core.errors import ConfigError
from consistency.methods.components import distillation
from consistency.objectives import add as add_objective
from consistency.objectives import augment

FEATURES = ("classifier", "teacher", "input")
AUGMENT_STREAM = 101  # fold_in constant of the DiffAugment draws (apart from the per-example noise keys)


def frozen_features(config, nets, kind: str | None = None, sigma: float | None = None):
    """(features(frozen, x) -> {name: array}, feature params or None) for ``kind`` (default ``config.add.features``;
    consistency/methods/add.py's module doc). CTM's GAN term (``config.ctm.gan_features``) and PaGoDA
    (``config.pagoda.features``) use the same features."""
    kind = config.add.features if kind is None else kind
    if kind == "input":
        return (lambda frozen, x: {"input": x.reshape(x.shape[0], -1)}), None
    if kind == "teacher":
        encoder = distillation.encoder_features(nets)
        sigma = float(config.add.feature_sigma if sigma is None else sigma)
        return (lambda frozen, x: encoder(frozen["teacher"], x, jnp.full(x.shape[:1], sigma), None)), None
    from consistency.metrics.features import load_or_train_dataset_features
    from consistency.objectives.feature_distance import layer_activations, resize_to
    classifier = load_or_train_dataset_features(config.data)

    def features(frozen, x):      # images at another resolution are resized to the classifier's (PaGoDA stages)
        maps = layer_activations(classifier.model, frozen["features"], resize_to(x, classifier.resolution))
        return {f"conv_{i}": h for i, h in enumerate(maps)}
    return features, jax.tree.map(jnp.asarray, classifier.params)


def resolved_head_config(config, feature_shapes: dict):
    """``config.discriminator`` with ``features=()`` resolved to every feature the head can read: vector features
    for an 'mlp' head, image maps otherwise."""
    head = config.discriminator.copy_and_resolve_references()
    if not tuple(head.features):
        rank = 1 if head.name == "mlp" else 3
        head.features = tuple(name for name, shape in feature_shapes.items() if len(shape) == rank)
    return head


class ProjectedDiscriminator(NamedTuple):
    """Trainable heads on frozen features, shared by ADD and CTM's GAN term.

    ``init(rng, frozen, x, guidance=None)`` → head params; ``logits(head_params, frozen, labels, rng, guidance=None)``
    → a function x → [B, P] that augments x with DiffAugment (``policy``, fresh draws from ``rng``), reads the frozen
    features and applies the heads (conditioned on w too when ``guidance`` is given: PaGoDA's CFG). ``feature_params`` go into the method's frozen sets as 'features' (None for 'input' / 'teacher')."""
    init: Callable
    logits: Callable
    feature_params: Any


def projected_discriminator(config, nets, kind: str, sigma: float | None, policy: str) -> ProjectedDiscriminator:
    """``config.discriminator`` heads on ``kind`` features (:func:`frozen_features`), inputs augmented by ``policy``
    (``consistency/objectives/augment.py``; Projected GAN / StyleGAN-T augment real and fake alike)."""
    from consistency.nets.heads import make_head
    features, feature_params = frozen_features(config, nets, kind, sigma)
    example = {"teacher": nets.teacher_params, "features": feature_params}
    shapes = jax.eval_shape(lambda: features(example, jnp.zeros((1,) + nets.example_shape)))
    feature_shapes = {k: tuple(v.shape[1:]) for k, v in shapes.items()}
    head = make_head(resolved_head_config(config, feature_shapes), feature_shapes, prefix="discriminator")
    transforms = augment.parse_policy(policy)

    def init(rng, frozen, x, guidance=None):
        labels = None if guidance is None else jnp.zeros(x.shape[:1], jnp.int32)
        return head.init(rng, features(frozen, x), labels, guidance)["params"]

    def logits(head_params, frozen, labels, rng=None, guidance=None):
        def apply(x):
            if transforms:
                x = augment.diff_augment(rng, x, transforms)
            return head.apply({"params": head_params}, features(frozen, x), labels, guidance)
        return apply
    return ProjectedDiscriminator(init, logits, feature_params)


def discriminator_hinge_loss(disc: ProjectedDiscriminator, params, frozen, labels, rng, x_real, x_fake,
                             r1_weight: float = 0.0, guidance=None):
    """(loss, metrics) of the discriminator heads ``params``: hinge on sg real vs sg fake inputs, each augmented with
    its own draws, averaged over the heads' logits (ADD §3.2), plus γ·R1 = γ‖∇ₓ D(F(x₀))‖² on the real inputs when
    ``r1_weight`` > 0 (ADD §3.2; docs/methods.md §15 O11). Shared by ADD, CTM's GAN stage and PaGoDA; ``guidance`` [B] conditions the heads
on w as well as the class (PaGoDA's D(x, c, w), seed eq. 56–58)."""
    x_real, x_fake = jax.lax.stop_gradient(x_real), jax.lax.stop_gradient(x_fake)
    k_real, k_fake = jax.random.split(jax.random.fold_in(rng, AUGMENT_STREAM))   # own draws for real and fake
    d_real = disc.logits(params, frozen, labels, k_real, guidance)
    real_logits, fake_logits = d_real(x_real), disc.logits(params, frozen, labels, k_fake, guidance)(x_fake)
    per_logit = real_logits.reshape(real_logits.shape[0], -1).shape[1]
    loss = jnp.mean(add_objective.hinge_discriminator_loss(real_logits, fake_logits)) / per_logit
    metrics = {"loss_hinge": loss, "real_logit": jnp.mean(real_logits), "fake_logit": jnp.mean(fake_logits)}
    if float(r1_weight) > 0:
        r1 = jnp.mean(add_objective.r1_penalty(d_real, x_real))
        loss = loss + float(r1_weight) * r1
        metrics["r1"] = r1
    return loss, jax.lax.stop_gradient(metrics)


def validate_augment(config, field: str) -> None:
    """``<field>``: a DiffAugment policy, for image data only (one ConfigError line)."""
    block, name = field.split(".")
    try:
        transforms = augment.parse_policy(config[block][name])
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"config.{field}: {e}; e.g. 'translation,cutout', or '' for none") from None
    distillation.require(not transforms or not str(config.data.name).startswith("toy:"), field,
                         f"{config[block][name]!r} augments images, but {config.data.name!r} is 2-D points",
                         "use '' for toys")
