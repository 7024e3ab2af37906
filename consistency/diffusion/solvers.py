"""ODE solvers and samplers on a noise grid, VE (σ) and VP (t), in both directions.

VE solvers integrate the probability-flow ODE dx/dσ = (x − D(x, σ))/σ (seed eq. 16, 48) from σ to σ′.  A grid
``sigmas`` may run downwards (sampling, noise → data; a final σ = 0 is allowed) or upwards (inversion,
data → noise; it must start at σ > 0, e.g. σ_min, because D is not defined at σ = 0).

Each VE solver is a :class:`Solver` with a uniform step ``step(D, x, sigma, sigma_next, state, cond) ->
(x_next, state)`` so that :func:`solve` can scan any of them; ``state`` carries the history of multistep methods
(empty for one-step methods).  σ arguments of the public ``*_step`` functions are scalars or shape [B].

| name | method | order | NFE per step |
|---|---|---|---|
| ``euler`` | Euler = VE-DDIM (docs/methods.md §1.2) | 1 | 1 |
| ``heun`` | EDM 2nd-order Heun, Euler on the step to σ = 0 (EDM Alg. 1) | 2 | 2 (1 on the last) |
| ``dpm_solver_2`` | DPM-Solver-2 (Lu et al. 2022, Alg. 1, r₁ = ½): midpoint in log σ | 2 | 2 (1 on the last) |
| ``dpmpp_2m`` | DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2): data prediction, multistep in λ = −ln σ | 2 | 1 |

VP (z_t = α_t x + σ_t ε): DDIM, its inverse invDDIM, aDDIM (docs/methods.md §1.2, §8.1) and a DDIM sampler.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from consistency.diffusion.denoisers import Denoiser, batch_sigma, ode_drift
from consistency.diffusion.processes import _as_float, broadcast_to_data, vp_alpha_sigma
from consistency.diffusion.schedules import karras_sigmas


# ----------------------------------------------------------------------------------------------------------------
# VE one-step solvers
# ----------------------------------------------------------------------------------------------------------------

def ve_ddim(x: jax.Array, x0_hat: jax.Array, sigma, sigma_next) -> jax.Array:
    """Jump from σ to σ′ holding the denoised estimate fixed: (σ′/σ)·x + (1 − σ′/σ)·x̂.

    The VE Euler step / VE-DDIM; exact when D is constant along the path (seed eq. 19, 24, 49; docs/methods.md §1.2).
    """
    ratio = broadcast_to_data(_as_float(sigma_next) / _as_float(sigma), x)
    return ratio * x + (1.0 - ratio) * x0_hat


def euler_step(denoiser: Denoiser, x: jax.Array, sigma, sigma_next, cond=None) -> jax.Array:
    """Euler step x′ = x + (σ′ − σ)(x − D(x, σ))/σ (docs/methods.md §1.2), written as (σ′/σ)x + (1 − σ′/σ)D."""
    return ve_ddim(x, denoiser(x, batch_sigma(sigma, x), cond), sigma, sigma_next)


def _unless_final(sigma, sigma_next, x: jax.Array, first_order: Callable, second_order: Callable) -> jax.Array:
    """``first_order()`` where σ′ = 0, else ``second_order(safe_sigma_next)``.

    A scalar σ′ branches with ``lax.cond`` (the second-order evaluation is skipped, so Heun's NFE is 2N − 1 on the
    EDM grid); a per-example σ′ selects with ``where``.  The second-order branch never sees σ′ = 0 (it gets σ
    instead), so a network's ln σ never produces NaN there.
    """
    sigma, sigma_next = _as_float(sigma), _as_float(sigma_next)
    is_final = sigma_next == 0
    safe_next = jnp.where(is_final, sigma, sigma_next)
    if sigma_next.ndim == 0:
        return jax.lax.cond(is_final, lambda: first_order(), lambda: second_order(safe_next))
    return jnp.where(broadcast_to_data(is_final, x), first_order(), second_order(safe_next))


def heun_step(denoiser: Denoiser, x: jax.Array, sigma, sigma_next, cond=None) -> jax.Array:
    """EDM 2nd-order Heun step (EDM Alg. 1; docs/methods.md §1.2); plain Euler when σ′ = 0.

    d = (x − D(x,σ))/σ; x̃ = x + (σ′−σ)d; d′ = (x̃ − D(x̃,σ′))/σ′; x′ = x + (σ′−σ)(d + d′)/2.
    """
    d = ode_drift(denoiser, x, sigma, cond)
    dsigma = broadcast_to_data(_as_float(sigma_next) - _as_float(sigma), x)
    x_euler = x + dsigma * d

    def corrected(safe_next):
        return x + dsigma * 0.5 * (d + ode_drift(denoiser, x_euler, safe_next, cond))

    return _unless_final(sigma, sigma_next, x, lambda: x_euler, corrected)


def dpm_solver_2_step(denoiser: Denoiser, x: jax.Array, sigma, sigma_next, cond=None) -> jax.Array:
    """DPM-Solver-2 (Lu et al. 2022, Alg. 1 with r₁ = ½) in VE form: midpoint rule in log σ.

    With α ≡ 1 and noise prediction ε = (x − D)/σ: σ_m = √(σσ′) (the midpoint of λ = −ln σ),
    x_m = x + (σ_m − σ)·ε(x, σ) (the first-order DPM-Solver step = Euler = DDIM), x′ = x + (σ′ − σ)·ε(x_m, σ_m).
    Plain Euler when σ′ = 0 (λ′ = ∞).
    """
    sigma_f, sigma_next_f = _as_float(sigma), _as_float(sigma_next)
    d = ode_drift(denoiser, x, sigma, cond)
    dsigma = broadcast_to_data(sigma_next_f - sigma_f, x)

    def midpoint(safe_next):
        sigma_mid = jnp.sqrt(sigma_f * safe_next)
        x_mid = x + broadcast_to_data(sigma_mid - sigma_f, x) * d
        return x + dsigma * ode_drift(denoiser, x_mid, sigma_mid, cond)

    return _unless_final(sigma, sigma_next, x, lambda: x + dsigma * d, midpoint)


class DpmppState(NamedTuple):
    """History of DPM-Solver++(2M): the previous denoised x̂, the previous step h = λ_prev′ − λ_prev, and whether
    they exist (False before the first step)."""

    x0_prev: jax.Array
    h_prev: jax.Array
    has_prev: jax.Array


def dpmpp_2m_init(x: jax.Array) -> DpmppState:
    """Empty DPM-Solver++(2M) history for a solve starting at x."""
    return DpmppState(jnp.zeros_like(x), jnp.ones((), x.dtype), jnp.zeros((), bool))


def dpmpp_2m_step(denoiser: Denoiser, x: jax.Array, sigma, sigma_next, state: DpmppState,
                  cond=None) -> tuple[jax.Array, DpmppState]:
    """DPM-Solver++(2M) step (Lu et al. 2022b, "DPM-Solver++", Alg. 2) for the VE ODE (α ≡ 1, λ = −ln σ).

    h = λ′ − λ = ln(σ/σ′); x′ = (σ′/σ)·x + (1 − σ′/σ)·x̂_c with
    x̂_c = (1 + 1/(2r))·x̂ − (1/(2r))·x̂_prev, r = h_prev/h (second order), or x̂_c = x̂ on the first step and on the
    step to σ′ = 0 (first order, as in the reference implementations).  Works for descending and ascending grids.
    Returns (x′, new state); one NFE per step.
    """
    sigma_f, sigma_next_f = _as_float(sigma), _as_float(sigma_next)
    x0 = denoiser(x, batch_sigma(sigma_f, x), cond)
    is_final = sigma_next_f == 0
    safe_next = jnp.where(is_final, sigma_f, sigma_next_f)
    h = jnp.log(sigma_f) - jnp.log(safe_next)
    half_inv_r = 0.5 * h / state.h_prev  # 1/(2r) = h/(2·h_prev)
    x0_multistep = x0 + broadcast_to_data(half_inv_r, x) * (x0 - state.x0_prev)
    use_multistep = broadcast_to_data(state.has_prev & ~is_final, x)
    x0_combined = jnp.where(use_multistep, x0_multistep, x0)
    x_next = ve_ddim(x, x0_combined, sigma_f, sigma_next_f)
    new_state = DpmppState(x0, h.astype(state.h_prev.dtype), jnp.ones_like(state.has_prev))
    return x_next, new_state


class Solver(NamedTuple):
    """A VE solver for :func:`solve`: ``step(D, x, σ, σ′, state, cond) -> (x′, state)``, ``init_state(x)``."""

    step: Callable
    init_state: Callable
    order: int


def _stateless(step_fn: Callable) -> Callable:
    def step(denoiser, x, sigma, sigma_next, state, cond=None):
        return step_fn(denoiser, x, sigma, sigma_next, cond), state

    return step


def _no_state(x):
    return ()


SOLVERS: dict[str, Solver] = {
    "euler": Solver(_stateless(euler_step), _no_state, 1),
    "heun": Solver(_stateless(heun_step), _no_state, 2),
    "dpm_solver_2": Solver(_stateless(dpm_solver_2_step), _no_state, 2),
    "dpmpp_2m": Solver(dpmpp_2m_step, dpmpp_2m_init, 2),
}


def get_solver(solver: str | Solver) -> Solver:
    """Look a solver up by name in :data:`SOLVERS` (a :class:`Solver` passes through)."""
    if isinstance(solver, Solver):
        return solver
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected one of {sorted(SOLVERS)}")
    return SOLVERS[solver]


# ----------------------------------------------------------------------------------------------------------------
# VE grids, solve, samplers, inversion
# ----------------------------------------------------------------------------------------------------------------

def solve(denoiser: Denoiser, x: jax.Array, sigmas, solver: str | Solver = "euler", cond=None,
          return_trajectory: bool = False):
    """Integrate the PF-ODE through consecutive points of the 1-D grid ``sigmas`` with ``jax.lax.scan``.

    ``sigmas[0]`` is the level of ``x``.  Descending grids sample (a final 0 is allowed), ascending grids invert
    (they must start above 0).  Returns x at ``sigmas[-1]``, or (x, trajectory) with trajectory of shape
    [len(sigmas), *x.shape] including the start.
    """
    solver = get_solver(solver)
    sigmas = _as_float(sigmas)

    def body(carry, sigma_pair):
        x_cur, state = carry
        x_next, state = solver.step(denoiser, x_cur, sigma_pair[0], sigma_pair[1], state, cond)
        return (x_next, state), (x_next if return_trajectory else None)

    (x_final, _), path = jax.lax.scan(body, (x, solver.init_state(x)), (sigmas[:-1], sigmas[1:]))
    if return_trajectory:
        return x_final, jnp.concatenate([x[None], path], axis=0)
    return x_final


def edm_sampling_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                        rho: float = 7.0) -> jax.Array:
    """EDM sampling grid: ``num_steps`` descending Karras points then σ = 0 (EDM eq. 5; docs/methods.md §1.2).

    With Heun (Euler on the final step) this costs NFE = 2·num_steps − 1 (35 for N = 18).
    """
    descending = karras_sigmas(num_steps, sigma_min, sigma_max, rho)[::-1]
    return jnp.concatenate([descending, jnp.zeros((1,), descending.dtype)])


def _initial_noise(rng, shape, dtype=jnp.float32):
    """Split ``rng`` into (initial noise, per-step key) the same way in every VE sampler."""
    init_key, step_key = jax.random.split(rng)
    return jax.random.normal(init_key, shape, dtype), step_key


def sample_deterministic(denoiser: Denoiser, rng, shape, sigmas, solver: str | Solver = "heun",
                         cond=None) -> jax.Array:
    """Deterministic sampler: x = σ_max·z, z ~ N(0, I), then :func:`solve` down ``sigmas`` (EDM Alg. 1)."""
    sigmas = _as_float(sigmas)
    z, _ = _initial_noise(rng, shape)
    return solve(denoiser, sigmas[0] * z, sigmas, solver, cond)


def sample_edm_stochastic(denoiser: Denoiser, rng, shape, sigmas, s_churn: float = 0.0, s_min: float = 0.0,
                          s_max: float = float("inf"), s_noise: float = 1.0, cond=None) -> jax.Array:
    """EDM stochastic sampler (Karras et al. 2022, Alg. 2) on a descending grid ``sigmas`` (last entry may be 0).

    Per step i (N = len(sigmas) − 1): γ = min(S_churn/N, √2 − 1) if S_min ≤ σ_i ≤ S_max else 0;
    σ̂ = σ_i(1 + γ); x̂ = x + √(σ̂² − σ_i²)·S_noise·ε; then a Heun step σ̂ → σ_{i+1} (Euler when σ_{i+1} = 0).
    With S_churn = 0 this is :func:`sample_deterministic` with Heun and the same ``rng``.
    """
    sigmas = _as_float(sigmas)
    num_steps = sigmas.shape[0] - 1
    z, step_key = _initial_noise(rng, shape)
    gamma_max = jnp.minimum(s_churn / num_steps, math.sqrt(2.0) - 1.0)

    def body(x, inputs):
        sigma, sigma_next, key = inputs
        gamma = jnp.where((sigma >= s_min) & (sigma <= s_max), gamma_max, 0.0)
        sigma_hat = sigma + gamma * sigma
        eps = jax.random.normal(key, shape, x.dtype)
        # √(σ̂² − σ²) written as σ√(γ(2+γ)): exactly 0 for γ = 0 (the difference form can round below 0 → NaN).
        x_hat = x + sigma * jnp.sqrt(gamma * (2.0 + gamma)) * s_noise * eps
        return heun_step(denoiser, x_hat, sigma_hat, sigma_next, cond), None

    keys = jax.random.split(step_key, num_steps)
    x, _ = jax.lax.scan(body, sigmas[0] * z, (sigmas[:-1], sigmas[1:], keys))
    return x


def invert(denoiser: Denoiser, x0: jax.Array, sigmas_ascending, solver: str | Solver = "heun",
           cond=None, return_trajectory: bool = False):
    """Deterministic PF-ODE inversion data → noise along an ascending grid (PaGoDA encoder; docs/methods.md §9).

    ``sigmas_ascending[0]`` must be > 0 (e.g. σ_min = 0.002): x0 is treated as the state at that level.
    """
    return solve(denoiser, x0, sigmas_ascending, solver, cond, return_trajectory)


# ----------------------------------------------------------------------------------------------------------------
# VP: DDIM, invDDIM, aDDIM, ε-target, DDIM sampler
# ----------------------------------------------------------------------------------------------------------------

def ddim_step(x0_hat: jax.Array, z_t: jax.Array, alpha_t, sigma_t, alpha_s, sigma_s) -> jax.Array:
    """DDIM_{t→s}(x̂, z_t) = α_s·x̂ + (σ_s/σ_t)(z_t − α_t·x̂) (docs/methods.md §1.2; nb (45) with ε̂ = (z_t − α_t x̂)/σ_t).

    Coefficients are scalars or shape [B].  s may be above t (DDIM inversion with a given x̂).
    """
    b = lambda v: broadcast_to_data(v, z_t)  # noqa: E731
    return b(alpha_s) * x0_hat + b(sigma_s / sigma_t) * (z_t - b(alpha_t) * x0_hat)


def inv_ddim(z_s: jax.Array, z_t: jax.Array, alpha_t, sigma_t, alpha_s, sigma_s) -> jax.Array:
    """invDDIM_{t→s}(z_s, z_t) = (z_s − (σ_s/σ_t)·z_t)/(α_s − α_t·σ_s/σ_t): the x̂ that DDIM maps z_t to z_s
    (docs/methods.md §1.2, §8.1)."""
    b = lambda v: broadcast_to_data(v, z_t)  # noqa: E731
    ratio = sigma_s / sigma_t
    return (z_s - b(ratio) * z_t) / b(alpha_s - alpha_t * ratio)


def addim_step(x0_hat: jax.Array, z_t: jax.Array, alpha_t, sigma_t, alpha_s, sigma_s, var_x) -> jax.Array:
    """aDDIM_{t→s}: DDIM with the posterior variance v_x of x added back (docs/methods.md §8.1; MCM, Heek et al. 2024).

    ε̂ = (z_t − α_t x̂)/σ_t;  z_s = α_s x̂ + √(σ_s² + (d/‖ε̂‖²)(α_s − α_t σ_s/σ_t)²·v_x)·ε̂, with d the per-example
    dimension and ‖ε̂‖² per example.  ``var_x`` (scalar or [B]) is the per-coordinate posterior variance, e.g. the
    exact Var[x|z_t] of a Gaussian or η·‖x̂_teacher − x‖²/d (η = 0.75) in distillation.  v_x = 0 gives DDIM.
    """
    b = lambda v: broadcast_to_data(v, z_t)  # noqa: E731
    eps_hat = (z_t - b(alpha_t) * x0_hat) / b(sigma_t)
    dim = math.prod(z_t.shape[1:])
    eps_sq = jnp.sum(eps_hat**2, axis=tuple(range(1, z_t.ndim)))
    gap = alpha_s - alpha_t * sigma_s / sigma_t
    scale = jnp.sqrt(sigma_s**2 + dim / eps_sq * gap**2 * var_x)
    return b(alpha_s) * x0_hat + b(scale) * eps_hat


def ddim_eps_target(z_s: jax.Array, z_t: jax.Array, alpha_t, sigma_t, alpha_s, sigma_s) -> jax.Array:
    """ε* whose DDIM step maps z_t to z_s: ε* = (z_s − (α_s/α_t)·z_t)/(σ_s − (α_s/α_t)·σ_t).

    This is the *corrected* nb (47) (docs/methods.md §8.1, §17 item 11).  The notebook's printed eq. 47 swaps s and t
    inside both coefficients, (z_s − (α_t/α_s) z_t)/(σ_t − (α_t/α_s) σ_s), and does not recover ε.  In ᾱ notation
    the correct form is (x_s − √(ᾱ_s/ᾱ_t) x_t)/(√(1−ᾱ_s) − √(ᾱ_s/ᾱ_t)·√(1−ᾱ_t)).
    """
    b = lambda v: broadcast_to_data(v, z_t)  # noqa: E731
    ratio = alpha_s / alpha_t
    return (z_s - b(ratio) * z_t) / b(sigma_s - ratio * sigma_t)


def ddim_solve(x0_fn: Callable, z: jax.Array, ts, schedule: str = "cosine", cond=None,
               return_trajectory: bool = False):
    """Deterministic DDIM through consecutive VP times ``ts`` (1-D) with x̂ = x0_fn(z_t, t [B], cond).

    Either direction; at t = 0 (α = 1, σ = 0) the result is x̂ itself.
    """
    ts = _as_float(ts)

    def body(z_t, t_pair):
        t, s = t_pair
        alpha_t, sigma_t = vp_alpha_sigma(t, schedule)
        alpha_s, sigma_s = vp_alpha_sigma(s, schedule)
        x0_hat = x0_fn(z_t, batch_sigma(t, z_t), cond)
        z_s = ddim_step(x0_hat, z_t, alpha_t, sigma_t, alpha_s, sigma_s)
        return z_s, (z_s if return_trajectory else None)

    z_final, path = jax.lax.scan(body, z, (ts[:-1], ts[1:]))
    if return_trajectory:
        return z_final, jnp.concatenate([z[None], path], axis=0)
    return z_final


def sample_ddim(x0_fn: Callable, rng, shape, ts, schedule: str = "cosine", cond=None) -> jax.Array:
    """VP DDIM sampler: z ~ N(0, I) at ts[0] (descending), then :func:`ddim_solve` (MCM sampling, docs/methods.md §8.1)."""
    z = jax.random.normal(rng, shape)
    return ddim_solve(x0_fn, z, ts, schedule, cond)
