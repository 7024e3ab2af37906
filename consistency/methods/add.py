"""ADD — Adversarial Diffusion Distillation (Sauer et al. 2023, arXiv 2311.17042, no training code; docs/methods.md §11).

Trained sets, in step order (ADD alternates G:D; ``config.add.ttur`` discriminator updates per student update):

* 'discriminator' — trainable heads D_k on *frozen* features F_k (ADD: DINOv2 ViT-S, which cannot be had offline):
  hinge relu(1 − D(F(x₀))) + relu(1 + D(F(sg x̂_θ))) + γ·R1 on the real inputs, γ = 1e-5. Features
  (``config.add.features``): 'classifier' — the in-project digits classifier's conv maps (``consistency/metrics/features.py``,
  trained on the training split, frozen; the DINOv2 stand-in), 'teacher' — the frozen teacher U-Net's encoder maps
  at σ = ``add.feature_sigma``, 'input' — the raw point itself (2-D toys, where there is no feature net). The head
  is ``config.discriminator`` (digits: Projected-GAN patch heads on every map; toys: an MLP). Each GAN loss is the
  mean over the head's logits (``consistency/nets/heads.py``).
* 'generator' (the student x̂_θ, initialised from the teacher) — on forward-diffused *real* data x_s = x₀ + σ_s ε,
  σ_s from the student set {999, 749, 499, 249} on the 1000-point grid (σ ≈ 80, 17.5, 2.50, 0.168): the hinge
  generator loss −D(F(x̂_θ)) (discriminator params frozen, gradient through its inputs) plus
  2.5·c(t)·‖x̂_θ − sg x̂_ψ(sg(x̂_θ) + σ_t ε′, σ_t)‖² with c(t) = α_t (ADD §3.2; seed eq. 67 with the σ_t (not σ_t²)
  erratum, docs/methods.md §17 item 16). The teacher input is under sg, so the teacher Jacobian never enters
  (docs/methods.md §11); alone this term collapses the student to the data mean — the GAN term is essential.

Frozen: {'teacher', 'features' (classifier params)}. Sampling: the student's K levels as a consistency-style chain
from its EMA; NFE 1 = x̂_θ(σ_max z, σ_max).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from consistency.core import schema
from consistency.core.errors import ConfigError
from consistency.methods import base
from consistency.methods.components import common, distillation
from consistency.objectives import add as add_objective
from consistency.objectives import augment
from consistency.objectives import dmd as dmd_objective

NAME = "add"
FEATURES = ("classifier", "teacher", "input")
AUGMENT_STREAM = 101  # fold_in constant of the DiffAugment draws (apart from the per-example noise keys)


# config.add: ADD, Sauer et al. 2023 (docs/methods.md §11; no training code: several defaults [unverified]).
CONFIG_BLOCK = "add"
CONFIG_FIELDS = {
    **distillation.init_fields('the student starts from the teacher (ADD §3.1)'),
    "student_timesteps": schema.Field((999, 749, 499, 249), "student noise set on the T grid, first = σ_max (ADD §3.1)"),
    **distillation.grid_fields('teacher grid T',
                               'teacher level of the distillation term: index ~ U[0.02 T, 0.98 T] (as DMD)',
                               'upper end of that index range, as a fraction of T'),
    "distillation_weight": schema.Field(2.5, 'λ of L_adv^G + λ L_distill (ADD §3.2)', lo=0, fix="use ADD's 2.5"),
    "weighting": schema.Field("exponential", "c(t): 'exponential' α_t = 1/√(1+σ²) (ADD) | 'uniform'",
                              choices=("exponential", "uniform")),
    "r1_weight": schema.Field(1e-5, 'γ of the R1 penalty on real inputs (ADD §3.2)',
                              lo=0, fix="use ADD's 1e-5, or 0 (no R1)"),
    "features": schema.Field("classifier", "frozen discriminator features: 'classifier' (in-project digits net, "
                                           "DINOv2's stand-in) | 'teacher' (teacher U-Net encoder at feature_sigma) | "
                                           "'input' (raw x: toys)", choices=FEATURES),
    "feature_sigma": schema.Field(0.002, "'teacher' features: the σ the frozen teacher encoder reads clean images at",
                                  lo=0, hi="diffusion.sigma_max", lo_open=True),
    "ttur": distillation.ttur_field(1, 'discriminator updates per student update (ADD: alternate G:D)'),
    "augment": schema.Field("", "DiffAugment policy on the discriminator's real and fake inputs, e.g. "
                                "'color,translation,cutout' (Projected GAN / StyleGAN-T); images only",
                            fix="use a DiffAugment policy such as 'translation,cutout', or '' for none"),
}
TEACHER_USE = "required"


def validate_config(config) -> None:
    """``config.add`` and ``config.discriminator`` (one ConfigError line naming the field)."""
    schema.check_block(config, CONFIG_BLOCK, CONFIG_FIELDS)   # every field: type, choices, bounds
    a = config.add
    distillation.validate_common(config, NAME)
    levels = distillation.validate_timesteps(config, NAME, "student_timesteps")
    distillation.require(len(tuple(a.student_timesteps)) >= 1, "add.student_timesteps", "() is empty",
                         "use ADD's (999, 749, 499, 249), or (999,) for a one-step student")
    te = config.teacher
    if a.features == "teacher":
        distillation.require(bool(te.workdir), "add.features", "'teacher' reads the teacher U-Net's encoder, but "
                             f"the teacher is the closed-form oracle {te.oracle!r}",
                             "use 'input' for toys, or set teacher.workdir to a trained EDM run")
    if a.features == "classifier":
        distillation.require(config.data.name in ("digits", "mnist5k"), "add.features",
                             f"'classifier' needs the in-project classifier, which exists for digits and mnist5k, not "
                             f"{config.data.name!r}", "use 'input' for toys or 'teacher' with a teacher workdir")
        distillation.require(config.data.resolution == 0, "add.features", "'classifier' runs at the native "
                             f"resolution, but data.resolution = {config.data.resolution}", "set data.resolution=0")
    validate_augment(config, "add.augment")
    distillation.check_head_block(config)
    distillation.validate_eval_nfes(config, NAME, levels)


def frozen_features(config, nets, kind: str | None = None, sigma: float | None = None):
    """(features(frozen, x) -> {name: array}, feature params or None) for ``kind`` (default ``config.add.features``;
    module doc). CTM's GAN term uses the same features (``config.ctm.gan_features``)."""
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


