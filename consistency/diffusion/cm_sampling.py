"""Consistency-model samplers (Song et al. 2023, Alg. 1; docs/methods.md §3).

``sigmas`` is an explicit descending list of noise levels τ₁ = σ_max > τ₂ > … > τ_n, one per network evaluation:
* step 1:  x ← f(τ₁·z, τ₁)                              (one-step generation)
* step k:  x ← f(x + √(τ_k² − σ_min²)·z_k, τ_k)           (re-noise the current estimate to level τ_k, jump back)
So NFE = len(sigmas). Unlike the `ts` index lists of the official code, these are σ values, not grid indices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def default_cm_sigmas(num_steps: int, sigma_max: float = 80.0, second: float = 0.821, last: float = 0.1):
    """Default σ list for ``num_steps`` CM steps: [σ_max], then 0.821 (ECT's CIFAR-10 2-step point, docs/methods.md §3),
    then geometrically down to ``last`` for more steps. Override with ``config.sampling.sigmas``."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if num_steps == 1:
        return [float(sigma_max)]
    mids = np.geomspace(second, last, num_steps - 1) if num_steps > 2 else [second]  # static: usable under jit
    return [float(sigma_max)] + [float(s) for s in mids]


def consistency_sample(f, rng, shape, sigmas, sigma_min: float, clip_range=None, cond=None):
    """Multistep consistency sampling (CM Alg. 1). ``f(x, sigma[B], cond) -> x0``; per-step noise from ``rng``."""
    sigmas = [float(s) for s in sigmas]
    if any(b >= a for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError(f"sampling sigmas must be strictly decreasing, got {sigmas}")
    keys = jax.random.split(rng, len(sigmas))
    batch = shape[0]
    x = f(sigmas[0] * per_sample_normal(keys[0], shape), jnp.full((batch,), sigmas[0]), cond)
    x = _clip(x, clip_range)
    for key, tau in zip(keys[1:], sigmas[1:]):
        x_tau = x + jnp.sqrt(max(tau ** 2 - sigma_min ** 2, 0.0)) * per_sample_normal(key, shape)
        x = _clip(f(x_tau, jnp.full((batch,), tau), cond), clip_range)
    return x


def per_sample_normal(rng, shape):
    """Noise for sample i drawn from fold_in(rng, i): sample i does not depend on the batch size or device count."""
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(rng, i), shape[1:]))(jnp.arange(shape[0]))


def _clip(x, clip_range):
    return x if clip_range is None else jnp.clip(x, clip_range[0], clip_range[1])
