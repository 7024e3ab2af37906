"""Multistep consistency objectives, VP (Heek et al. 2024) and the notebook's VE form, as pure jnp functions.

One algebra serves both processes (docs/methods.md §8): a noise level is a :class:`Level` (τ, α, σ) per example with
z = α·x + σ·ε; VP has α_t² + σ_t² = 1 (τ = t), VE has α ≡ 1 (τ = σ). With α ≡ 1 the VP-DDIM jump
α_b·x̂ + (σ_b/σ)(z − α·x̂) is exactly the notebook's eq. 51 (b/σ)·x + (1 − b/σ)·x̂ and invDDIM is docs/methods.md §8.2's
x-space target (σ·ẑ − b·x)/(σ − b) [derived], so the VE multistep CM is the VP algorithm with α ≡ 1.

Segments split the level range into T parts with boundaries b_0 < … < b_T; a training pair (t, s) lies in one segment
(b_k ≤ s < t ≤ b_{k+1}) and both points share the boundary b = b_k (seed eq. 52 note "b_{t_n} = b_{t_{n−1}}"):

    z_t = α_t x + σ_t ε,  z_s = sg teacher_step(z_t)        (MCD; MCT: z_s = α_s x + σ_s ε, docs/methods.md §8.1 step 2)
    ẑ   = sg DDIM_{s→b}(x̂_θ⁻(z_s, s), z_s)                  (= z_s when s = b: boundary condition, docs/methods.md §15 O9)
    L   = λ(t)·d(pred, target) in one of three spaces (docs/methods.md §8.1 step 4, nb (46)–(47), (52)):
          'x'    x̂_θ(z_t, t)               vs invDDIM_{t→b}(ẑ, z_t)
          'eps'  ε_θ = (z_t − α_t x̂_θ)/σ_t   vs ε* of the corrected nb (47) (docs/methods.md §17 item 11)
          'jump' F_θ = DDIM_{t→b}(x̂_θ, z_t) vs ẑ                       (nb (46); VE: nb (52))
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from consistency.diffusion import solvers
from consistency.diffusion.processes import broadcast_to_data

LOSS_SPACES = ("x", "eps", "jump")
WEIGHTINGS = ("snr+1", "snr", "uniform")
TEACHER_SOLVERS = ("ddim", "addim", "heun")


class Level(NamedTuple):
    """A noise level per example: τ (VP time t or VE σ, what the networks are called with) and z = α·x + σ·ε."""

    tau: jax.Array
    alpha: jax.Array
    sigma: jax.Array


def perturb(x: jax.Array, noise: jax.Array, level: Level) -> jax.Array:
    """z = α·x + σ·ε (docs/methods.md §0; VE: α ≡ 1, seed eq. 3)."""
    return broadcast_to_data(level.alpha, x) * x + broadcast_to_data(level.sigma, x) * noise


def ve_sigma(level: Level) -> jax.Array:
    """The VE noise level σ/α of a point (docs/methods.md §0 "VE ↔ VP": z = α·x_σ with σ_VE = σ_t/α_t)."""
    return level.sigma / level.alpha


# ----------------------------------------------------------------------------------------------------------------
# The jump to the segment start and its inverse
# ----------------------------------------------------------------------------------------------------------------

def jump_to_boundary(x0_hat: jax.Array, z: jax.Array, level: Level, boundary: Level, at_boundary) -> jax.Array:
    """F = DDIM_{τ→b}(x̂, z) = α_b·x̂ + (σ_b/σ)(z − α·x̂) (nb (44)–(45); VE: nb (51)), and exactly z where
    ``at_boundary`` (τ = b: DDIM_{t→t} is the identity, docs/methods.md §15 O9; also keeps σ = 0 out of the ratio)."""
    sigma_safe = jnp.where(at_boundary, 1.0, level.sigma)
    jumped = solvers.ddim_step(x0_hat, z, level.alpha, sigma_safe, boundary.alpha, boundary.sigma)
    return jnp.where(broadcast_to_data(at_boundary, z), z, jumped)


def x0_reference(z_hat: jax.Array, z_t: jax.Array, t: Level, boundary: Level) -> jax.Array:
    """invDDIM_{t→b}(ẑ, z_t) = (ẑ − (σ_b/σ_t) z_t)/(α_b − α_t σ_b/σ_t): the x̂ whose jump from z_t lands on ẑ
    (docs/methods.md §1.2, §8.1 step 3; VE: (σ·ẑ − b·x)/(σ − b), §8.2). Needs b < t."""
    return solvers.inv_ddim(z_hat, z_t, t.alpha, t.sigma, boundary.alpha, boundary.sigma)


def eps_reference(z_hat: jax.Array, z_t: jax.Array, t: Level, boundary: Level) -> jax.Array:
    """ε* = (ẑ − (α_b/α_t) z_t)/(σ_b − (α_b/α_t) σ_t): the corrected nb (47) (docs/methods.md §8.1, §17 item 11)."""
    return solvers.ddim_eps_target(z_hat, z_t, t.alpha, t.sigma, boundary.alpha, boundary.sigma)


def eps_from_x0(x0_hat: jax.Array, z: jax.Array, level: Level) -> jax.Array:
    """ε̂ = (z − α·x̂)/σ (docs/methods.md §8.1 aDDIM; nb (45))."""
    return (z - broadcast_to_data(level.alpha, z) * x0_hat) / broadcast_to_data(level.sigma, z)


# ----------------------------------------------------------------------------------------------------------------
# Teacher steps t → s
# ----------------------------------------------------------------------------------------------------------------

def addim_variance(x0_teacher: jax.Array, x: jax.Array, eta: float) -> jax.Array:
    """aDDIM's per-coordinate posterior variance in distillation, v_x = η·‖x̂_tch − x‖²/d (docs/methods.md §8.1)."""
    dim = math.prod(x.shape[1:])
    return eta * jnp.sum(((x0_teacher - x) ** 2).reshape(x.shape[0], -1), axis=1) / dim


