"""Sample-quality metrics against closed forms and independent computations (issue 5, item 1)."""
import dataclasses
import itertools
import math

import jax

import numpy as np
import pytest
from scipy import stats

from consistency.metrics import set_distances, intervals, mixtures, sample_quality
from consistency.metrics import features


def _random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ------------------------------------------------------------------ Fréchet distance


def test_frechet_distance_of_a_gaussian_with_itself_is_zero():
    rng = np.random.default_rng(0)
    mu, cov = rng.standard_normal(16), _random_spd(rng, 16)
    assert abs(set_distances.frechet_distance(mu, cov, mu, cov)) < 1e-8 * np.trace(cov)


def test_frechet_distance_matches_diagonal_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8) + 2.0
    v1, v2 = rng.uniform(0.1, 2.0, 8), rng.uniform(0.1, 2.0, 8)
    # ‖μ1 − μ2‖² + Σ (√v1 − √v2)²: (C1C2)^{1/2} = diag(√(v1 v2)) for diagonal C
    expected = sum((a - b) ** 2 for a, b in zip(mu1, mu2)) + sum((math.sqrt(a) - math.sqrt(b)) ** 2
                                                                 for a, b in zip(v1, v2))
    assert set_distances.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)
    assert set_distances.frechet_distance(mu1, v1, mu2, v2) == pytest.approx(expected, rel=1e-12)  # 1-D variances
    # scalar (1-D Gaussian): (μ1 − μ2)² + (s1 − s2)²
    assert set_distances.frechet_distance(0.3, 4.0, -0.2, 1.0) == pytest.approx(0.25 + 1.0, rel=1e-12)


def test_frechet_distance_for_shifted_and_scaled_full_covariance():
    # C1 = Q diag(a) Qᵀ, C2 = Q diag(b) Qᵀ commute, so tr (C1C2)^{1/2} = Σ √(a b).
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    a, b = rng.uniform(0.2, 3.0, 12), rng.uniform(0.2, 3.0, 12)
    mu1 = rng.standard_normal(12)
    shift = rng.standard_normal(12)
    expected = float(shift @ shift + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    got = set_distances.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu1 + shift, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-7)
    # scaling: C2 = s² C1 gives (1 − s)² tr C1
    c1 = _random_spd(rng, 12)
    assert set_distances.frechet_distance(mu1, c1, mu1, 2.25 * c1) == pytest.approx(0.25 * np.trace(c1), rel=1e-7)


def test_frechet_distance_from_samples_and_singular_covariance():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4000, 3))
    y = rng.standard_normal((4000, 3)) * np.array([1.0, 2.0, 0.5]) + np.array([1.0, 0.0, 0.0])
    fd = set_distances.frechet_distance(*set_distances.gaussian_stats(x), *set_distances.gaussian_stats(y))
    assert fd == pytest.approx(1.0 + 0.0 + 1.0 + 0.25, abs=0.12)  # ‖Δμ‖² + Σ (1 − s)², s = 1, 2, 0.5
    # 20 samples in 64-d: a rank-19 covariance; the ε·I fallback keeps the result finite and ≈ 0
    few = rng.standard_normal((20, 64))
    mu, cov = set_distances.gaussian_stats(few)
    assert np.linalg.matrix_rank(cov) == 19
    assert abs(set_distances.frechet_distance(mu, cov, mu, cov)) < 1e-3


# ------------------------------------------------------------------ Wasserstein


def test_wasserstein_1d_of_shifted_and_independent_normals_is_the_shift():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(20000)
    assert set_distances.wasserstein_1d(x, x + 0.7) == pytest.approx(0.7, rel=1e-12)  # exact for a translate
    assert set_distances.wasserstein_1d(x, x - 0.7, p=2) == pytest.approx(0.7, rel=1e-12)
    y = rng.standard_normal(20000) + 0.7  # W1(N(0,1), N(m,1)) = |m|; sampling error ~ 1/√n
    assert set_distances.wasserstein_1d(x, y) == pytest.approx(0.7, abs=0.03)


def test_wasserstein_1d_unequal_sizes_matches_scipy_and_replication():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal(37), rng.exponential(size=53)
    assert set_distances.wasserstein_1d(a, b) == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-10)
    # W_p is unchanged when every atom is split into equal copies: 53 copies of a, 37 of b → equal sizes
    a_rep, b_rep = np.sort(np.repeat(a, 53)), np.sort(np.repeat(b, 37))
    w2_rep = math.sqrt(np.mean((a_rep - b_rep) ** 2))
    assert set_distances.wasserstein_1d(a, b, p=2) == pytest.approx(w2_rep, rel=1e-10)


