"""Consistency objectives against exact answers (seed §1–§2; docs/methods.md §4–§7, §15 O1, O2, O4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consistency.diffusion import oracles
from consistency.diffusion import distances, schedules, solvers
from consistency.objectives import consistency as cm_obj
from consistency.objectives import ecm as ecm_obj

SIGMA_MIN = 0.002
MU, S = 0.7, 0.3  # docs/methods.md §15 O2


def f_star(x, sigma):
    return oracles.gaussian_consistency_function(x, sigma, MU, S, SIGMA_MIN)


def gaussian_teacher(x, sigma):
    return oracles.gaussian_denoiser(MU, S)(x, sigma)


def _pairs(sigma_hi, ratio, n=4096, seed=0):
    """x₀ ~ N(μ, s²), shared z; a pair (σ_lo = ratio·σ_hi, σ_hi)."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    x0 = MU + S * jax.random.normal(k1, (n, 1))
    z = jax.random.normal(k2, (n, 1))
    hi = jnp.full((n,), sigma_hi)
    return x0, z, hi, ratio * hi


def test_ct_loss_at_exact_f_is_order_delta_sigma_squared_not_zero():
    # docs/methods.md §15 O2 and §17 item 7: for Gaussian data CT's L2 loss at f* is O(Δσ²) > 0 (not 0).
    expected = {0.9: 8.3e-5, 0.99: 6.9e-7, 0.999: 6.8e-9}
    for ratio, ref in expected.items():
        x0, z, hi, lo = _pairs(1.0, ratio, n=200_000)
        x_hi = x0 + hi[:, None] * z
        x_lo = cm_obj.ct_target_point(x0, z, lo)
        loss = float(jnp.mean(distances.l2(f_star(x_hi, hi), f_star(x_lo, lo))))
        assert loss == pytest.approx(ref, rel=0.08), (ratio, loss)


def test_ct_loss_gradient_in_theta_vanishes_at_f_star():
    # θ shifts the mean of the consistency function: f_θ = f* + θ(1 − σ_min/σ); ∂L/∂θ at θ=0 → 0 as Δσ → 0.
    grads = []
    for ratio in (0.9, 0.99, 0.999):
        x0, z, hi, lo = _pairs(1.0, ratio, n=100_000)
        x_hi, x_lo = x0 + hi[:, None] * z, cm_obj.ct_target_point(x0, z, lo)

        def loss(theta):
            fo = f_star(x_hi, hi) + theta * (1 - SIGMA_MIN / hi[:, None])
            ft = jax.lax.stop_gradient(f_star(x_lo, lo) + theta * (1 - SIGMA_MIN / lo[:, None]))
            return jnp.mean(distances.l2(fo, ft))
        grads.append(abs(float(jax.grad(loss)(0.0))))
    assert grads[0] > grads[1] > grads[2] and grads[2] < 1e-4


def test_ct_loss_is_exactly_zero_for_point_mass_at_f_star():
    c = 0.37
    x0 = jnp.full((64, 3), c)
    z = jax.random.normal(jax.random.PRNGKey(1), (64, 3))
    hi, lo = jnp.full((64,), 2.0), jnp.full((64,), 1.5)
    fp = lambda x, s: oracles.point_mass_consistency_function(x, s, c, SIGMA_MIN)
    val = distances.l2(fp(x0 + 2.0 * z, hi), fp(cm_obj.ct_target_point(x0, z, lo), lo))
    np.testing.assert_allclose(np.asarray(val), 0.0, atol=1e-12)


def test_cd_target_with_exact_point_mass_teacher_equals_ct_target():
    # docs/methods.md §15 O1: CD with the exact teacher equals CT for point-mass data (seed eq. 38).
    c = -0.2
    x0 = jnp.full((16, 2), c)
    z = jax.random.normal(jax.random.PRNGKey(2), (16, 2))
    hi, lo = jnp.full((16,), 3.0), jnp.full((16,), 1.1)
    teacher = lambda x, s: oracles.point_mass_denoiser(c)(x, s)
    for solver in ("euler", "heun", "dpm_solver_2"):
        cd = cm_obj.teacher_target_point(teacher, x0 + 3.0 * z, hi, lo, solver)
        np.testing.assert_allclose(np.asarray(cd), np.asarray(cm_obj.ct_target_point(x0, z, lo)), atol=1e-5)


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2), ("dpm_solver_2", 2)])
def test_cd_loss_at_f_star_is_solver_error_shrinking_at_solver_order(solver, order):
    # CD loss at f* = (local solver error)² ∝ Δσ^{2(p+1)} for a p-th order solver.
    from jax import enable_x64
    losses, deltas = [], []
    with enable_x64():  # Heun's squared error reaches 1e-13: beyond float32
        for ratio in (0.96, 0.98, 0.99):
            x0, z, hi, lo = _pairs(1.0, ratio, n=2048)
            x0, z, hi, lo = (jnp.asarray(v, jnp.float64) for v in (x0, z, hi, lo))
            x_hi = x0 + hi[:, None] * z
            x_lo = cm_obj.teacher_target_point(gaussian_teacher, x_hi, hi, lo, solver)
            losses.append(float(jnp.mean(distances.l2(f_star(x_hi, hi), f_star(x_lo, lo)))))
            deltas.append(1 - ratio)
    slope = np.polyfit(np.log(deltas), np.log(losses), 1)[0]
    assert slope == pytest.approx(2 * (order + 1), abs=0.35), slope