def teacher_step(solver: str, teacher: Callable, z_t: jax.Array, t: Level, s: Level, x: jax.Array | None = None,
                 eta: float = 0.75) -> jax.Array:
    """One teacher step z_t → z_s with x̂_tch = teacher(z, τ) (docs/methods.md §8.1 step 2).

    'ddim'  : DDIM_{t→s}(x̂_tch, z_t) — in VE coordinates this is the Euler step of seed eq. 50 (docs/methods.md §1.2);
    'addim' : aDDIM with v_x = η‖x̂_tch − x‖²/d (docs/methods.md §8.1; needs the data x);
    'heun'  : EDM Heun in VE coordinates x_σ = z/α, σ_VE = σ/α (docs/methods.md §1.2, §0), mapped back by z_s = α_s·x_s;
              Euler where s is σ_VE = 0 (VP t = 0).
    """
    if solver not in TEACHER_SOLVERS:
        raise ValueError(f"unknown MCM teacher solver {solver!r}; choose one of {TEACHER_SOLVERS}")
    if solver == "heun":
        return _heun_in_ve_coordinates(teacher, z_t, t, s)
    x0_teacher = teacher(z_t, t.tau)
    if solver == "ddim":
        return solvers.ddim_step(x0_teacher, z_t, t.alpha, t.sigma, s.alpha, s.sigma)
    if x is None:
        raise ValueError("teacher_step('addim') needs the data x for v_x = η‖x̂_tch − x‖²/d")
    return solvers.addim_step(x0_teacher, z_t, t.alpha, t.sigma, s.alpha, s.sigma, addim_variance(x0_teacher, x, eta))


def _heun_in_ve_coordinates(teacher: Callable, z_t: jax.Array, t: Level, s: Level) -> jax.Array:
    """EDM Heun (EDM Alg. 1; docs/methods.md §1.2) from σ_VE(t) to σ_VE(s) on x_σ = z/α, D(x_σ) = teacher(α·x_σ, τ) at the
    two levels; plain Euler where σ_VE(s) = 0 (the second evaluation is then made at t and discarded)."""
    b = lambda v: broadcast_to_data(v, z_t)  # noqa: E731
    sig_t, sig_s = ve_sigma(t), ve_sigma(s)
    x_t = z_t / b(t.alpha)
    d_t = (x_t - teacher(z_t, t.tau)) / b(sig_t)
    x_euler = x_t + b(sig_s - sig_t) * d_t
    final = sig_s == 0
    safe = Level(*(jnp.where(final, a, c) for a, c in zip(t, s)))
    d_s = (x_euler - teacher(x_euler * b(safe.alpha), safe.tau)) / b(ve_sigma(safe))
    x_heun = x_t + b(sig_s - sig_t) * 0.5 * (d_t + d_s)
    return jnp.where(b(final), x_euler, x_heun) * b(s.alpha)


# ----------------------------------------------------------------------------------------------------------------
# The loss
# ----------------------------------------------------------------------------------------------------------------

