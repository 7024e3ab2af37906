"""ECT: easy consistency tuning (Geng et al. 2024; `locuslab/ect`; METHODS.md §7).

Consistency *tuning*: start D_θ from a trained EDM teacher (``config.teacher.workdir``; from scratch when unset),
draw ln t ~ N(−1.1, 2.0²), pair it with r = max(0, t(1 − q^{−(a+1)}(1 + k·sigmoid(−bt)))) where the stage
a = ⌊k/steps_per_stage⌋ grows during training (r → t), and minimise ‖D_θ(y+tε, t) − sg D_θ(y+rε, r)‖₂/(t − r).
Training uses plain EDM preconditioning; sampling applies the CM boundary at ``ecm.sigma_min_eval`` (ECMPrecond).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from consistency.diffusion import cm_sampling, schedules
from consistency.methods import base, common
from consistency.methods.cm import _init_from, sampling_sigmas
from consistency.objectives import ecm as ecm_objective


def make(config, dataset) -> base.Method:
    from consistency.optim import make_optimizer

    e, f = config.ecm, config.diffusion
    net = common.build_net(config, dataset.example_shape)
    train_apply = common.edm_denoiser(net, f.sigma_data)
    eval_apply = common.consistency_function(net, e.sigma_min_eval, f.sigma_data)
    optimizer = make_optimizer(config.optim, config.training.num_steps)
    ema_decay = common.sampling_ema_decay(config)
    conditional = common.is_conditional(config)
    example_shape = tuple(dataset.example_shape)
    teacher_params = common.load_teacher(config, dataset)[0] if config.teacher.workdir else None
    data_range = getattr(dataset, "data_range", None) if config.sampling.clip else None

    def init(rng, batch):
        params = common.init_params(net, rng, batch["x"], conditional)
        if teacher_params is not None:
            params = _init_from(params, teacher_params)
        return base.TrainState(step=jnp.zeros((), jnp.int32), params={"online": params},
                               opt_state={"online": optimizer.init(params)},
                               ema={"online": jax.tree.map(jnp.copy, params)}, frozen={})

    def train_step(state, batch, rng):
        y = batch["x"]
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        t = jax.vmap(lambda k: jnp.exp(e.p_mean + e.p_std * jax.random.normal(jax.random.fold_in(k, 21))))(keys)
        t = jnp.clip(t, f.sigma_min, f.sigma_max)
        stage = schedules.ect_stage(state.step, e.steps_per_stage)
        r = schedules.ect_r_from_t(t, stage, e.q, e.k, e.b)
        noise = base.per_example_normal(jax.vmap(lambda k: jax.random.fold_in(k, 22))(keys), y.shape[1:], y.dtype)
        dropout_rng = jax.random.fold_in(rng, 23)
        online = state.params["online"]

        def loss_fn(p):
            def d_online(x, s):
                return train_apply(p, x, s, labels, train=True, dropout_rng=dropout_rng)

            def d_target(x, s):
                return train_apply(jax.lax.stop_gradient(p), x, s, labels, train=True, dropout_rng=dropout_rng)
            return jnp.mean(ecm_objective.ecm_loss(d_online, d_target, y, noise, t, r, e.huber_c))

        loss, grads = jax.value_and_grad(loss_fn)(online)
        state = base.apply_gradients(state, "online", grads, optimizer, ema_decay)
        metrics = {"loss": loss, "stage": stage.astype(jnp.float32), "r_over_t": jnp.mean(r / t)}
        return state.replace(step=state.step + 1), metrics

    def sample(state, rng, num_samples, labels=None, sigmas=None, num_steps=None, params=None):
        sigmas = sampling_sigmas(config, sigmas, num_steps)
        params = state.ema["online"] if params is None else params
        cond = None if labels is None else jnp.asarray(labels, jnp.int32)
        return cm_sampling.consistency_sample(lambda x, s, c: eval_apply(params, x, s, c), rng,
                                              (num_samples,) + example_shape, sigmas, e.sigma_min_eval,
                                              data_range, cond)

    return base.Method(name="ecm", init=init, train_step=train_step, sample=sample)
