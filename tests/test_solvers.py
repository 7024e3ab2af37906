"""VE/VP solvers and samplers against exact flow maps (issue 2 item 5; docs/methods.md §1.2, §8.1, §15)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consistency.diffusion import oracles
from consistency.diffusion import processes, solvers
from consistency.diffusion.schedules import karras_sigmas

MU, STD = 0.7, 0.3  # docs/methods.md §15 O2 test vector
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
SECOND_ORDER = ["heun", "dpm_solver_2", "dpmpp_2m"]


def _o2_start(dtype=jnp.float32):
    return jnp.full((1, 1), MU + 104.0, dtype)


# ---------------------------------------------------------------------------------------------------------------
# Exactness for constant denoisers (seed eq. 19–20) and the step-level formulas
# ---------------------------------------------------------------------------------------------------------------

def test_euler_step_formula_both_directions():
    denoise = oracles.gaussian_denoiser(MU, STD)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2)) * 4
    for sigma, sigma_next in [(2.0, 1.5), (1.5, 2.0)]:
        expected = x + (sigma_next - sigma) * (x - denoise(x, jnp.full((3,), sigma))) / sigma  # docs/methods.md §1.2
        np.testing.assert_allclose(solvers.euler_step(denoise, x, sigma, sigma_next), expected, rtol=1e-5,
                                   atol=1e-6)


def test_ct_euler_step_with_data_as_denoiser_is_exact():
    # seed eq. 19–20: with D ≡ x0, x_{n+1} = x0 + t_{n+1} z steps exactly to x0 + t_n z (same z).
    key_x, key_z = jax.random.split(jax.random.PRNGKey(1))
    x0 = jax.random.normal(key_x, (5, 4, 4, 1))
    z = jax.random.normal(key_z, x0.shape)
    t_hi = jnp.array([80.0, 10.0, 1.0, 0.1, 0.003])
    t_lo = jnp.array([60.0, 9.5, 0.5, 0.002, 0.002])
    x_hi = processes.ve_perturb(x0, t_hi, z)
    stepped = solvers.euler_step(lambda x, sigma, cond=None: x0, x_hi, t_hi, t_lo)
    np.testing.assert_allclose(stepped, processes.ve_perturb(x0, t_lo, z), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("solver", sorted(solvers.SOLVERS))
def test_every_solver_is_exact_for_a_point_mass(solver):
    # A constant denoiser makes the ODE linear with the exact map c + (σ'/σ)(x − c) (nb (19); docs/methods.md §15 O1),
    # and every step (Euler, Heun, midpoint, 2M) reproduces it.
    c = jnp.array([0.3, -1.2])
    x = c + 80.0 * jax.random.normal(jax.random.PRNGKey(2), (4, 2))
    sigmas = jnp.asarray(np.geomspace(80.0, 0.01, 7), jnp.float32)
    out = solvers.solve(oracles.point_mass_denoiser(c), x, sigmas, solver)
    np.testing.assert_allclose(out, oracles.point_mass_flow(x, 80.0, sigmas[-1], c), rtol=1e-5, atol=1e-5)


def test_heun_step_to_zero_is_euler_and_never_evaluates_sigma_zero():
    def denoise(x, sigma, cond=None):  # NaN if asked about σ = 0
        return oracles.gaussian_denoiser(MU, STD)(x, sigma) + jnp.log(processes.broadcast_to_data(sigma, x)) * 0
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 2))
    for step in (solvers.heun_step, solvers.dpm_solver_2_step):
        np.testing.assert_allclose(step(denoise, x, 0.5, 0.0), solvers.euler_step(denoise, x, 0.5, 0.0), rtol=1e-6)
        per_example = step(denoise, x, jnp.array([0.5, 0.5, 0.5]), jnp.array([0.0, 0.2, 0.0]))
        assert np.all(np.isfinite(per_example))
        np.testing.assert_allclose(per_example[0], solvers.euler_step(denoise, x, 0.5, 0.0)[0], rtol=1e-6)
        np.testing.assert_allclose(per_example[1], step(denoise, x, 0.5, 0.2)[1], rtol=1e-6)


def test_heun_step_formula():
    denoise = oracles.gaussian_denoiser(MU, STD)
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 3)) * 2
    sigma, sigma_next = 1.2, 0.7
    d = (x - denoise(x, jnp.full((2,), sigma))) / sigma  # docs/methods.md §1.2
    x_tilde = x + (sigma_next - sigma) * d
    d_next = (x_tilde - denoise(x_tilde, jnp.full((2,), sigma_next))) / sigma_next
    np.testing.assert_allclose(solvers.heun_step(denoise, x, sigma, sigma_next),
                               x + (sigma_next - sigma) * 0.5 * (d + d_next), rtol=1e-6)


def test_solve_trajectory_matches_manual_steps_and_dpmpp_2m_history():
    denoise = oracles.gaussian_denoiser(MU, STD)
    x = jax.random.normal(jax.random.PRNGKey(5), (3, 2)) * 10
    sigmas = jnp.array([10.0, 4.0, 1.0, 0.3, 0.0])
    final, path = solvers.solve(denoise, x, sigmas, "dpmpp_2m", return_trajectory=True)
    assert path.shape == (5, 3, 2)
    np.testing.assert_array_equal(path[0], x)
    np.testing.assert_allclose(path[-1], final)
    # Manual DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2 with α = 1, λ = −ln σ).
    lam = -np.log(np.asarray(sigmas[:-1]))
    xs, prev = x, None
    for i in range(4):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        x0 = denoise(xs, jnp.full((3,), s))
        if prev is None or s_next == 0:
            x0_c = x0
        else:
            r = (lam[i] - lam[i - 1]) / (lam[i + 1] - lam[i])
            x0_c = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * prev
        xs = (s_next / s) * xs + (1 - s_next / s) * x0_c
        prev = x0
        np.testing.assert_allclose(path[i + 1], xs, rtol=1e-5, atol=1e-6)


def test_edm_sampling_sigmas():
    sigmas = solvers.edm_sampling_sigmas(18, SIGMA_MIN, SIGMA_MAX, 7.0)
    assert sigmas.shape == (19,)
    assert float(sigmas[-1]) == 0.0
    np.testing.assert_allclose([sigmas[0], sigmas[-2]], [SIGMA_MAX, SIGMA_MIN], rtol=1e-6)
    assert np.all(np.diff(np.asarray(sigmas)) < 0)
    i = np.arange(18)
    expected = (SIGMA_MAX ** (1 / 7) + i / 17 * (SIGMA_MIN ** (1 / 7) - SIGMA_MAX ** (1 / 7))) ** 7  # EDM eq. 5
    np.testing.assert_allclose(sigmas[:-1], expected, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Gaussian oracle: Heun lands on the exact flow map; convergence orders
# ---------------------------------------------------------------------------------------------------------------

def test_o2_test_vector_and_heun_lands_on_the_flow_map():
    x = _o2_start()
    exact = oracles.gaussian_consistency_function(x, SIGMA_MAX, MU, STD, SIGMA_MIN)
    assert round(float(exact[0, 0]), 5) == 1.09001  # docs/methods.md §15 O2
    errors = []
    for n in (16, 64, 256):
        grid = karras_sigmas(n + 1, SIGMA_MIN, SIGMA_MAX)[::-1]
        errors.append(abs(float(solvers.solve(oracles.gaussian_denoiser(MU, STD), x, grid, "heun")[0, 0])
                          - float(exact[0, 0])))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4, errors  # float32, 256 Heun steps


def _measured_order(solver, steps=(16, 32, 64, 128)):
    """Least-squares slope of −log error vs log N on Karras grids σ_max → σ_min, in float64."""
    with jax.enable_x64(True):
        x = _o2_start(jnp.float64)
        exact = float(oracles.gaussian_consistency_function(x, SIGMA_MAX, MU, STD, SIGMA_MIN)[0, 0])
        errors = []
        for n in steps:
            grid = karras_sigmas(n + 1, SIGMA_MIN, SIGMA_MAX)[::-1].astype(jnp.float64)
            out = solvers.solve(oracles.gaussian_denoiser(MU, STD), x, grid, solver)
            assert out.dtype == jnp.float64
            errors.append(abs(float(out[0, 0]) - exact))
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    return slope, errors


@pytest.mark.parametrize("solver,order", [("euler", 1.0), ("heun", 2.0), ("dpm_solver_2", 2.0), ("dpmpp_2m", 2.0)])
def test_convergence_order_on_gaussian_oracle(solver, order):
    slope, errors = _measured_order(solver)
    print(f"\n{solver}: measured order {slope:.3f}, errors {['%.3e' % e for e in errors]}")
    assert solvers.SOLVERS[solver].order == order
    assert abs(slope - order) < 0.15, (slope, errors)


# ---------------------------------------------------------------------------------------------------------------
# Samplers and inversion
# ---------------------------------------------------------------------------------------------------------------

def test_deterministic_sampler_matches_exact_flow_and_stochastic_with_no_churn():
    denoise = oracles.gaussian_denoiser(MU, STD)
    sigmas = solvers.edm_sampling_sigmas(18)
    rng = jax.random.PRNGKey(6)
    shape = (256, 2)
    deterministic = solvers.sample_deterministic(denoise, rng, shape, sigmas, "heun")
    stochastic = solvers.sample_edm_stochastic(denoise, rng, shape, sigmas, s_churn=0.0)
    np.testing.assert_allclose(stochastic, deterministic, rtol=1e-6, atol=1e-6)
    # The same initial noise, carried by the exact Gaussian flow from σ_max to 0 (docs/methods.md §15 O2).  With the
    # EDM grid the sampler's error relative to |x − μ| is 6.5% at 18 steps (this Gaussian is sharp, s = 0.3) and
    # shrinks with refinement.
    z = jax.random.normal(jax.random.split(rng)[0], shape)
    exact = oracles.gaussian_flow(SIGMA_MAX * z, SIGMA_MAX, 0.0, MU, STD)
    assert float(jnp.max(jnp.abs(deterministic - exact) / jnp.abs(exact - MU))) < 0.1
    fine = solvers.sample_deterministic(denoise, rng, shape, solvers.edm_sampling_sigmas(128), "heun")
    np.testing.assert_allclose(fine, exact, atol=2e-3)
    churned = solvers.sample_edm_stochastic(denoise, rng, shape, sigmas, s_churn=40.0, s_min=0.05, s_max=50.0)
    assert float(jnp.max(jnp.abs(churned - deterministic))) > 1e-2


def test_stochastic_sampler_reaches_the_data_distribution():
    # With churn, samples from the exact Gaussian denoiser still follow N(μ, s²) (up to discretisation: measured
    # std 0.344 at 18 steps, 0.303 at 64, 0.302 at 256 with 20k samples).
    denoise = oracles.gaussian_denoiser(MU, STD)
    # 16k samples: the std's standard error is 0.0017; 256 steps keep the discretisation bias below it.
    samples = solvers.sample_edm_stochastic(denoise, jax.random.PRNGKey(7), (16000, 1), solvers.edm_sampling_sigmas(256),
                                            s_churn=100.0, s_min=0.01, s_max=10.0, s_noise=1.0)
    assert float(jnp.mean(samples)) == pytest.approx(MU, abs=0.01)
    assert float(jnp.std(samples)) == pytest.approx(STD, abs=0.008)


@pytest.mark.parametrize("solver", ["heun", "dpmpp_2m"])
def test_inversion_lands_on_exact_encoding_and_sampling_returns(solver):
    denoise = oracles.gaussian_denoiser(MU, STD)
    x0 = MU + STD * jax.random.normal(jax.random.PRNGKey(8), (8, 3))
    ascending = karras_sigmas(64, SIGMA_MIN, SIGMA_MAX)
    encoded = solvers.invert(denoise, x0, ascending, solver)
    # Exact encoder x_T = μ + √((s²+σ_max²)/(s²+σ_min²))(x − μ) (docs/methods.md §15 O8 with σ_min start).
    exact = oracles.gaussian_flow(x0, SIGMA_MIN, SIGMA_MAX, MU, STD)
    # Measured on this grid: 0.39% (Heun) / 0.38% (2M) of |x_T − μ|; round trip 2.4e-4 / 5.0e-4.
    assert float(jnp.max(jnp.abs(encoded - exact) / jnp.abs(exact - MU))) < 6e-3
    decoded = solvers.solve(denoise, encoded, ascending[::-1], solver)
    np.testing.assert_allclose(decoded, x0, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# VP: DDIM, invDDIM, aDDIM, ε-target
# ---------------------------------------------------------------------------------------------------------------

def _o5_coefficients():
    # docs/methods.md §15 O5: α_t = cos(πt/2), step t = 0.9 → 0.5.
    t, s = 0.9, 0.5
    return np.cos(np.pi * t / 2), np.sin(np.pi * t / 2), np.cos(np.pi * s / 2), np.sin(np.pi * s / 2)


def test_ddim_matches_notebook_eq_45_and_inverse_is_identity():
    a_t, s_t, a_s, s_s = _o5_coefficients()
    key_x, key_z = jax.random.split(jax.random.PRNGKey(9))
    x0_hat = jax.random.normal(key_x, (4, 3))
    z_t = jax.random.normal(key_z, (4, 3))
    z_s = solvers.ddim_step(x0_hat, z_t, a_t, s_t, a_s, s_s)
    # nb (45) in ᾱ notation (the notebook's α is our α²): x_s = √(ᾱ_s/ᾱ_t) x_t + ε̂(√(1−ᾱ_s) − √(ᾱ_s/ᾱ_t)√(1−ᾱ_t)).
    ab_t, ab_s = a_t**2, a_s**2
    eps_hat = (z_t - a_t * x0_hat) / s_t
    nb45 = np.sqrt(ab_s / ab_t) * z_t + eps_hat * (np.sqrt(1 - ab_s) - np.sqrt(ab_s / ab_t) * np.sqrt(1 - ab_t))
    np.testing.assert_allclose(z_s, nb45, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(solvers.inv_ddim(z_s, z_t, a_t, s_t, a_s, s_s), x0_hat, rtol=1e-4, atol=1e-5)
    # Per-example coefficients broadcast.
    b = jnp.full((4,), 1.0)
    np.testing.assert_allclose(solvers.ddim_step(x0_hat, z_t, a_t * b, s_t * b, a_s * b, s_s * b), z_s, rtol=1e-6,
                               atol=1e-6)
    # DDIM_{t→t} = identity (docs/methods.md §15 O9).
    np.testing.assert_allclose(solvers.ddim_step(x0_hat, z_t, a_t, s_t, a_t, s_t), z_t, rtol=1e-6)


def test_ddim_is_exact_for_point_mass_and_not_for_gaussian():
    a_t, s_t, a_s, s_s = _o5_coefficients()
    z_t = jax.random.normal(jax.random.PRNGKey(10), (5, 2))
    c = 0.4
    # Point mass: x̂ = c, exact map = Gaussian map with s → 0 (docs/methods.md §15 O5).
    ddim_pm = solvers.ddim_step(jnp.full_like(z_t, c), z_t, a_t, s_t, a_s, s_s)
    np.testing.assert_allclose(ddim_pm, oracles.vp_gaussian_flow(z_t, a_t, s_t, a_s, s_s, c, 0.0), rtol=1e-5,
                               atol=1e-6)
    # Gaussian N(0, 0.5²), z_t = 1: the O5 test vector.
    z = jnp.ones((1, 1))
    x0_hat = oracles.vp_gaussian_posterior_mean(z, a_t, s_t, 0.0, 0.5)
    var_x = oracles.vp_gaussian_posterior_variance(a_t, s_t, 0.5)
    ddim = solvers.ddim_step(x0_hat, z, a_t, s_t, a_s, s_s)
    addim = solvers.addim_step(x0_hat, z, a_t, s_t, a_s, s_s, var_x)
    exact = oracles.vp_gaussian_flow(z, a_t, s_t, a_s, s_s, 0.0, 0.5)
    np.testing.assert_allclose([x0_hat[0, 0], ddim[0, 0], addim[0, 0], exact[0, 0]],
                               [0.03984, 0.73963, 0.79899, 0.79793], atol=1e-5)
    assert abs(float(addim[0, 0] - exact[0, 0])) < abs(float(ddim[0, 0] - exact[0, 0]))


def test_addim_reduces_ddim_variance_deficit_on_gaussian_data():
    a_t, s_t, a_s, s_s = _o5_coefficients()
    std = 0.5
    var_t = a_t**2 * std**2 + s_t**2
    target = a_s**2 * std**2 + s_s**2  # 0.625 (docs/methods.md §15 O5)
    assert target == pytest.approx(0.625)
    # 1-D expectation over z_t ~ N(0, var_t) by Gauss–Hermite quadrature (aDDIM is nonlinear in z_t for d = 1).
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    weights = weights / weights.sum()
    z_t = jnp.asarray(nodes * np.sqrt(var_t), jnp.float32)[:, None]
    x0_hat = oracles.vp_gaussian_posterior_mean(z_t, a_t, s_t, 0.0, std)
    var_x = oracles.vp_gaussian_posterior_variance(a_t, s_t, std)
    var_ddim = float(np.sum(weights * np.asarray(solvers.ddim_step(x0_hat, z_t, a_t, s_t, a_s, s_s))[:, 0] ** 2))
    var_addim = float(np.sum(weights * np.asarray(
        solvers.addim_step(x0_hat, z_t, a_t, s_t, a_s, s_s, var_x))[:, 0] ** 2))
    # DDIM is linear: its variance is (its z_t coefficient)²·var_t.
    k = a_t * std**2 / var_t
    coef = a_s * k + (s_s / s_t) * (1 - a_t * k)
    assert var_ddim == pytest.approx(coef**2 * var_t, rel=1e-4)
    assert var_ddim == pytest.approx(0.537, abs=2e-3)  # docs/methods.md §15 O5 quotes 0.538
    assert var_addim == pytest.approx(0.629, abs=2e-3)
    assert abs(var_addim - target) < 0.2 * abs(var_ddim - target)
    # v_x = 0 is DDIM.
    np.testing.assert_allclose(solvers.addim_step(x0_hat, z_t, a_t, s_t, a_s, s_s, 0.0),
                               solvers.ddim_step(x0_hat, z_t, a_t, s_t, a_s, s_s), rtol=1e-5, atol=1e-6)


def _nb47_as_printed(z_s, z_t, alpha_t, sigma_t, alpha_s, sigma_s):
    # nb (47) as printed, translated from ᾱ to α notation: s and t swapped inside both coefficients.
    ratio = alpha_t / alpha_s
    return (z_s - ratio * z_t) / (sigma_t - ratio * sigma_s)


def test_corrected_eps_target_recovers_eps_and_printed_eq_47_does_not():
    a_t, s_t, a_s, s_s = _o5_coefficients()
    key_x, key_e = jax.random.split(jax.random.PRNGKey(11))
    x = jax.random.normal(key_x, (6, 3))
    eps = jax.random.normal(key_e, (6, 3))
    z_t = a_t * x + s_t * eps
    z_s = solvers.ddim_step(x, z_t, a_t, s_t, a_s, s_s)  # = α_s x + σ_s ε
    np.testing.assert_allclose(solvers.ddim_eps_target(z_s, z_t, a_t, s_t, a_s, s_s), eps, rtol=1e-4, atol=1e-4)
    wrong = _nb47_as_printed(z_s, z_t, a_t, s_t, a_s, s_s)
    assert float(jnp.max(jnp.abs(wrong - eps))) > 0.1


def test_ddim_solve_is_euler_in_ve_coordinates_and_samples_point_mass_exactly():
    # VP-DDIM with x̂ from a VE denoiser equals VE Euler on x = z/α (docs/methods.md §0, §1.2).
    ts = jnp.linspace(0.95, 0.05, 7)
    denoise = oracles.gaussian_denoiser(MU, STD)
    z = jax.random.normal(jax.random.PRNGKey(12), (4, 2))
    vp_out = solvers.ddim_solve(processes.vp_denoiser_from_ve(denoise, "linear"), z, ts, "linear")
    alpha0, _ = processes.vp_alpha_sigma(ts[0], "linear")
    alpha1, _ = processes.vp_alpha_sigma(ts[-1], "linear")
    ve_out = solvers.solve(denoise, z / alpha0, processes.vp_to_ve_sigma(ts, "linear"), "euler")
    np.testing.assert_allclose(vp_out / alpha1, ve_out, rtol=1e-4, atol=1e-4)
    # Point-mass data: DDIM sampling down to t = 0 returns c exactly.
    c = jnp.array([0.25, -0.5])
    sample = solvers.sample_ddim(lambda z_t, t, cond=None: jnp.broadcast_to(c, z_t.shape), jax.random.PRNGKey(13),
                                 (3, 2), jnp.linspace(0.99, 0.0, 5), "cosine")
    np.testing.assert_allclose(sample, jnp.broadcast_to(c, (3, 2)), rtol=1e-6)


def test_ddim_solve_converges_to_exact_vp_gaussian_map():
    std = 0.5
    x0_fn = oracles.vp_gaussian_denoiser(0.0, std, "cosine")
    z = jax.random.normal(jax.random.PRNGKey(14), (4, 2))
    t, s = 0.9, 0.1
    a_t, s_t = processes.vp_alpha_sigma(t)
    a_s, s_s = processes.vp_alpha_sigma(s)
    exact = oracles.vp_gaussian_flow(z, a_t, s_t, a_s, s_s, 0.0, std)
    errs = [float(jnp.max(jnp.abs(solvers.ddim_solve(x0_fn, z, jnp.linspace(t, s, n + 1)) - exact)))
            for n in (10, 40)]
    # DDIM is first order in t (measured: 0.100 at 10 steps, 0.0258 at 40).
    order = np.log(errs[0] / errs[1]) / np.log(4)
    assert abs(order - 1.0) < 0.15, errs
