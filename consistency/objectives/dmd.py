"""DMD and DMD2 objectives: distribution matching, fake-score DSM, regression, diffusion GAN, backward simulation.

Sources: Yin et al. 2023, DMD (arXiv 2311.18828); Yin et al. 2024, DMD2 (arXiv 2405.14867, `tianweiy/DMD2`
`main/edm/edm_guidance.py`, `main/sd_unified_model.py`); seed eq. 59–66; docs/methods.md §10, §14, §17 items 13–15.

Every network enters as a *function* the caller builds from parameters it passes into its compiled step (never a
baked-in constant, docs/methods.md §18 item 2):
- a denoiser ``D(x, sigma) -> x0_hat`` (VE/EDM coordinates, σ of shape [B]; the repo's denoiser contract),
- a generator with the same shape ``G(x_noisy, sigma) -> x`` (the teacher architecture run at σ_max),
- a discriminator ``logits(x_noisy, sigma) -> [B] or [B, K]`` (DMD2: a head on the fake-score bottleneck).

Roles (docs/methods.md §10.1): generator G_θ; real denoiser D_real = the frozen teacher; fake denoiser D_fake, initialised
from the teacher and trained online on the current generator's samples. Which of them a loss may train is fixed in this
file by stop-gradients (sg), stated per function. Where a loss must pass gradients through a network's *inputs* but not
its parameters (DMD2's generator GAN term; SiD's generator loss), wrap the network with :func:`with_frozen_parameters`.

Every loss returns one value per example ([B]); the caller takes the (masked) batch mean.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from consistency.diffusion import distances, schedules
from consistency.diffusion.processes import broadcast_to_data

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]

# DMD2's EDM code: a fixed 1000-point Karras grid, index 0 = σ_min (docs/methods.md §1.4 "DMD2").
NUM_TRAIN_TIMESTEPS = 1000
# DMD §3 / DMD2 `min_step_percent`, `max_step_percent`: t ~ U[0.02 T, 0.98 T] for the distribution-matching gradient.
MIN_STEP_FRACTION = 0.02
MAX_STEP_FRACTION = 0.98


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


def reduce_per_example(values: jax.Array, reduce: str) -> jax.Array:
    """Σ (``'sum'``) or mean (``'mean'``) over every non-batch axis → [B]."""
    if reduce == "sum":
        return jnp.sum(_flat(values), axis=1)
    if reduce == "mean":
        return jnp.mean(_flat(values), axis=1)
    raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")


def with_frozen_parameters(apply_fn: Callable, params) -> Callable:
    """``f(*inputs) = apply_fn(sg(params), *inputs)``: gradients still flow through the inputs, never into ``params``.

    The form docs/methods.md §12 asks for ("stop-gradient the parameters, not the inputs") and DMD2's generator turn
    (`guidance_model.requires_grad_(False)` while the GAN logits of G(z) keep their input gradient).
    Call it inside the compiled step, with ``params`` an argument of that step, so nothing is baked in as a constant.
    """
    frozen = jax.lax.stop_gradient(params)

    def network(*inputs, **kwargs):
        return apply_fn(frozen, *inputs, **kwargs)

    return network


# ----------------------------------------------------------------------------------------------------------------
# Distribution matching (DMD §3.2; DMD2 distribution matching loss)
# ----------------------------------------------------------------------------------------------------------------

def distribution_matching_gradient(x, noise, sigma, real_denoiser: Denoiser, fake_denoiser: Denoiser,
                                   normalise: bool = True):
    """Per-sample distribution-matching gradient g = ∂KL(p_θ‖p_real)/∂x at the generated sample x, entirely under sg.

    x_t = x + σ·n (VE form of α_t x + σ_t n, docs/methods.md §10.1), σ from :func:`sample_distribution_matching_sigmas`.
    - ``normalise=False``: g = s_fake(x_t) − s_real(x_t) = (D_fake − D_real)/σ²   (seed eq. 63, α_t = 1; erratum 13–14
      make this the exact gradient when D_fake is the exact denoiser of p_θ).
    - ``normalise=True``:  g = (D_fake − D_real) / sg(mean_CHW |x − D_real|)         (DMD §3.2 weight
      w_t = (σ_t²/α_t)·d/‖x − D_real‖₁, docs/methods.md §10.1; DMD2 `compute_distribution_matching_loss`).

    The normaliser is kept per sample (docs/methods.md §18 item 7). g passes through ``nan_to_num`` (DMD2 code). No
    gradient reaches x, the generator, or either denoiser's parameters through g.

    Returns (g with x's shape, aux) with aux = {noisy, real_denoised, fake_denoised, normaliser [B]}, all under sg.
    """
    x = jax.lax.stop_gradient(x)
    sigma_b = broadcast_to_data(sigma, x)
    noisy = x + sigma_b * noise                                        # docs/methods.md §10.1: x_t = G(z) + σ_t n
    real_denoised = jax.lax.stop_gradient(real_denoiser(noisy, sigma))
    fake_denoised = jax.lax.stop_gradient(fake_denoiser(noisy, sigma))
    if normalise:
        normaliser = jnp.mean(_flat(jnp.abs(x - real_denoised)), axis=1)   # DMD §3.2 weight: mean_CHW |x − D_real|
        gradient = (fake_denoised - real_denoised) / broadcast_to_data(normaliser, x)
    else:
        normaliser = jnp.ones(x.shape[:1], x.dtype)
        gradient = (fake_denoised - real_denoised) / sigma_b ** 2      # seed eq. 63: s_fake − s_real
    gradient = jax.lax.stop_gradient(jnp.nan_to_num(gradient))
    aux = {"noisy": noisy, "real_denoised": real_denoised, "fake_denoised": fake_denoised, "normaliser": normaliser}
    return gradient, aux


def empirical_denoiser(pool) -> Denoiser:
    """D(x_t, σ) = E[x | x_t] for x drawn from the points of ``pool`` [M, …]: softmax weights
    ∝ exp(−‖x_t − x^j‖²/(2σ²)), the exact denoiser of an empirical distribution (seed eq. 6; docs/methods.md §15 O4).
    With a pool of fresh samples of the current generator it is a fake score with no network error, exact as M → ∞
    for σ above the pool's spacing (the control of docs/science.md (n))."""
    from consistency.objectives.consistency import posterior_mean_estimate
    return lambda x_noisy, sigma: posterior_mean_estimate(x_noisy, sigma, pool)


def distribution_matching_surrogate(x, gradient, reduce: str = "sum"):
    """Per-example surrogate ½‖x − sg(x − g)‖², whose gradient w.r.t. x is g (DMD2 code, after stable-dreamfusion).

    ``reduce='sum'``: ∂L_i/∂x_i = g_i exactly. ``reduce='mean'``: ½·mean_CHW, so ∂/∂x = g/d; with the batch mean this
    is DMD2's ``0.5 * F.mse_loss(x, (x − g).detach(), reduction="mean")`` (docs/methods.md §10.2 "mean reduction over B·d").
    """
    target = jax.lax.stop_gradient(x - gradient)
    return 0.5 * reduce_per_example((x - target) ** 2, reduce)


def distribution_matching_loss(x, noise, sigma, real_denoiser: Denoiser, fake_denoiser: Denoiser,
                               normalise: bool = True, reduce: str = "sum"):
    """Generator loss L_DM = ½‖x − sg(x − g)‖², x = G_θ(z) with gradient, g from :func:`distribution_matching_gradient`.

    Trains only the generator (through x); teacher and fake-score parameters get exactly zero gradient.
    Returns (per-example loss [B], aux of :func:`distribution_matching_gradient` plus ``gradient``).
    """
    gradient, aux = distribution_matching_gradient(x, noise, sigma, real_denoiser, fake_denoiser, normalise)
    aux = dict(aux, gradient=gradient)
    return distribution_matching_surrogate(x, gradient, reduce), aux


def fake_score_loss(fake_denoiser: Denoiser, x_generated, noise, sigma, weighting: str = "edm",
                    sigma_data: float = 0.5, reduce: str = "mean"):
    """Fake-score DSM loss λ(σ)·‖D_fake(sg x + σn, σ) − sg x‖² per example, x = G(z) (seed eq. 66 with the sg of
    docs/methods.md §17 item 15: the generator gets no gradient from this loss).

    ``weighting='edm'``: λ = 1/σ² + 1/σ_d² = (σ² + σ_d²)/(σσ_d)² (DMD2 `compute_loss_fake` "snrs + 1/σ_d²"; SiD's
    λ_EDM); ``'uniform'``: λ = 1 (seed eq. 66 as printed). ``reduce='mean'`` over pixels is DMD2's torch.mean; SiD
    sums over pixels (``'sum'``).
    """
    x = jax.lax.stop_gradient(x_generated)
    noisy = x + broadcast_to_data(sigma, x) * noise
    squared_error = (fake_denoiser(noisy, sigma) - x) ** 2
    if weighting == "edm":
        weight = schedules.edm_loss_weight(sigma, sigma_data)
    elif weighting == "uniform":
        weight = jnp.ones_like(sigma)
    else:
        raise ValueError(f"unknown fake-score weighting {weighting!r}; choose 'edm' or 'uniform'")
    return weight * reduce_per_example(squared_error, reduce)


def regression_loss(generator_output, target, distance: Callable = distances.l2):
    """L_reg = d(G(z), sg y) per example on pairs (z, y) from the teacher's deterministic ODE sampler (DMD §3.3;
    docs/methods.md §10.1). ``distance(a, b) -> [B]``: DMD uses LPIPS (here e.g. ``feature_distance`` with its params bound
    by the caller), or any of :mod:`consistency.diffusion.distances`. The target never receives a gradient."""
    return distance(generator_output, jax.lax.stop_gradient(target))


# ----------------------------------------------------------------------------------------------------------------
# Noise levels: DMD2's 1000-point Karras grid (docs/methods.md §1.4 "DMD2")
# ----------------------------------------------------------------------------------------------------------------

def training_sigma_grid(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, sigma_min: float = 0.002,
                        sigma_max: float = 80.0, rho: float = 7.0) -> jax.Array:
    """DMD2's grid: the ascending Karras grid of ``num_train_timesteps`` points, index 0 = σ_min, last = σ_max
    (DMD2 `karras_sigmas` = flip of k-diffusion's descending grid; the same points as EDM eq. 5)."""
    return schedules.karras_sigmas(num_train_timesteps, sigma_min, sigma_max, rho)


def sigmas_at_timesteps(timesteps, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, sigma_min: float = 0.002,
                        sigma_max: float = 80.0, rho: float = 7.0) -> jax.Array:
    """Map discrete teacher timesteps (0 = least noise, T−1 = σ_max) to EDM σ on :func:`training_sigma_grid`, e.g. a
    multistep student's {999, 749, 499, 249} (DMD2 SDXL; ADD) → σ ≈ {80, 17.5, 2.50, 0.168} [derived mapping]."""
    grid = training_sigma_grid(num_train_timesteps, sigma_min, sigma_max, rho)
    return grid[jnp.asarray(timesteps)]


def sample_grid_sigmas(rng, shape, grid: jax.Array, low_index: int, high_index: int) -> jax.Array:
    """σ = grid[i] with i ~ U{low_index, …, high_index} (both ends included)."""
    index = jax.random.randint(rng, shape, low_index, high_index + 1)
    return grid[index]


def distribution_matching_index_range(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
                                      min_step_fraction: float = MIN_STEP_FRACTION,
                                      max_step_fraction: float = MAX_STEP_FRACTION) -> tuple[int, int]:
    """(⌊0.02·T⌋, min(⌊0.98·T⌋, T − 1)) = (20, 980) for T = 1000, both included (DMD2 `min_step`/`max_step`,
    `randint(min_step, min(max_step + 1, T))`)."""
    low = int(min_step_fraction * num_train_timesteps)
    high = min(int(max_step_fraction * num_train_timesteps), num_train_timesteps - 1)
    return low, high


def sample_distribution_matching_sigmas(rng, shape, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
                                        sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                                        min_step_fraction: float = MIN_STEP_FRACTION,
                                        max_step_fraction: float = MAX_STEP_FRACTION) -> jax.Array:
    """σ for the DM gradient: t ∈ [0.02, 0.98] of the teacher's schedule (DMD §3.2; DMD2 code), mapped to EDM σ as
    DMD2's EDM code does: index ~ U{20 … 980} on the ascending 1000-point Karras grid, so σ ∈ [0.00323, 72.05]."""
    grid = training_sigma_grid(num_train_timesteps, sigma_min, sigma_max, rho)
    low, high = distribution_matching_index_range(num_train_timesteps, min_step_fraction, max_step_fraction)
    return sample_grid_sigmas(rng, shape, grid, low, high)


def sample_fake_score_sigmas(rng, shape, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, sigma_min: float = 0.002,
                             sigma_max: float = 80.0, rho: float = 7.0) -> jax.Array:
    """σ for the fake-score loss: index ~ U{0 … T−1} on the same grid (DMD2 `compute_loss_fake`)."""
    grid = training_sigma_grid(num_train_timesteps, sigma_min, sigma_max, rho)
    return sample_grid_sigmas(rng, shape, grid, 0, num_train_timesteps - 1)


def sample_gan_sigmas(rng, shape, max_timestep: int = NUM_TRAIN_TIMESTEPS,
                      num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, sigma_min: float = 0.002,
                      sigma_max: float = 80.0, rho: float = 7.0) -> jax.Array:
    """σ for the diffusion GAN: index ~ U{0 … max_timestep−1} (DMD2 `compute_cls_logits`, `diffusion_gan_max_timestep`
    = 1000 in the ImageNet-64 scripts)."""
    grid = training_sigma_grid(num_train_timesteps, sigma_min, sigma_max, rho)
    return sample_grid_sigmas(rng, shape, grid, 0, max_timestep - 1)


# ----------------------------------------------------------------------------------------------------------------
# Diffusion GAN (DMD2 paper, GAN term; docs/methods.md §10.2 "GAN")
# ----------------------------------------------------------------------------------------------------------------

def _logits_per_example(logits: jax.Array) -> jax.Array:
    logits = jnp.asarray(logits)
    return logits.reshape(logits.shape[0], -1)


def softplus_discriminator_loss(real_logits, fake_logits):
    """Σ_heads softplus(D(fake)) + softplus(−D(real)) per example: the non-saturating GAN discriminator loss on logits
    (DMD2 `compute_guidance_clean_cls_loss`)."""
    return (jnp.sum(jax.nn.softplus(_logits_per_example(fake_logits)), axis=1)
            + jnp.sum(jax.nn.softplus(-_logits_per_example(real_logits)), axis=1))


def softplus_generator_loss(fake_logits):
    """Σ_heads softplus(−D(G(z))) per example: the non-saturating generator loss
    (DMD2 `compute_generator_clean_cls_loss`)."""
    return jnp.sum(jax.nn.softplus(-_logits_per_example(fake_logits)), axis=1)


def diffusion_gan_logits(discriminator: Callable, x, noise, sigma):
    """Logits of a diffusion GAN: the input is noised first, D(x + σn, σ) (DMD2 `compute_cls_logits` with
    ``diffusion_gan=True``; σ from :func:`sample_gan_sigmas`)."""
    return discriminator(x + broadcast_to_data(sigma, x) * noise, sigma)


def diffusion_gan_discriminator_loss(discriminator: Callable, x_real, x_fake, noise_real, noise_fake,
                                     sigma_real, sigma_fake):
    """Discriminator side: softplus(D(sg x_fake + σn)) + softplus(−D(sg x_real + σ′n′)) per example; both inputs are
    under sg (DMD2 detaches both), so only the discriminator (and the fake-score trunk it sits on) trains."""
    real_logits = diffusion_gan_logits(discriminator, jax.lax.stop_gradient(x_real), noise_real, sigma_real)
    fake_logits = diffusion_gan_logits(discriminator, jax.lax.stop_gradient(x_fake), noise_fake, sigma_fake)
    return softplus_discriminator_loss(real_logits, fake_logits)


def diffusion_gan_generator_loss(discriminator: Callable, x_fake, noise, sigma):
    """Generator side: softplus(−D(x_fake + σn)) per example, with gradient through x_fake = G(z). Pass a discriminator
    built with :func:`with_frozen_parameters` so its parameters get no gradient from this term."""
    return softplus_generator_loss(diffusion_gan_logits(discriminator, x_fake, noise, sigma))


# ----------------------------------------------------------------------------------------------------------------
# Multistep generator: backward simulation (DMD2 paper; `SDUniModel.sample_backward`)
# ----------------------------------------------------------------------------------------------------------------

def backward_simulation(generator: Callable, rng, shape, student_sigmas, num_simulated_steps, dtype=jnp.float32):
    """Training input of a K-step generator, produced by the generator itself (DMD2 "backward simulation").

    ``student_sigmas`` [K] descending, ``student_sigmas[0] = σ_max`` (DMD2 SDXL timesteps {999, 749, 499, 249}).
    ``num_simulated_steps`` k ∈ {0, …, K−1} (scalar int, may be traced; DMD2 draws it uniformly, shared by the batch):
    x = σ_0·z; for j < k: x̂ = G(x, σ_j), x = x̂ + σ_{j+1}·n_j with fresh noise n_j (VE form of `add_noise`).
    Returns (x, σ_k as [B]) under sg; the training step then computes G(x, σ_k) with gradient.

    ``generator`` should be built with :func:`with_frozen_parameters`: the loop is a ``fori_loop`` (a while loop when k
    is traced), which reverse-mode autodiff cannot enter.
    """
    student_sigmas = jnp.asarray(student_sigmas, dtype)
    init_rng, loop_rng = jax.random.split(rng)
    x = student_sigmas[0] * jax.random.normal(init_rng, shape, dtype)
    batch_sigma = lambda s: jnp.full(shape[:1], s, dtype)  # noqa: E731

    def step(j, x):
        x0_hat = jax.lax.stop_gradient(generator(x, batch_sigma(student_sigmas[j])))
        renoise = jax.random.normal(jax.random.fold_in(loop_rng, j), shape, dtype)
        return x0_hat + student_sigmas[j + 1] * renoise

    x = jax.lax.fori_loop(0, num_simulated_steps, step, x)
    return jax.lax.stop_gradient(x), batch_sigma(student_sigmas[num_simulated_steps])
