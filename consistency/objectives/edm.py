"""EDM denoising objective (Karras et al. 2022, §5 and Table 1; docs/methods.md §2). Pure: jnp in, per-example loss out."""
from __future__ import annotations

import jax.numpy as jnp

from consistency.diffusion import distances, schedules


def edm_loss(denoise, x, sigma, noise, sigma_data: float):
    """Per-example EDM loss λ(σ)·mean‖D(x + σz, σ) − x‖² with λ = (σ² + σ_d²)/(σσ_d)² (EDM eq. 8, Table 1).

    ``denoise(x_noisy, sigma) -> x0_hat``; ``sigma`` has shape [B].
    """
    x_noisy = x + sigma.reshape((-1,) + (1,) * (x.ndim - 1)) * noise
    return schedules.edm_loss_weight(sigma, sigma_data) * distances.l2(denoise(x_noisy, sigma), x)


def vp_weighted_loss(denoise, x, sigma, noise, weighting: str = "snr+1"):
    """VP-form denoising loss in x-space (docs/methods.md §2 "VP forms"), with the VE↔VP map σ = σ_t/α_t.

    'snr' equals an ε-prediction loss ‖ε̂ − ε‖², 'snr+1' a v-prediction loss; SNR = 1/σ² in VE coordinates.
    """
    x_noisy = x + sigma.reshape((-1,) + (1,) * (x.ndim - 1)) * noise
    snr = 1.0 / sigma ** 2
    weight = {"snr": snr, "snr+1": snr + 1.0}[weighting]
    return weight * distances.l2(denoise(x_noisy, sigma), x)


def sigma_quartile_means(loss, sigma, p_mean: float, p_std: float):
    """Mean loss in the four quartiles of the lognormal σ distribution (jcm's loss_q1..q4 diagnostic)."""
    z = (jnp.log(sigma) - p_mean) / p_std
    edges = jnp.array([-jnp.inf, -0.6745, 0.0, 0.6745, jnp.inf])
    out = {}
    for q in range(4):
        mask = (z >= edges[q]) & (z < edges[q + 1])
        out[f"loss_q{q + 1}"] = jnp.sum(jnp.where(mask, loss, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
    return out
