"""Closed-form oracle denoisers and exact maps against brute force, quadrature and Tweedie (docs/methods.md §15)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consistency.diffusion import oracles
from consistency.diffusion import denoisers, processes, solvers

SIGMA_MIN = 0.002


def _brute_force_posterior_mean(x, sigma, data, data_scale=1.0):
    """Σ_j x^j N(x; a·x^j, σ²) / Σ_j N(x; a·x^j, σ²), an explicit float64 loop over examples and data points."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    data = np.asarray(data, np.float64).reshape(len(data), -1)
    out = np.zeros_like(x)
    for b in range(len(x)):
        log_w = np.array([-np.sum((x[b] - data_scale * d) ** 2) / (2 * sigma[b] ** 2) for d in data])
        w = np.exp(log_w - log_w.max())
        out[b] = sum(wj * d for wj, d in zip(w, data)) / w.sum()
    return out


@pytest.fixture(scope="module")
def bank():
    return jax.random.normal(jax.random.PRNGKey(0), (10, 2, 3)) * 2.0


# ---------------------------------------------------------------------------------------------------------------
# O4 — empirical denoiser (seed eq. 6)
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_size", [None, 3])
def test_empirical_denoiser_equals_brute_force_posterior_mean(bank, chunk_size):
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 2, 3)) * 2.5
    sigma = jnp.array([0.3, 0.8, 1.5, 3.0, 10.0])
    out = oracles.empirical_denoiser(bank, chunk_size=chunk_size)(x, sigma)
    assert out.shape == x.shape and out.dtype == jnp.float32
    expected = _brute_force_posterior_mean(x, np.asarray(sigma), bank).reshape(x.shape)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_empirical_denoiser_limits_small_and_large_sigma(bank):
    # σ → σ_min: the nearest data point, with logits of order 1e7 and no NaN (docs/methods.md §15 O4).
    noise = jax.random.normal(jax.random.PRNGKey(2), (4, 2, 3))
    idx = jnp.array([3, 0, 7, 7])
    x = bank[idx] + SIGMA_MIN * noise
    far = bank * 1000.0  # pushes the squared distances to ~1e7·σ², i.e. logits ~1e12
    for data in (bank, jnp.concatenate([bank, far])):
        out = oracles.empirical_denoiser(data)(x, jnp.full((4,), SIGMA_MIN))
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(out, bank[idx], atol=1e-6)
    weights = oracles.empirical_posterior_weights(x, SIGMA_MIN, bank)
    dist = np.sum((np.asarray(x)[:, None] - np.asarray(bank)[None]) ** 2, axis=(2, 3))
    assert np.sort(dist, axis=1)[:, 1].min() / (2 * SIGMA_MIN**2) > 1e5  # the logit gap really is huge
    np.testing.assert_allclose(np.asarray(weights).sum(axis=1), 1.0, rtol=1e-6)
    # σ → ∞: the data mean ("for large t we obtain the mean", seed §1.1).
    out = oracles.empirical_denoiser(bank)(x, jnp.full((4,), 1e4))
    np.testing.assert_allclose(out, jnp.broadcast_to(bank.mean(axis=0), x.shape), atol=1e-4)


def test_empirical_score_is_gradient_of_log_density(bank):
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 2, 3)) * 2
    sigma = jnp.array([0.5, 1.0, 2.0, 5.0])
    grad = jax.grad(lambda x_: jnp.sum(oracles.empirical_log_density(x_, sigma, bank)))(x)
    score = denoisers.score_from_denoiser(oracles.empirical_denoiser(bank), x, sigma)
    np.testing.assert_allclose(score, grad, rtol=1e-4, atol=1e-5)


