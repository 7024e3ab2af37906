"""Consistency trajectory models, CTM (Kim et al. 2023, arXiv 2310.02279, `sony/ctm`; docs/methods.md §13.1): pure maths.

The jump map from level t to any s ≤ t (VE coordinates, x_t = x + t·ε):

    G_θ(x_t, t, s) = (s/t)·x_t + (1 − s/t)·g_θ(x_t, t, s)          (docs/methods.md §13.1; seed eq. 51 with b = s)

so G(x, t, t) = x for any g, G(x, t, σ_min) is a consistency function with c_skip = σ_min/t, and with g = the
exact denoiser E[x₀|x_t] a *single* jump t → s is the VE-DDIM (= Euler) step, exact when the denoiser is constant
along the path. Everything here takes callables ``g(x, t, s) -> x̂`` and per-example level arrays [B].
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from consistency.diffusion import solvers


def jump(g_value: jax.Array, x_t: jax.Array, t, s) -> jax.Array:
    """G = (s/t)·x_t + (1 − s/t)·g (docs/methods.md §13.1): the VE-DDIM jump holding the estimate g fixed."""
    return solvers.ve_ddim(x_t, g_value, t, s)


def trajectory_map(g: Callable) -> Callable:
    """``G(x, t, s)`` from ``g(x, t, s)`` (docs/methods.md §13.1); G(x, t, t) = x exactly."""
    return lambda x, t, s: jump(g(x, t, s), x, t, s)


HEUN_STEP_STRATEGIES = ("weighted", "uniform")
ADAPTIVE_EPS = 1e-4   # ‖∇ L_main‖ / (‖∇ L_aux‖ + 1e-4) (sony/ctm `karras_diffusion.py`, calculate_adaptive_weight)


def heun_step_probabilities(max_steps: int, strategy: str = "weighted") -> jax.Array:
    """P(k), k = 1 … ``max_steps``, of the number of teacher Heun steps of one batch (sony/ctm `karras_diffusion.py`,
    ``get_num_heun_step``): ``'weighted'`` (CTM's default, ``heun_step_multiplier`` 1) p(k) = k/Σk = 2k/(K(K+1));
    ``'uniform'`` p(k) = 1/K."""
    if strategy not in HEUN_STEP_STRATEGIES:
        raise ValueError(f"heun step strategy {strategy!r} is not one of {HEUN_STEP_STRATEGIES}")
    k = jnp.arange(1, int(max_steps) + 1, dtype=jnp.float32)
    weights = k if strategy == "weighted" else jnp.ones_like(k)
    return weights / jnp.sum(weights)


def draw_heun_steps(rng: jax.Array, max_steps: int, strategy: str = "weighted") -> jax.Array:
    """One k for the whole batch (CTM draws it once per step on rank 0 and broadcasts it), int32 scalar."""
    p = heun_step_probabilities(max_steps, strategy)
    return jax.random.choice(rng, p.shape[0], p=p).astype(jnp.int32) + 1


def draw_pair_indices(keys: jax.Array, k: jax.Array, num_scales: int) -> tuple[jax.Array, jax.Array]:
    """Per example (i, j) on the descending N-point grid (index 0 = σ_max) for a batch's k (sony/ctm `resample.py`,
    ``UniformSampler.sample_t`` / ``sample_s``, strategy 'uniform'): i ~ U{0 … N−1−k}, so u = grid[i + k] never
    passes σ_min (no clipping), and j ~ U{i + k … N−1}, so s ≤ u. ``keys``: one key per example."""
    last = int(num_scales) - 1

    def one(key):
        i = jax.random.randint(jax.random.fold_in(key, 1), (), 0, last - k + 1)
        j = jax.random.randint(jax.random.fold_in(key, 3), (), i + k, last + 1)
        return i, j
    return jax.vmap(one)(keys)


def teacher_heun_chain(teacher: Callable, x_t: jax.Array, grid: jax.Array, start: jax.Array,
                       num_steps: jax.Array) -> jax.Array:
    """x_u: ``num_steps`` (one traced scalar for the batch) teacher Heun steps (EDM Alg. 1) from grid[start] down the
    descending grid, one interval at a time, per example ``start`` [B] with start + num_steps ≤ N − 1 (sony/ctm
    `karras_diffusion.py`, ``heun_solver``). Runs exactly ``num_steps`` steps (a ``fori_loop`` with a traced bound):
    no masked steps."""
    def body(j, x):
        sigma, sigma_next = grid[start + j], grid[start + j + 1]
        return solvers.heun_step(lambda y, sg, c=None: teacher(y, sg), x, sigma, sigma_next)

    return jax.lax.fori_loop(0, num_steps, body, x_t)


def dsm_sigmas(normal: jax.Array, uniform: jax.Array, lognormal: jax.Array, p_mean: float, p_std: float,
               sigma_min: float, sigma_max: float, rho: float, fraction: float) -> jax.Array:
    """DSM noise levels per example (sony/ctm `resample.py`, ``HalfLogNormalHalfUniformSampler``): where
    ``lognormal`` (bool [B]) σ = exp(P_mean + P_std·n), else σ on the ρ-ramp at u·``fraction``:
    σ = (σ_max^{1/ρ} + u·fraction·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, u ~ U[0, 1) — with CTM's fraction 0.7 σ is
    ρ-uniform on [0.318, 80] (EDM eq. 5's spacing)."""
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    ramp = (hi + uniform * fraction * (lo - hi)) ** rho
    return jnp.where(lognormal, jnp.exp(p_mean + p_std * normal), ramp)


def soft_consistency_points(G_online: Callable, G_target: Callable, G_sg_online: Callable, x_t, t, x_u, u, s,
                            sigma_min: float):
    """(x_est, x_tgt) of CTM's soft-consistency loss (docs/methods.md §13.1, CTM eq. 6 with the code's σ_min mapping):

        x_est = G_{sg θ⁻}(G_θ(x_t, t, s), s, σ_min)       — gradient through G_θ and the *input* of the outer map
        x_tgt = G_{θ⁻}(G_{sg θ}(x_u, u, s), s, σ_min)     — under sg (the caller stops it)

    ``G_target`` has θ⁻'s parameters under sg but not its input; ``G_sg_online`` is G with sg θ."""
    floor = jnp.full_like(s, sigma_min)
    x_est = G_target(G_online(x_t, t, s), s, floor)
    x_tgt = G_target(G_sg_online(x_u, u, s), s, floor)
    return x_est, jax.lax.stop_gradient(x_tgt)


def adaptive_weight(grad_main, grad_aux, eps: float = ADAPTIVE_EPS, max_weight: float = 1e4,
                    min_weight: float = 0.0) -> jax.Array:
    """λ = ‖∇_last L_main‖ / (‖∇_last L_aux‖ + ε) under sg (docs/methods.md §13.1: CTM's DSM and GAN weights,
    VQGAN-style; ε = 1e-4 and the clip to [0, 1e4] as sony/ctm `karras_diffusion.py` ``calculate_adaptive_weight``),
    clipped to [min_weight, max_weight] (GAN: [0.01, 10]) so an aux gradient that vanishes cannot blow it up."""
    def norm(tree):
        return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))
    ratio = norm(grad_main) / (norm(grad_aux) + eps)
    return jax.lax.stop_gradient(jnp.clip(ratio, min_weight, max_weight))


def gamma_sample(G: Callable, x_top: jax.Array, sigmas, gamma: float, noise_fn: Callable) -> jax.Array:
    """γ-sampling (docs/methods.md §13.1 [unverified]): x ← G(x, t_n, √(1−γ²)·t_{n+1}) + γ·t_{n+1}·ε on descending
    ``sigmas`` (last = σ_min, where no noise is added). γ = 0: deterministic long jumps; γ = 1: CM-style
    (jump to the data end, re-noise to t_{n+1}). ``noise_fn(n)`` gives the step-n noise."""
    sigmas = [float(v) for v in sigmas]
    x = x_top
    batch = x.shape[0]
    for n, (t, t_next) in enumerate(zip(sigmas, sigmas[1:])):
        final = n == len(sigmas) - 2
        target = t_next if final else (1.0 - gamma ** 2) ** 0.5 * t_next
        target = max(target, sigmas[-1])
        x = G(x, jnp.full((batch,), t), jnp.full((batch,), target))
        if not final and gamma > 0:
            x = x + gamma * t_next * noise_fn(n)
    return x