def make(config, dataset) -> base.Method:
    validate_config(config)
    a, f = config.add, config.diffusion
    nets = distillation.build_networks(config, dataset)
    shape = nets.example_shape
    levels = distillation.timestep_sigmas(config, a, a.student_timesteps)   # ADD §3.1 student set, descending
    disc = projected_discriminator(config, nets, a.features, None, a.augment)
    feature_params = disc.feature_params

    def init(rng, batch):
        k_nets, k_head = jax.random.split(rng)
        student, _ = distillation.init_generator_and_fake(config, NAME, nets, k_nets, batch, with_fake=False)
        frozen = {"teacher": nets.teacher_params}
        if feature_params is not None:
            frozen["features"] = feature_params
        return {"discriminator": disc.init(k_head, frozen, jnp.asarray(batch["x"][:1])), "generator": student}, frozen

    def student_output(params, batch, keys, labels):
        """x̂_θ(x₀ + σ_s ε, σ_s) with σ_s uniform over the student set (ADD §3.1)."""
        index = distillation.per_example_uniform_index(keys, 1, 0, len(levels) - 1)
        sigma_s = jnp.asarray(levels, jnp.float32)[index]
        x_s = add_objective.student_input(batch["x"], distillation.normal_like(keys, 2, shape), sigma_s)
        return nets.denoiser(params, x_s, sigma_s, labels)

    def discriminator_loss(params, state, batch, rng):
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        x_fake = student_output(state.params["generator"], batch, keys, labels)
        return discriminator_hinge_loss(disc, params, state.frozen, labels, rng, batch["x"], x_fake, a.r1_weight)

    def generator_loss(params, state, batch, rng):
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        x_hat = student_output(params, batch, keys, labels)
        k_augment = jax.random.fold_in(rng, AUGMENT_STREAM)
        frozen_d = dmd_objective.with_frozen_parameters(
            lambda p, x: disc.logits(p, state.frozen, labels, k_augment)(x), state.params["discriminator"])
        logits = frozen_d(x_hat)
        per_logit = logits.reshape(logits.shape[0], -1).shape[1]
        adversarial = jnp.mean(add_objective.hinge_generator_loss(logits)) / per_logit   # L_adv^G = −E D(F(x̂_θ))
        sigma_t = distillation.distribution_matching_sigmas(config, a, keys, 3)
        weight = add_objective.exponential_weight(sigma_t) if a.weighting == "exponential" else jnp.ones_like(sigma_t)
        distill = jnp.mean(add_objective.distillation_loss(
            x_hat, distillation.teacher_fn(nets, state, labels), distillation.normal_like(keys, 4, shape), sigma_t,
            weight))                                                            # ADD §3.2; docs/methods.md §11
        loss = adversarial + float(a.distillation_weight) * distill
        return loss, jax.lax.stop_gradient({"loss_adversarial": adversarial, "loss_distill": distill})

    every = int(a.ttur)
    trained = (common.trained_set(config, "discriminator", discriminator_loss),
               common.trained_set(config, "generator", generator_loss, every=every,
                                  phase=distillation.ttur_phase(every), sampled=True))
    return base.Method(name=NAME, init=init, trained=trained, sample=distillation.make_sample(nets, levels),
                       sample_params="generator", sampling_nfe=len(levels),
                       default_nfes=distillation.default_nfes(len(levels)))
