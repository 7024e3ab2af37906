"""CTM — Consistency Trajectory Models (Kim et al. 2023, arXiv 2310.02279, `sony/ctm`; docs/methods.md §13.1).

One network jumps between any two noise levels: G_θ(x_t, t, s) = (s/t)·x_t + (1 − s/t)·g_θ(x_t, t, s), with g_θ the
EDM-preconditioned network at t that also embeds the target level s (the nets' ``c_noise_target`` input, its own
zero-initialised embedding, so a network copied from the EDM teacher starts as the teacher's DDIM jump). The
notebook's VE multistep CM (seed eq. 51) is this map with s fixed to a segment boundary.

Trained set 'online' (sampled; θ⁻ = the Moving set 'target', μ = ``ctm.target_ema``) with the loss, per example
(``config.ctm``; grid = the descending ``num_scales``-point Karras grid, index 0 = σ_max):

* one k per batch, P(k) ∝ k on {1 … heun_steps} (``heun_step_strategy='weighted'``, CTM's default; 'uniform'
  1/K); per example t = grid[i], i ~ U{0 … N−1−k}; u = grid[i + k] (never past σ_min, so never clipped): the
  teacher's Heun solver from t to u, k steps; s = grid[j], j ~ U{i + k … N−1} (s ≤ u ≤ t; docs/methods.md §13.1
  "s ~ U[0, t]" on the grid below u, so that the target's jump u → s is backward) — as sony/ctm draws them
  (`karras_diffusion.py` ``get_num_heun_step``/``ctm_losses``, `resample.py` ``sample_t``/``sample_s``);
* soft consistency (docs/methods.md §13.1): d(G_{sg θ⁻}(G_θ(x_t, t, s), s, σ_min), sg G_{θ⁻}(G_{sg θ}(x_u, u, s), s, σ_min)),
  d = ``ctm.distance``;
* DSM auxiliary (docs/methods.md §13.1): λ_EDM(σ)‖g_θ(x + σn, σ, σ) − x‖², σ as CTM's ``halflognormal`` sampler
  (``dsm_sigmas='half_uniform'``: examples of even global index ln σ ~ N(P_mean, P_std²), odd ones ρ-uniform on the
  first ``dsm_uniform_fraction`` = 0.7 of the σ_max → σ_min ramp, [0.318, 80]; 'lognormal': all lognormal), weighted by
  ``ctm.dsm_weight`` × (the adaptive ratio ‖∇_last L_CTM‖/(‖∇_last L_DSM‖ + 1e-4) when ``ctm.adaptive_dsm``), the gradients
  taken with respect to the network's last layer ('dense_out' / 'conv_out');
* GAN (``ctm.gan_weight`` > 0; CTM's GAN stage, docs/methods.md §13.1): a trained set 'discriminator' (updated first in
  each step) — ``config.discriminator`` heads on frozen features (``ctm.gan_features``, the ADD choices: raw input,
  the in-project classifier, the teacher's encoder) — with the hinge loss on real x vs sg x_est; the generator adds
  gan_weight·λ_GAN·(−D(x_est)), λ_GAN = clip(‖∇_last L_CTM‖/‖∇_last L_GAN‖, 0.01, 10). CTM's discriminator lr
  2e-3 goes in ``config.optim_discriminator``; the discriminator's real and fake inputs are DiffAugmented with
  ``ctm.gan_augment``. CTM's two stages — CTM+DSM, then GAN fine-tuning of that model — are two runs, the second
  started from the first with ``training.init_from`` (the jump map, its EMA and θ⁻ are copied; the discriminator and
  the optimizer states start fresh): the ``:gan`` variants of configs/{digits,cifar}_ctm.py.

Frozen: {'teacher'} (+ 'features' for the classifier). Sampling: γ-sampling (:func:`consistency.objectives.ctm.gamma_sample`) on n + 1 Karras points
σ_max → σ_min (NFE = n), γ = ``ctm.gamma``.
"""
from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np

