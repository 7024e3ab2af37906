"""Closed-form oracle denoisers and exact maps, for tests and toy teachers (docs/methods.md §15).

Every denoiser here has the contract ``D(x, sigma, cond=None) -> x0_hat`` (x: [B, ...], σ: [B] or scalar, VE
coordinates; ``cond`` is ignored) or, for the ``*_vp`` variants, ``D(z_t, t, cond=None)``.  The score of each is
(D − x)/σ² (``consistency.diffusion.denoisers.score_from_denoiser``); ``*_log_density`` functions give log p_σ so the
score can be checked against ``jax.grad``.  Gaussians are isotropic per coordinate: ``mean`` broadcasts against one
example, ``std`` is a scalar.  All formulas are [derived] in docs/methods.md §15 (O1–O5).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from consistency.diffusion.processes import _as_float, broadcast_to_data, vp_alpha_sigma

_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------------------------------------------
# O4 — empirical data (seed eq. 6)
# ----------------------------------------------------------------------------------------------------------------

def _flatten(x: jax.Array) -> jax.Array:
    return jnp.reshape(x, (x.shape[0], -1))


def _squared_distances(queries: jax.Array, bank: jax.Array, chunk_size: int | None) -> jax.Array:
    """‖q_b − x_j‖² as [B, M], from explicit differences (no ‖a‖² − 2ab + ‖b‖² cancellation), chunked over M."""
    def block(bank_chunk):
        return jnp.sum((queries[:, None, :] - bank_chunk[None, :, :]) ** 2, axis=-1)

    num = bank.shape[0]
    if chunk_size is None or chunk_size >= num:
        return block(bank)
    num_chunks = -(-num // chunk_size)
    padded = jnp.pad(bank, ((0, num_chunks * chunk_size - num), (0, 0)))
    blocks = jax.lax.map(block, padded.reshape(num_chunks, chunk_size, -1))  # [C, B, chunk]
    return jnp.moveaxis(blocks, 0, 1).reshape(queries.shape[0], -1)[:, :num]


def empirical_posterior_weights(x: jax.Array, sigma, data: jax.Array, data_scale=1.0,
                                chunk_size: int | None = None, log_prior: jax.Array | None = None) -> jax.Array:
    """Posterior weights w_bj = softmax_j(−‖x_b − a·x^j‖²/(2σ²)) over a data bank (seed eq. 6; docs/methods.md §15 O4).

    ``a`` = ``data_scale`` (1 for VE, α_t for VP).  ``log_prior`` [B, M] is added to the logits (−inf removes a bank
    entry for that query).  Computed in float32 at least, with the max logit subtracted (``jax.nn.softmax``), so
    σ = 0.002 (logits ≈ 1e7) is safe.  Returns [B, M].
    """
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    queries = _flatten(x).astype(dtype)
    sigma_b = jnp.broadcast_to(jnp.asarray(sigma, dtype), x.shape[:1])
    scale_b = jnp.broadcast_to(jnp.asarray(data_scale, dtype), x.shape[:1])
    # ‖x − a x^j‖² = a²‖x/a − x^j‖²: compare in data units, then rescale the variance.
    dist = _squared_distances(queries / scale_b[:, None], _flatten(data).astype(dtype), chunk_size)
    logits = -dist * (scale_b**2 / (2.0 * sigma_b**2))[:, None]
    if log_prior is not None:
        logits = logits + log_prior.astype(dtype)
    return jax.nn.softmax(logits, axis=-1)


def empirical_denoiser(data: jax.Array, chunk_size: int | None = None) -> Callable:
    """Ideal denoiser of the empirical distribution of ``data`` [M, ...]: D(x, σ) = Σ_j w_j x^j,
    w = softmax_j(−‖x − x^j‖²/(2σ²)) (seed eq. 6; docs/methods.md §15 O4).  Cost O(B·M·d); ``chunk_size`` bounds the
    [B, chunk, d] difference tensor."""
    data = jnp.asarray(data)

    def denoiser(x, sigma, cond=None):
        weights = empirical_posterior_weights(x, sigma, data, 1.0, chunk_size)
        out = weights @ _flatten(data).astype(weights.dtype)
        return out.reshape(x.shape).astype(x.dtype)

    return denoiser


def class_conditional_empirical_denoiser(data: jax.Array, data_labels: jax.Array, null_label: int,
                                         chunk_size: int | None = None) -> Callable:
    """Ideal denoiser of the class-conditional empirical distribution: D(x, σ, c) = Σ_{j: y_j = c} w_j x^j with the
    softmax restricted to class c's bank entries, and for c = ``null_label`` (CFG's ∅ class) the unconditional
    :func:`empirical_denoiser` over all M entries — so D_∅ = Σ_c p(c) D_c exactly, the CFG identity behind docs/methods.md
    §2 / seed (44).  ``cond`` None is also unconditional.  Every class in [0, null_label) must occur in the bank."""
    data, data_labels = jnp.asarray(data), jnp.asarray(data_labels, jnp.int32)

    def denoiser(x, sigma, cond=None):
        log_prior = None
        if cond is not None:
            cond = jnp.broadcast_to(jnp.asarray(cond, jnp.int32), x.shape[:1])
            keep = (data_labels[None, :] == cond[:, None]) | (cond[:, None] == null_label)
            log_prior = jnp.where(keep, 0.0, -jnp.inf)
        weights = empirical_posterior_weights(x, sigma, data, 1.0, chunk_size, log_prior)
        out = weights @ _flatten(data).astype(weights.dtype)
        return out.reshape(x.shape).astype(x.dtype)

    return denoiser


def empirical_denoiser_vp(data: jax.Array, schedule: str = "cosine", chunk_size: int | None = None) -> Callable:
    """VP empirical denoiser x̂(z_t, t) = Σ_j w_j x^j, w = softmax_j(−‖z_t − α_t x^j‖²/(2σ_t²)) (docs/methods.md §15 O4)."""
    data = jnp.asarray(data)

    def denoiser(z_t, t, cond=None):
        alpha, sigma = vp_alpha_sigma(t, schedule)
        weights = empirical_posterior_weights(z_t, sigma, data, alpha, chunk_size)
        out = weights @ _flatten(data).astype(weights.dtype)
        return out.reshape(z_t.shape).astype(z_t.dtype)

    return denoiser


def empirical_log_density(x: jax.Array, sigma, data: jax.Array) -> jax.Array:
    """log p_σ(x) = log (1/M) Σ_j N(x; x^j, σ²I) per example ([B]); its x-gradient is the exact score."""
    sigma_b = jnp.broadcast_to(_as_float(sigma), x.shape[:1])
    dist = _squared_distances(_flatten(x), _flatten(jnp.asarray(data, x.dtype)), None)
    dim = math.prod(x.shape[1:])
    log_norm = -0.5 * dim * (_LOG_2PI + 2.0 * jnp.log(sigma_b))
    return jax.nn.logsumexp(-dist / (2.0 * sigma_b[:, None] ** 2), axis=-1) - math.log(data.shape[0]) + log_norm


# ----------------------------------------------------------------------------------------------------------------
# O1 — point mass, O2 — Gaussian, O3 — mixture (VE)
# ----------------------------------------------------------------------------------------------------------------

def point_mass_denoiser(c) -> Callable:
    """Data = δ(x − c): D(x, σ) = c, score −(x − c)/σ² (seed eq. 30–31; docs/methods.md §15 O1)."""
    c = jnp.asarray(c)

    def denoiser(x, sigma, cond=None):
        return jnp.broadcast_to(c, x.shape).astype(x.dtype)

    return denoiser


def point_mass_flow(x: jax.Array, sigma, sigma_to, c) -> jax.Array:
    """Exact PF-ODE map of a point mass: x(σ′) = c + (σ′/σ)(x(σ) − c) (seed eq. 19, 33; docs/methods.md §15 O1)."""
    ratio = broadcast_to_data(_as_float(sigma_to) / _as_float(sigma), x)
    return c + ratio * (x - c)


def point_mass_consistency_function(x: jax.Array, sigma, c, sigma_min: float = 0.002) -> jax.Array:
    """Exact consistency function of a point mass: f*(x, σ) = (σ_min/σ)·x + (1 − σ_min/σ)·c (seed eq. 34)."""
    ratio = broadcast_to_data(sigma_min / _as_float(sigma), x)
    return ratio * x + (1.0 - ratio) * c


def point_mass_prediction(mu: float, lr: float = 1e-3, num_scales: int = 18, sigma_min: float = 0.002,
                          sigma_max: float = 80.0, rho: float = 7.0, tol: float = 0.01, max_steps: int = 200_000):
    """Steps for the seed's one-parameter model f_θ(x, σ) = (σ_min/σ)x + (1 − σ_min/σ)θ on p_data = δ(x − ε) to bring
    |θ − ε| below ``tol``·|θ₀ − ε| by gradient descent on the expected loss (seed eq. 42, pairs uniform over the Karras
    grid of N = ``num_scales``), with the target θ⁻ ← μθ⁻ + (1 − μ)θ (μ = 0: θ⁻ = sg θ).

    Per pair i with a = σ_min Δσ/σ_i², b = 1 − σ_min/σ_i (seed eq. 42): L_i = (a(θ − ε) + b(θ − θ⁻))², so
    ∂L/∂θ = 2(a + b)(a(θ − ε) + b(θ − θ⁻)). With θ⁻ = θ only a(a+b) pulls θ to ε; with an EMA target the b² term pulls
    θ back towards the lagging θ⁻. Returns the step count (max_steps when it does not get there)."""
    from consistency.diffusion import schedules   # oracles is imported by diffusion code; keep it lazy
    grid = np.asarray(schedules.karras_sigmas(num_scales, sigma_min, sigma_max, rho), np.float64)
    grid = np.sort(grid)
    lo, hi = grid[:-1], grid[1:]
    a = sigma_min * (hi - lo) / hi ** 2       # the pair (σ_i, σ_{i+1}) as in eq. 41–42, σ_i = the upper point
    b = 1.0 - sigma_min / hi
    g_self, g_target = np.mean(2 * (a + b) * (a + b)), np.mean(2 * (a + b) * b)   # coefficients of (θ−ε), (θ⁻−ε)
    theta = theta_minus = 1.0                  # distances to ε
    for step in range(1, max_steps + 1):
        if mu == 0.0:
            theta_minus = theta
        grad = g_self * theta - g_target * theta_minus
        theta = theta - lr * grad
        theta_minus = theta if mu == 0.0 else mu * theta_minus + (1 - mu) * theta
        if abs(theta) < tol:
            return step
    return max_steps


def gaussian_denoiser(mean, std) -> Callable:
    """Data = N(μ, s²I): D(x, σ) = μ + s²/(s²+σ²)·(x − μ), score −(x−μ)/(s²+σ²) (docs/methods.md §15 O2)."""
    mean = jnp.asarray(mean)

    def denoiser(x, sigma, cond=None):
        shrink = std**2 / (std**2 + broadcast_to_data(_as_float(sigma), x) ** 2)
        return (mean + shrink * (x - mean)).astype(x.dtype)

    return denoiser


def gaussian_flow(x: jax.Array, sigma, sigma_to, mean, std) -> jax.Array:
    """Exact PF-ODE map of N(μ, s²I): x(σ′) − μ = √((s²+σ′²)/(s²+σ²))·(x(σ) − μ) (docs/methods.md §15 O2)."""
    ratio = jnp.sqrt((std**2 + _as_float(sigma_to) ** 2) / (std**2 + _as_float(sigma) ** 2))
    return mean + broadcast_to_data(ratio, x) * (x - mean)


def gaussian_consistency_function(x: jax.Array, sigma, mean, std, sigma_min: float = 0.002) -> jax.Array:
    """Exact consistency function of N(μ, s²I): f* = μ + √((s²+ε²)/(s²+σ²))·(x − μ) (docs/methods.md §15 O2)."""
    return gaussian_flow(x, sigma, sigma_min, mean, std)


def gaussian_log_density(x: jax.Array, sigma, mean, std) -> jax.Array:
    """log p_σ(x) = log N(x; μ, (s²+σ²)I) per example ([B])."""
    var = std**2 + jnp.broadcast_to(_as_float(sigma), x.shape[:1]) ** 2
    sq = jnp.sum(_flatten(x - mean) ** 2, axis=-1)
    dim = math.prod(x.shape[1:])
    return -0.5 * sq / var - 0.5 * dim * (_LOG_2PI + jnp.log(var))


def _mixture_terms(x, sigma, weights, means, stds):
    """Per-component log π_k + log N(x; μ_k, (s_k²+σ²)I) ([B, K]) and shrink factors s_k²/(s_k²+σ²) ([B, K])."""
    weights, means, stds = jnp.asarray(weights), jnp.asarray(means), jnp.asarray(stds)
    sigma_b = jnp.broadcast_to(_as_float(sigma), x.shape[:1])
    var = stds[None, :] ** 2 + sigma_b[:, None] ** 2  # [B, K]
    diff = x[:, None] - means[None]  # [B, K, ...]
    sq = jnp.sum((diff**2).reshape(diff.shape[:2] + (-1,)), axis=-1)  # [B, K]
    dim = math.prod(x.shape[1:])
    log_joint = jnp.log(weights)[None, :] - 0.5 * sq / var - 0.5 * dim * (_LOG_2PI + jnp.log(var))
    return log_joint, stds[None, :] ** 2 / var, diff


def mixture_denoiser(weights, means, stds) -> Callable:
    """Isotropic Gaussian mixture Σ_k π_k N(μ_k, s_k²I) (docs/methods.md §15 O3):
    D(x, σ) = Σ_k π̃_k(x)·[μ_k + s_k²/(s_k²+σ²)(x − μ_k)], π̃_k ∝ π_k N(x; μ_k, (s_k²+σ²)I) by log-sum-exp.

    ``weights`` [K] (sum to 1), ``means`` [K, *example_shape], ``stds`` [K].
    """
    def denoiser(x, sigma, cond=None):
        log_joint, shrink, diff = _mixture_terms(x, sigma, weights, means, stds)
        resp = jax.nn.softmax(log_joint, axis=-1)  # [B, K]
        expand = lambda v: jnp.reshape(v, v.shape + (1,) * (x.ndim - 1))  # noqa: E731
        component_means = x[:, None] - expand(1.0 - shrink) * diff  # μ_k + shrink·(x − μ_k)
        return jnp.sum(expand(resp) * component_means, axis=1).astype(x.dtype)

    return denoiser


def mixture_log_density(x: jax.Array, sigma, weights, means, stds) -> jax.Array:
    """log p_σ(x) of the noised mixture per example ([B])."""
    log_joint, _, _ = _mixture_terms(x, sigma, weights, means, stds)
    return jax.nn.logsumexp(log_joint, axis=-1)


# ----------------------------------------------------------------------------------------------------------------
# O5 — VP Gaussian
# ----------------------------------------------------------------------------------------------------------------

def vp_gaussian_posterior_mean(z_t: jax.Array, alpha_t, sigma_t, mean, std) -> jax.Array:
    """E[x | z_t] = μ + α_t s²/(α_t²s² + σ_t²)·(z_t − α_t μ) for x ~ N(μ, s²I) (docs/methods.md §15 O5)."""
    a, sg = broadcast_to_data(alpha_t, z_t), broadcast_to_data(sigma_t, z_t)
    return mean + a * std**2 / (a**2 * std**2 + sg**2) * (z_t - a * mean)


def vp_gaussian_posterior_variance(alpha_t, sigma_t, std):
    """Var[x | z_t] = s²σ_t²/(α_t²s² + σ_t²) per coordinate (docs/methods.md §15 O5)."""
    return std**2 * sigma_t**2 / (alpha_t**2 * std**2 + sigma_t**2)


def vp_gaussian_flow(z_t: jax.Array, alpha_t, sigma_t, alpha_s, sigma_s, mean, std) -> jax.Array:
    """Exact VP PF-ODE map: z_s − α_s μ = √((α_s²s² + σ_s²)/(α_t²s² + σ_t²))·(z_t − α_t μ) (docs/methods.md §15 O5)."""
    b = lambda v: broadcast_to_data(v, z_t)  # noqa: E731
    ratio = jnp.sqrt((alpha_s**2 * std**2 + sigma_s**2) / (alpha_t**2 * std**2 + sigma_t**2))
    return b(alpha_s) * mean + b(ratio) * (z_t - b(alpha_t) * mean)


def vp_gaussian_denoiser(mean, std, schedule: str = "cosine") -> Callable:
    """VP denoiser x̂(z_t, t) = E[x | z_t] of N(μ, s²I) under a VP schedule."""
    def denoiser(z_t, t, cond=None):
        alpha, sigma = vp_alpha_sigma(t, schedule)
        return vp_gaussian_posterior_mean(z_t, alpha, sigma, mean, std).astype(z_t.dtype)

    return denoiser