def test_empirical_denoiser_vp_matches_brute_force_and_ve_form(bank):
    z_t = jax.random.normal(jax.random.PRNGKey(4), (4, 2, 3))
    t = jnp.array([0.1, 0.4, 0.7, 0.95])
    alpha, sigma = processes.vp_alpha_sigma(t, "cosine")
    out = oracles.empirical_denoiser_vp(bank, "cosine")(z_t, t)
    # w = softmax(−‖z_t − α_t x^j‖²/(2σ_t²)) (docs/methods.md §15 O4, VP version)
    expected = np.stack([_brute_force_posterior_mean(np.asarray(z_t[b:b + 1]), np.asarray(sigma[b:b + 1]), bank,
                                                     float(alpha[b]))[0] for b in range(4)]).reshape(z_t.shape)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    via_ve = processes.vp_denoiser_from_ve(oracles.empirical_denoiser(bank), "cosine")(z_t, t)
    np.testing.assert_allclose(out, via_ve, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# O2/O3 — Gaussian and mixture
# ---------------------------------------------------------------------------------------------------------------

def test_gaussian_and_mixture_scores_are_gradients_of_log_density():
    x = jax.random.normal(jax.random.PRNGKey(5), (4, 2)) * 2
    sigma = jnp.array([0.1, 0.5, 1.0, 4.0])
    mean, std = jnp.array([0.5, -0.2]), 0.4
    grad = jax.grad(lambda x_: jnp.sum(oracles.gaussian_log_density(x_, sigma, mean, std)))(x)
    np.testing.assert_allclose(denoisers.score_from_denoiser(oracles.gaussian_denoiser(mean, std), x, sigma), grad,
                               rtol=1e-4, atol=1e-5)
    weights, means, stds = jnp.array([0.2, 0.5, 0.3]), jnp.array([[1.0, 1.0], [-1.0, 0.5], [0.0, -2.0]]), \
        jnp.array([0.1, 0.3, 0.6])
    grad = jax.grad(lambda x_: jnp.sum(oracles.mixture_log_density(x_, sigma, weights, means, stds)))(x)
    np.testing.assert_allclose(
        denoisers.score_from_denoiser(oracles.mixture_denoiser(weights, means, stds), x, sigma), grad,
        rtol=1e-3, atol=1e-4)


def test_mixture_with_one_component_is_the_gaussian_denoiser():
    x = jax.random.normal(jax.random.PRNGKey(6), (5, 3)) * 3
    sigma = jnp.array([0.01, 0.2, 1.0, 5.0, 80.0])
    mean = jnp.array([0.3, -0.7, 1.1])
    one = oracles.mixture_denoiser(jnp.array([1.0]), mean[None], jnp.array([0.45]))
    np.testing.assert_allclose(one(x, sigma), oracles.gaussian_denoiser(mean, 0.45)(x, sigma), rtol=1e-5, atol=1e-6)


def test_mixture_denoiser_equals_quadrature_posterior_mean_in_1d():
    weights, means, stds = np.array([0.3, 0.7]), np.array([-1.0, 1.5]), np.array([0.2, 0.5])
    x = np.array([-2.0, -0.5, 0.3, 1.0, 3.0])
    sigma = np.array([0.1, 0.5, 0.8, 1.0, 2.0])
    grid = np.linspace(-6, 8, 200001)
    prior = sum(w * np.exp(-0.5 * ((grid - m) / s) ** 2) / s for w, m, s in zip(weights, means, stds))
    expected = []
    for xb, sb in zip(x, sigma):
        post = prior * np.exp(-0.5 * ((xb - grid) / sb) ** 2)
        expected.append(np.trapezoid(grid * post, grid) / np.trapezoid(post, grid))
    denoise = oracles.mixture_denoiser(jnp.asarray(weights), jnp.asarray(means)[:, None], jnp.asarray(stds))
    out = denoise(jnp.asarray(x, jnp.float32)[:, None], jnp.asarray(sigma, jnp.float32))
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-4, atol=1e-5)


