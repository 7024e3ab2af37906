"""The denoiser contract and what follows from it: score, PF-ODE drift, classifier-free guidance.

A *denoiser* is any callable ``D(x, sigma, cond=None) -> x0_hat`` with x of shape [B, ...] and σ of shape [B]
(VE/EDM coordinates, docs/architecture.md "A denoiser is a function").  A trained network, an oracle from
``consistency.diffusion.oracles`` and a guided teacher all have this shape.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from consistency.diffusion.processes import broadcast_to_data

Denoiser = Callable[..., jax.Array]


def batch_sigma(sigma, x: jax.Array) -> jax.Array:
    """σ (scalar or [B]) as shape [B], the form a denoiser receives."""
    return jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:1])


def score_from_denoiser(denoiser: Denoiser, x: jax.Array, sigma, cond=None) -> jax.Array:
    """Score ∇ₓ log p_σ(x) = (D(x, σ) − x)/σ² (Tweedie; seed eq. 2; docs/methods.md §0)."""
    sigma_b = batch_sigma(sigma, x)
    return (denoiser(x, sigma_b, cond) - x) / broadcast_to_data(sigma_b, x) ** 2


def ode_drift(denoiser: Denoiser, x: jax.Array, sigma, cond=None) -> jax.Array:
    """Probability-flow ODE drift dx/dσ = (x − D(x, σ))/σ (seed eq. 16, 48; docs/methods.md §0)."""
    sigma_b = batch_sigma(sigma, x)
    return (x - denoiser(x, sigma_b, cond)) / broadcast_to_data(sigma_b, x)


def classifier_free_guidance(denoiser: Denoiser, scale, null_label) -> Denoiser:
    """Guided denoiser D_w(x, σ, c) = D(x, σ, ∅) + w·(D(x, σ, c) − D(x, σ, ∅)) (docs/methods.md §2 "Conditioning and CFG").

    ∅ = ``jnp.full_like(cond, null_label)``; w = ``scale`` is a scalar or shape [B] (MCM conditions on w).
    w = 0 gives the unconditional denoiser, w = 1 the conditional one.  The two passes are batched into one call.
    """

    def guided(x, sigma, cond=None):
        if cond is None:
            raise ValueError("classifier_free_guidance needs a condition (class labels) to guide towards")
        cond = jnp.asarray(cond)
        null = jnp.full_like(cond, null_label)
        sigma_b = batch_sigma(sigma, x)
        batch = x.shape[0]
        both = denoiser(jnp.concatenate([x, x]), jnp.concatenate([sigma_b, sigma_b]),
                        jnp.concatenate([null, cond]))
        uncond, conditional = both[:batch], both[batch:]
        w = broadcast_to_data(jnp.asarray(scale, x.dtype), x)
        return uncond + w * (conditional - uncond)

    return guided
