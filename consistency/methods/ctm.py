"""CTM — Consistency Trajectory Models (Kim et al. 2023, arXiv 2310.02279, `sony/ctm`; METHODS.md §13.1).

One network jumps between any two noise levels: G_θ(x_t, t, s) = (s/t)·x_t + (1 − s/t)·g_θ(x_t, t, s), with g_θ the
EDM-preconditioned network at t that also embeds the target level s (the nets' ``c_noise_target`` input, its own
zero-initialised embedding, so a network copied from the EDM teacher starts as the teacher's DDIM jump). The
notebook's VE multistep CM (seed eq. 51) is this map with s fixed to a segment boundary.

Trained set 'online' (sampled; θ⁻ = the Moving set 'target', μ = ``ctm.target_ema``) with the loss, per example
(``config.ctm``; grid = the descending ``num_scales``-point Karras grid, index 0 = σ_max):

* t = grid[i], i ~ U{0 … N−2}; u = grid[i + k], k ~ U{1 … heun_steps} (clipped at the grid end): the teacher's Heun
  solver from t to u, k steps; s = grid[j], j ~ U{i + k … N−1} (s ≤ u ≤ t; METHODS.md §13.1 "s ~ U[0, t]" on the
  grid below u, so that the target's jump u → s is backward);
* soft consistency (METHODS.md §13.1): d(G_{sg θ⁻}(G_θ(x_t, t, s), s, σ_min), sg G_{θ⁻}(G_{sg θ}(x_u, u, s), s, σ_min)),
  d = ``ctm.distance``;
* DSM auxiliary (METHODS.md §13.1): λ_EDM(σ)‖g_θ(x + σn, σ, σ) − x‖², ln σ ~ N(P_mean, P_std²), weighted by
  ``ctm.dsm_weight`` × (the adaptive ratio ‖∇_last L_CTM‖/‖∇_last L_DSM‖ when ``ctm.adaptive_dsm``), the gradients
  taken with respect to the network's last layer ('dense_out' / 'conv_out');
* the GAN term of CTM is not built: CTM adds it in a separate fine-tuning phase (CIFAR-10 batch 528 after CTM+DSM);
  the discriminator heads of ``consistency/nets/heads.py`` are the place to add it.

Frozen: {'teacher'}. Sampling: γ-sampling (:func:`consistency.objectives.ctm.gamma_sample`) on n + 1 Karras points
σ_max → σ_min (NFE = n), γ = ``ctm.gamma``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from consistency.diffusion import cm_sampling, distances, preconditioning, schedules
from consistency.diffusion.processes import broadcast_to_data
from consistency.methods import base, common, distillation
from consistency.objectives import ctm as ctm_obj

NAME = "ctm"
DISTANCES = ("l2", "pseudo_huber")
LAST_LAYERS = ("dense_out", "conv_out")


def validate_config(config) -> None:
    """``config.ctm`` (one ConfigError line naming the field)."""
    b, f = config.ctm, config.diffusion
    distillation.validate_common(config, NAME)
    distillation.number(b.num_scales, "ctm.num_scales", 2, integer=True, fix="use CTM's 18 (CIFAR-10) or 40 (ImageNet)")
    distillation.number(b.heun_steps, "ctm.heun_steps", 1, b.num_scales - 1, integer=True,
                        fix=f"use 1 … num_scales − 1 = {b.num_scales - 1}")
    distillation.number(b.target_ema, "ctm.target_ema", 0, 1, hi_open=True, fix="use CTM's 0.999, or 0 for θ⁻ = sg θ")
    distillation.choice(b.distance, "ctm.distance", DISTANCES)
    distillation.number(b.huber_c, "ctm.huber_c", fix="use a pseudo-Huber c > 0, or < 0 for 0.00054·√d")
    distillation.number(b.dsm_weight, "ctm.dsm_weight", 0, fix="use 1 (CTM), or 0 for no DSM term")
    distillation.flag(b.adaptive_dsm, "ctm.adaptive_dsm")
    distillation.number(b.p_std, "ctm.p_std", 0, lo_open=True)
    distillation.number(b.p_mean, "ctm.p_mean")
    distillation.number(b.gamma, "ctm.gamma", 0, 1, fix="use 0 (long jumps, CTM's default) … 1 (CM-style)")
    distillation.require(f.process == "ve", "diffusion.process", f"{f.process!r}: CTM is in VE coordinates", "use 've'")


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
        params = nets.net.init({"params": k_net, "dropout": k_net}, x, sigma, labels, c_noise_target=sigma)["params"]
        if b.init == "teacher":  # every weight but the (zero-output) target embedding comes from the teacher
            plain, _ = distillation.init_generator_and_fake(config, NAME, nets, k_fit, batch, with_fake=False)
            params = dict(params, **{k: v for k, v in plain.items()})
        return {"online": params}, {"teacher": nets.teacher_params}

    def loss(online, state, batch, rng):
        x = batch["x"]
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        target_params = state.moving["target"] if float(b.target_ema) > 0 else online
        target_params = jax.lax.stop_gradient(target_params)
        teacher = distillation.teacher_fn(nets, state, labels)
        last = num_scales - 1
        i = distillation.per_example_uniform_index(keys, 1, 0, last - 1)
        k = distillation.per_example_uniform_index(keys, 2, 1, int(b.heun_steps))
        u_index = jnp.minimum(i + k, last)
        j = jax.vmap(lambda key, lo: jax.random.randint(jax.random.fold_in(key, 3), (), lo, last + 1))(keys, u_index)
        t, u, s = grid[i], grid[u_index], grid[j]
        noise = distillation.normal_like(keys, 4, shape)
        x_t = x + broadcast_to_data(t, x) * noise
        x_u = jax.lax.stop_gradient(ctm_obj.teacher_heun_steps(teacher, x_t, grid, i, u_index, int(b.heun_steps)))

        sigma_dsm = jnp.exp(float(b.p_mean) + float(b.p_std) * distillation.normal_like(keys, 5, ()))  # EDM §5
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
        metrics = {"loss_ctm": l_ctm, "loss_dsm": l_dsm, "t_mean": jnp.mean(t), "heun_steps_mean": jnp.mean(
            (u_index - i).astype(jnp.float32))}
        if float(b.dsm_weight) == 0:
            return l_ctm, jax.lax.stop_gradient(metrics)
        weight = jnp.asarray(float(b.dsm_weight))
        if b.adaptive_dsm:
            name = next(n for n in LAST_LAYERS if n in online)

            def with_last(fn):
                return lambda leaf: fn(dict(online, **{name: leaf}))
            g_ctm = jax.grad(with_last(ctm_loss))(online[name])
            g_dsm = jax.grad(with_last(dsm_loss))(online[name])
            weight = weight * ctm_obj.adaptive_weight(g_ctm, g_dsm)
        metrics["dsm_weight"] = weight
        return l_ctm + weight * l_dsm, jax.lax.stop_gradient(metrics)

    def sample(state, rng, num_samples, labels=None, num_steps=1, params=None, gamma=None):
        params = state.ema["online"] if params is None else params
        cond = None if labels is None else jnp.asarray(labels, jnp.int32)
        sigmas = sampling_sigmas(config, num_steps)
        keys = jax.random.split(rng, len(sigmas))
        batch_shape = (num_samples,) + shape
        x_top = sigmas[0] * cm_sampling.per_sample_normal(keys[0], batch_shape)
        x = ctm_obj.gamma_sample(G(params, cond), x_top, sigmas, float(b.gamma if gamma is None else gamma),
                                 lambda n: cm_sampling.per_sample_normal(keys[n + 1], batch_shape))
        return x if nets.data_range is None else jnp.clip(x, *nets.data_range)

    moving = ()
    if float(b.target_ema) > 0:
        moving = (base.Moving("target", source="online", decay=lambda step: jnp.asarray(float(b.target_ema))),)
    return base.Method(name=NAME, init=init, trained=(common.trained_set(config, "online", loss, sampled=True),),
                       moving=moving, sample=sample, nfe_kwargs=lambda n: {"num_steps": int(n)},
                       default_nfes=(1, 2, 4))
