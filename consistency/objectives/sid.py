"""SiD (Score identity Distillation) objectives: generator loss (code form with α), σ sampler, fake-score loss, masks.

Sources: Zhou et al. 2024, SiD (arXiv 2404.04057; `mingyuanzhou/SiD` `training/sid_loss.py`,
`training/sid_training_loop.py`); seed eq. 71–83; docs/methods.md §12 and §17 items 15, 16, 19.

Naming (docs/methods.md §12 "naming trap"): D_real = the frozen teacher (SiD's f_φ, the notebook's x_ψ), D_fake = the fake
score trained online (SiD's f_ψ, the notebook's x_φ). Networks enter as functions ``D(x, sigma) -> x0_hat`` (VE/EDM,
σ [B]) built by the caller from parameters it passes in (docs/methods.md §18 item 2).

Gradient flow of the generator loss (docs/methods.md §12): through x_g directly *and* through the inputs x_t = x_g + σn of
both denoisers. Only their parameters are frozen: build both with
:func:`consistency.objectives.dmd.with_frozen_parameters` (sg on parameters, never on inputs). Unlike DMD's surrogate,
the generator step therefore back-propagates through two denoiser networks.

Sign (docs/methods.md §17 item 19): seed eq. 83 as printed flips the first term relative to seed eq. 81 and the official
code; with it the 1-D toy diverges (docs/methods.md §15 O7). Only the code form is implemented here.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from consistency.diffusion import schedules
from consistency.diffusion.processes import broadcast_to_data
from consistency.objectives import dmd

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]

SIGMA_INIT = 2.5           # generator input level: x_g = G_θ(σ_init z, σ_init) (SiD `init_sigma`, docs/methods.md §12)
ALPHA = 1.2                # SiD's α (1.0 for AFHQ) (docs/methods.md §12 "Hyperparameters")
T_MAX_FRACTION = 0.8       # SiD `tmax = 800` of 1000 (docs/methods.md §1.4 "SiD generator")
NORMALISER_FLOOR = 1e-5    # w = max(mean|x_g − D_real|, 1e-5) (SiD `clip(min=0.00001)`)
FAKE_SCORE_P_MEAN, FAKE_SCORE_P_STD = -1.2, 1.2  # fake-score σ: EDM lognormal (docs/methods.md §1.4)
GENERATOR_LOSS_SCALE = 100.0  # SiD `loss_scaling_G`: the summed loss × 100/batch (docs/methods.md §12)


def generator_input(noise, sigma_init: float = SIGMA_INIT):
    """(σ_init·z, σ_init as [B]): the generator evaluates G_θ(σ_init z, σ_init) (SiD training loop; docs/methods.md §12)."""
    return sigma_init * noise, jnp.full(noise.shape[:1], sigma_init, noise.dtype)


def sample_generator_sigmas(rng, shape, t_max_fraction: float = T_MAX_FRACTION, sigma_min: float = 0.002,
                            sigma_max: float = 80.0, rho: float = 7.0, dtype=jnp.float32) -> jax.Array:
    """σ for the generator loss: u ~ U[0, 0.8], σ = (σ_max^{1/ρ} + (1−u)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ
    (docs/methods.md §1.4 "SiD generator"; SiD `generator_loss`), so σ ∈ [0.002, 24.41]: u = 0 gives σ_min."""
    u = jax.random.uniform(rng, shape, dtype, 0.0, t_max_fraction)
    low, high = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (high + (1.0 - u) * (low - high)) ** rho


def sample_fake_score_sigmas(rng, shape, p_mean: float = FAKE_SCORE_P_MEAN, p_std: float = FAKE_SCORE_P_STD):
    """σ for the fake-score loss: ln σ ~ N(−1.2, 1.2²) (EDM lognormal; SiD `SID_EDMLoss.__call__`)."""
    return schedules.lognormal_sigmas(rng, shape, p_mean, p_std)


def finite_sample_mask(*arrays) -> jax.Array:
    """[B] bool: True where every value of the example is finite in all ``arrays`` (the 0/1-mask form of SiD's
    boolean NaN filtering, docs/methods.md §12 "Pitfalls", §18 item 5)."""
    mask = None
    for a in arrays:
        ok = jnp.all(jnp.isfinite(a.reshape(a.shape[0], -1)), axis=1)
        mask = ok if mask is None else mask & ok
    return mask


def masked_mean(values, mask):
    """Σ_i m_i v_i / max(Σ_i m_i, 1): the batch mean over the kept examples (SiD's filtered mean, renormalised)."""
    mask = mask.astype(values.dtype)
    return jnp.sum(jnp.where(mask > 0, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1.0)


def _zero_where_masked(x, mask):
    # The "double where": masked examples enter the loss as zeros, so neither the loss nor its local gradient is NaN.
    return jnp.where(broadcast_to_data(mask, x), x, jnp.zeros_like(x))


def generator_loss(x_generated, noise, sigma, real_denoiser: Denoiser, fake_denoiser: Denoiser,
                   alpha: float = ALPHA, normalise: bool = True, reduce: str = "sum"):
    """SiD generator loss per example, code form (docs/methods.md §12; SiD `generator_loss`; seed eq. 81–82 minus α·eq. 73):

        L = ⟨D_r − D_f, (D_r − x_g) − α·(D_r − D_f)⟩ / w,   w = sg(max(mean_CHW |x_g − D_r|, 1e-5)),
        x_t = x_g + σ·n (seed eq. 71 erratum: σ, not σ²), D_r = D_real(x_t, σ), D_f = D_fake(x_t, σ).

    Equivalently (1−α)‖D_r − D_f‖² + ⟨D_r − D_f, D_f − x_g⟩, over w. No sg on x_g or x_t: gradients reach the generator
    through x_g and through the inputs of both denoisers; freeze the denoisers' *parameters* with
    :func:`consistency.objectives.dmd.with_frozen_parameters`. ``normalise=False`` drops 1/w (w = 1).
    ``reduce='sum'`` sums over pixels (SiD; the caller then scales the batch mean by 100, ``GENERATOR_LOSS_SCALE``).

    Examples with a non-finite x_g, D_r or D_f get loss 0 and mask False (SiD drops them); average with
    :func:`masked_mean`. Returns (loss [B], aux {mask, normaliser, noisy, real_denoised, fake_denoised} under sg).
    """
    noisy = x_generated + broadcast_to_data(sigma, x_generated) * noise   # x_t = x_g + σ n, with gradient
    real_denoised = real_denoiser(noisy, sigma)
    fake_denoised = fake_denoiser(noisy, sigma)
    mask = finite_sample_mask(x_generated, real_denoised, fake_denoised)
    x_g, d_r, d_f = (_zero_where_masked(v, mask) for v in (x_generated, real_denoised, fake_denoised))
    if normalise:
        # SiD `weight_factor`: per-sample, under sg (docs/methods.md §18 item 7).
        normaliser = jax.lax.stop_gradient(
            jnp.maximum(jnp.mean(jnp.abs(x_g - d_r).reshape(x_g.shape[0], -1), axis=1), NORMALISER_FLOOR))
    else:
        normaliser = jnp.ones(x_g.shape[:1], x_g.dtype)
    difference = d_r - d_f
    integrand = difference * ((d_r - x_g) - alpha * difference)          # docs/methods.md §12, SiD code form
    loss = dmd.reduce_per_example(integrand, reduce) / normaliser
    loss = jnp.where(mask, loss, 0.0)
    sg = jax.lax.stop_gradient
    aux = {"mask": mask, "normaliser": normaliser, "noisy": sg(noisy), "real_denoised": sg(real_denoised),
           "fake_denoised": sg(fake_denoised)}
    return loss, aux


def fake_score_loss(fake_denoiser: Denoiser, x_generated, noise, sigma, sigma_data: float = 0.5,
                    reduce: str = "sum"):
    """SiD fake-score loss λ_EDM(σ)·Σ_pixels (D_fake(sg x_g + σn, σ) − sg x_g)² per example (SiD `SID_EDMLoss.__call__`;
    docs/methods.md §12; σ from :func:`sample_fake_score_sigmas`). The caller takes the plain batch mean (SiD: the sum
    × ``ls`` = 1/batch). The same DSM as DMD2's fake-score loss, summed rather than averaged over pixels.

    Returns (loss [B], mask [B]); masked examples (non-finite x_g or D_fake) get loss 0.
    """
    x = jax.lax.stop_gradient(x_generated)
    noisy = x + broadcast_to_data(sigma, x) * noise
    fake_denoised = fake_denoiser(noisy, sigma)
    mask = finite_sample_mask(x, fake_denoised)
    squared_error = (_zero_where_masked(fake_denoised, mask) - _zero_where_masked(x, mask)) ** 2
    loss = schedules.edm_loss_weight(sigma, sigma_data) * dmd.reduce_per_example(squared_error, reduce)
    return jnp.where(mask, loss, 0.0), mask
