"""Continuous-time consistency models in TrigFlow, sCM (Lu & Song 2024, arXiv 2410.11081; docs/methods.md §13.2).

TrigFlow (sCM §2): x_t = cos t·x₀ + sin t·z, z ~ N(0, σ_d² I), t ∈ [0, π/2]; its PF-ODE velocity is
dx_t/dt = σ_d·F(x_t/σ_d, t). In EDM/VE coordinates σ = σ_d·tan t and x_VE = x_t/cos t [derived: x_t/cos t =
x₀ + tan t·z]. A denoiser x̂₀ = E[x₀|x_t] gives the velocity E[dx_t/dt | x_t] = (cos t·x_t − x̂₀)/sin t
(from z = (x_t − cos t·x₀)/sin t) [derived; FastGen ``x0_to_flow``].

Consistency function (sCM eq. 7): f_θ(x_t, t) = cos t·x_t − sin t·σ_d·F_θ(x_t/σ_d, t), so f(x, 0) = x.

EDM preconditioning *is* TrigFlow [derived]: at σ = σ_d tan t, EDM's c_in = cos t/σ_d, c_skip = cos²t,
c_out = σ_d sin t (EDM Table 1), so the EDM denoiser D_θ(x_t/cos t, σ) = cos t·x_t + σ_d sin t·net(x_t/σ_d, c_noise)
and F_θ = (cos t·x_t − D_θ)/(σ_d sin t) = −net(x_t/σ_d, c_noise). Hence f_θ = D_θ(x_t/cos t, σ_d tan t): a network
with EDM preconditioning is an sCM consistency function without any change, and an sCM student copied from an EDM
teacher starts as the teacher's one-step DDIM jump.

Training signal (sCM §4, Alg. 1; FastGen ``sCM.py``): with θ⁻ = sg θ,

    J = cos t·sin t·dF_{θ⁻}/dt                     one jvp with tangents (cos t·sin t·dx_t/dt, cos t·sin t)
    g = −cos²t·(σ_d F_{θ⁻} − dx_t/dt) − r·(cos t·sin t·x_t + σ_d·J)        (= cos t·df_{θ⁻}/dt at r = 1)
    g ← g / (‖g‖ + c)                                 tangent normalisation, per example, c = 0.1
                                                      (FastGen: g / (‖g‖/√d + c), ``scm.tangent_norm``)
    L = e^{−w_φ(t)}·mean_d ‖F_θ − sg F_θ − g‖² + w_φ(t)                      adaptive weighting w_φ

so ∇_θ L = −2e^{−w}·g·∂F_θ/∂θ / d. The e^{−w}/d + w form is docs/methods.md §13.2 (FastGen's logvar: e^{−logvar}·… +
logvar). r = min(1, k / warm-up) is the tangent warm-up. Both time derivatives are bounded even where c_noise(t)
is not: the tangent's factor cos t·sin t cancels d ln tan t / dt = 1/(sin t cos t) of an EDM c_noise = ¼ ln σ.

All functions here are pure and per example ([B] values, data-shaped arrays [B, ...]).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from consistency.diffusion.processes import broadcast_to_data

TANGENT_NORM_CONST = 0.1   # c of g/(‖g‖ + c) (sCM §4.2; FastGen tangent_warmup_const)
TANGENT_NORMS = ("paper", "fastgen")   # g/(‖g‖ + c) (sCM §4.2) | g/(‖g‖/√d + c) (FastGen sCM.py)
T_SAMPLINGS = ("clip", "truncate")     # lognormal σ clipped to [σ_min, σ_max] | truncated to it (FastGen)
FD_RELATIVE_STEP = 1e-3    # finite-difference JVP: ε = 1e-3·t (FastGen jvp_finite_diff_eps)
PAPER_MID_T = 1.1          # sCM 2-step intermediate time (paper) [unverified: docs/methods.md §17 item 20]
FASTGEN_MID_SIGMA = 0.821  # FastGen's 2-step intermediate σ, t = arctan(0.821/σ_d) [unofficial code]


# ----------------------------------------------------------------------------------------------------------------
# TrigFlow ↔ EDM
# ----------------------------------------------------------------------------------------------------------------

def t_from_sigma(sigma, sigma_data: float):
    """t = arctan(σ/σ_d) (σ = σ_d tan t)."""
    return jnp.arctan2(jnp.asarray(sigma), sigma_data)


def sigma_from_t(t, sigma_data: float):
    """σ = σ_d·tan t."""
    return sigma_data * jnp.tan(jnp.asarray(t))


def forward(x0, z, t):
    """x_t = cos t·x₀ + sin t·z (z already scaled by σ_d)."""
    return broadcast_to_data(jnp.cos(t), x0) * x0 + broadcast_to_data(jnp.sin(t), x0) * z


def conditional_velocity(x0, z, t):
    """dx_t/dt of the conditional path = cos t·z − sin t·x₀ (sCT's velocity; docs/methods.md §13.2)."""
    return broadcast_to_data(jnp.cos(t), x0) * z - broadcast_to_data(jnp.sin(t), x0) * x0


def velocity_from_denoiser(x_t, t, x0_hat):
    """E[dx_t/dt | x_t] = (cos t·x_t − x̂₀)/sin t for x̂₀ = E[x₀|x_t] (module doc)."""
    return (broadcast_to_data(jnp.cos(t), x_t) * x_t - x0_hat) / broadcast_to_data(jnp.sin(t), x_t)


def trigflow_velocity(ve_denoiser: Callable, sigma_data: float) -> Callable:
    """(x_t, t) → σ_d·F(x_t/σ_d, t) of a VE/EDM denoiser D(x, σ): the sCD teacher from an EDM teacher, no retraining
    (x_VE = x_t/cos t, σ = σ_d tan t)."""
    def velocity(x_t, t):
        x0_hat = ve_denoiser(x_t / broadcast_to_data(jnp.cos(t), x_t), sigma_from_t(t, sigma_data))
        return velocity_from_denoiser(x_t, t, x0_hat)
    return velocity


def consistency_output(x_t, t, F, sigma_data: float):
    """f = cos t·x_t − sin t·σ_d·F (sCM eq. 7); f(x, 0) = x for any F."""
    return broadcast_to_data(jnp.cos(t), x_t) * x_t - broadcast_to_data(jnp.sin(t), x_t) * sigma_data * F


# ----------------------------------------------------------------------------------------------------------------
# Time sampling
# ----------------------------------------------------------------------------------------------------------------

def sample_t(normal, p_mean: float, p_std: float, sigma_data: float, t_min: float, t_max: float):
    """t = arctan(e^{P_mean + P_std·n}/σ_d), clipped to [t_min, t_max] (sCM §4: lognormal σ → TrigFlow time, kept
    below π/2 where tan t blows up; docs/methods.md §13.2 pitfalls). ``normal``: standard normal draws [B]."""
    t = t_from_sigma(jnp.exp(p_mean + p_std * normal), sigma_data)
    return jnp.clip(t, t_min, t_max)


def sample_t_truncated(uniform, p_mean: float, p_std: float, sigma_data: float, sigma_min: float, sigma_max: float):
    """t = arctan(σ/σ_d) with ln σ ~ N(P_mean, P_std²) *truncated* to [ln σ_min, ln σ_max] by inverse-CDF sampling:
    ln σ = P_mean + P_std·Φ⁻¹(Φ(a) + u·(Φ(b) − Φ(a))), a, b the standardised bounds, u ~ U[0, 1) per example
    (NVlabs/FastGen ``fastgen/networks/noise_schedule.py``, ``_truncated_lognormal_sample``; bounds 0.002 and 80).
    :func:`sample_t` instead clips the untruncated draw, which puts the tails' mass on the two ends."""
    lo = jax.scipy.stats.norm.cdf((math.log(sigma_min) - p_mean) / p_std)
    hi = jax.scipy.stats.norm.cdf((math.log(sigma_max) - p_mean) / p_std)
    z = jax.scipy.special.ndtri(lo + uniform * (hi - lo))
    sigma = jnp.clip(jnp.exp(p_mean + p_std * z), sigma_min, sigma_max)   # float rounding only
    return t_from_sigma(sigma, sigma_data)


# ----------------------------------------------------------------------------------------------------------------
# Tangent and loss
# ----------------------------------------------------------------------------------------------------------------

def tangent_jvp(F_minus: Callable, x_t, t, dxdt):
    """(F_{θ⁻}(x_t, t), J) with J = cos t·sin t·dF_{θ⁻}/dt from one ``jax.jvp`` with tangents
    (cos t·sin t·dx_t/dt, cos t·sin t) (sCM Alg. 1; FastGen ``_jvp``). ``F_minus(x_t, t)`` takes the *unscaled*
    x_t (the network's x_t/σ_d scaling is inside it). Runs in the inputs' dtype: keep them float32 (docs/methods.md §18 item 6)."""
    cs = jnp.cos(t) * jnp.sin(t)
    return jax.jvp(F_minus, (x_t, t), (broadcast_to_data(cs, x_t) * dxdt, cs))


def tangent_finite_difference(F_minus: Callable, x_t, t, dxdt, relative_step: float = FD_RELATIVE_STEP):
    """The same J by a central difference along the same direction: [F(x + εv_x, t + εv_t) − F(x − εv_x, t − εv_t)]/2ε,
    v = (cos t sin t dx_t/dt, cos t sin t), ε = relative_step·t per example (sCM's fallback without forward-mode AD;
    FastGen ``_estimate_jvp_finite_difference``). Both passes must see the same dropout key (docs/methods.md §18 item 1):
    ``F_minus`` is called twice with whatever key it closes over. Returns (F(x_t, t), J)."""
    cs = jnp.cos(t) * jnp.sin(t)
    eps = jnp.maximum(relative_step * jnp.abs(t), 1e-6)
    vx, vt = broadcast_to_data(cs * eps, x_t) * dxdt, cs * eps
    plus, minus = F_minus(x_t + vx, t + vt), F_minus(x_t - vx, t - vt)
    return F_minus(x_t, t), (plus - minus) / broadcast_to_data(2.0 * eps, x_t)


def tangent(F_minus_value, J, x_t, t, dxdt, sigma_data: float, warmup):
    """g = −cos²t·(σ_d F⁻ − dx_t/dt) − r·(cos t sin t·x_t + σ_d J) (sCM eq. 8 / Alg. 1; docs/methods.md §13.2); r = warmup."""
    cos, sin = jnp.cos(t), jnp.sin(t)
    first = -broadcast_to_data(cos ** 2, x_t) * (sigma_data * F_minus_value - dxdt)
    second = -(broadcast_to_data(cos * sin, x_t) * x_t + sigma_data * J)
    return first + broadcast_to_data(jnp.asarray(warmup, x_t.dtype), x_t) * second


def tangent_norm(g):
    """‖g‖₂ per example over all data dimensions [B]."""
    return jnp.sqrt(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1))