from consistency.core import schema
from consistency.diffusion import cm_sampling, distances, preconditioning, schedules
from consistency.diffusion.processes import broadcast_to_data
from consistency.methods import base
from consistency.methods.components import common, distillation
from consistency.objectives import ctm as ctm_obj

NAME = "ctm"
HEUN_STEPS_STREAM = 7       # fold_in tag of the step key for the batch's number of Heun steps
DSM_SIGMAS = ("half_uniform", "lognormal")
DISTANCES = ("l2", "pseudo_huber")
LAST_LAYERS = ("dense_out", "conv_out")


# config.ctm: CTM, Kim et al. 2023 (docs/methods.md §13.1). Defaults: the CIFAR-10 CTM+DSM recipe of `sony/ctm` (N =
# 18, θ⁻ EMA 0.999, adaptive DSM weight).
CONFIG_BLOCK = "ctm"
CONFIG_FIELDS = {
    **distillation.init_fields("'teacher' copies the EDM teacher (CTM initialises from it) | 'scratch'"),
    "num_scales": schema.Field(18, 'N of the Karras grid t, u, s live on (CTM: 18 CIFAR-10, 40 ImageNet-64)',
                               lo=2, fix="use CTM's 18 (CIFAR-10) or 40 (ImageNet)"),
    "heun_steps": schema.Field(17, 'K: k ∈ {1 … K} teacher Heun steps from t to u, one k per batch (CTM: up to N − 1)',
                               lo=1, fix="use 1 … num_scales − 1 (CTM: up to N − 1)"),
    "heun_step_strategy": schema.Field("weighted", "P(k) ∝ k (CTM's default) | 'uniform' 1/K",
                                       choices=ctm_obj.HEUN_STEP_STRATEGIES),
    "target_ema": schema.Field(0.999, 'μ of θ⁻ (CTM); 0 → θ⁻ = sg θ',
                               lo=0, hi=1, hi_open=True, fix="use CTM's 0.999, or 0 for θ⁻ = sg θ"),
    "distance": schema.Field("l2", "soft-consistency d: 'l2' | 'pseudo_huber' (CTM: LPIPS, not available offline)",
                             choices=DISTANCES),
    "huber_c": schema.Field(-1.0, 'pseudo-Huber c; < 0 → 0.00054·√d (iCT)',
                            fix="use a pseudo-Huber c > 0, or < 0 for 0.00054·√d"),
    "dsm_weight": schema.Field(1.0, 'DSM auxiliary weight (× the adaptive ratio when adaptive_dsm); 0 → no DSM',
                               lo=0, fix="use 1 (CTM), or 0 for no DSM term"),
    "adaptive_dsm": schema.Field(True, 'λ_DSM = ‖∇_last L_CTM‖ / ‖∇_last L_DSM‖ (CTM)'),
    "dsm_sigmas": schema.Field("half_uniform", "DSM σ: half lognormal, half ρ-uniform (CTM's halflognormal) | "
                                               "'lognormal'", choices=DSM_SIGMAS),
    "dsm_uniform_fraction": schema.Field(0.7, "the ρ-uniform half covers this fraction of the σ_max → σ_min ramp (CTM: "
                                              "0.7)",
                                         lo=0, hi=1, lo_open=True, fix="use CTM's 0.7 (σ ρ-uniform on [0.318, 80])"),
    "p_mean": schema.Field(-1.2, "DSM ln σ ~ N(p_mean, p_std²) (EDM; CTM's lognormal half)"),
    "p_std": schema.Field(1.2, "DSM ln σ std (EDM; CTM's lognormal half)", lo=0, lo_open=True),
    "gamma": schema.Field(0.0, 'γ-sampling: 0 deterministic long jumps … 1 CM-style re-noising',
                          lo=0, hi=1, fix="use 0 (long jumps, CTM's default) … 1 (CM-style)"),
    "gan_weight": schema.Field(0.0, "> 0: hinge GAN on x_est, × clip(‖∇_last L_CTM‖/‖∇_last L_GAN‖, 0.01, 10) (CTM's "
                                    "GAN stage); the head is config.discriminator, its optimizer "
                                    "config.optim_discriminator", lo=0, fix="use 0 (no GAN) or 1 (CTM's GAN stage)"),
    "gan_features": schema.Field("input", "frozen discriminator features, as add.features: 'input' | 'classifier' | "
                                          "'teacher'", fix="use 'input', 'classifier' or 'teacher' (as add.features)"),
    "gan_augment": schema.Field("", "DiffAugment policy of the GAN's discriminator inputs, as add.augment",
                                fix="use a DiffAugment policy such as 'translation,cutout', or '' for none"),
}
TEACHER_USE = "required"


