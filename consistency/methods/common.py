"""Pieces every method shares: building the network as a denoiser or a consistency function, parameter init,
label dropout for CFG, and loading a teacher (a trained EDM workdir or a closed-form oracle).

A *denoiser apply* has the signature ``apply(params, x, sigma, labels=None, train=False, dropout_rng=None)`` and
returns x0_hat; binding ``params`` gives the DESIGN.md contract ``D(x, sigma, cond)``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from consistency.config import ConfigError
from consistency.diffusion import preconditioning

DenoiserApply = Callable[..., jax.Array]


def is_conditional(config) -> bool:
    return int(config.model.num_classes) > 0


def build_net(config, example_shape):
    from consistency.nets import make_net
    return make_net(config.model, tuple(example_shape))


def _preconditioned_apply(net, scalings_fn) -> DenoiserApply:
    def apply(params, x, sigma, labels=None, train=False, dropout_rng=None):
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
        rngs = {"dropout": dropout_rng} if (train and dropout_rng is not None) else {}

        def net_apply(x_in, c_noise):
            return net.apply({"params": params}, x_in, c_noise, labels, train=train, rngs=rngs)

        return preconditioning.precondition(net_apply, x, sigma, scalings_fn(sigma))
    return apply


def edm_denoiser(net, sigma_data: float) -> DenoiserApply:
    """D_φ(x, σ) = c_skip x + c_out F(c_in x, c_noise) with EDM Table 1 scalings (METHODS.md §1.1)."""
    return _preconditioned_apply(net, functools.partial(preconditioning.edm_scalings, sigma_data=sigma_data))


def consistency_function(net, sigma_min: float, sigma_data: float) -> DenoiserApply:
    """f_θ(x, σ) with the CM boundary scalings, so f_θ(x, σ_min) = x exactly (seed eq. 8; METHODS.md §1.1)."""
    return _preconditioned_apply(net, functools.partial(preconditioning.consistency_scalings, sigma_min=sigma_min,
                                                        sigma_data=sigma_data))


def init_params(net, rng, example_x, conditional: bool):
    """Initialise network params on one example batch (shapes only matter)."""
    x = jnp.asarray(example_x[:1])
    labels = jnp.zeros((1,), jnp.int32) if conditional else None
    p_rng, d_rng = jax.random.split(rng)
    return net.init({"params": p_rng, "dropout": d_rng}, x, jnp.zeros((1,), x.dtype), labels, train=False)["params"]


def drop_labels(keys, labels, p: float, null_label: int):
    """Replace each label by the null label with probability p (CFG training, Ho & Salimans 2022)."""
    if p <= 0:
        return labels
    u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 7)))(keys)
    return jnp.where(u < p, null_label, labels)


def batch_labels(config, batch):
    return batch["label"].astype(jnp.int32) if is_conditional(config) else None


def sampling_ema_decay(config) -> float:
    """Per-step sampling EMA: a half-life in images (EDM) overrides the plain decay (METHODS.md §1.5)."""
    from consistency.methods.base import ema_decay_from_half_life
    t = config.training
    if t.ema_half_life_images > 0:
        return ema_decay_from_half_life(t.ema_half_life_images, t.batch_size)
    return t.ema_decay


# ----------------------------------------------------------------------------------------------------------
# Teachers: any denoiser with params passed as an argument (DESIGN.md "A denoiser is a function").
# ----------------------------------------------------------------------------------------------------------

def load_teacher(config, dataset) -> tuple[Any, DenoiserApply]:
    """Return (teacher_params, teacher_apply) from config.teacher.

    * ``teacher.workdir``: the EMA params of a trained EDM run (its own saved config builds the network);
    * ``teacher.oracle``: a closed-form denoiser whose "params" are the data that define it, so it too is an
      argument of the compiled step: 'mixture' (exact, toy mixtures), 'empirical' (seed eq. 6 over the training split),
      'gaussian' (moment-matched Gaussian).
    """
    from consistency import oracles
    t = config.teacher
    if t.workdir and t.oracle:
        raise ConfigError("config.teacher: set either teacher.workdir or teacher.oracle, not both")
    if t.workdir:
        from consistency.api import load
        try:
            loaded = load(t.workdir)
        except FileNotFoundError as e:
            raise ConfigError(f"config.teacher.workdir: no trained checkpoint in {t.workdir!r} ({e}); train one with "
                              "configs/digits_edm.py or point teacher.workdir at an EDM workdir") from None
        if loaded.config.method != "edm":
            raise ConfigError(f"config.teacher.workdir: {t.workdir!r} holds a {loaded.config.method!r} run; "
                              "a teacher must be an 'edm' run")
        net = build_net(loaded.config, dataset.example_shape)
        return loaded.params, edm_denoiser(net, loaded.config.diffusion.sigma_data)
    if t.oracle == "mixture":
        if getattr(dataset, "mixture", None) is None:
            raise ConfigError(f"config.teacher.oracle: 'mixture' needs a toy mixture dataset, got {config.data.name!r}; "
                              "use teacher.oracle='empirical'")
        w, m, s = dataset.mixture
        params = {"weights": jnp.asarray(w, jnp.float32), "means": jnp.asarray(m, jnp.float32),
                  "stds": jnp.asarray(s, jnp.float32)}
        return params, lambda p, x, sigma, labels=None, **_: oracles.mixture_denoiser(
            p["weights"], p["means"], p["stds"])(x, sigma)
    if t.oracle == "empirical":
        x, _ = dataset.arrays()
        params = {"bank": jnp.asarray(x, jnp.float32)}
        return params, lambda p, x, sigma, labels=None, **_: oracles.empirical_denoiser(p["bank"])(x, sigma)
    if t.oracle == "gaussian":
        x, _ = dataset.arrays()
        params = {"mean": jnp.asarray(x.mean(0), jnp.float32), "std": jnp.asarray(x.std(0), jnp.float32)}
        return params, lambda p, x, sigma, labels=None, **_: oracles.gaussian_denoiser(p["mean"], p["std"])(x, sigma)
    raise ConfigError("config.teacher: this method needs a teacher; set teacher.workdir to a trained EDM run "
                      "(configs/digits_edm.py) or teacher.oracle to 'mixture' | 'empirical' | 'gaussian'")