def normalize_tangent(g, c: float = TANGENT_NORM_CONST, form: str = "paper"):
    """The tangent normalisation, per example over d = the example's number of entries (``config.scm.tangent_norm``):

    * ``'paper'``:   g / (‖g‖₂ + c)        (sCM §4.2, the form of docs/methods.md §13.2);
    * ``'fastgen'``: g / (‖g‖₂/√d + c)     (NVlabs/FastGen ``fastgen/methods/consistency_model/sCM.py``,
      ``g_norm_spatial_invariance=True`` by default: the norm made invariant to the image size). On CIFAR-10
      (d = 3072) the normalisation takes over at ‖g‖ ≈ c·√d = 5.54 instead of 0.1.
    """
    if form not in TANGENT_NORMS:
        raise ValueError(f"tangent normalisation {form!r} is not one of {TANGENT_NORMS}")
    norm = tangent_norm(g)
    if form == "fastgen":
        norm = norm / math.sqrt(math.prod(g.shape[1:]))
    return g / broadcast_to_data(norm + c, g)


def tangent_warmup(step, warmup_steps: int):
    """r = min(1, k / warm-up) from the traced step (sCM §4.2: 10k iterations); warm-up 0 → r = 1."""
    if warmup_steps <= 0:
        return jnp.asarray(1.0, jnp.float32)
    return jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / float(warmup_steps))