def test_gaussian_flow_and_consistency_function():
    mu, s = 0.7, 0.3
    x = jnp.full((1, 1), mu + 104.0)
    # docs/methods.md §15 O2 test vector.
    assert round(float(oracles.gaussian_consistency_function(x, 80.0, mu, s, SIGMA_MIN)[0, 0]), 5) == 1.09001
    # Boundary f*(x, ε) = x, and the flow composes.
    y = jax.random.normal(jax.random.PRNGKey(7), (3, 2)) * 5
    np.testing.assert_allclose(oracles.gaussian_consistency_function(y, SIGMA_MIN, mu, s, SIGMA_MIN), y, rtol=1e-6)
    two_hops = oracles.gaussian_flow(oracles.gaussian_flow(y, 10.0, 2.0, mu, s), 2.0, 0.1, mu, s)
    np.testing.assert_allclose(two_hops, oracles.gaussian_flow(y, 10.0, 0.1, mu, s), rtol=1e-5, atol=1e-6)
    # It solves the PF-ODE: d/dσ′ flow(x, σ, σ′) = (x′ − D(x′, σ′))/σ′ (seed eq. 16).
    sigma_to = 1.7
    x_to, dx = jax.jvp(lambda st: oracles.gaussian_flow(y, 10.0, st, mu, s), (sigma_to,), (1.0,))
    np.testing.assert_allclose(dx, denoisers.ode_drift(oracles.gaussian_denoiser(mu, s), x_to, sigma_to),
                               rtol=1e-4, atol=1e-6)