def test_sliced_wasserstein_between_point_masses():
    p, q = np.array([0.3, -1.0]), np.array([2.3, 0.5])
    a, b = np.tile(p, (50, 1)), np.tile(q, (70, 1))
    v = q - p
    k = 4096
    dirs = set_distances.random_unit_directions(2, k, seed=7)
    # per projection W1 = |⟨u, v⟩|; the estimator averages it over the same directions
    raw = set_distances.sliced_wasserstein(a, b, num_projections=k, seed=7, unit_scale=False)
    assert raw == pytest.approx(np.mean(np.abs(dirs @ v)), rel=1e-10)
    # E|⟨u, v⟩| = (2/π)‖v‖ in 2-D; std of |cos θ| is √(1/2 − 4/π²) → 4σ/√K tolerance
    tol = 4 * math.sqrt(0.5 - 4 / math.pi ** 2) / math.sqrt(k)
    assert raw == pytest.approx(2 / math.pi * np.linalg.norm(v), rel=tol * math.pi / 2)
    assert set_distances.sliced_wasserstein(a, b, num_projections=k, seed=7) == pytest.approx(np.linalg.norm(v),
                                                                                  rel=tol * math.pi / 2)
    # 3-D: u₁ is uniform on [−1, 1] (Archimedes), so E|u₁| = 1/2 and the unit-scale value is ‖v‖
    assert set_distances.projected_norm_constant(3) == pytest.approx(0.5, rel=1e-12)
    assert set_distances.projected_norm_constant(7, p=2) == pytest.approx(1 / math.sqrt(7), rel=1e-12)
    p3, q3 = np.zeros(3), np.array([1.0, 2.0, 2.0])
    sw3 = set_distances.sliced_wasserstein(np.tile(p3, (5, 1)), np.tile(q3, (5, 1)), num_projections=k, seed=1)
    assert sw3 == pytest.approx(3.0, rel=4 * math.sqrt(1 / 12) / 0.5 / math.sqrt(k))  # Var|u₁| = 1/12


def test_sliced_wasserstein_in_1d_is_exact_wasserstein():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((300, 1)), rng.standard_normal((200, 1)) * 2 + 1
    exact = set_distances.wasserstein_1d(a, b)
    assert set_distances.sliced_wasserstein(a, b, num_projections=16) == pytest.approx(exact, rel=1e-10)


# ------------------------------------------------------------------ MMD family


