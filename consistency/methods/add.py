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

import jax
import jax.numpy as jnp

from consistency.core import schema
from consistency.methods import base
from consistency.methods.components import common, distillation
from consistency.methods.components.discriminator import (AUGMENT_STREAM, FEATURES, discriminator_hinge_loss,
                                                           projected_discriminator, validate_augment)
from consistency.objectives import add as add_objective
from consistency.objectives import dmd as dmd_objective

NAME = "add"


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


def make(config, dataset) -> base.Method:
    validate_config(config)
    a = config.add
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
