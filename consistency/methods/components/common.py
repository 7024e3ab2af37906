"""Pieces methods share: declaring a trained set from the config, label dropout for CFG, the sampling σ list.

Networks as denoisers live in :mod:`consistency.nets.wrappers`, teachers in :mod:`consistency.methods.components.teachers` (both below
``methods/``).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from consistency.methods.components import optim
from consistency.diffusion import cm_sampling
from consistency.methods import base
from consistency.nets.wrappers import (build_net, consistency_function, edm_denoiser, init_params,  # noqa: F401
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


@dataclasses.dataclass(frozen=True)
class CMOptions:
    """A consistency sampler's options (CM Alg. 1): ``sigmas``, an explicit descending σ list (its length is the
    NFE); None → ``config.sampling.sigmas`` when it has NFE entries, else :func:`cm_sampling.default_cm_sigmas`."""
    sigmas: tuple[float, ...] | None = None

    def __post_init__(self):  # a list becomes a tuple: options are hashable (one compiled sampler per options)
        if self.sigmas is not None:
            object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))


def cm_sampling_sigmas(config, sigmas, nfe: int) -> list[float]:
    """The σ list of a consistency sampler spending ``nfe`` evaluations: explicit ``sigmas`` (of length ``nfe``);
    else ``config.sampling.sigmas`` when it has ``nfe`` entries; else :func:`cm_sampling.default_cm_sigmas`."""
    nfe = int(nfe)
    if sigmas is not None:
        if len(sigmas) != nfe:
            raise ValueError(f"sampling option sigmas={tuple(sigmas)} has {len(sigmas)} entries but nfe={nfe}; a "
                             "consistency sampler spends one evaluation per σ")
        return [float(s) for s in sigmas]
    configured = [float(s) for s in config.sampling.sigmas]
    if len(configured) == nfe:
        return configured
    return cm_sampling.default_cm_sigmas(nfe, config.diffusion.sigma_max)


def cm_sampling_nfe(config) -> int:
    """The NFE of the configured consistency sampler: the length of ``config.sampling.sigmas`` (one step if empty)."""
    return len(config.sampling.sigmas) or 1


def describe_cm_sampler(config):
    """(nfe, options) → ``{'sigmas': (...)}``: the σ list a consistency sampler uses (the reports record it)."""
    def describe(nfe: int, options: CMOptions) -> dict:
        return {"sigmas": tuple(cm_sampling_sigmas(config, options.sigmas, nfe))}
    return describe