def loss_weight(name: str, t: Level) -> jax.Array:
    """λ(t): 'snr+1' = α²/σ² + 1 (docs/methods.md §8.1 step 4; the v-space weight of §1.2), 'snr' = α²/σ², 'uniform'."""
    snr = (t.alpha / t.sigma) ** 2
    if name == "snr+1":
        return snr + 1.0
    if name == "snr":
        return snr
    if name == "uniform":
        return jnp.ones_like(t.sigma)
    raise ValueError(f"unknown MCM weighting {name!r}; choose one of {WEIGHTINGS}")


def target_point(x0_target: jax.Array, z_s: jax.Array, s: Level, boundary: Level, at_boundary) -> jax.Array:
    """ẑ = sg DDIM_{s→b}(x̂⁻, z_s), the target chain's first link (docs/methods.md §8.1 step 3; VE: sg f_θ⁻ of nb (52))."""
    return jax.lax.stop_gradient(jump_to_boundary(x0_target, z_s, s, boundary, at_boundary))


def prediction_and_target(space: str, x0_student: jax.Array, z_t: jax.Array, t: Level, boundary: Level,
                          z_hat: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(prediction, sg target) in loss space ``space`` (module doc). The student is at t > b (never at b)."""
    z_hat = jax.lax.stop_gradient(z_hat)
    if space == "x":
        return x0_student, jax.lax.stop_gradient(x0_reference(z_hat, z_t, t, boundary))
    if space == "eps":
        return eps_from_x0(x0_student, z_t, t), jax.lax.stop_gradient(eps_reference(z_hat, z_t, t, boundary))
    if space == "jump":
        never = jnp.zeros(z_t.shape[:1], bool)
        return jump_to_boundary(x0_student, z_t, t, boundary, never), z_hat
    raise ValueError(f"unknown MCM loss space {space!r}; choose one of {LOSS_SPACES}")


def multistep_consistency_loss(student: Callable, target: Callable, x: jax.Array, noise: jax.Array, t: Level,
                               s: Level, boundary: Level, z_s: jax.Array, *, space: str, weighting: str,
                               distance: Callable) -> tuple[jax.Array, dict]:
    """Per-example MCM loss λ(t)·d(pred, sg target) (module doc) and the chain's intermediates.

    ``student(z, τ) -> x̂_θ`` is differentiated; ``target(z, τ) -> x̂_θ⁻`` is the target network (put under sg here);
    ``z_s`` is the teacher's point at s (MCD) or α_s x + σ_s ε (MCT), already computed by the caller.
    Where s = b the target network is not called at b: ẑ = z_s exactly (boundary condition).
    """
    z_t = perturb(x, noise, t)
    z_s = jax.lax.stop_gradient(z_s)
    at_boundary = s.tau == boundary.tau
    x0_target = jax.lax.stop_gradient(target(z_s, jnp.where(at_boundary, t.tau, s.tau)))
    z_hat = target_point(x0_target, z_s, s, boundary, at_boundary)
    x0_student = student(z_t, t.tau)
    pred, goal = prediction_and_target(space, x0_student, z_t, t, boundary, z_hat)
    per_example = loss_weight(weighting, t) * distance(pred, goal)
    return per_example, {"z_t": z_t, "z_hat": z_hat, "x0_student": x0_student}


def ve_teacher_weight(sigma_n, sigma_prev, boundary):
    """w of the VE multistep target in x-space (seed eq. 50–52 substituted, eq. 53–54; docs/methods.md §8.2):
    x^θ_ref = w·D_φ(x_n, σ_n) + (1 − w)·x^θ⁻(x^φ_{n−1}, σ_{n−1}) with w = b(σ_n − σ_{n−1})/(σ_{n−1}(σ_n − b)).

    A convex weight for b ≤ σ_{n−1} < σ_n: w = 1 where σ_{n−1} = b (the pair next to the boundary is plain denoiser
    distillation), w ≈ b·Δσ/σ² for σ ≫ b."""
    return boundary * (sigma_n - sigma_prev) / (sigma_prev * (sigma_n - boundary))


def denoiser_distillation_limit(x0_student: jax.Array, x0_teacher: jax.Array, sigma_n, sigma_prev) -> jax.Array:
    """The every-grid-point limit of the VE MCM (boundary b = σ_{n−1}, Euler teacher, L2 in jump space):
    ((σ_n − σ_{n−1})/σ_n)²·mean(D_φ − x^θ)² per example (docs/methods.md §8.2 "Limits")."""
    gap = broadcast_to_data((sigma_n - sigma_prev) / sigma_n, x0_student)
    return jnp.mean(((gap * (x0_teacher - x0_student)) ** 2).reshape(x0_student.shape[0], -1), axis=1)
