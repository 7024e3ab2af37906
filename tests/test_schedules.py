"""Schedules and distances against the papers' numbers (docs/methods.md §5, §6, §7, §15 O10)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from consistency.diffusion import distances, schedules


def test_karras_grid_endpoints_and_formula():
    s = np.asarray(schedules.karras_sigmas(18, 0.002, 80.0, 7.0))
    assert s[0] == pytest.approx(0.002, rel=1e-6) and s[-1] == pytest.approx(80.0, rel=1e-6)
    i = np.arange(1, 19)
    ref = (0.002 ** (1 / 7) + (i - 1) / 17 * (80 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7
    np.testing.assert_allclose(s, ref, rtol=1e-5)
    assert np.all(np.diff(s) > 0)


def test_karras_grid_traced_num_pads_with_sigma_max():
    fn = jax.jit(lambda n: schedules.karras_sigmas(n, size=32))
    a = np.asarray(fn(11))
    np.testing.assert_allclose(a[:11], np.asarray(schedules.karras_sigmas(11)), rtol=1e-6)
    np.testing.assert_allclose(a[11:], 80.0, rtol=1e-6)


@pytest.mark.parametrize("k,n", [(0, 2), (1, 3), (400_000, 107), (800_000, 151)])
def test_ct_num_steps_cifar(k, n):
    assert int(schedules.ct_num_steps(k, 800_000, 2, 150)) == n


@pytest.mark.parametrize("k,paper,code", [(0, 0.900, 0.810), (1, 0.932, 0.900), (400_000, 0.99803, 0.99801),
                                          (800_000, 0.99861, 0.99860)])
def test_ct_target_decay_both_forms(k, paper, code):
    assert float(schedules.ct_target_decay(k, 800_000, 2, 150, 0.9, "paper")) == pytest.approx(paper, abs=6e-4)
    assert float(schedules.ct_target_decay(k, 800_000, 2, 150, 0.9, "code")) == pytest.approx(code, abs=6e-4)


def test_ict_curriculum_stage_boundaries():
    K = 400_000
    assert schedules.ict_stage_length(K) == 50_000
    seq = [int(schedules.ict_num_steps(a * 50_000, K)) for a in range(8)]
    assert seq == [11, 21, 41, 81, 161, 321, 641, 1281]
    assert int(schedules.ict_num_steps(50_000 - 1, K)) == 11 and int(schedules.ict_num_steps(K, K)) == 1281


def test_lognormal_index_pmf_matches_erf_formula_and_masks():
    n = 41
    grid = schedules.karras_sigmas(n, size=1281)
    p = np.asarray(schedules.lognormal_index_pmf(grid, n, -1.1, 2.0), np.float64)
    assert p.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.all(p[n - 1:] == 0)
    s = np.asarray(schedules.karras_sigmas(n), np.float64)
    cdf = special.erf((np.log(s) + 1.1) / (math.sqrt(2) * 2.0))
    ref = np.diff(cdf) / np.diff(cdf).sum()
    np.testing.assert_allclose(p[: n - 1], ref, rtol=1e-4, atol=1e-7)


def test_lognormal_index_density_peaks_near_exp_p_mean():
    n = 1281
    s = schedules.karras_sigmas(n)
    p = np.asarray(schedules.lognormal_index_pmf(s, n))
    density = p / np.diff(np.log(np.asarray(s)))  # mass per unit ln σ
    peak = float(np.asarray(s)[np.argmax(density)])
    assert peak == pytest.approx(math.exp(-1.1), rel=0.05)


def test_sample_index_frequencies_follow_pmf():
    pmf = schedules.uniform_index_pmf(10, 6)  # 5 valid pairs
    i = np.asarray(schedules.sample_index(jax.random.PRNGKey(0), pmf, (20_000,)))
    assert i.max() == 4
    np.testing.assert_allclose(np.bincount(i, minlength=5) / 20_000, 0.2, atol=0.015)


def test_ect_pairing_stage0_is_denoising_below_ln7_and_tends_to_t():
    t = jnp.array([0.5, 1.9, 2.0, 10.0])
    r0 = np.asarray(schedules.ect_r_from_t(t, 0))
    assert r0[0] == 0 and r0[1] == 0 and r0[2] > 0  # threshold ln 7 = 1.9459
    r7 = float(schedules.ect_r_from_t(jnp.array(1.0), 7))
    assert r7 == pytest.approx(1.0 * (1 - 2.0 ** -8 * (1 + 8 / (1 + math.e))), rel=1e-6)
    assert r7 == pytest.approx(0.988, abs=1e-3)


def test_lognormal_sigmas_moments():
    s = np.asarray(schedules.lognormal_sigmas(jax.random.PRNGKey(1), (50_000,), -1.2, 1.2))
    assert np.log(s).mean() == pytest.approx(-1.2, abs=0.03) and np.log(s).std() == pytest.approx(1.2, abs=0.03)
    assert stats.kstest(np.log(s), "norm", args=(-1.2, 1.2)).pvalue > 1e-3


def test_edm_weight_and_mcm_anneal():
    assert float(schedules.edm_loss_weight(jnp.array(0.5), 0.5)) == pytest.approx(8.0)
    assert float(schedules.mcm_teacher_steps(0)) == pytest.approx(64.0, rel=1e-5)
    assert float(schedules.mcm_teacher_steps(100_000)) == pytest.approx(1280.0, rel=1e-5)
    assert float(schedules.mcm_teacher_steps(50_000)) == pytest.approx(math.sqrt(64 * 1280), rel=1e-4)


def test_pseudo_huber_constant_and_limits():
    assert distances.pseudo_huber_constant(3 * 32 * 32) == pytest.approx(0.02993, abs=1e-5)
    a = jnp.zeros((2, 4, 4, 3))
    b = jnp.concatenate([jnp.full((1, 4, 4, 3), 1e-4), jnp.full((1, 4, 4, 3), 10.0)])
    c = 0.03
    ph = np.asarray(distances.pseudo_huber(a, b, c))
    sq = np.array([48 * 1e-8, 48 * 100.0])
    np.testing.assert_allclose(ph, np.sqrt(sq + c * c) - c, rtol=1e-5)
    assert ph[0] == pytest.approx(sq[0] / (2 * c), rel=1e-3)  # quadratic for small errors
    assert ph[1] == pytest.approx(np.sqrt(sq[1]) - c, rel=1e-6)  # linear for large ones
    np.testing.assert_allclose(np.asarray(distances.pseudo_huber(a, b, 0.0)), np.sqrt(sq), rtol=1e-5)


def test_l1_l2_per_example():
    a = jnp.arange(12.0).reshape(2, 6)
    b = jnp.zeros((2, 6))
    np.testing.assert_allclose(distances.l2(a, b), [np.mean(np.arange(6.0) ** 2), np.mean(np.arange(6, 12.0) ** 2)])
    np.testing.assert_allclose(distances.l1(a, b), [2.5, 8.5])
