"""Noise processes, preconditioning and the denoiser contract against closed forms (issue 2 items 2–3)."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consistency.diffusion import oracles
from consistency.diffusion import denoisers, preconditioning, processes

SIGMA_DATA = 0.5
SIGMA_MIN = 0.002


def _linear_net(x_in, c_noise, weight=1.3):
    """A stand-in network whose output depends on both inputs (shape of x_in)."""
    return weight * x_in + processes.broadcast_to_data(jnp.sin(c_noise), x_in)


# ---------------------------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------------------------

def test_broadcast_to_data_and_ve_perturb():
    x = jnp.zeros((3, 4, 5, 2))
    sigma = jnp.array([0.5, 1.0, 2.0])
    assert processes.broadcast_to_data(sigma, x).shape == (3, 1, 1, 1)
    assert processes.broadcast_to_data(2.0, x).shape == ()
    noise = jax.random.normal(jax.random.PRNGKey(0), x.shape)
    out = processes.ve_perturb(x + 1.0, sigma, noise)
    np.testing.assert_allclose(out[1], 1.0 + 1.0 * noise[1])
    np.testing.assert_allclose(out[2], 1.0 + 2.0 * noise[2])


def _cosine_alpha_bar_numpy(t, s=0.008):
    # docs/methods.md §2: ᾱ(t) = cos²(((t+s)/(1+s))·π/2), normalised so that ᾱ(0) = 1.
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    return f(t) / f(0.0)


def _linear_log_alpha_numpy(t):
    # score_sde VPSDE: ln α_t = −¼t²·19.9 − ½·0.1·t.
    return -0.25 * t**2 * 19.9 - 0.5 * 0.1 * t


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_vp_alpha_sigma_match_schedule_definitions(schedule):
    t = np.linspace(0.0, 0.98, 50)
    alpha, sigma = processes.vp_alpha_sigma(jnp.asarray(t, jnp.float32), schedule)
    if schedule == "cosine":
        alpha_ref = np.sqrt(_cosine_alpha_bar_numpy(t))
    else:
        alpha_ref = np.exp(_linear_log_alpha_numpy(t))
    np.testing.assert_allclose(alpha, alpha_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(alpha) ** 2 + np.asarray(sigma) ** 2, 1.0, atol=1e-6)
    assert float(alpha[0]) == 1.0 and float(sigma[0]) == 0.0
    np.testing.assert_allclose(processes.vp_logsnr(t[1:].astype(np.float32), schedule),
                               np.log(alpha_ref[1:] ** 2 / (1 - alpha_ref[1:] ** 2)), rtol=2e-4, atol=2e-4)
    if schedule == "cosine":
        alpha_1, sigma_1 = processes.vp_alpha_sigma(1.0, schedule)
        assert abs(float(alpha_1)) < 1e-7 and float(sigma_1) == pytest.approx(1.0)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_vp_conversions_round_trip(schedule):
    t = jnp.asarray(np.concatenate([np.geomspace(1e-5, 0.01, 8), np.linspace(0.02, 0.95, 20)]), jnp.float32)
    alpha, sigma = processes.vp_alpha_sigma(t, schedule)
    sigma_ve = processes.vp_to_ve_sigma(t, schedule)
    np.testing.assert_allclose(sigma_ve, sigma / alpha, rtol=1e-5)
    np.testing.assert_allclose(processes.ve_sigma_to_vp_t(sigma_ve, schedule), t, rtol=1e-4)
    np.testing.assert_allclose(processes.vp_t_from_logsnr(processes.vp_logsnr(t, schedule), schedule), t, rtol=1e-4)
    # The other way, across the whole EDM range σ ∈ [0.002, 80].
    sigmas = jnp.asarray(np.geomspace(SIGMA_MIN, 80.0, 30), jnp.float32)
    np.testing.assert_allclose(processes.vp_to_ve_sigma(processes.ve_sigma_to_vp_t(sigmas, schedule), schedule),
                               sigmas, rtol=1e-4)
    np.testing.assert_allclose(processes.vp_logsnr(processes.vp_t_from_logsnr(-2 * jnp.log(sigmas), schedule),
                                                   schedule), -2 * np.log(np.asarray(sigmas)), rtol=1e-4, atol=1e-4)


def test_linear_vp_is_edm_vp_sigma():
    # EDM's "VP" schedule: σ(t) = √(exp(½β_d t² + β_min t) − 1) with β_d = 19.9, β_min = 0.1 (docs/methods.md §2).
    t = np.linspace(1e-3, 1.0, 40)
    expected = np.sqrt(np.exp(0.5 * 19.9 * t**2 + 0.1 * t) - 1.0)
    np.testing.assert_allclose(processes.vp_to_ve_sigma(jnp.asarray(t, jnp.float32), "linear"), expected, rtol=1e-5)


def test_vp_denoiser_from_ve_matches_vp_gaussian_posterior():
    # A VE Gaussian oracle, converted, must equal the VP posterior mean of docs/methods.md §15 O5.
    mean, std = 0.3, 0.6
    z_t = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    t = jnp.linspace(0.05, 0.9, 6)
    vp = processes.vp_denoiser_from_ve(oracles.gaussian_denoiser(mean, std), "cosine")
    alpha, sigma = processes.vp_alpha_sigma(t, "cosine")
    np.testing.assert_allclose(vp(z_t, t), oracles.vp_gaussian_posterior_mean(z_t, alpha, sigma, mean, std),
                               rtol=1e-5, atol=1e-6)


def test_unknown_schedule_is_an_error():
    with pytest.raises(ValueError, match="schedule"):
        processes.vp_alpha_sigma(0.5, "sigmoid")


# ---------------------------------------------------------------------------------------------------------------
# Preconditioning
# ---------------------------------------------------------------------------------------------------------------

def test_edm_scalings_match_table_1():
    sigma = np.geomspace(SIGMA_MIN, 80.0, 17)
    c_skip, c_out, c_in, c_noise = preconditioning.edm_scalings(jnp.asarray(sigma, jnp.float32), SIGMA_DATA)
    sd = SIGMA_DATA
    np.testing.assert_allclose(c_skip, sd**2 / (sigma**2 + sd**2), rtol=1e-6)
    np.testing.assert_allclose(c_out, sigma * sd / np.sqrt(sigma**2 + sd**2), rtol=1e-6)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(sigma**2 + sd**2), rtol=1e-6)
    np.testing.assert_allclose(c_noise, 0.25 * np.log(sigma), rtol=1e-6, atol=1e-7)
    # The EDM training target weight λ = 1/c_out² (EDM §5) equals 1/σ² + 1/σ_d² (docs/methods.md §2).
    np.testing.assert_allclose(1 / np.asarray(c_out) ** 2, 1 / sigma**2 + 1 / sd**2, rtol=1e-5)


def test_edm_preconditioning_with_zero_network_is_the_sigma_data_gaussian_denoiser():
    # For data N(0, σ_d²) the ideal denoiser is c_skip·x, i.e. F ≡ 0 (EDM §B.6 design rationale).
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 4)) * 3
    sigma = jnp.array([0.01, 0.3, 1.0, 7.0, 80.0])
    out = preconditioning.precondition(lambda x_in, c_noise: jnp.zeros_like(x_in), x, sigma,
                                       functools.partial(preconditioning.edm_scalings, sigma_data=SIGMA_DATA))
    np.testing.assert_allclose(out, oracles.gaussian_denoiser(0.0, SIGMA_DATA)(x, sigma), rtol=1e-6)


def test_consistency_scalings_boundary_is_exact():
    c_skip, c_out, c_in, c_noise = preconditioning.consistency_scalings(SIGMA_MIN, SIGMA_MIN, SIGMA_DATA)
    assert float(c_skip) == 1.0 and float(c_out) == 0.0
    assert float(c_in) == pytest.approx(1 / math.sqrt(SIGMA_MIN**2 + SIGMA_DATA**2), rel=1e-6)
    assert float(c_noise) == pytest.approx(0.25 * math.log(SIGMA_MIN), rel=1e-6)
    sigma = np.geomspace(0.01, 80.0, 9)
    c_skip, c_out, _, _ = preconditioning.consistency_scalings(jnp.asarray(sigma, jnp.float32), SIGMA_MIN, SIGMA_DATA)
    np.testing.assert_allclose(c_skip, SIGMA_DATA**2 / ((sigma - SIGMA_MIN) ** 2 + SIGMA_DATA**2), rtol=1e-6)
    np.testing.assert_allclose(c_out, SIGMA_DATA * (sigma - SIGMA_MIN) / np.sqrt(sigma**2 + SIGMA_DATA**2),
                               rtol=1e-5)


def test_consistency_function_is_identity_at_sigma_min_and_not_above():
    # seed eq. 8: f(x, ε) = x exactly, for any network output.
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 3, 3, 2)) * 10
    scalings = functools.partial(preconditioning.consistency_scalings, sigma_min=SIGMA_MIN, sigma_data=SIGMA_DATA)
    f_min = preconditioning.precondition(_linear_net, x, jnp.full((4,), SIGMA_MIN), scalings)
    np.testing.assert_array_equal(f_min, x)
    f_above = preconditioning.precondition(_linear_net, x, jnp.full((4,), 0.5), scalings)
    assert float(jnp.max(jnp.abs(f_above - x))) > 0.1


def test_precondition_feeds_scaled_input_and_per_example_noise_level():
    x = jax.random.normal(jax.random.PRNGKey(4), (3, 2))
    sigma = jnp.array([0.1, 1.0, 10.0])
    seen = {}

    def net(x_in, c_noise):
        seen["x_in"], seen["c_noise"] = x_in, c_noise
        return 2.0 * x_in

    tuple_scalings = preconditioning.edm_scalings(sigma, SIGMA_DATA)
    out = preconditioning.precondition(net, x, sigma, tuple_scalings)
    c_skip, c_out, c_in, c_noise = (np.asarray(c) for c in tuple_scalings)
    np.testing.assert_allclose(seen["x_in"], c_in[:, None] * x, rtol=1e-6)
    np.testing.assert_allclose(seen["c_noise"], c_noise, rtol=1e-6)
    np.testing.assert_allclose(out, c_skip[:, None] * x + c_out[:, None] * 2 * c_in[:, None] * x, rtol=1e-6)
    # A scalar σ still gives the network a [B] c_noise.
    preconditioning.precondition(net, x, 0.5, preconditioning.edm_scalings)
    assert seen["c_noise"].shape == (3,)


def test_vp_eps_scalings():
    t = np.array([1e-3, 0.1, 0.5, 1.0])
    sigma = processes.vp_to_ve_sigma(jnp.asarray(t, jnp.float32), "linear")
    c_skip, c_out, c_in, c_noise = preconditioning.vp_eps_scalings(sigma)
    np.testing.assert_array_equal(c_skip, 1.0)
    np.testing.assert_allclose(c_out, -np.asarray(sigma), rtol=1e-6)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(np.asarray(sigma) ** 2 + 1), rtol=1e-6)
    np.testing.assert_allclose(c_noise, 999 * t, rtol=1e-4)
    # ε-prediction of a point mass at 0: x = σε, so the exact network is F(c_in·x) = x/σ and D = x − σ·x/σ = 0.
    sigma_col = jnp.asarray(sigma)[:, None]
    x = jax.random.normal(jax.random.PRNGKey(9), (4, 2))
    d0 = preconditioning.precondition(lambda x_in, c: x_in * jnp.sqrt(sigma_col**2 + 1) / sigma_col, x, sigma,
                                      preconditioning.vp_eps_scalings)
    np.testing.assert_allclose(d0, 0.0, atol=1e-5)


def test_multistep_boundary():
    x = jax.random.normal(jax.random.PRNGKey(5), (4, 3))
    x0_hat = jax.random.normal(jax.random.PRNGKey(6), (4, 3))
    sigma = jnp.array([0.5, 1.0, 2.0, 40.0])
    # f(x, b, b) = x exactly (docs/methods.md §8.2).
    np.testing.assert_array_equal(preconditioning.multistep_boundary(x, sigma, sigma, x0_hat), x)
    # seed eq. 51 with b = σ_min and x̂ = c is the point-mass consistency function, seed eq. 34.
    c = 0.7
    np.testing.assert_allclose(preconditioning.multistep_boundary(x, sigma, SIGMA_MIN, jnp.full_like(x, c)),
                               oracles.point_mass_consistency_function(x, sigma, c, SIGMA_MIN), rtol=1e-6)
    # seed eq. 51 first form: x + ((b − σ)/σ)(x − x̂).
    b = jnp.array([0.1, 0.2, 1.5, 3.0])
    expected = x + ((b - sigma) / sigma)[:, None] * (x - x0_hat)
    np.testing.assert_allclose(preconditioning.multistep_boundary(x, sigma, b, x0_hat), expected, rtol=1e-5,
                               atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Denoiser contract
# ---------------------------------------------------------------------------------------------------------------

def test_score_and_drift_from_denoiser():
    mean, std = 0.4, 0.8
    denoise = oracles.gaussian_denoiser(mean, std)
    x = jax.random.normal(jax.random.PRNGKey(7), (5, 2)) * 2
    sigma = jnp.array([0.05, 0.3, 1.0, 3.0, 20.0])
    s = np.asarray(sigma)[:, None]
    # Gaussian score −(x − μ)/(s² + σ²) (docs/methods.md §15 O2).
    np.testing.assert_allclose(denoisers.score_from_denoiser(denoise, x, sigma),
                               -(np.asarray(x) - mean) / (std**2 + s**2), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(denoisers.ode_drift(denoise, x, sigma),
                               (np.asarray(x) - np.asarray(denoise(x, sigma))) / s, rtol=1e-6)
    # A scalar σ is broadcast to [B] before the denoiser sees it.
    np.testing.assert_allclose(denoisers.ode_drift(denoise, x, 0.3),
                               denoisers.ode_drift(denoise, x, jnp.full((5,), 0.3)), rtol=1e-6)


def _class_denoiser(null_label):
    """A conditional toy denoiser: shrinks towards a class-dependent centre (label −1/null → centre 0)."""
    centres = jnp.array([1.0, -2.0, 3.0, 0.0])

    def denoise(x, sigma, cond=None):
        centre = centres[jnp.where(cond == null_label, 3, cond)]
        return centre[:, None] + (x - centre[:, None]) / (1 + processes.broadcast_to_data(sigma, x) ** 2)

    return denoise


def test_classifier_free_guidance_limits_and_linearity():
    null = 3
    base = _class_denoiser(null)
    x = jax.random.normal(jax.random.PRNGKey(8), (4, 2))
    sigma = jnp.array([0.5, 1.0, 2.0, 4.0])
    cond = jnp.array([0, 1, 2, 0])
    uncond_out = base(x, sigma, jnp.full_like(cond, null))
    cond_out = base(x, sigma, cond)
    np.testing.assert_allclose(denoisers.classifier_free_guidance(base, 0.0, null)(x, sigma, cond), uncond_out,
                               rtol=1e-6)
    np.testing.assert_allclose(denoisers.classifier_free_guidance(base, 1.0, null)(x, sigma, cond), cond_out,
                               rtol=1e-6)
    w = jnp.array([0.0, 1.0, 2.5, 7.0])  # per-example scale (MCM conditions on w)
    expected = uncond_out + np.asarray(w)[:, None] * (cond_out - uncond_out)
    np.testing.assert_allclose(denoisers.classifier_free_guidance(base, w, null)(x, sigma, cond), expected,
                               rtol=1e-5, atol=1e-6)
