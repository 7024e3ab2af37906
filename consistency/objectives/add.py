"""ADD (Adversarial Diffusion Distillation) objectives: student noise levels, distillation term, hinge GAN, R1.

Sources: Sauer et al. 2023, ADD (arXiv 2311.17042; no training code); seed eq. 67–70; docs/methods.md §11, §17 items 16–17.
Several ADD facts are [unverified] in docs/methods.md §11 (student set, γ, the 2.5 weight); they enter only as defaults.

Networks (docs/methods.md §11): student x̂_θ (initialised from the teacher), frozen teacher x̂_ψ, discriminator heads D_k on
frozen features. Networks enter as functions built by the caller from parameters it passes in (docs/methods.md §18
item 2): a denoiser ``D(x, sigma) -> x0_hat`` (VE/EDM, σ [B]) and a discriminator ``logits(x) -> [B] or [B, K]``
(K heads, summed as Σ_k). Every loss returns one value per example ([B]).

Reading of seed eq. 67–70 (docs/methods.md §11, [derived ✓]): with the teacher input under sg, ∇_θ L_distill =
2c(t)(x̂_θ − x̂_ψ)·∂x̂_θ/∂θ — the teacher Jacobian never appears — and x̂_θ − x̂_ψ = σ²(s_δ − s_real) with s_δ the score
of the point mass at the generated sample. So the distillation term alone collapses the student to the data mean; the
adversarial term is essential.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from consistency.diffusion import distances
from consistency.diffusion.processes import broadcast_to_data
from consistency.objectives import dmd

# ADD §3.1: the student sees four noise levels (SD timesteps) [unverified in docs/methods.md §11].
STUDENT_TIMESTEPS = (999, 749, 499, 249)
# ADD §3.2: L = L_adv^G + λ·L_distill with λ = 2.5; R1 strength γ = 1e-5 [unverified in docs/methods.md §11].
DISTILLATION_WEIGHT = 2.5
R1_WEIGHT = 1e-5


# ----------------------------------------------------------------------------------------------------------------
# Student noise levels and input (ADD §3.1)
# ----------------------------------------------------------------------------------------------------------------

def student_sigmas(timesteps: Sequence[int] = STUDENT_TIMESTEPS, num_train_timesteps: int = dmd.NUM_TRAIN_TIMESTEPS,
                   sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> jax.Array:
    """The student's noise set as EDM σ: ADD's discrete timesteps looked up on DMD2's 1000-point Karras grid (index 0 =
    σ_min), so {999, 749, 499, 249} → σ ≈ {80, 17.5, 2.50, 0.168} [derived mapping; ADD itself uses SD's DDPM
    schedule]. Descending, σ_max first."""
    return dmd.sigmas_at_timesteps(timesteps, num_train_timesteps, sigma_min, sigma_max, rho)


def sample_student_sigmas(rng, shape, levels: jax.Array) -> jax.Array:
    """σ_s drawn uniformly from the student set ``levels`` (ADD §3.1)."""
    return jnp.asarray(levels)[jax.random.randint(rng, shape, 0, len(levels))]


def student_input(x_real, noise, sigma):
    """x_s = x₀ + σ_s ε: forward-diffused *real* images (ADD §3.1; the VE form of α_s x₀ + σ_s ε, docs/methods.md §0).
    Real data is required. At σ_s = σ_max this is essentially σ_max·ε, the pure-noise input of one-step sampling."""
    return x_real + broadcast_to_data(sigma, x_real) * noise


# ----------------------------------------------------------------------------------------------------------------
# Distillation term (ADD §3.2; seed eq. 67)
# ----------------------------------------------------------------------------------------------------------------

def exponential_weight(sigma):
    """ADD's "exponential" weighting c(t) = α_t, in VE coordinates α_t = 1/√(1 + σ²) (docs/methods.md §0, σ = σ_t/α_t)."""
    return jax.lax.rsqrt(1.0 + jnp.asarray(sigma) ** 2)