def test_multistep_teacher_reduces_cd_target_error():
    x0, z, hi, lo = _pairs(2.0, 0.3, n=512)
    x_hi = x0 + hi[:, None] * z
    exact = oracles.gaussian_flow(x_hi, hi[:, None], lo[:, None], MU, S)
    err = [float(jnp.max(jnp.abs(cm_obj.teacher_target_point(gaussian_teacher, x_hi, hi, lo, "euler", m) - exact)))
           for m in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(err, err[1:]))
    assert err[0] / err[3] == pytest.approx(8, rel=0.35)  # Euler is first order in the step count


def test_posterior_average_over_whole_dataset_equals_empirical_denoiser_target():
    bank = jax.random.normal(jax.random.PRNGKey(3), (50, 4, 4, 1))
    x = bank[:8] + 0.7 * jax.random.normal(jax.random.PRNGKey(4), (8, 4, 4, 1))
    hi, lo = jnp.full((8,), 0.7), jnp.full((8,), 0.5)
    x_bar = cm_obj.posterior_mean_estimate(x, hi, bank)
    np.testing.assert_allclose(np.asarray(x_bar), np.asarray(oracles.empirical_denoiser(bank)(x, hi)), atol=1e-5)
    target = cm_obj.constant_denoiser_step(x, hi, lo, x_bar)
    euler = solvers.euler_step(lambda y, s, cond=None: oracles.empirical_denoiser(bank)(y, s), x, hi, lo)
    np.testing.assert_allclose(np.asarray(target), np.asarray(euler), atol=1e-5)
    # k nearest neighbours: k = 1 picks the nearest bank point, k = M equals the full average.
    nn = cm_obj.posterior_mean_estimate(x, hi, bank, top_k=1)
    d = jnp.sum((x.reshape(8, 1, -1) - bank.reshape(1, 50, -1)) ** 2, -1)
    np.testing.assert_allclose(np.asarray(nn), np.asarray(bank[jnp.argmin(d, 1)]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(cm_obj.posterior_mean_estimate(x, hi, bank, top_k=50)),
                               np.asarray(x_bar), atol=1e-6)


def test_tiled_whole_bank_average_equals_the_dense_softmax():
    """The online softmax over bank tiles (last tile padded) gives the dense softmax average, from σ so small that one
    bank point takes all the weight to σ so large that all weigh alike; a bank past 2 tiles takes the tiled path."""
    rng = np.random.default_rng(1)
    bank = jnp.asarray(rng.standard_normal((1000, 3)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((6, 3)) * 2, jnp.float32)
    sigma = jnp.asarray([1e-3, 0.05, 0.3, 1.0, 5.0, 80.0], jnp.float32)
    d = np.sum((np.asarray(x, np.float64)[:, None] - np.asarray(bank, np.float64)[None]) ** 2, -1)
    logits = -d / (2 * np.asarray(sigma, np.float64)[:, None] ** 2)
    w = np.exp(logits - logits.max(1, keepdims=True))
    expected = (w / w.sum(1, keepdims=True)) @ np.asarray(bank, np.float64)
    for block in (64, 300, 1000):
        got = cm_obj.softmax_average_blocked(x, bank, 1.0 / (2.0 * sigma ** 2), block)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(cm_obj.posterior_mean_estimate(x, sigma, bank, block=128)), expected,
                               rtol=1e-4, atol=1e-4)
    assert np.argmax(w[0]) == np.argmin(d[0]) and np.allclose(expected[0], np.asarray(bank)[np.argmin(d[0])], atol=1e-4)


def test_blocked_nearest_neighbours_match_brute_force_top_k():
    """The two-level k-NN (group minima over bank tiles, the k best groups, the k best of their rows; last group and
    tile padded) returns exactly the brute-force neighbours, and the k-NN posterior mean equals the softmax over those
    k computed densely."""
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((7, 3)), jnp.float32)
    bank = jnp.asarray(rng.standard_normal((1000, 3)), jnp.float32)
    d = np.sum((np.asarray(q)[:, None] - np.asarray(bank)[None]) ** 2, -1)
    for k, block, group in ((5, 128, 64), (1, 1000, 64), (16, 256, 7), (5, 4096, 300), (12, 50, 1)):
        sq, index = cm_obj.nearest_neighbours(q, bank, k, block=block, group=group)
        np.testing.assert_array_equal(np.asarray(index), np.argsort(d, 1)[:, :k])
        np.testing.assert_allclose(np.asarray(sq), np.sort(d, 1)[:, :k], rtol=1e-5, atol=1e-5)
    values = jnp.asarray([[3.0, 1.0, 2.0, 1.0, 0.5]])
    found, where = cm_obj.smallest_k(values, 3)
    assert np.asarray(where).tolist() == [[4, 1, 3]] and np.asarray(found).tolist() == [[0.5, 1.0, 1.0]]
    sigma = jnp.full((7,), 0.6)
    idx = np.argsort(d, 1)[:, :5]
    logits = -np.take_along_axis(d, idx, 1) / (2 * 0.36)
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    expected = np.einsum("bk,bkd->bd", w, np.asarray(bank)[idx])
    np.testing.assert_allclose(np.asarray(cm_obj.posterior_mean_estimate(q, sigma, bank, top_k=5)), expected,
                               rtol=1e-5, atol=1e-5)