def validate_config(config) -> None:
    """``config.ctm`` (one ConfigError line naming the field)."""
    schema.check_block(config, CONFIG_BLOCK, CONFIG_FIELDS)   # every field: type, choices, bounds
    b, f = config.ctm, config.diffusion
    distillation.validate_common(config, NAME)
    distillation.number(b.heun_steps, "ctm.heun_steps", 1, b.num_scales - 1, integer=True,
                        fix=f"use 1 … num_scales − 1 = {b.num_scales - 1}")
    distillation.require(f.process == "ve", "diffusion.process", f"{f.process!r}: CTM is in VE coordinates", "use 've'")
    if b.gan_weight > 0:
        from consistency.methods.components import discriminator
        distillation.choice(b.gan_features, "ctm.gan_features", discriminator.FEATURES)
        distillation.require(b.gan_features != "teacher" or bool(config.teacher.workdir), "ctm.gan_features",
                             "'teacher' reads the teacher U-Net's encoder, but the teacher is an oracle",
                             "use 'input' for toys, or set teacher.workdir to a trained EDM run")
        distillation.require(b.gan_features != "classifier" or config.data.name in ("digits", "mnist5k"),
                             "ctm.gan_features", f"'classifier' exists for digits and mnist5k, not {config.data.name!r}",
                             "use 'input' for toys or 'teacher' with a teacher workdir")
        discriminator.validate_augment(config, "ctm.gan_augment")
        distillation.check_head_block(config)


def sampling_sigmas(config, num_steps: int) -> list[float]:
    """n + 1 descending Karras points σ_max → σ_min: n jumps, NFE = n."""
    f = config.diffusion
    ramp = np.linspace(0.0, 1.0, int(num_steps) + 1)
    lo, hi = f.sigma_min ** (1 / f.rho), f.sigma_max ** (1 / f.rho)
    return [float(v) for v in (hi + ramp * (lo - hi)) ** f.rho]                 # EDM eq. 5, host-side