def distillation_loss(student_output, teacher_denoiser: Callable, noise, sigma, weight=None,
                      distance: Callable = distances.l2):
    """L_distill = c(t)·d(x̂_θ, sg x̂_ψ(sg(x̂_θ) + σ_t ε′, σ_t)) per example (ADD §3.2; docs/methods.md §11).

    - Teacher input under sg (ADD §3.2 writes sg on x̂_θ); teacher output also under sg, so the teacher never trains.
    - x_t = x̂_θ + σ_t ε′ (seed eq. 67 prints G + σ_t² ε; erratum docs/methods.md §17 item 16).
    - ``weight`` c(t) per example: default :func:`exponential_weight` (c = α_t); pass ones for uniform.
    - ``distance(a, b) -> [B]``: default mean squared error (ADD uses L2 in pixel/latent space).
    Returns the per-example loss [B].
    """
    teacher_input = jax.lax.stop_gradient(student_output) + broadcast_to_data(sigma, student_output) * noise
    target = jax.lax.stop_gradient(teacher_denoiser(teacher_input, sigma))
    if weight is None:
        weight = exponential_weight(sigma)
    return weight * distance(student_output, target)


# ----------------------------------------------------------------------------------------------------------------
# Hinge adversarial losses and R1 (ADD §3.2; docs/methods.md §11 "Losses")
# ----------------------------------------------------------------------------------------------------------------

def _logits_per_example(logits) -> jax.Array:
    logits = jnp.asarray(logits)
    return logits.reshape(logits.shape[0], -1)


def hinge_discriminator_loss(real_logits, fake_logits):
    """Σ_k relu(1 − D_k(x₀)) + relu(1 + D_k(x̂_θ)) per example (ADD §3.2, hinge loss; the R1 term is separate)."""
    return (jnp.sum(jax.nn.relu(1.0 - _logits_per_example(real_logits)), axis=1)
            + jnp.sum(jax.nn.relu(1.0 + _logits_per_example(fake_logits)), axis=1))


def hinge_generator_loss(fake_logits):
    """L_adv^G = −Σ_k D_k(x̂_θ) per example (ADD §3.2)."""
    return -jnp.sum(_logits_per_example(fake_logits), axis=1)


def r1_penalty(discriminator: Callable, x_real):
    """R1 = ‖∇ₓ Σ_k D_k(x)‖² at the real inputs, per example (Mescheder et al. 2018; ADD §3.2; docs/methods.md §15 O11).

    One backward pass of the summed logits gives every example's input gradient, which requires that examples do not
    interact inside the discriminator (no batch norm). Differentiable w.r.t. the discriminator's parameters
    (double backprop), so it can sit inside the discriminator's loss.
    """
    x_real = jax.lax.stop_gradient(x_real)
    input_gradient = jax.grad(lambda x: jnp.sum(_logits_per_example(discriminator(x))))(x_real)
    return jnp.sum(input_gradient.reshape(x_real.shape[0], -1) ** 2, axis=1)


def discriminator_loss(discriminator: Callable, x_real, x_fake, r1_weight: float = R1_WEIGHT):
    """Hinge discriminator loss on sg x₀ and sg x̂_θ, plus γ·R1 on the real inputs (ADD §3.2), per example."""
    real = jax.lax.stop_gradient(x_real)
    fake = jax.lax.stop_gradient(x_fake)
    loss = hinge_discriminator_loss(discriminator(real), discriminator(fake))
    if r1_weight:
        loss = loss + r1_weight * r1_penalty(discriminator, real)
    return loss


def generator_loss(discriminator: Callable, student_output, teacher_denoiser: Callable, noise, sigma,
                   distillation_weight: float = DISTILLATION_WEIGHT, weight=None, distance: Callable = distances.l2):
    """ADD student loss L_adv^G + λ·L_distill per example (ADD §3.2, λ = 2.5 [unverified]). Build ``discriminator`` with
    :func:`consistency.objectives.dmd.with_frozen_parameters` so its heads get no gradient here.

    Returns (loss [B], {adversarial, distillation}).
    """
    adversarial = hinge_generator_loss(discriminator(student_output))
    distill = distillation_loss(student_output, teacher_denoiser, noise, sigma, weight, distance)
    return adversarial + distillation_weight * distill, {"adversarial": adversarial, "distillation": distill}