def test_single_point_posterior_reduces_to_ct_target():
    x0 = jax.random.normal(jax.random.PRNGKey(5), (6, 3))
    z = jax.random.normal(jax.random.PRNGKey(6), (6, 3))
    hi, lo = jnp.full((6,), 1.3), jnp.full((6,), 0.4)
    t = cm_obj.constant_denoiser_step(x0 + 1.3 * z, hi, lo, x0)  # E[x0|x] ≈ x0 (seed eq. 17, n = 1)
    np.testing.assert_allclose(np.asarray(t), np.asarray(x0 + 0.4 * z), atol=1e-6)  # seed eq. 20


def test_single_sample_ct_target_is_exact_for_any_number_of_euler_steps():
    """nb §1.5 "what if we do more?": with E[x₀|x] ≈ x₀ the ODE dx/dσ = (x − x₀)/σ (seed eq. 18) is solved by
    x₀ + σz, and each Euler step x₀ + (σ'/σ)(x − x₀) maps that solution onto itself, so K steps land where 1 does."""
    x0 = jax.random.normal(jax.random.PRNGKey(7), (5, 2))
    z = jax.random.normal(jax.random.PRNGKey(8), (5, 2))
    levels = jnp.asarray([2.0, 1.7, 1.1, 0.6, 0.31])
    x = x0 + levels[0] * z
    for a, b in zip(levels[:-1], levels[1:]):
        x = cm_obj.constant_denoiser_step(x, jnp.full((5,), a), jnp.full((5,), b), x0)
    np.testing.assert_allclose(np.asarray(x), np.asarray(x0 + 0.31 * z), atol=1e-6)


def test_posterior_ode_target_substeps_against_closed_forms():
    """K Euler sub-steps of the pool-estimate PF-ODE (seed eq. 22–25, docs/methods.md §5): a one-point pool gives
    x₀ + σ_lo z for every K; a two-point pool converges to a fine Heun solve of the same ODE as K grows, and K = 1
    is seed eq. 24's single step."""
    x0 = jnp.asarray([[0.3, -1.2]])
    z = jax.random.normal(jax.random.PRNGKey(9), (4, 2))
    hi, lo = jnp.asarray([2.5, 1.0, 0.4, 5.0]), jnp.asarray([1.4, 0.5, 0.05, 0.002])
    x_hi = x0 + hi[:, None] * z
    for k in (1, 2, 5):
        np.testing.assert_allclose(np.asarray(cm_obj.posterior_ode_target(x_hi, hi, lo, x0, substeps=k)),
                                   np.asarray(x0 + lo[:, None] * z), atol=2e-6)
    bank = jnp.asarray([[1.0, 0.0], [-1.0, 0.5]])
    one = cm_obj.posterior_ode_target(x_hi, hi, lo, bank, substeps=1)
    np.testing.assert_allclose(np.asarray(one), np.asarray(cm_obj.constant_denoiser_step(
        x_hi, hi, lo, cm_obj.posterior_mean_estimate(x_hi, hi, bank))), atol=1e-6)
    denoiser = oracles.empirical_denoiser(bank)
    reference = np.stack([np.asarray(solvers.solve(lambda y, s, cond=None: denoiser(y, s), x_hi[i:i + 1],
                                                   schedules.karras_sigmas(400, float(lo[i]), float(hi[i]))[::-1],
                                                   "heun"))[0] for i in range(4)])
    errors = [float(np.max(np.abs(np.asarray(cm_obj.posterior_ode_target(x_hi, hi, lo, bank, substeps=k))
                                  - reference))) for k in (1, 4, 64)]
    assert errors[0] > 1e-2, errors                      # the single step is visibly off the two-point ODE here
    assert errors[2] < 0.1 * errors[0] and errors[2] < errors[1] < errors[0], errors
    assert errors[2] < 5e-3, errors                       # first order: about 1/K (0.98, 0.023, 0.0013 measured)


