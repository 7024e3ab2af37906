"""ECT: easy consistency tuning (Geng et al. 2024; `locuslab/ect`; docs/methods.md §7).

Consistency *tuning*: start D_θ from a trained EDM teacher (``config.teacher.workdir``; from scratch when unset),
draw ln t ~ N(−1.1, 2.0²) (unclipped, as ECT; ``ecm.clip_t``), pair it with
r = max(0, t(1 − q^{−(a+1)}(1 + k·sigmoid(−bt)))) where the stage a = ⌊k/steps_per_stage⌋ grows during training
(r → t), and minimise ‖D_θ(y+tε, t) − sg D_θ(y+rε, r)‖₂/(t − r).
Training uses plain EDM preconditioning; sampling applies the CM boundary at ``ecm.sigma_min_eval`` (ECMPrecond).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from consistency.core import schema
from consistency.methods.components import teachers
from consistency.diffusion import cm_sampling, schedules
from consistency.methods import base
from consistency.methods.components import common
from consistency.methods.components.cm import _init_from
from consistency.objectives import ecm as ecm_objective


# config.ecm: ECT, Geng et al. 2024 (docs/methods.md §7). r = t·(1 − q^{−(a+1)}(1 + k·sigmoid(−b t))) stays in [0, t).
CONFIG_BLOCK = "ecm"
CONFIG_FIELDS = {
    "p_mean": schema.Field(-1.1, "ln t ~ N(p_mean, p_std²) (ECT: −1.1)"),
    "p_std": schema.Field(2.0, "std of ln t (ECT: 2.0)", lo=0, lo_open=True),
    "q": schema.Field(2.0, "r → t as q^{−(a+1)} shrinks with the stage a (ECT: 2)", lo=1, lo_open=True,
                      fix="use q > 1 so that r → t as the stages grow (ECT: 2)"),
    "k": schema.Field(8.0, "r = t·(1 − q^{−(a+1)}(1 + k·sigmoid(−b t))) (ECT: 8)", lo=0,
                      fix="use k >= 0 so that r stays below t (ECT: 8)"),
    "b": schema.Field(1.0, "slope b of the sigmoid in r(t) (ECT: 1)", lo=0, fix="use b >= 0 (ECT: 1)"),
    "steps_per_stage": schema.Field(25_000, "CIFAR-10: double = 250 ticks of 12.8k images at batch 128 → 25k "
                                    "iterations", lo=1),
    "huber_c": schema.Field(0.0, "0 → un-squared ‖·‖₂ (ECT default); > 0 → pseudo-Huber", lo=0,
                            fix="use 0 (un-squared L2, ECT) or a pseudo-Huber c > 0"),
    "sigma_min_eval": schema.Field(0.003, "CM boundary of the sampling consistency function (ECMPrecond, "
                                   "docs/methods.md §7)", lo=0, hi="diffusion.sigma_max", lo_open=True, hi_open=True),
    "clip_t": schema.Field(False, "False: t = e^{P_mean + P_std n} as drawn (locuslab/ect loss.py); True: clip to "
                           "[σ_min, σ_max]"),
}
TEACHER_USE = "optional"   # tuning starts from a trained EDM workdir's weights (or from scratch), never an oracle


def sampling_boundary(config) -> float:
    """σ of the sampler's CM boundary f(x, σ) = x: ``ecm.sigma_min_eval`` (ECMPrecond), not diffusion.sigma_min."""
    return float(config.ecm.sigma_min_eval)



def sample_t(keys, p_mean: float, p_std: float, clip_to=None):
    """ln t ~ N(P_mean, P_std²) per example, not clipped (locuslab/ect `training/loss.py`, ``ECMLoss.__call__``: with
    ECT's (−1.1, 2.0) 0.83 % of the draws lie outside [0.002, 80]); ``clip_to`` = (lo, hi) clips (``ecm.clip_t``)."""
    t = jax.vmap(lambda k: jnp.exp(p_mean + p_std * jax.random.normal(jax.random.fold_in(k, 21))))(keys)
    return t if clip_to is None else jnp.clip(t, *clip_to)


def make(config, dataset) -> base.Method:
    e, f = config.ecm, config.diffusion
    net = common.build_net(config, dataset.example_shape)
    train_apply = common.edm_denoiser(net, f.sigma_data)
    eval_apply = common.consistency_function(net, e.sigma_min_eval, f.sigma_data)
    conditional = common.is_conditional(config)
    example_shape = tuple(dataset.example_shape)
    teacher_params = teachers.load_teacher(config, dataset)[0] if config.teacher.workdir else None
    data_range = getattr(dataset, "data_range", None) if config.sampling.clip else None

    def init(rng, batch):
        params = common.init_params(net, rng, batch["x"], conditional)
        if teacher_params is not None:
            params = _init_from(params, teacher_params)
        return {"online": params}, {}

    def loss(online, state, batch, rng):
        y = batch["x"]
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        t = sample_t(keys, e.p_mean, e.p_std, (f.sigma_min, f.sigma_max) if e.clip_t else None)
        stage = schedules.ect_stage(state.step, e.steps_per_stage)
        r = schedules.ect_r_from_t(t, stage, e.q, e.k, e.b)
        noise = base.per_example_normal(jax.vmap(lambda k: jax.random.fold_in(k, 22))(keys), y.shape[1:], y.dtype)
        dropout_rng = jax.random.fold_in(rng, 23)

        def d_online(x, s):
            return train_apply(online, x, s, labels, train=True, dropout_rng=dropout_rng)

        def d_target(x, s):
            return train_apply(jax.lax.stop_gradient(online), x, s, labels, train=True, dropout_rng=dropout_rng)
        value = jnp.mean(ecm_objective.ecm_loss(d_online, d_target, y, noise, t, r, e.huber_c))
        return value, {"stage": stage.astype(jnp.float32), "r_over_t": jnp.mean(r / t)}

    def sample(state, rng, num_samples, *, nfe, options, labels=None, params=None):
        sigmas = common.cm_sampling_sigmas(config, options.sigmas, nfe)
        params = state.ema["online"] if params is None else params
        cond = None if labels is None else jnp.asarray(labels, jnp.int32)
        return cm_sampling.consistency_sample(lambda x, s, c: eval_apply(params, x, s, c), rng,
                                              (num_samples,) + example_shape, sigmas, e.sigma_min_eval,
                                              data_range, cond)

    return base.Method(name="ecm", init=init, trained=(common.trained_set(config, "online", loss, sampled=True),),
                       sample=sample, options=common.CMOptions(), sampling_nfe=common.cm_sampling_nfe(config),
                       describe_sampler=common.describe_cm_sampler(config), default_nfes=(1, 2))
