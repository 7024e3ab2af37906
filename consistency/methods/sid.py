"""SiD — Score identity Distillation (Zhou et al. 2024, arXiv 2404.04057, `mingyuanzhou/SiD`; docs/methods.md §12).

Trained sets, in step order (docs/methods.md §12 "Update ratio": alternating 1:1, one fake step then one generator step,
each on a freshly generated batch; ``config.sid.ttur`` > 1 updates the generator every ttur-th step):

* 'fake' — D_fake, EDM DSM on sg(x_g), ln σ ~ N(−1.2, 1.2²), λ_EDM, summed over pixels, batch mean
  (SiD `SID_EDMLoss`; :func:`consistency.objectives.sid.fake_score_loss`);
* 'generator' — G_θ, x_g = G_θ(σ_init z, σ_init) with σ_init = 2.5; the code-form loss
  ⟨D_r − D_f, (D_r − x_g) − α(D_r − D_f)⟩ / sg(max(mean|x_g − D_r|, 1e-5)) at x_t = x_g + σn, σ from the SiD
  sampler (u ~ U[0, 0.8]), summed over pixels and scaled by 100/batch (SiD `loss_scaling_G`). Gradients flow through
  x_g and through the *inputs* of both denoisers; only their parameters are frozen
  (:func:`consistency.objectives.dmd.with_frozen_parameters`). The fake set's params it sees are the ones just
  updated in this step. Non-finite examples are masked out (0/1 mask, renormalised mean); both sets' gradients
  go through SiD's NaN → 0, ±inf → ±1e5 in the loop (:func:`consistency.methods.base.sanitize_gradients`).

Frozen: {'teacher'}. Sampling: one step, G(σ_init z), from the generator's EMA (SiD: half-life 0.5M images).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from consistency.core import schema
from consistency.methods import base
from consistency.methods.components import common, distillation
from consistency.objectives import dmd as dmd_objective
from consistency.objectives import sid as sid_objective

NAME = "sid"


# config.sid: SiD, Zhou et al. 2024 (docs/methods.md §12; mingyuanzhou/SiD).
CONFIG_BLOCK = "sid"
CONFIG_FIELDS = {
    **distillation.init_fields('G and D_fake start from the teacher (SiD)'),
    "sigma_init": schema.Field(2.5, 'x_g = G(σ_init z, σ_init) (SiD `init_sigma`)',
                               lo=0, hi="diffusion.sigma_max", lo_open=True, fix="use SiD's 2.5 (within (0, diffusion.sigma_max])"),
    "alpha": schema.Field(1.2, 'α of the code-form loss (SiD CIFAR-10/ImageNet; 1.0 for AFHQ)',
                          lo=0, fix="use SiD's 1.2 (1.0 for AFHQ); α >= 0"),
    "t_max_fraction": schema.Field(0.8, "generator σ: u ~ U[0, 0.8] on the ρ-schedule, σ ∈ [0.002, 24.4] (SiD tmax = "
                                        "800)", lo=0, hi=1, lo_open=True, fix="use SiD's 0.8 (t_max = 800 of 1000)"),
    "normalise": schema.Field(True, 'divide by sg(max(mean|x_g − D_r|, 1e-5)) (SiD `weight_factor`)'),
    "generator_loss_scale": schema.Field(100.0, 'summed-over-pixels loss × 100/batch (SiD `loss_scaling_G`)',
                                         lo=0, lo_open=True, fix="use SiD's 100 (loss_scaling_G)"),
    "fake_p_mean": schema.Field(-1.2, 'fake DSM σ: ln σ ~ N(−1.2, 1.2²) (EDM lognormal; SiD)'),
    "fake_p_std": schema.Field(1.2, "std of the fake DSM's ln σ (EDM lognormal; SiD)", lo=0, lo_open=True),
    "ttur": distillation.ttur_field(1, 'fake updates per generator update (SiD: alternating 1:1)'),
}
TEACHER_USE = "required"


def validate_config(config) -> None:
    """``config.sid`` (one ConfigError line naming the field)."""
    schema.check_block(config, CONFIG_BLOCK, CONFIG_FIELDS)   # every field: type, choices, bounds
    distillation.validate_common(config, NAME)
    distillation.validate_eval_nfes(config, NAME, 1)


def make(config, dataset) -> base.Method:
    validate_config(config)
    s, f = config.sid, config.diffusion
    nets = distillation.build_networks(config, dataset)
    shape = nets.example_shape
    sigma_init = float(s.sigma_init)

    def init(rng, batch):
        generator, fake = distillation.init_generator_and_fake(config, NAME, nets, rng, batch)
        return {"generator": generator, "fake": fake}, {"teacher": nets.teacher_params}

    def fake_loss(params, state, batch, rng):
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        z = distillation.normal_like(keys, 1, shape)
        x_g = jax.lax.stop_gradient(distillation.generate(nets, state.params["generator"], z, sigma_init, labels))
        sigma = jax.vmap(lambda k: sid_objective.sample_fake_score_sigmas(k, (), s.fake_p_mean, s.fake_p_std))(
            distillation.fold(keys, 2))                                       # docs/methods.md §1.4 EDM lognormal
        noise = distillation.normal_like(keys, 3, shape)
        per_example, mask = sid_objective.fake_score_loss(distillation.denoiser_fn(nets, params, labels), x_g, noise,
                                                          sigma, f.sigma_data, reduce="sum")   # docs/methods.md §12
        loss = sid_objective.masked_mean(per_example, mask)                   # SiD: sum × ls, ls = 1/batch
        return loss, {"kept_fraction": jnp.mean(mask.astype(jnp.float32))}

    def generator_loss(params, state, batch, rng):
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        z = distillation.normal_like(keys, 1, shape)
        x_g = distillation.generate(nets, params, z, sigma_init, labels)      # docs/methods.md §12: G(σ_init z, σ_init)
        sigma = jax.vmap(lambda k: sid_objective.sample_generator_sigmas(
            k, (), s.t_max_fraction, f.sigma_min, f.sigma_max, f.rho))(distillation.fold(keys, 2))  # §1.4 SiD
        noise = distillation.normal_like(keys, 3, shape)
        real = distillation.teacher_fn(nets, state, labels)
        fake = dmd_objective.with_frozen_parameters(lambda p, x, sig: nets.denoiser(p, x, sig, labels),
                                                    state.params["fake"])     # params frozen, inputs not (§12)
        per_example, aux = sid_objective.generator_loss(x_g, noise, sigma, real, fake, float(s.alpha),
                                                        bool(s.normalise), reduce="sum")   # docs/methods.md §12 code form
        loss = sid_objective.masked_mean(per_example, aux["mask"]) * float(s.generator_loss_scale)  # × 100/batch
        metrics = distillation.metric_means({"normaliser": aux["normaliser"],
                                             "score_gap": jnp.mean(jnp.abs(aux["real_denoised"] - aux["fake_denoised"])
                                                                   .reshape(x_g.shape[0], -1), axis=1)})
        metrics["kept_fraction"] = jnp.mean(aux["mask"].astype(jnp.float32))
        return loss, metrics

    every = int(s.ttur)
    trained = (common.trained_set(config, "fake", fake_loss),
               common.trained_set(config, "generator", generator_loss, every=every,
                                  phase=distillation.ttur_phase(every), sampled=True))
    return base.Method(name=NAME, init=init, trained=trained, sample=distillation.make_sample(nets, [sigma_init]),
                       sample_params="generator", sampling_nfe=1,
                       default_nfes=distillation.default_nfes(1))