def _loop_mmd2_unbiased(x, y, kernel):
    """Independent double loop over i ≠ j (Gretton et al. 2012, Lemma 6)."""
    m, n = len(x), len(y)
    sxx = sum(kernel(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    syy = sum(kernel(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    sxy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_single_subset_matches_brute_force_cubic_kernel():
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((25, 4)), rng.standard_normal((25, 4)) + 0.5
    cubic = lambda u, v: (u @ v / 4 + 1.0) ** 3  # noqa: E731  Bińkowski et al. 2018
    mean, std = set_distances.kernel_inception_distance(x, y, num_subsets=3, subset_size=25, normalize=False)
    assert mean == pytest.approx(_loop_mmd2_unbiased(x, y, cubic), rel=1e-10)
    assert np.isnan(std)  # every subset would be the full set: one value, no spread
    # normalised KID = raw KID on features standardised with the mean and std of the union
    union = np.concatenate([x, y])
    xs, ys = (x - union.mean(0)) / union.std(0), (y - union.mean(0)) / union.std(0)
    mean_n, _ = set_distances.kernel_inception_distance(x, y, num_subsets=1, subset_size=25)
    assert mean_n == pytest.approx(_loop_mmd2_unbiased(xs, ys, cubic), rel=1e-10)
    # ... hence invariant to a per-feature affine map of both sets
    scale, shift = rng.uniform(0.1, 10, 4), rng.standard_normal(4)
    mean_t, _ = set_distances.kernel_inception_distance(x * scale + shift, y * scale + shift, 1, 25)
    assert mean_t == pytest.approx(mean_n, rel=1e-8)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(10)
    for _ in range(3):
        a, b = rng.standard_normal((400, 32)), rng.standard_normal((400, 32))
        mean, std = set_distances.kernel_inception_distance(a, b, num_subsets=20, subset_size=200, seed=1)
        assert abs(mean) < 2 * std  # one draw: |mean| within two subset-stds of 0
    # the mean over 60 independent pairs (full sets, normalised) is 0 within 3 standard errors
    same = [set_distances.kernel_inception_distance(rng.standard_normal((200, 32)) + 0.5,
                                         rng.standard_normal((200, 32)) + 0.5, 1, 200)[0] for _ in range(60)]
    assert abs(np.mean(same)) < 3 * np.std(same) / math.sqrt(len(same))
    a, b = rng.standard_normal((400, 32)), rng.standard_normal((400, 32)) * 1.2 + 0.3
    mean, std = set_distances.kernel_inception_distance(a, b, num_subsets=20, subset_size=200)
    assert mean > 10 * std > 0


def test_mmd_rbf_closed_forms():
    bws = (0.5, 1.0, 2.0)
    p, q = np.array([0.0, 1.0]), np.array([1.5, -1.0])
    a, b = np.tile(p, (6, 1)), np.tile(q, (9, 1))
    # point masses: k ≡ H within a set, so MMD² = 2H − 2 Σ_h exp(−‖p − q‖² / 2h²)
    d2 = float(np.sum((p - q) ** 2))
    assert set_distances.mmd_rbf(a, b, bws) == pytest.approx(2 * 3 - 2 * sum(math.exp(-d2 / (2 * h * h)) for h in bws),
                                                  rel=1e-12)
    assert set_distances.mmd_rbf(a, np.tile(p, (4, 1)), bws) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((12, 2)), rng.standard_normal((15, 2))
    rbf = lambda u, v: sum(math.exp(-np.sum((u - v) ** 2) / (2 * h * h)) for h in bws)  # noqa: E731
    assert set_distances.mmd_rbf(x, y, bws) == pytest.approx(_loop_mmd2_unbiased(x, y, rbf), rel=1e-10)
    assert set_distances.mmd_rbf(x, x, bws) == pytest.approx(_loop_mmd2_unbiased(x, x, rbf), rel=1e-10)


def test_mmd_rbf_expectation_for_gaussians():
    # X ~ N(0, s²I), Y ~ N(Δ, s²I), one bandwidth h in d dims: E k(X, Y) = c exp(−‖Δ‖²/(2(h²+2s²))),
    # E k(X, X') = c with c = (h²/(h²+2s²))^{d/2}; the unbiased estimator's mean is 2c(1 − exp(...)).
    rng = np.random.default_rng(12)
    s, h, delta = 1.0, 1.0, np.array([1.0, 0.0])
    c = (h * h / (h * h + 2 * s * s))
    expected = 2 * c * (1 - math.exp(-1.0 / (2 * (h * h + 2 * s * s))))
    vals = [set_distances.mmd_rbf(rng.standard_normal((500, 2)), rng.standard_normal((500, 2)) + delta, (h,))
            for _ in range(6)]
    assert np.mean(vals) == pytest.approx(expected, abs=4 * np.std(vals) / math.sqrt(6) + 1e-3)
    assert set_distances.mmd_rbf(rng.standard_normal((500, 2)), rng.standard_normal((500, 2)), (h,)) == pytest.approx(
        0.0, abs=0.01)


def test_energy_distance_matches_scipy_and_point_masses():
    rng = np.random.default_rng(13)
    a, b = rng.standard_normal(40), rng.standard_normal(55) + 0.4
    assert set_distances.energy_distance(a, b) == pytest.approx(stats.energy_distance(a, b) ** 2, rel=1e-10)
    p, q = np.array([1.0, 2.0]), np.array([4.0, -2.0])
    assert set_distances.energy_distance(np.tile(p, (3, 1)), np.tile(q, (5, 1))) == pytest.approx(2 * 5.0, rel=1e-12)


# ------------------------------------------------------------------ mixtures, precision / recall


def _ring_mixture(k=8, radius=4.0, std=0.1):
    angles = 2 * np.pi * np.arange(k) / k
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return mixtures.GaussianMixture(weights=np.full(k, 1.0 / k), means=means, stds=std)


def test_mixture_log_likelihood_matches_scipy():
    rng = np.random.default_rng(14)
    w, means, stds = np.array([0.2, 0.5, 0.3]), rng.standard_normal((3, 2)) * 2, np.array([0.5, 1.0, 0.8])
    x = rng.standard_normal((100, 2)) * 1.5
    dens = sum(wk * stats.multivariate_normal(mk, sk ** 2 * np.eye(2)).pdf(x) for wk, mk, sk in zip(w, means, stds))
    assert mixtures.mixture_log_likelihood(x, w, means, stds) == pytest.approx(np.mean(np.log(dens)), rel=1e-10)
    # 1-D with a scalar std and uniform weights
    x1 = rng.standard_normal(50)
    dens1 = 0.5 * stats.norm(-1, 0.7).pdf(x1) + 0.5 * stats.norm(2, 0.7).pdf(x1)
    assert mixtures.mixture_log_likelihood(x1, None, np.array([-1.0, 2.0]), 0.7) == pytest.approx(
        np.mean(np.log(dens1)), rel=1e-10)


def test_mode_coverage_all_modes_half_modes_and_off_manifold():
    mix = _ring_mixture()
    n = 4000
    full = mixtures.sample_gaussian_mixture(mix, n, seed=0)
    cov = mixtures.mode_coverage(full, mix.means, mix.stds)
    assert cov["mode_coverage"] == 1.0
    p_in = 1 - math.exp(-4.5)  # P(‖z‖ ≤ 3) for a 2-D standard normal (χ₂)
    assert cov["high_quality"] == pytest.approx(p_in, abs=4 * math.sqrt(p_in * (1 - p_in) / n))
    half = full[np.argmin(np.linalg.norm(full[:, None] - mix.means[None], axis=-1), axis=1) < 4]
    assert mixtures.mode_coverage(half, mix.means, mix.stds)["mode_coverage"] == 0.5
    off = np.zeros((100, 2))  # the ring's centre: 40 std from every mode
    assert mixtures.mode_coverage(off, mix.means, mix.stds)["high_quality"] == 0.0


def test_precision_recall_exact_cases():
    rng = np.random.default_rng(15)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    real = np.concatenate([c + 0.1 * rng.standard_normal((100, 2)) for c in centres])
    assert set_distances.precision_recall(real, real) == (1.0, 1.0)
    # fakes = the real points of two of the four clusters: all inside the real manifold, half the
    # real points inside the fake one (clusters are 100 std apart)
    assert set_distances.precision_recall(real, real[:200], k=3) == (1.0, 0.5)
    assert set_distances.precision_recall(real, real + 50.0) == (0.0, 0.0)


# ------------------------------------------------------------------ noise floor and reports


def test_noise_floor_uses_two_disjoint_draws_of_size_n():
    real = np.arange(100.0)[:, None]
    sizes_and_overlap = sample_quality.noise_floor(lambda a, b: (len(a), len(b), len(np.intersect1d(a, b))), real, 40)
    assert sizes_and_overlap == (40, 40, 0)
    with pytest.raises(ValueError, match="2 x 60"):
        sample_quality.noise_floor(set_distances.wasserstein_1d, real, 60)
    seeds = sample_quality.noise_floor(lambda a, b: (a[0], b[0]), lambda n, seed: np.full(n, seed), 5, seed=3)
    assert seeds == (3, 4)


def test_evaluate_points_reads_against_floor():
    mix = _ring_mixture()
    good = mixtures.sample_gaussian_mixture(mix, 500, seed=11)
    collapsed = good[np.argmin(np.linalg.norm(good[:, None] - mix.means[None], axis=-1), axis=1) < 4]
    m_good = sample_quality.evaluate_points(good, mixture=mix)
    m_bad = sample_quality.evaluate_points(collapsed, mixture=mix._asdict())
    for key in ("swd", "mmd", "energy", "log_likelihood", "mode_coverage", "high_quality"):
        assert key in m_good and key + "_floor" in m_good
    assert m_good["mode_coverage"] == m_good["mode_coverage_floor"] == 1.0
    assert m_bad["mode_coverage"] == 0.5
    for key in ("swd", "mmd", "energy"):
        assert m_bad[key] > 3 * abs(m_bad[key + "_floor"])
    # the good sampler is within a factor of the floor
    assert m_good["swd"] < 3 * m_good["swd_floor"]
    # a finite real pool: samples cut to half of it
    as_tuple = sample_quality.evaluate_points(good, mixture=tuple(mix))  # the (weights, means, stds) of data/toys.py
    assert as_tuple == m_good
    m_pool = sample_quality.evaluate_points(good, mixtures.sample_gaussian_mixture(mix, 600, seed=2))
    # a finite real pool: every sample scored, the floor's real draw B at most half the pool, A the rest
    assert (m_pool["num_samples"], m_pool["num_reference"], m_pool["num_floor"]) == (500, 300, 300)
    assert "mode_coverage" not in m_pool
    assert sample_quality.evaluate_points(good[:100], mixtures.sample_gaussian_mixture(mix, 600, seed=2))["num_reference"] == 500
    text = sample_quality.format_with_floor(m_good)
    assert f"swd {m_good['swd']:.4g} (floor {m_good['swd_floor']:.4g})" in text.splitlines()


# ------------------------------------------------------------------ digits classifier features


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    cache = tmp_path_factory.mktemp("features")
    extractor = features.load_or_train_digits_features(cache_dir=cache)
    return extractor, cache, features.load_digits_split()


@pytest.mark.slow
def test_digits_classifier_accuracy_and_cache(digits, monkeypatch):
    extractor, cache, (x_train, _, x_test, _) = digits
    print(f"digits feature classifier held-out accuracy: {extractor.test_accuracy:.4f}")
    assert extractor.test_accuracy >= 0.95
    assert len(list(cache.glob("digits-*.msgpack"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("should load from the cache")
    monkeypatch.setattr(features, "train_feature_classifier", no_training)
    again = features.load_or_train_digits_features(cache_dir=cache)
    assert again.test_accuracy == extractor.test_accuracy
    np.testing.assert_array_equal(again(x_test[:10]), extractor(x_test[:10]))
    assert extractor(x_test).shape == (len(x_test), 64)
    # digits resized up (bilinear, as consistency.data does; or nearest, RGB) give the 8×8 features back
    up16 = np.asarray(jax.image.resize(x_test[:20], (20, 16, 16, 1), "linear"))
    np.testing.assert_allclose(extractor(up16), extractor(x_test[:20]), atol=1e-5)
    up32_rgb = np.repeat(np.repeat(np.repeat(x_test[:20], 4, axis=1), 4, axis=2), 3, axis=3)
    area = dataclasses.replace(extractor, downsample="area")
    np.testing.assert_allclose(area(up32_rgb), extractor(x_test[:20]), atol=1e-5)
    as_uint8 = features.images_to_uint8(x_test[:20])
    np.testing.assert_allclose(extractor(as_uint8), extractor(as_uint8.astype(np.float32) / 127.5 - 1), atol=1e-6)


def test_digits_split_matches_the_data_module():
    images = pytest.importorskip("consistency.data.images")
    x_train, y_train, x_test, y_test = features.load_digits_split()
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        arrays = images.load_digits_split(split)
        np.testing.assert_allclose(arrays.raw / 16.0 * 2 - 1, x, atol=1e-6)
        np.testing.assert_array_equal(arrays.labels, y)


def test_dataset_features_from_config(digits, monkeypatch):
    extractor, cache, (_, _, x_test, _) = digits
    from consistency.core.errors import ConfigError
    from consistency.config import base_config

    def no_training(*args, **kwargs):
        raise AssertionError("should load from the cache")
    monkeypatch.setattr(features, "train_feature_classifier", no_training)
    data = base_config().data
    from_config = features.load_or_train_dataset_features(data, cache_dir=cache)
    assert from_config.cache_key == extractor.cache_key
    np.testing.assert_array_equal(from_config(x_test[:5]), extractor(x_test[:5]))
    data.name = "toy:8gaussians"
    with pytest.raises(ConfigError, match="config.data.name"):
        features.load_or_train_dataset_features(data, cache_dir=cache)


def test_digits_fd_orders_real_noisy_and_uniform(digits):
    # reference: the 1500 train digits; candidates: 297 images each, none of them in the reference
    extractor, _, (x_train, _, x_test, _) = digits
    rng = np.random.default_rng(0)
    ref = set_distances.gaussian_stats(extractor(x_train))

    def fd(images):
        return set_distances.frechet_distance(*set_distances.gaussian_stats(extractor(images)), *ref)
    fd_real = fd(x_test)
    fd_noisy = fd(np.clip(x_test + 0.3 * rng.standard_normal(x_test.shape), -1, 1))
    fd_uniform = fd(rng.uniform(-1, 1, x_test.shape).astype(np.float32))
    print(f"digits FD vs train: real held-out {fd_real:.2f}, noisy {fd_noisy:.2f}, uniform {fd_uniform:.2f}")
    assert fd_real < fd_noisy < fd_uniform


def test_reference_stats_cache_and_evaluate_images(digits, monkeypatch):
    extractor, cache, (x_train, _, x_test, _) = digits
    mu, cov = features.load_or_compute_reference_stats("digits-test", x_test, extractor, cache_dir=cache)
    mu_direct, cov_direct = set_distances.gaussian_stats(extractor(x_test))
    np.testing.assert_allclose(mu, mu_direct, rtol=1e-12)
    np.testing.assert_allclose(cov, cov_direct, rtol=1e-12)

    def no_features(images):
        raise AssertionError("should load from the cache")
    mu2, cov2 = features.load_or_compute_reference_stats("digits-test", x_test, no_features,
                                                         feature_key=extractor.cache_key, cache_dir=cache)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(cov2, cov)

    rng = np.random.default_rng(1)
    noisy = np.clip(x_test + 0.5 * rng.standard_normal(x_test.shape), -1, 1)
    m = sample_quality.evaluate_images(noisy, x_train, extractor, bootstrap=50)
    assert (m["num_samples"], m["num_floor"], m["num_reference"]) == (len(x_test), len(x_test), len(x_train) - len(x_test))
    for key in ("fd", "kid", "precision", "recall", "pixel_swd"):
        assert key + "_floor" in m
    assert "kid_std" not in m
    # FD: basic interval of the population value (at these sizes it may lie below the upward-biased plug-in fd,
    # but not above it by more than the bias-corrected spread); KID: unbiased, its percentile interval contains it
    assert 0 < m["fd_ci"][0] < m["fd_ci"][1] and m["fd_ci"][0] < m["fd"]
    assert m["kid_ci"][0] < m["kid"] < m["kid_ci"][1]
    assert m["fd_ci"][0] > 2 * m["fd_floor"] and m["kid_ci"][0] > m["kid_floor"]
    assert m["pixel_swd"] > m["pixel_swd_floor"]
    print("evaluate_images, held-out + N(0, 0.5²) noise vs train:\n" + sample_quality.format_with_floor(m))
    real = sample_quality.evaluate_images(x_test, x_train, extractor, prefix="x_")
    print("evaluate_images, held-out real vs train:\n" + sample_quality.format_with_floor(real))
    assert real["x_fd"] < 2 * real["x_fd_floor"] and real["x_fd"] < m["fd"] / 2


# ------------------------------------------------------------------ export (FID itself: tests/test_fid_inception.py)


def test_export_samples_npz_format(tmp_path):
    x = np.array([-1.0, 0.0, 1.0, 1.5, -3.0, 0.5])[:, None, None, None] * np.ones((6, 4, 4, 1))
    path = tmp_path / "samples.npz"
    features.export_samples_npz(path, x)
    with np.load(path) as data:
        assert list(data.keys()) == ["arr_0"]
        arr = data["arr_0"]
    assert arr.dtype == np.uint8 and arr.shape == (6, 4, 4, 3)
    # round((x + 1) · 127.5) clipped: -1 → 0, 0 → 127.5 → 128 (half to even), 1 → 255, 0.5 → 191.25 → 191
    np.testing.assert_array_equal(arr[:, 0, 0, 0], [0, 128, 255, 255, 0, 191])
    features.export_samples_npz(tmp_path / "gray.npz", x, to_rgb=False)
    with np.load(tmp_path / "gray.npz") as data:
        assert data["arr_0"].shape == (6, 4, 4, 1)


# ------------------------------------------------------------------ confidence intervals


def _gaussian_pair(n, seed):
    mu1, mu2 = np.array([0.0, 0.0]), np.array([1.0, -0.5])
    c1, c2 = np.array([[1.0, 0.3], [0.3, 0.5]]), np.array([[2.0, -0.4], [-0.4, 1.0]])
    r = np.random.default_rng(seed)
    return (r.multivariate_normal(mu1, c1, n), r.multivariate_normal(mu2, c2, n),
            set_distances.frechet_distance(mu1, c1, mu2, c2))


def _fd(x, y):
    return set_distances.frechet_distance(*set_distances.gaussian_stats(x), *set_distances.gaussian_stats(y))


def test_fd_bootstrap_interval_covers_the_closed_form_of_two_gaussians():
    covered = 0
    for seed in range(10):
        a, b, exact = _gaussian_pair(3000, seed)
        lo, hi = intervals.bootstrap_interval(_fd, a, b, num_resamples=200, seed=seed, lower_bound=0.0)
        assert lo < hi
        covered += lo <= exact <= hi
    assert covered >= 8   # a 95 % interval: P(≤ 7 of 10) ≈ 1e-3


def _random_gaussian_pair(n, d, seed):
    r = np.random.default_rng(seed)
    mu1, mu2 = np.zeros(d), np.full(d, 0.3)
    g1, g2 = r.standard_normal((d, d)) / np.sqrt(d), r.standard_normal((d, d)) / np.sqrt(d)
    c1, c2 = g1 @ g1.T + 0.5 * np.eye(d), g2 @ g2.T + 0.5 * np.eye(d)
    return (r.multivariate_normal(mu1, c1, n), r.multivariate_normal(mu2, c2, n),
            set_distances.frechet_distance(mu1, c1, mu2, c2))


def test_fd_basic_interval_covers_the_closed_form_where_the_plug_in_bias_is_large():
    """d = 16, n = 200: the plug-in FD is biased upwards by about its own spread and a resample once more, so the
    percentile interval of the replicates misses the population FD; the basic interval corrects the bias."""
    basic = percentile = 0
    for seed in range(10):
        a, b, exact = _random_gaussian_pair(200, 16, seed)
        values = intervals.bootstrap_replicates(_fd, a, b, num_resamples=100, seed=seed)
        lo, hi = intervals.basic_interval(_fd(a, b), values, lower_bound=0.0)
        assert (lo, hi) == intervals.bootstrap_interval(_fd, a, b, num_resamples=100, seed=seed, lower_bound=0.0)
        plo, phi = intervals._percentiles(values, 0.95)
        basic += lo <= exact <= hi
        percentile += plo <= exact <= phi
    assert basic >= 8
    assert percentile <= 2   # the old form: the test can tell the two apart


def test_basic_interval_is_reflected_around_the_estimate_and_clipped_at_the_bound():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    lo_q, hi_q = np.quantile(values, [0.025, 0.975])
    assert intervals.basic_interval(2.0, values) == pytest.approx((4.0 - hi_q, 4.0 - lo_q))
    assert intervals.basic_interval(2.0, values, lower_bound=0.0) == pytest.approx((0.0, 4.0 - lo_q))
    assert intervals.basic_interval(0.5, values, lower_bound=0.0) == (0.0, 0.0)


def test_bootstrap_width_shrinks_like_one_over_root_n():
    widths = {}
    for n in (400, 3200):
        a, b, _ = _gaussian_pair(n, 1)
        lo, hi = intervals.bootstrap_interval(_fd, a, b, num_resamples=300, seed=2, lower_bound=0.0)
        assert lo > 0   # the clip is inactive here: the width is the replicates' quantile range
        widths[n] = hi - lo
    assert widths[400] / widths[3200] == pytest.approx(np.sqrt(8), rel=0.3)


def test_bootstrap_mmd2_interval_is_unbiased_on_one_distribution():
    """KID (cubic kernel) of two draws of one distribution: the estimate and the bootstrap centre are ≈ 0; copies
    of a point in a resample would push a naive bootstrap up by ≈ 2(k(x,x) − k(x,x'))/n ≫ its width."""
    rng = np.random.default_rng(3)
    kids = [set_distances.kernel_inception_distance(rng.standard_normal((300, 8)), rng.standard_normal((200, 8)))[0]
            for _ in range(60)]
    assert abs(np.mean(kids)) < 3 * np.std(kids) / np.sqrt(len(kids))
    a, b = set_distances.standardize_jointly(rng.standard_normal((500, 8)), rng.standard_normal((500, 8)))
    lo, hi = intervals.bootstrap_mmd2_interval(set_distances.cubic_polynomial_kernel, a, b, num_resamples=200, seed=0)
    assert lo < 0 < hi
    naive_bias = 2 * (np.mean(set_distances.cubic_polynomial_kernel(a, a).diagonal()) - 1.0) / len(a)
    assert abs((lo + hi) / 2) < 0.2 * naive_bias


def test_fast_bootstraps_equal_the_naive_resamples():
    """The sort-once sliced-W1 bootstrap and the count-weighted MMD² bootstrap equal, replicate by replicate, the
    metric recomputed on the resampled sets (MMD: over pairs of distinct original points)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((120, 2)), rng.standard_normal((90, 2)) + 0.3
    estimate, fast_values = intervals.sliced_wasserstein_replicates(a, b, 32, seed=3, num_resamples=20)
    r, values = np.random.default_rng(3), []
    for _ in range(20):
        ca, cb = r.multinomial(120, np.full(120, 1 / 120)), r.multinomial(90, np.full(90, 1 / 90))
        values.append(set_distances.sliced_wasserstein(np.repeat(a, ca, 0), np.repeat(b, cb, 0), 32, seed=3))
    np.testing.assert_allclose(fast_values, values, rtol=1e-10)
    assert estimate == pytest.approx(set_distances.sliced_wasserstein(a, b, 32, seed=3), rel=1e-12)
    naive_basic = intervals.basic_interval(set_distances.sliced_wasserstein(a, b, 32, seed=3), values, lower_bound=0.0)
    fast = intervals.bootstrap_sliced_wasserstein_interval(a, b, 32, seed=3, num_resamples=20)
    assert fast == pytest.approx(naive_basic, rel=1e-10)

    def kernel(u, v):
        return set_distances.rbf_kernel_sum(u, v, (0.5, 1.0))

    fast = intervals.bootstrap_mmd2_interval(kernel, a, b, num_resamples=20, seed=4)
    r, values = np.random.default_rng(4), []
    wa, wb = r.multinomial(120, np.full(120, 1 / 120), size=20), r.multinomial(90, np.full(90, 1 / 90), size=20)

    def distinct_mean(index, x):
        return kernel(x[index], x[index])[index[:, None] != index[None, :]].mean()
    for i in range(20):
        ia, ib = np.repeat(np.arange(120), wa[i]), np.repeat(np.arange(90), wb[i])
        values.append(distinct_mean(ia, a) + distinct_mean(ib, b) - 2 * kernel(a[ia], b[ib]).mean())
    assert fast == pytest.approx(intervals._percentiles(values, 0.95), rel=1e-10)


def test_sliced_w1_basic_interval_covers_the_closed_form_of_a_mean_shift():
    """N(0, I) against N(m, I) in 2-D: each projection u is N(0, 1) against N(⟨u, m⟩, 1), whose W1 is |⟨u, m⟩|,
    so at the K fixed directions the population value of :func:`sliced_wasserstein` (unit scale) is
    mean_k |⟨u_k, m⟩| / E|u₁| (→ ‖m‖ as K → ∞). At n = 200 and ‖m‖ = 0.1 the empirical W1 is biased upwards by
    more than its spread, and the percentile interval of the replicates misses that value. (The basic interval
    corrects the bias to first order only; with fewer directions, K = 32, it covered 44 of 50 seeds.)"""
    m, k = np.array([0.1, 0.0]), 128
    dirs = set_distances.random_unit_directions(2, k, 0)
    exact = np.mean(np.abs(dirs @ m)) / set_distances.projected_norm_constant(2, 1.0)
    basic = percentile = 0
    for seed in range(10):
        r = np.random.default_rng(seed)
        a, b = r.standard_normal((200, 2)), r.standard_normal((200, 2)) + m
        estimate, values = intervals.sliced_wasserstein_replicates(a, b, k, seed=0, num_resamples=200)
        lo, hi = intervals.basic_interval(estimate, values, lower_bound=0.0)
        plo, phi = intervals._percentiles(values, 0.95)
        basic += lo <= exact <= hi
        percentile += plo <= exact <= phi
    assert basic >= 8
    assert percentile <= 2


def test_kid_of_full_sets_is_one_value_without_a_std():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((50, 4)), rng.standard_normal((70, 4)) + 1
    kid, std = set_distances.kernel_inception_distance(a, b, normalize=False)
    assert np.isnan(std)
    kernel = set_distances.cubic_polynomial_kernel
    assert kid == pytest.approx(set_distances.mmd2_unbiased(kernel(a, a), kernel(b, b), kernel(a, b)))


def test_seed_interval_is_the_student_t_interval():
    from scipy import stats
    values = [1.0, 1.4, 0.9, 1.2]
    mean, lo, hi = intervals.seed_interval(values)
    expected = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert (lo, hi) == pytest.approx(expected) and mean == pytest.approx(np.mean(values))
    assert np.isnan(intervals.seed_interval([2.0])[1])


def test_evaluate_points_bootstrap_and_sizes_line():
    mix = _ring_mixture()
    good = mixtures.sample_gaussian_mixture(mix, 400, seed=5)
    m = sample_quality.evaluate_points(good, mixture=mix, bootstrap=30)
    # samples of the mixture itself: SW1's basic interval is clipped at 0 and reaches below the plug-in swd (biased
    # upwards); the unbiased MMD²'s percentile interval contains its estimate
    assert 0.0 <= m["swd_ci"][0] < m["swd"] < m["swd_ci"][1] and m["mmd_ci"][0] < m["mmd"] < m["mmd_ci"][1]
    text = sample_quality.format_with_floor(m)
    assert "scored 400 samples against 400 reference points (floor: 400 vs 400 real)" in text
    assert f"swd {m['swd']:.4g} [{m['swd_ci'][0]:.4g}, {m['swd_ci'][1]:.4g}]" in text


def test_evaluate_images_scores_float_samples_clipped_to_the_data_range():
    # EDM's generate.py saves (x·127.5 + 128).clip(0, 255) as uint8 before any FID: out-of-range values count as
    # the nearest end of the range, however far out they are.
    rng = np.random.default_rng(0)
    reference = np.tanh(rng.standard_normal((400, 4, 4, 1))).astype(np.float32)
    inside = np.tanh(rng.standard_normal((200, 4, 4, 1)) + 0.3).astype(np.float32)
    flatten = lambda x: np.asarray(x).reshape(len(x), -1)            # noqa: E731
    far_out = inside * 50.0            # every |value| > 1 of this ends at ±1 after clipping
    m_far = sample_quality.evaluate_images(far_out, reference, flatten, seed=3)
    m_clipped = sample_quality.evaluate_images(np.clip(far_out, -1, 1), reference, flatten, seed=3)
    for key in ("fd", "kid", "pixel_swd", "precision", "recall"):
        assert m_far[key] == m_clipped[key], key
    unclipped_fd = set_distances.frechet_distance(*set_distances.gaussian_stats(flatten(far_out)),
                                       *set_distances.gaussian_stats(flatten(reference[:200])))
    assert m_far["fd"] < unclipped_fd / 100
    broken = far_out.copy()
    broken[0, 0, 0, 0] = np.inf            # a non-finite value is not clipped into range: it is refused
    with pytest.raises(ValueError, match="1 of 200 samples hold non-finite values"):
        sample_quality.evaluate_images(broken, reference, flatten, seed=3)
