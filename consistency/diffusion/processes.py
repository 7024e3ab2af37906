"""Noise processes as pure jnp functions: VE/EDM and VP (cosine, linear), and conversions between them.

Conventions (docs/methods.md §0):
- Data ``x`` has a leading batch axis ``[B, ...]``; noise levels are scalars or shape ``[B]``.
- VE / EDM: x_σ = x + σ·z.
- VP: z_t = α_t·x + σ_t·ε with α_t² + σ_t² = 1, t ∈ [0, 1]; logSNR λ_t = ln(α_t²/σ_t²).
- VE ↔ VP: z_t = α_t·x_σ with σ = σ_t/α_t, so a VE denoiser serves VP as x̂ = D(z_t/α_t, σ_t/α_t).

Schedules:
- ``'cosine'`` (Nichol & Dhariwal 2021, as in the unofficial MCM port; docs/methods.md §2):
  ᾱ(t) = cos²(((t+s)/(1+s))·π/2) / cos²((s/(1+s))·π/2), s = 0.008, so α_0 = 1 and α_1 = 0 (t = 1 is pure noise,
  λ_1 = −∞; pass t < 1 where a finite logSNR is needed).
- ``'linear'`` (score_sde VPSDE, docs/methods.md §2): β(t) = 0.1 + 19.9·t, ln α_t = −¼·19.9·t² − ½·0.1·t, which in VE
  coordinates is EDM's "VP" σ(t) = √(exp(½β_d t² + β_min t) − 1).

Every closed form is written without catastrophic cancellation (expm1/log1p, product-of-sines), so t, σ and λ
round-trip in float32 down to σ ≈ σ_min.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

COSINE_OFFSET = 0.008  # s in the cosine schedule (Nichol & Dhariwal 2021)
LINEAR_BETA_MIN = 0.1  # score_sde VPSDE β_min
LINEAR_BETA_D = 19.9  # score_sde VPSDE β_max − β_min
SCHEDULES = ("cosine", "linear")


def broadcast_to_data(v, x: jax.Array) -> jax.Array:
    """Reshape a per-example value ``v`` (scalar or shape ``[B]``) to ``[B, 1, …, 1]`` so it broadcasts against x."""
    v = jnp.asarray(v)
    if v.ndim == 0:
        return v
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def ve_perturb(x: jax.Array, sigma, noise: jax.Array) -> jax.Array:
    """VE/EDM forward process x_σ = x + σ·z (docs/methods.md §0; seed eq. 3)."""
    return x + broadcast_to_data(sigma, x) * noise


def vp_perturb(x: jax.Array, alpha, sigma, noise: jax.Array) -> jax.Array:
    """VP forward process z_t = α_t·x + σ_t·ε (docs/methods.md §0)."""
    return broadcast_to_data(alpha, x) * x + broadcast_to_data(sigma, x) * noise


def _as_float(v) -> jax.Array:
    """``v`` as a floating jnp array (float32 for ints and Python numbers, input precision otherwise)."""
    v = jnp.asarray(v)
    return v if jnp.issubdtype(v.dtype, jnp.floating) else v.astype(jnp.float32)


def _check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown VP schedule {schedule!r}; expected one of {SCHEDULES}")


def _cosine_angles(t):
    """Angles a = (s/(1+s))·π/2 (t = 0) and b − a = (t/(1+s))·π/2 of the cosine schedule."""
    a = COSINE_OFFSET / (1.0 + COSINE_OFFSET) * math.pi / 2
    b_minus_a = _as_float(t) / (1.0 + COSINE_OFFSET) * (math.pi / 2)
    return a, b_minus_a


def _linear_exponent(t):
    """E(t) = ½β_d t² + β_min t = −2 ln α_t for the linear VPSDE (score_sde; docs/methods.md §2)."""
    t = _as_float(t)
    return 0.5 * LINEAR_BETA_D * t**2 + LINEAR_BETA_MIN * t


def vp_alpha_sigma(t, schedule: str = "cosine"):
    """(α_t, σ_t) of a VP schedule, α_t² + σ_t² = 1 (docs/methods.md §0, §2).

    cosine: α_t = cos b / cos a, σ_t² = 1 − α_t² = sin(b−a)·sin(b+a)/cos²a (cos²a − cos²b = sin(b−a)sin(b+a)),
    with a = (s/(1+s))π/2, b = ((t+s)/(1+s))π/2.  linear: α_t = exp(−E/2), σ_t² = −expm1(−E), E = ½β_d t² + β_min t.
    """
    _check_schedule(schedule)
    if schedule == "cosine":
        a, b_minus_a = _cosine_angles(t)
        b = a + b_minus_a
        alpha = jnp.cos(b) / math.cos(a)
        sigma = jnp.sqrt(jnp.maximum(jnp.sin(b_minus_a) * jnp.sin(b + a), 0.0)) / math.cos(a)
        return alpha, sigma
    e = _linear_exponent(t)
    return jnp.exp(-0.5 * e), jnp.sqrt(-jnp.expm1(-e))


def vp_to_ve_sigma(t, schedule: str = "cosine"):
    """VE noise level of VP time t: σ = σ_t/α_t (docs/methods.md §0 "VE ↔ VP").

    linear: σ = √expm1(½β_d t² + β_min t) (EDM's VP σ(t)); cosine: σ = √(sin(b−a)sin(b+a))/cos b.
    """
    _check_schedule(schedule)
    if schedule == "cosine":
        a, b_minus_a = _cosine_angles(t)
        b = a + b_minus_a
        return jnp.sqrt(jnp.maximum(jnp.sin(b_minus_a) * jnp.sin(b + a), 0.0)) / jnp.cos(b)
    return jnp.sqrt(jnp.expm1(_linear_exponent(t)))


def vp_logsnr(t, schedule: str = "cosine"):
    """logSNR λ_t = ln(α_t²/σ_t²) = −2 ln(σ_t/α_t) (docs/methods.md §0)."""
    _check_schedule(schedule)
    if schedule == "cosine":
        a, b_minus_a = _cosine_angles(t)
        b = a + b_minus_a
        return 2.0 * jnp.log(jnp.cos(b)) - jnp.log(jnp.sin(b_minus_a) * jnp.sin(b + a))
    return -jnp.log(jnp.expm1(_linear_exponent(t)))


def _t_from_ve_sigma_squared(sigma_sq, log1p_sigma_sq, schedule: str):
    """Inverse of σ²(t) = σ_t²/α_t² for both schedules, written without cancellation near t = 0."""
    if schedule == "cosine":
        # cos b = cos a/√(1+σ²)  ⇒  tan b = u/cos a with u = √(sin²a + σ²).  Then
        # tan(b−a) = (tan b − tan a)/(1 + tan a tan b) = σ² cos a / ((u + sin a)(cos²a + u sin a)),
        # and t = (b − a)·(2/π)(1+s).  [derived]
        a = COSINE_OFFSET / (1.0 + COSINE_OFFSET) * math.pi / 2
        sin_a, cos_a = math.sin(a), math.cos(a)
        u = jnp.sqrt(sin_a**2 + sigma_sq)
        tan_b_minus_a = sigma_sq * cos_a / ((u + sin_a) * (cos_a**2 + u * sin_a))
        return jnp.arctan(tan_b_minus_a) * (2.0 / math.pi) * (1.0 + COSINE_OFFSET)
    # ½β_d t² + β_min t = E = ln(1+σ²)  ⇒  t = 2E/(β_min + √(β_min² + 2β_d E))  (rationalised root, EDM sigma_inv).
    e = log1p_sigma_sq
    return 2.0 * e / (LINEAR_BETA_MIN + jnp.sqrt(LINEAR_BETA_MIN**2 + 2.0 * LINEAR_BETA_D * e))


def ve_sigma_to_vp_t(sigma, schedule: str = "cosine"):
    """VP time t whose VE noise level σ_t/α_t equals ``sigma`` (inverse of :func:`vp_to_ve_sigma`)."""
    _check_schedule(schedule)
    sigma = _as_float(sigma)
    return _t_from_ve_sigma_squared(sigma**2, jnp.log1p(sigma**2), schedule)


def vp_t_from_logsnr(logsnr, schedule: str = "cosine"):
    """VP time t with logSNR λ (inverse of :func:`vp_logsnr`); σ_VE² = e^{−λ}, ln(1+σ²) = softplus(−λ)."""
    _check_schedule(schedule)
    logsnr = _as_float(logsnr)
    return _t_from_ve_sigma_squared(jnp.exp(-logsnr), jax.nn.softplus(-logsnr), schedule)


def vp_alpha_sigma_from_ve_sigma(sigma):
    """(α, σ_t) of the VP point with VE level σ: α = 1/√(1+σ²), σ_t = σ/√(1+σ²) (docs/methods.md §0)."""
    sigma = _as_float(sigma)
    alpha = jax.lax.rsqrt(1.0 + sigma**2)
    return alpha, sigma * alpha


def vp_denoiser_from_ve(denoiser: Callable, schedule: str = "cosine") -> Callable:
    """Wrap a VE denoiser D(x, σ, cond) into a VP one x̂(z_t, t, cond) = D(z_t/α_t, σ_t/α_t, cond).

    docs/methods.md §0 "VE ↔ VP": z_t = α_t·x_σ with σ = σ_t/α_t.  ``t`` is a scalar or shape [B].
    """
    _check_schedule(schedule)

    def vp_denoiser(z_t, t, cond=None):
        alpha, _ = vp_alpha_sigma(t, schedule)
        sigma_ve = jnp.broadcast_to(vp_to_ve_sigma(t, schedule), z_t.shape[:1])
        return denoiser(z_t / broadcast_to_data(alpha, z_t), sigma_ve, cond)

    return vp_denoiser
