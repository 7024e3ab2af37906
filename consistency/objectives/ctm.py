"""Consistency trajectory models, CTM (Kim et al. 2023, arXiv 2310.02279, `sony/ctm`; METHODS.md §13.1): pure maths.

The jump map from level t to any s ≤ t (VE coordinates, x_t = x + t·ε):

    G_θ(x_t, t, s) = (s/t)·x_t + (1 − s/t)·g_θ(x_t, t, s)          (METHODS.md §13.1; seed eq. 51 with b = s)

so G(x, t, t) = x for any g, G(x, t, σ_min) is a consistency function with c_skip = σ_min/t, and with g = the
exact denoiser E[x₀|x_t] a *single* jump t → s is the VE-DDIM (= Euler) step, exact when the denoiser is constant
along the path. Everything here takes callables ``g(x, t, s) -> x̂`` and per-example level arrays [B].
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from consistency.diffusion import solvers
from consistency.diffusion.processes import broadcast_to_data


def jump(g_value: jax.Array, x_t: jax.Array, t, s) -> jax.Array:
    """G = (s/t)·x_t + (1 − s/t)·g (METHODS.md §13.1): the VE-DDIM jump holding the estimate g fixed."""
    return solvers.ve_ddim(x_t, g_value, t, s)


def trajectory_map(g: Callable) -> Callable:
    """``G(x, t, s)`` from ``g(x, t, s)`` (METHODS.md §13.1); G(x, t, t) = x exactly."""
    return lambda x, t, s: jump(g(x, t, s), x, t, s)


def teacher_heun_steps(teacher: Callable, x_t: jax.Array, grid: jax.Array, start: jax.Array, stop: jax.Array,
                       max_steps: int) -> jax.Array:
    """x_u: the teacher's Heun solver (EDM Alg. 1) from grid[start] to grid[stop] one grid interval at a time,
    per example (``start``, ``stop`` int [B], grid descending, stop − start ≤ ``max_steps``). Steps past an example's
    ``stop`` leave it unchanged (a masked ``fori_loop`` of ``max_steps`` Heun steps: CTM's k random teacher steps)."""
    last = grid.shape[0] - 1

    def body(j, x):
        here = jnp.minimum(start + j, last)
        nxt = jnp.minimum(here + 1, last)
        active = start + j < stop
        sigma, sigma_next = grid[here], grid[nxt]
        safe_next = jnp.where(active, sigma_next, sigma * 0.5)       # inactive rows step harmlessly, then are masked
        stepped = solvers.heun_step(lambda y, sg, c=None: teacher(y, sg), x, sigma, safe_next)
        return jnp.where(broadcast_to_data(active, x), stepped, x)

    return jax.lax.fori_loop(0, int(max_steps), body, x_t)


def soft_consistency_points(G_online: Callable, G_target: Callable, G_sg_online: Callable, x_t, t, x_u, u, s,
                            sigma_min: float):
    """(x_est, x_tgt) of CTM's soft-consistency loss (METHODS.md §13.1, CTM eq. 6 with the code's σ_min mapping):

        x_est = G_{sg θ⁻}(G_θ(x_t, t, s), s, σ_min)       — gradient through G_θ and the *input* of the outer map
        x_tgt = G_{θ⁻}(G_{sg θ}(x_u, u, s), s, σ_min)     — under sg (the caller stops it)

    ``G_target`` has θ⁻'s parameters under sg but not its input; ``G_sg_online`` is G with sg θ."""
    floor = jnp.full_like(s, sigma_min)
    x_est = G_target(G_online(x_t, t, s), s, floor)
    x_tgt = G_target(G_sg_online(x_u, u, s), s, floor)
    return x_est, jax.lax.stop_gradient(x_tgt)


def adaptive_weight(grad_main, grad_aux, eps: float = 1e-8, max_weight: float = 1e4,
                    min_weight: float = 0.0) -> jax.Array:
    """λ = ‖∇_last L_main‖ / ‖∇_last L_aux‖ under sg (METHODS.md §13.1: CTM's DSM and GAN weights, VQGAN-style),
    clipped to [min_weight, max_weight] (GAN: [0.01, 10]) so an aux gradient that vanishes cannot blow it up."""
    def norm(tree):
        return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))
    ratio = norm(grad_main) / (norm(grad_aux) + eps)
    return jax.lax.stop_gradient(jnp.clip(ratio, min_weight, max_weight))


def gamma_sample(G: Callable, x_top: jax.Array, sigmas, gamma: float, noise_fn: Callable) -> jax.Array:
    """γ-sampling (METHODS.md §13.1 [unverified]): x ← G(x, t_n, √(1−γ²)·t_{n+1}) + γ·t_{n+1}·ε on descending
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
