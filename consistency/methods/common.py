"""Pieces methods share: declaring a trained set from the config, label dropout for CFG, the sampling σ list.

Networks as denoisers live in :mod:`consistency.networks`, teachers in :mod:`consistency.teachers` (both below
``methods/``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from consistency import optim
from consistency.diffusion import cm_sampling
from consistency.methods import base
from consistency.networks import (build_net, consistency_function, edm_denoiser, init_params,  # noqa: F401
                                  is_conditional)


def trained_set(config, name: str, loss: base.LossFn, *, every: int = 1, phase: int = 0,
                sampled: bool = False) -> base.Trained:
    """A :class:`base.Trained` from the config: optimizer ``config.optim`` overridden by ``config.optim_<name>``, its
    lr schedule counted in this set's own updates (``training.num_steps`` loop steps give
    :func:`base.updates_in` updates), and, when ``sampled``, the sampling EMA of ``config.training`` per update."""
    num_updates = base.updates_in(config.training.num_steps, every, phase)
    optim_config = optim.optim_config_for(config, name)
    return base.Trained(name=name, loss=loss, optimizer=optim.make_optimizer(optim_config, num_updates),
                        learning_rate=optim.learning_rate_schedule(optim_config, num_updates), every=every,
                        phase=phase, ema_decay=sampling_ema_decay(config) if sampled else None)


def sampling_ema_decay(config) -> float:
    """Sampling EMA decay per update: a half-life in images (EDM; one update sees one global batch) overrides the
    plain decay (docs/methods.md §1.5)."""
    t = config.training
    if t.ema_half_life_images > 0:
        return base.ema_decay_from_half_life(t.ema_half_life_images, t.batch_size)
    return float(t.ema_decay)


def drop_labels(keys, labels, p: float, null_label: int):
    """Replace each label by the null label with probability p (CFG training, Ho & Salimans 2022)."""
    if p <= 0:
        return labels
    u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 7)))(keys)
    return jnp.where(u < p, null_label, labels)


def batch_labels(config, batch):
    return batch["label"].astype(jnp.int32) if is_conditional(config) else None


def cm_sampling_sigmas(config, sigmas=None, num_steps=None) -> list[float]:
    """The σ list of a consistency sampler: explicit ``sigmas``; else ``config.sampling.sigmas`` when it has
    ``num_steps`` entries (or ``num_steps`` is None); else :func:`cm_sampling.default_cm_sigmas`; else one step."""
    configured = [float(s) for s in config.sampling.sigmas]
    if sigmas is not None:
        return [float(s) for s in sigmas]
    if num_steps is None:
        return configured or [float(config.diffusion.sigma_max)]
    if len(configured) == int(num_steps):
        return configured
    return cm_sampling.default_cm_sigmas(int(num_steps), config.diffusion.sigma_max)


def cm_nfe_kwargs(config):
    """NFE → ``{'sigmas': (...)}``: the σ list a consistency sampler uses for that many steps (reports record it)."""
    def nfe_kwargs(nfe: int) -> dict:
        return {"sigmas": tuple(cm_sampling_sigmas(config, num_steps=int(nfe)))}
    return nfe_kwargs