def test_pair_weights():
    lo, hi = jnp.array([0.5]), jnp.array([2.0])
    assert float(cm_obj.pair_weight("uniform", lo, hi)[0]) == 1.0
    assert float(cm_obj.pair_weight("snr", lo, hi)[0]) == pytest.approx(0.25)
    assert float(cm_obj.pair_weight("snr+1", lo, hi)[0]) == pytest.approx(1.25)
    assert float(cm_obj.pair_weight("truncated_snr", lo, hi)[0]) == pytest.approx(1.0)
    assert float(cm_obj.pair_weight("inv_delta", lo, hi)[0]) == pytest.approx(1 / 1.5)


# ---------------------------------------------------------------------------------------------------------------
# Point-mass EMA analysis, seed §2.1 eq. 28–42: affine model f_θ = (ε/σ)x + (1 − ε/σ)θ.
# ---------------------------------------------------------------------------------------------------------------

def _affine(theta, x, sigma):
    return SIGMA_MIN / sigma[:, None] * x + (1 - SIGMA_MIN / sigma[:, None]) * theta


def _ct_point_mass_loss(theta, theta_minus, c, s_lo, s_hi, z):
    x0 = jnp.full_like(z, c)
    hi = jnp.full((z.shape[0],), s_hi)
    lo = jnp.full((z.shape[0],), s_lo)
    online = _affine(theta, x0 + s_hi * z, hi)
    target = jax.lax.stop_gradient(_affine(theta_minus, cm_obj.ct_target_point(x0, z, lo), lo))
    return jnp.mean(distances.l2(online, target))


def test_point_mass_ct_without_ema_reaches_epsilon():
    c, s_lo, s_hi, lr = 1.5, 0.5, 0.6, 300.0
    z = jax.random.normal(jax.random.PRNGKey(7), (32, 1))
    grad = jax.jit(jax.grad(lambda th: _ct_point_mass_loss(th, th, c, s_lo, s_hi, z)))
    theta = 0.0
    for _ in range(3000):
        theta = theta - lr * grad(theta)
    assert float(theta) == pytest.approx(c, abs=1e-3)


def test_point_mass_ema_bias_matches_eq42_fraction():
    # Minimising over θ with θ⁻ fixed moves θ to (a c + b θ⁻)/(a + b): only a/(a+b) of the way (seed eq. 42).
    c, s_lo, s_hi = 1.5, 0.5, 0.6
    a = SIGMA_MIN / s_lo - SIGMA_MIN / s_hi  # ≈ ε Δσ / σ_i²
    b = 1 - SIGMA_MIN / s_lo
    z = jax.random.normal(jax.random.PRNGKey(8), (16, 1))
    theta_minus = 0.0
    loss = lambda th: _ct_point_mass_loss(th, theta_minus, c, s_lo, s_hi, z)
    # The loss is quadratic in θ: one Newton step gives the exact minimiser.
    g, h = jax.grad(loss)(0.0), jax.grad(jax.grad(loss))(0.0)
    theta_star = float(0.0 - g / h)
    assert theta_star == pytest.approx((a * c + b * theta_minus) / (a + b), rel=1e-4)
    assert theta_star / c == pytest.approx(a / (a + b), rel=1e-4) and theta_star / c < 0.01


