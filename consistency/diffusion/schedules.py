"""Noise grids and training-step schedules, all jnp and jit-traceable in the step k.

Sources: Karras et al. 2022 (EDM) eq. 5; Song et al. 2023 (CM) Appendix C; Song & Dhariwal 2023 (iCT) §3.3–3.5;
Geng et al. 2024 (ECT); docs/methods.md §1.4, §5, §6, §7.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def karras_sigmas(num: int | jax.Array, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                  size: int | None = None) -> jax.Array:
    """Ascending Karras grid σ_1 < … < σ_N (EDM eq. 5; docs/methods.md §0).

    σ_i = (σ_min^{1/ρ} + (i−1)/(N−1)·(σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ, i = 1…N.
    ``num`` may be traced; then pass a static ``size`` ≥ num: entries past N repeat σ_max (masked by callers),
    so a growing N never changes shapes (docs/architecture.md, "A growing N must not recompile").
    """
    size = int(num) if size is None else size
    i = jnp.arange(size, dtype=jnp.float32)
    frac = jnp.clip(i / jnp.maximum(jnp.asarray(num, jnp.float32) - 1.0, 1.0), 0.0, 1.0)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (lo + frac * (hi - lo)) ** rho
    # Pin the ends exactly (float32 roots drift by ~1e-7), so the CM boundary f(x, σ_min) = x holds bit-exactly.
    sigmas = jnp.where(i >= jnp.asarray(num, jnp.float32) - 1.0, jnp.float32(sigma_max), sigmas)
    return sigmas.at[0].set(sigma_min)


# ----------------------------------------------------------------------------------------------------------
# Consistency training, Song et al. 2023 (CM), Appendix C; docs/methods.md §5.
# ----------------------------------------------------------------------------------------------------------

def ct_num_steps(step: jax.Array, total_steps: int, s0: int = 2, s1: int = 150) -> jax.Array:
    """CT discretisation N(k) = ⌈√(k/K·((s₁+1)² − s₀²) + s₀²) − 1⌉ + 1 (CM Appendix C; docs/methods.md §5).

    N(0) = s₀ and N(K) = s₁ + 1 (CIFAR-10: 2 → 151). Traced ``step`` is fine.
    """
    k = jnp.asarray(step, jnp.float32)
    inner = k / total_steps * ((s1 + 1.0) ** 2 - s0 ** 2) + s0 ** 2
    return (jnp.ceil(jnp.sqrt(inner) - 1.0) + 1.0).astype(jnp.int32)


def ct_target_decay(step: jax.Array, total_steps: int, s0: int = 2, s1: int = 150, mu0: float = 0.9,
                    form: str = "code") -> jax.Array:
    """Target-network EMA rate μ(k) for CT (docs/methods.md §5 and §17 errata 1).

    paper: μ(k) = exp(s₀·ln μ₀ / N(k))       = μ₀^{s₀/N(k)}
    code:  μ(k) = exp(s₀·ln μ₀ / (N(k) − 1)) = μ₀^{s₀/(N(k)−1)}   (jcm get_ema_scales_fn, cm create_ema_and_scales_fn)
    The code form reproduces the released CIFAR-10 numbers and is the default.
    """
    n = ct_num_steps(step, total_steps, s0, s1).astype(jnp.float32)
    if form == "code":
        denom = n - 1.0
    elif form == "paper":
        denom = n
    else:
        raise ValueError(f"ct_target_decay: form must be 'code' or 'paper', got {form!r}")
    return jnp.exp(s0 * jnp.log(mu0) / denom)


# ----------------------------------------------------------------------------------------------------------
# Improved CT, Song & Dhariwal 2023 (iCT) §3.4–3.5; docs/methods.md §6.
# ----------------------------------------------------------------------------------------------------------

def ict_stage_length(total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """K′ = ⌊K / (log₂⌊s₁/s₀⌋ + 1)⌋ (iCT eq. 12)."""
    import math
    return max(1, int(math.floor(total_steps / (math.log2(math.floor(s1 / s0)) + 1))))


def ict_num_steps(step: jax.Array, total_steps: int, s0: int = 10, s1: int = 1280) -> jax.Array:
    """iCT doubling curriculum N(k) = min(s₀·2^⌊k/K′⌋, s₁) + 1 (iCT eq. 12): 11, 21, 41, …, 1281."""
    stage = jnp.asarray(step, jnp.int32) // ict_stage_length(total_steps, s0, s1)
    n = jnp.minimum(s0 * 2.0 ** jnp.minimum(stage, 30).astype(jnp.float32), float(s1))
    return (n + 1.0).astype(jnp.int32)


def lognormal_index_pmf(sigmas: jax.Array, num: jax.Array, p_mean: float = -1.1, p_std: float = 2.0) -> jax.Array:
    """Discrete lognormal over grid indices i (pair σ_i < σ_{i+1}) (iCT §3.5; docs/methods.md §1.4).

    p(i) ∝ erf((ln σ_{i+1} − P_mean)/(√2 P_std)) − erf((ln σ_i − P_mean)/(√2 P_std)), i = 0 … N−2.
    ``sigmas`` is a fixed-size ascending grid (see :func:`karras_sigmas` with ``size``); entries whose pair reaches
    past the first ``num`` points get probability 0, so a traced N(k) never changes shapes.
    """
    erf = jax.scipy.special.erf
    log_s = jnp.log(sigmas)
    cdf = erf((log_s - p_mean) / (jnp.sqrt(2.0) * p_std))
    mass = cdf[1:] - cdf[:-1]
    valid = jnp.arange(mass.shape[0]) < (jnp.asarray(num) - 1)
    mass = jnp.where(valid, mass, 0.0)
    return mass / jnp.sum(mass)


def uniform_index_pmf(size: int, num: jax.Array) -> jax.Array:
    """Uniform over the N−1 pairs (i, i+1) of an N-point grid (CM Alg. 2/3: n ~ U{1…N−1}), masked to ``size−1``."""
    valid = jnp.arange(size - 1) < (jnp.asarray(num) - 1)
    return valid / jnp.sum(valid)


def sample_index(rng: jax.Array, pmf: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
    """Draw grid indices i from a pmf over pairs (jax.random.categorical on log p)."""
    return jax.random.categorical(rng, jnp.log(pmf), shape=shape)


# ----------------------------------------------------------------------------------------------------------
# ECT, Geng et al. 2024 (`locuslab/ect`); docs/methods.md §7.
# ----------------------------------------------------------------------------------------------------------

def ect_stage(step: jax.Array, steps_per_stage: int) -> jax.Array:
    """Curriculum stage a = ⌊k / steps_per_stage⌋ (ECT: ⌊tick/double⌋)."""
    return jnp.asarray(step, jnp.int32) // steps_per_stage


def ect_r_from_t(t: jax.Array, stage: jax.Array, q: float = 2.0, k: float = 8.0, b: float = 1.0) -> jax.Array:
    """ECT pairing r = max(0, t·(1 − q^{−(a+1)}·(1 + k·sigmoid(−b·t)))) (ECT loss; docs/methods.md §7).

    Stage 0 gives r = 0 for t ≤ ln 7 (pure denoising); later stages push r → t.
    """
    ratio = 1.0 - q ** (-(jnp.asarray(stage, jnp.float32) + 1.0)) * (1.0 + k * jax.nn.sigmoid(-b * t))
    return jnp.maximum(t * ratio, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Continuous noise-level samplers (docs/methods.md §1.4).
# ----------------------------------------------------------------------------------------------------------

def lognormal_sigmas(rng: jax.Array, shape: tuple[int, ...], p_mean: float = -1.2, p_std: float = 1.2) -> jax.Array:
    """ln σ ~ N(P_mean, P_std²): EDM training (−1.2, 1.2) and ECT (−1.1, 2.0)."""
    return jnp.exp(p_mean + p_std * jax.random.normal(rng, shape))


def edm_loss_weight(sigma: jax.Array, sigma_data: float) -> jax.Array:
    """EDM λ(σ) = (σ² + σ_d²)/(σ·σ_d)² (EDM Table 1; docs/methods.md §2)."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def mcm_teacher_steps(step: jax.Array, n_start: float = 64.0, n_end: float = 1280.0, ramp_steps: int = 100_000):
    """MCM teacher-step annealing N(i) = exp(ln 64 + clip(i/100k, 0, 1)·(ln 1280 − ln 64)) (docs/methods.md §8.1)."""
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / ramp_steps, 0.0, 1.0)
    return jnp.exp(jnp.log(n_start) + frac * (jnp.log(n_end) - jnp.log(n_start)))