def make(config, dataset) -> base.Method:
    validate_config(config)
    b, f = config.ctm, config.diffusion
    nets = distillation.build_networks(config, dataset)
    shape = nets.example_shape
    num_scales = int(b.num_scales)
    grid = jnp.flip(schedules.karras_sigmas(num_scales, f.sigma_min, f.sigma_max, f.rho))   # descending
    if b.distance == "pseudo_huber":
        c = None if b.huber_c < 0 else float(b.huber_c)
        distance = lambda a, y: distances.pseudo_huber(a, y, c)   # noqa: E731
    else:
        distance = distances.l2

    use_gan = float(b.gan_weight) > 0
    if use_gan:
        from consistency.methods.components import discriminator
        from consistency.objectives import add as add_objective
        from consistency.objectives import dmd as dmd_objective
        disc = discriminator.projected_discriminator(config, nets, b.gan_features, f.sigma_min, b.gan_augment)

    def g_apply(params, x, t, s, labels):
        """g_θ(x, t, s): EDM preconditioning at t (EDM Table 1), the net conditioned on c_noise(t) and c_noise(s)."""
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        s = jnp.broadcast_to(jnp.asarray(s, x.dtype), x.shape[:1])
        c_skip, c_out, c_in, c_noise = preconditioning.edm_scalings(t, f.sigma_data)
        _, _, _, c_noise_s = preconditioning.edm_scalings(s, f.sigma_data)
        out = nets.net.apply({"params": params}, broadcast_to_data(c_in, x) * x, c_noise, labels,
                             c_noise_target=c_noise_s)
        return broadcast_to_data(c_skip, x) * x + broadcast_to_data(c_out, x) * out

    def G(params, labels):
        return ctm_obj.trajectory_map(lambda x, t, s: g_apply(params, x, t, s, labels))

    def init(rng, batch):
        k_net, k_fit = jax.random.split(rng)
        x = jnp.asarray(batch["x"][:1])
        labels = jnp.zeros((1,), jnp.int32) if nets.conditional else None
        sigma = jnp.ones((1,), x.dtype)
        params = nets.net.init(k_net, x, sigma, labels, c_noise_target=sigma)["params"]
        if b.init == "teacher":  # every weight but the (zero-output) target embedding comes from the teacher
            plain, _ = distillation.init_generator_and_fake(config, NAME, nets, k_fit, batch, with_fake=False)
            params = dict(params, **plain)
        frozen = {"teacher": nets.teacher_params}
        if not use_gan:
            return {"online": params}, frozen
        if disc.feature_params is not None:
            frozen["features"] = disc.feature_params
        head_params = disc.init(jax.random.fold_in(k_net, 1), frozen, x)
        return {"discriminator": head_params, "online": params}, frozen

    def draw(state, batch, rng):
        """Per-example (t, u, s) on the grid, x_t, and the teacher's k Heun steps x_u (module doc)."""
        x = batch["x"]
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        teacher = distillation.teacher_fn(nets, state, labels)
        k = ctm_obj.draw_heun_steps(jax.random.fold_in(rng, HEUN_STEPS_STREAM), int(b.heun_steps),
                                    b.heun_step_strategy)                     # one k per batch, as CTM
        i, j = ctm_obj.draw_pair_indices(keys, k, num_scales)
        u_index = i + k
        t, u, s = grid[i], grid[u_index], grid[j]
        x_t = x + broadcast_to_data(t, x) * distillation.normal_like(keys, 4, shape)
        x_u = jax.lax.stop_gradient(ctm_obj.teacher_heun_chain(teacher, x_t, grid, i, k))
        return keys, labels, (t, u, s, x_t, x_u), k.astype(jnp.float32)

    def target_of(state, online):
        return jax.lax.stop_gradient(state.moving["target"] if float(b.target_ema) > 0 else online)

    def estimate(p, target_params, labels, t, s, x_t):
        """x_est = G_{sg θ⁻}(G_θ(x_t, t, s), s, σ_min) (docs/methods.md §13.1)."""
        return G(target_params, labels)(G(p, labels)(x_t, t, s), s, jnp.full_like(s, f.sigma_min))

    def discriminator_loss(params, state, batch, rng):
        """Hinge on real x vs sg x_est of the current generator (CTM's GAN stage; ADD §3.2 hinge)."""
        _, labels, (t, _, s, x_t, _), _ = draw(state, batch, rng)
        online = state.params["online"]
        fake = estimate(online, target_of(state, online), labels, t, s, x_t)
        return discriminator.discriminator_hinge_loss(disc, params, state.frozen, labels, rng, batch["x"], fake)

    def loss(online, state, batch, rng):
        x = batch["x"]
        keys, labels, (t, u, s, x_t, x_u), steps_taken = draw(state, batch, rng)
        target_params = target_of(state, online)

        uniform_dsm = jax.vmap(lambda key: jax.random.uniform(jax.random.fold_in(key, 7), ()))(keys)
        lognormal_rows = batch["index"] % 2 == 0                                # CTM: half the batch lognormal
        if b.dsm_sigmas == "lognormal":
            lognormal_rows = jnp.ones_like(lognormal_rows)
        sigma_dsm = ctm_obj.dsm_sigmas(distillation.normal_like(keys, 5, ()), uniform_dsm, lognormal_rows,
                                       float(b.p_mean), float(b.p_std), f.sigma_min, f.sigma_max, f.rho,
                                       float(b.dsm_uniform_fraction))
        dsm_noise = distillation.normal_like(keys, 6, shape)
        x_dsm = x + broadcast_to_data(sigma_dsm, x) * dsm_noise
        dsm_lambda = 1.0 / sigma_dsm ** 2 + 1.0 / f.sigma_data ** 2            # EDM λ(σ) (EDM eq. 8)

        def ctm_loss(p):
            x_est, x_tgt = ctm_obj.soft_consistency_points(
                G(p, labels), G(target_params, labels), G(jax.lax.stop_gradient(p), labels), x_t, t, x_u, u, s,
                f.sigma_min)
            return jnp.mean(distance(x_est, x_tgt))

        def dsm_loss(p):
            err = jnp.mean(((g_apply(p, x_dsm, sigma_dsm, sigma_dsm, labels) - x) ** 2).reshape(x.shape[0], -1), 1)
            return jnp.mean(dsm_lambda * err)

        l_ctm, l_dsm = ctm_loss(online), dsm_loss(online)
        metrics = {"loss_ctm": l_ctm, "loss_dsm": l_dsm, "t_mean": jnp.mean(t), "heun_steps_mean": jnp.mean(steps_taken)}
        name = next(n for n in LAST_LAYERS if n in online)

        def last_layer_grad(fn):
            return jax.grad(lambda leaf: fn(dict(online, **{name: leaf})))(online[name])
        total = l_ctm
        g_ctm = last_layer_grad(ctm_loss) if (b.adaptive_dsm or use_gan) else None
        if float(b.dsm_weight) > 0:
            weight = jnp.asarray(float(b.dsm_weight))
            if b.adaptive_dsm:
                weight = weight * ctm_obj.adaptive_weight(g_ctm, last_layer_grad(dsm_loss))
            metrics["dsm_weight"] = weight
            total = total + weight * l_dsm
        if use_gan:
            k_augment = jax.random.fold_in(rng, discriminator.AUGMENT_STREAM)
            frozen_d = dmd_objective.with_frozen_parameters(
                lambda p, xx: disc.logits(p, state.frozen, labels, k_augment)(xx), state.params["discriminator"])

            def gan_loss(p):
                logits = frozen_d(estimate(p, target_params, labels, t, s, x_t))
                per_logit = logits.reshape(logits.shape[0], -1).shape[1]
                return jnp.mean(add_objective.hinge_generator_loss(logits)) / per_logit
            l_gan = gan_loss(online)
            gan_weight = float(b.gan_weight) * ctm_obj.adaptive_weight(g_ctm, last_layer_grad(gan_loss),
                                                                       max_weight=10.0, min_weight=0.01)
            metrics.update(loss_gan=l_gan, gan_weight=gan_weight)
            total = total + gan_weight * l_gan
        return total, jax.lax.stop_gradient(metrics)

    def sample(state, rng, num_samples, *, nfe, options, labels=None, params=None):
        params = state.ema["online"] if params is None else params
        cond = None if labels is None else jnp.asarray(labels, jnp.int32)
        sigmas = sampling_sigmas(config, nfe)
        keys = jax.random.split(rng, len(sigmas))
        batch_shape = (num_samples,) + shape
        x_top = sigmas[0] * cm_sampling.per_sample_normal(keys[0], batch_shape)
        x = ctm_obj.gamma_sample(G(params, cond), x_top, sigmas, float(options.gamma),
                                 lambda n: cm_sampling.per_sample_normal(keys[n + 1], batch_shape))
        return x if nets.data_range is None else jnp.clip(x, *nets.data_range)

    moving = ()
    if float(b.target_ema) > 0:
        moving = (base.Moving("target", source="online", decay=lambda step: jnp.asarray(float(b.target_ema))),)
    trained = (common.trained_set(config, "online", loss, sampled=True),)
    if use_gan:
        trained = (common.trained_set(config, "discriminator", discriminator_loss),) + trained
    return base.Method(name=NAME, init=init, trained=trained,
                       moving=moving, sample=sample, options=CTMOptions(gamma=float(b.gamma)),
                       default_nfes=(1, 2, 4))


@dataclasses.dataclass(frozen=True)
class CTMOptions:
    """CTM γ-sampling (CTM Alg. 2): ``gamma`` 0 deterministic long jumps … 1 CM-style re-noising (``ctm.gamma``)."""
    gamma: float