def test_point_mass_oracle():
    c = jnp.array([0.4, -1.0])
    y = c + jax.random.normal(jax.random.PRNGKey(8), (3, 2)) * 5
    sigma = jnp.array([0.5, 3.0, 80.0])
    # seed eq. 34: f(x, σ) = (σ_min/σ) x + (1 − σ_min/σ) c.
    ratio = SIGMA_MIN / np.asarray(sigma)[:, None]
    np.testing.assert_allclose(oracles.point_mass_consistency_function(y, sigma, c, SIGMA_MIN),
                               ratio * np.asarray(y) + (1 - ratio) * np.asarray(c), rtol=1e-6)
    np.testing.assert_allclose(oracles.point_mass_consistency_function(y, SIGMA_MIN, c, SIGMA_MIN), y, rtol=1e-6)
    np.testing.assert_allclose(oracles.point_mass_flow(y, sigma, SIGMA_MIN, c),
                               oracles.point_mass_consistency_function(y, sigma, c, SIGMA_MIN), rtol=1e-6)
    # seed eq. 31: score −(x − c)/σ².
    np.testing.assert_allclose(denoisers.score_from_denoiser(oracles.point_mass_denoiser(c), y, sigma),
                               -(np.asarray(y) - np.asarray(c)) / np.asarray(sigma)[:, None] ** 2, rtol=1e-5)
    # It is the s → 0 limit of the Gaussian flow, and a fine Euler solve lands on it.
    np.testing.assert_allclose(oracles.point_mass_flow(y, sigma, 0.3, c), oracles.gaussian_flow(y, sigma, 0.3, c, 0.0),
                               rtol=1e-6)
    grid = jnp.asarray(np.geomspace(80.0, SIGMA_MIN, 5), jnp.float32)
    out = solvers.solve(oracles.point_mass_denoiser(c), y, grid, "euler")
    np.testing.assert_allclose(out, oracles.point_mass_consistency_function(y, 80.0, c, SIGMA_MIN), rtol=1e-5,
                               atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# O5 — VP Gaussian
# ---------------------------------------------------------------------------------------------------------------

def test_vp_gaussian_posterior_by_quadrature_and_exact_map():
    mu, s = 0.2, 0.5
    alpha, sigma = 0.6, 0.8
    grid = np.linspace(mu - 10 * s, mu + 10 * s, 100001)
    prior = np.exp(-0.5 * ((grid - mu) / s) ** 2)
    for z in (-1.5, 0.3, 2.0):
        post = prior * np.exp(-0.5 * ((z - alpha * grid) / sigma) ** 2)
        post_mean = np.trapezoid(grid * post, grid) / np.trapezoid(post, grid)
        post_var = np.trapezoid((grid - post_mean) ** 2 * post, grid) / np.trapezoid(post, grid)
        zz = jnp.full((1, 1), z)
        assert float(oracles.vp_gaussian_posterior_mean(zz, alpha, sigma, mu, s)[0, 0]) == pytest.approx(post_mean,
                                                                                                      abs=1e-5)
        assert float(oracles.vp_gaussian_posterior_variance(alpha, sigma, s)) == pytest.approx(post_var, rel=1e-4)
    # The exact VP map is the VE Gaussian flow in VE coordinates x = z/α, σ_VE = σ_t/α_t (docs/methods.md §0).
    z = jax.random.normal(jax.random.PRNGKey(9), (3, 2))
    a_t, s_t = processes.vp_alpha_sigma(0.8)
    a_s, s_s = processes.vp_alpha_sigma(0.3)
    vp = oracles.vp_gaussian_flow(z, a_t, s_t, a_s, s_s, mu, s)
    ve = oracles.gaussian_flow(z / a_t, s_t / a_t, s_s / a_s, mu, s)
    np.testing.assert_allclose(vp / a_s, ve, rtol=1e-5, atol=1e-6)


def test_o5_posterior_test_vector():
    a_t, s_t = math.cos(math.pi * 0.9 / 2), math.sin(math.pi * 0.9 / 2)
    x0_hat = oracles.vp_gaussian_posterior_mean(jnp.ones((1, 1)), a_t, s_t, 0.0, 0.5)
    assert float(x0_hat[0, 0]) == pytest.approx(0.03984, abs=5e-6)
    denoise = oracles.vp_gaussian_denoiser(0.0, 0.5, "cosine")
    alpha, sigma = processes.vp_alpha_sigma(0.4, "cosine")
    np.testing.assert_allclose(denoise(jnp.ones((2, 1)), 0.4),
                               oracles.vp_gaussian_posterior_mean(jnp.ones((2, 1)), alpha, sigma, 0.0, 0.5), rtol=1e-6)


def test_class_conditional_empirical_denoiser_restricts_to_the_class_and_mixes_back_to_the_unconditional():
    """D(x, σ, c) is the empirical denoiser of class c's points; D(x, σ, ∅) = Σ_c p(c | x) D(x, σ, c) with
    p(c | x) ∝ Σ_{j: y_j = c} N(x; x^j, σ²I), the identity classifier-free guidance rests on."""
    rng = np.random.default_rng(3)
    bank = rng.normal(size=(40, 3)).astype(np.float32)
    labels = rng.integers(0, 4, size=40)
    labels[:4] = np.arange(4)
    D = oracles.class_conditional_empirical_denoiser(bank, labels, 4)
    x = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    sigma = jnp.asarray([0.3, 0.7, 1.0, 2.0, 5.0], jnp.float32)
    per_class = []
    for c in range(4):
        got = D(x, sigma, jnp.full((5,), c))
        np.testing.assert_allclose(np.asarray(got), np.asarray(oracles.empirical_denoiser(bank[labels == c])(x, sigma)),
                                   rtol=1e-5, atol=1e-6)
        per_class.append(np.asarray(got))
    log_mass = np.stack([np.asarray(jax.nn.logsumexp(
        -np.sum((np.asarray(x)[:, None] - bank[labels == c][None]) ** 2, -1) / (2 * np.asarray(sigma)[:, None] ** 2),
        axis=1)) for c in range(4)], 1)
    p = np.exp(log_mass - log_mass.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mixed = np.einsum("bc,cbd->bd", p, np.stack(per_class))
    np.testing.assert_allclose(np.asarray(D(x, sigma, jnp.full((5,), 4))), mixed, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(D(x, sigma)), mixed, rtol=1e-5, atol=1e-6)