def scm_loss(F_theta, g, log_weight):
    """e^{−w}·mean_d ‖F_θ − sg F_θ − g‖² + w per example (docs/methods.md §13.2), with w = ``log_weight`` [B] the adaptive
    weighting w_φ(t). The value of the squared term is mean_d ‖g‖²; its θ-gradient is −2 e^{−w} g·∂F_θ/d."""
    residual = F_theta - jax.lax.stop_gradient(F_theta) - jax.lax.stop_gradient(g)
    per_example = jnp.mean(residual.reshape(residual.shape[0], -1) ** 2, axis=1)
    return jnp.exp(-log_weight) * per_example + log_weight, per_example


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------

def sampling_times(num_steps: int, t_max: float, mid_t: float) -> list[float]:
    """The descending times of an n-step sampler: t_max, then n − 1 intermediate points; 2 steps use ``mid_t``
    (sCM: t = 1.1 [unverified]; FastGen σ = 0.821 [unofficial code]), more steps add points evenly spaced in t
    between mid_t and 0 (a documented choice; the paper samples at 1 and 2 steps)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if num_steps == 1:
        return [float(t_max)]
    inner = [mid_t * (num_steps - 1 - i) / (num_steps - 1) for i in range(num_steps - 1)]
    return [float(t_max)] + [float(mid_t)] + inner[1:]


def multistep_sample(f: Callable, rng, shape, times, sigma_data: float):
    """x = σ_d z at times[0], x₀ = f(x, t₀); for each later t: x = cos t·x₀ + sin t·σ_d z, x₀ = f(x, t)
    (sCM §2 multistep sampling, the CM Alg. 1 in TrigFlow). ``f(x, t)`` with t a [B] array."""
    keys = jax.random.split(rng, len(times))
    x = sigma_data * jax.random.normal(keys[0], shape)
    x0 = f(x, jnp.full(shape[:1], times[0]))
    for key, t in zip(keys[1:], times[1:]):
        t_b = jnp.full(shape[:1], t)
        x0 = f(forward(x0, sigma_data * jax.random.normal(key, shape), t_b), t_b)
    return x0


# ----------------------------------------------------------------------------------------------------------------
# The TrigFlow Gaussian oracle (docs/methods.md §15 O6)
# ----------------------------------------------------------------------------------------------------------------

def gaussian_variance(t, s: float, sigma_data: float):
    """v(t) = cos²t·s² + sin²t·σ_d², the variance of x_t for x₀ ~ N(0, s²)."""
    return jnp.cos(t) ** 2 * s ** 2 + jnp.sin(t) ** 2 * sigma_data ** 2


def gaussian_velocity(x_t, t, s: float, sigma_data: float):
    """E[dx_t/dt | x_t] = sin t cos t (σ_d² − s²)/v(t)·x_t (O6)."""
    return broadcast_to_data(jnp.sin(t) * jnp.cos(t) * (sigma_data ** 2 - s ** 2)
                             / gaussian_variance(t, s, sigma_data), x_t) * x_t


def gaussian_consistency(x_t, t, s: float, sigma_data: float):
    """The exact consistency function f* = s·x_t/√v(t) (O6): the PF-ODE keeps x_t/√v(t) constant."""
    return broadcast_to_data(s / jnp.sqrt(gaussian_variance(t, s, sigma_data)), x_t) * x_t


def gaussian_consistency_F(x_t, t, s: float, sigma_data: float):
    """The F* with f(F*) = f*: (cos t·x_t − f*)/(σ_d sin t); for s = σ_d, (cos t − 1)·x_t/(σ_d sin t) ≠ 0 (O6)."""
    return ((broadcast_to_data(jnp.cos(t), x_t) * x_t - gaussian_consistency(x_t, t, s, sigma_data))
            / broadcast_to_data(sigma_data * jnp.sin(t), x_t))


def t_max_for(sigma_max: float, sigma_data: float) -> float:
    """The largest training/sampling time, t at σ_max (clipped below π/2, docs/methods.md §13.2 pitfalls)."""
    return math.atan2(sigma_max, sigma_data)