def test_point_mass_gd_trajectory_with_target_ema_matches_linear_prediction():
    # One GD step on θ then θ⁻ ← μθ⁻ + (1−μ)θ: the exact loss residual is A(θ−c) − B(θ⁻−c) with A = 1 − ε/σ_hi,
    # B = 1 − ε/σ_lo (= eq. 42 with a = A − B, b = B), so (θ − c, θ⁻ − c) follows a 2×2 linear map. The simulated
    # trajectory from the real objective matches it, and μ > 0 converges more slowly than μ = 0.
    c, s_lo, s_hi, lr, mu = 1.5, 0.5, 0.6, 0.2, 0.9
    A, B = 1 - SIGMA_MIN / s_hi, 1 - SIGMA_MIN / s_lo
    z = jnp.zeros((4, 1))  # z cancels exactly for the point mass; zeros keep the map exact
    grad = jax.jit(jax.grad(_ct_point_mass_loss), static_argnums=())
    th, tm = 0.0, 0.0
    e = np.array([-c, -c])
    M = np.array([[1 - 2 * lr * A * A, 2 * lr * A * B], [0.0, 0.0]])
    M[1] = mu * np.array([0.0, 1.0]) + (1 - mu) * M[0]
    errs_mu = []
    for _ in range(200):
        th = float(th - lr * grad(th, tm, c, s_lo, s_hi, z))
        tm = mu * tm + (1 - mu) * th
        e = M @ e
        assert th - c == pytest.approx(e[0], rel=1e-5) and tm - c == pytest.approx(e[1], rel=1e-5)
        errs_mu.append(abs(th - c))
    th0 = 0.0
    for _ in range(200):
        th0 = float(th0 - lr * grad(th0, th0, c, s_lo, s_hi, z))
    assert abs(th0 - c) < errs_mu[-1]


# ---------------------------------------------------------------------------------------------------------------
# ECT objective.
# ---------------------------------------------------------------------------------------------------------------

def test_ecm_stage0_small_t_is_denoising_loss():
    y = jax.random.normal(jax.random.PRNGKey(9), (8, 5))
    noise = jax.random.normal(jax.random.PRNGKey(10), (8, 5))
    t = jnp.full((8,), 1.0)
    r = schedules.ect_r_from_t(t, 0)
    assert float(jnp.max(r)) == 0.0
    D = lambda x, s: 0.5 * x
    loss = ecm_obj.ecm_loss(D, D, y, noise, t, r, 0.0)
    ref = jnp.linalg.norm(0.5 * (y + noise) - y, axis=1) / 1.0
    np.testing.assert_allclose(np.asarray(loss), np.asarray(ref), rtol=1e-5)


def test_ecm_loss_zero_for_consistent_point_mass_denoiser():
    c = 0.3
    y = jnp.full((8, 2), c)
    noise = jax.random.normal(jax.random.PRNGKey(11), (8, 2))
    t = jnp.full((8,), 3.0)
    r = schedules.ect_r_from_t(t, 3)
    assert float(jnp.min(r)) > 0
    D = lambda x, s: jnp.full_like(x, c)  # the exact denoiser for a point mass is its own consistency function
    np.testing.assert_allclose(np.asarray(ecm_obj.ecm_loss(D, D, y, noise, t, r, 0.0)), 0.0, atol=1e-4)


def test_feature_distance_is_lpips_form_on_classifier_activations():
    from consistency.metrics.features import FeatureNet
    from consistency.objectives import feature_distance as fd
    model = FeatureNet(num_classes=10, feature_dim=16, width=4)
    a = jax.random.normal(jax.random.PRNGKey(12), (3, 8, 8, 1))
    params = model.init(jax.random.PRNGKey(13), a)["params"]
    b = a + 0.3 * jax.random.normal(jax.random.PRNGKey(14), a.shape)
    d_ab = np.asarray(fd.feature_distance(model, params, a, b))
    np.testing.assert_allclose(np.asarray(fd.feature_distance(model, params, a, a)), 0.0, atol=1e-7)
    np.testing.assert_allclose(d_ab, np.asarray(fd.feature_distance(model, params, b, a)), rtol=1e-5)
    # Independent recomputation from the conv weights: layer 1 = conv(x), then SiLU feeds the next convs.
    acts = []
    for x in (a, b):
        layers, h = [], x
        for name, stride in (("Conv_0", 1), ("Conv_1", 2), ("Conv_2", 2)):
            k, bias = params[name]["kernel"], params[name]["bias"]
            out = jax.lax.conv_general_dilated(h, k, (stride, stride), "SAME",
                                               dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
            layers.append(out)
            h = jax.nn.silu(out)
        acts.append(layers)
    ref = sum(jnp.mean(jnp.sum((fa / jnp.linalg.norm(fa, axis=-1, keepdims=True)
                                - fb / jnp.linalg.norm(fb, axis=-1, keepdims=True)) ** 2, -1), (1, 2))
              for fa, fb in zip(*acts))
    np.testing.assert_allclose(d_ab, np.asarray(ref), rtol=1e-4)
    bigger = np.asarray(fd.feature_distance(model, params, a, a + 1.0 * (b - a) / 0.3))
    assert np.all(bigger > d_ab)
