"""Where the project follows the authors' released code (docs/fidelity.md), checked against closed forms:
the gradient sanitiser of every trained set (SiD), sCM's two tangent normalisations (paper / FastGen), CTM's training
pairs and DSM noise levels (sony/ctm), ECT's unclipped t, FastGen's truncated lognormal."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from consistency.methods import base

# ----------------------------------------------------------------------------------------------------------------
# 1. Gradient sanitiser (SiD `training/sid_training_loop.py`: nan → 0, ±inf → ±1e5)
# ----------------------------------------------------------------------------------------------------------------


def test_sanitizer_maps_nan_and_inf_as_sid_and_leaves_finite_bits_alone():
    finite = np.array([0.0, -0.0, 1e-45, -3.5, 1e5, 2e5, -3e38, 3.4028235e38], np.float32)
    out = np.asarray(base.sanitize_gradients({"w": jnp.asarray(finite)})["w"])
    assert out.tobytes() == finite.tobytes()          # bitwise, including finite values above 1e5 and −0.0
    special = jnp.asarray([np.nan, np.inf, -np.inf, 7.0], jnp.float32)
    np.testing.assert_array_equal(np.asarray(base.sanitize_gradients(special)), [0.0, 1e5, -1e5, 7.0])
    half = base.sanitize_gradients(jnp.asarray([np.inf, -np.inf], jnp.float16))
    np.testing.assert_array_equal(np.asarray(half, np.float32), [65504.0, -65504.0])   # float16 max, never inf


def _adam_trajectory(sanitize, steps=3):
    """Adam on one parameter whose first gradient is +inf and later ones 1: the parameter after each step."""
    opt = optax.adam(0.1)
    w = jnp.zeros((2,))
    state = opt.init(w)
    out = []
    for k in range(steps):
        g = jnp.asarray([np.inf if k == 0 else 1.0, 1.0], jnp.float32)
        updates, state = opt.update(sanitize(g), state, w)
        w = optax.apply_updates(w, updates)
        out.append(np.asarray(w))
    return np.stack(out), state


def test_one_infinite_gradient_does_not_freeze_adam():
    ours, ours_state = _adam_trajectory(base.sanitize_gradients)
    old, old_state = _adam_trajectory(jnp.nan_to_num)                       # the former ±float-max mapping
    # float-max² overflows: ν = inf, and every later update of that entry is m/(√inf + ε) = 0 — frozen.
    assert np.isinf(np.asarray(old_state[0].nu)[0])
    assert old[1, 0] == old[2, 0]
    # 1e5: ν = (1 − β₂)·1e10 stays finite and the entry keeps moving (against the gradient 1, so it decreases).
    assert np.all(np.isfinite(np.asarray(ours_state[0].nu)))
    assert ours[2, 0] < ours[1, 0] < ours[0, 0] < 0.0
    np.testing.assert_array_equal(ours[:, 1], old[:, 1])                    # finite entries: identical


def test_every_trained_set_is_sanitised_by_the_loop():
    """A two-set method whose losses give ±inf and NaN gradient entries: both sets update finitely, grad_norm is the
    sanitised norm, and a set with finite gradients gets exactly plain Adam's update."""
    bad = jnp.asarray([np.inf, -np.inf, np.nan, 1.0], jnp.float32)

    @jax.custom_vjp
    def with_grad(p):
        return p

    with_grad.defvjp(lambda p: (p, None), lambda _, g: (bad * jnp.ones_like(g),))

    def inf_loss(p, state, batch, rng):
        return jnp.sum(with_grad(p)), {}

    def finite_loss(p, state, batch, rng):
        return jnp.sum(p * jnp.arange(4.0)), {}

    method = base.Method(
        name="two", init=lambda rng, batch: ({"a": jnp.zeros(4), "b": jnp.zeros(4)}, {}),
        trained=(base.Trained("a", inf_loss, optax.adam(0.1)), base.Trained("b", finite_loss, optax.adam(0.1))),
        sample=lambda *a, **k: None)
    batch = {"x": jnp.zeros((2, 1)), "label": jnp.zeros((2,), jnp.int32), "index": jnp.arange(2)}
    state = base.init_state(method, jax.random.PRNGKey(0), batch)
    new, metrics = base.train_step(method, state, batch, jax.random.PRNGKey(1), ("a", "b"))
    a = np.asarray(new.params["a"])
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, [-0.1, 0.1, 0.0, -0.1], rtol=1e-5)       # Adam's first step: −lr·sign(g)
    np.testing.assert_allclose(float(metrics["a/grad_norm"]), math.sqrt(2e10 + 1.0), rtol=1e-6)
    plain, _ = optax.adam(0.1).update(jnp.arange(4.0), optax.adam(0.1).init(jnp.zeros(4)), jnp.zeros(4))
    assert np.asarray(new.params["b"]).tobytes() == np.asarray(optax.apply_updates(jnp.zeros(4), plain)).tobytes()


# ----------------------------------------------------------------------------------------------------------------
# 2. sCM tangent normalisation (sCM §4.2 / NVlabs/FastGen sCM.py) and FastGen's truncated lognormal
# ----------------------------------------------------------------------------------------------------------------

def test_scm_tangent_normalisations_against_closed_forms():
    from consistency.objectives import scm as obj
    g = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (3, 4, 4, 2)), np.float64) * np.array([0.01, 1.0, 30.0])[
        :, None, None, None]
    norms = np.sqrt((g.reshape(3, -1) ** 2).sum(1))
    d = 32
    paper = np.asarray(obj.normalize_tangent(jnp.asarray(g, jnp.float32), 0.1, "paper"))
    fastgen = np.asarray(obj.normalize_tangent(jnp.asarray(g, jnp.float32), 0.1, "fastgen"))
    np.testing.assert_allclose(paper, g / (norms + 0.1)[:, None, None, None], rtol=1e-5)
    np.testing.assert_allclose(fastgen, g / (norms / math.sqrt(d) + 0.1)[:, None, None, None], rtol=1e-5)
    # the default is the paper's form, and the two agree when d = 1
    np.testing.assert_array_equal(np.asarray(obj.normalize_tangent(jnp.asarray(g, jnp.float32), 0.1)), paper)
    one = jnp.asarray([[2.0], [-0.5]])
    np.testing.assert_array_equal(np.asarray(obj.normalize_tangent(one, 0.1, "fastgen")),
                                  np.asarray(obj.normalize_tangent(one, 0.1, "paper")))


def test_truncated_lognormal_matches_its_cdf():
    """FastGen's truncated lognormal: P(σ ≤ q) = (Φ(ln q) − Φ(ln a))/(Φ(ln b) − Φ(ln a)) on [a, b], no mass at the
    ends (clipping would put P(σ = a) = Φ(ln a) there)."""
    from scipy.stats import norm
    from consistency.objectives import scm as obj
    p_mean, p_std, sd, a, b = -1.0, 1.4, 0.5, 0.1, 2.0
    u = jax.random.uniform(jax.random.PRNGKey(0), (40000,))
    sigma = np.asarray(sd * jnp.tan(obj.sample_t_truncated(u, p_mean, p_std, sd, a, b)), np.float64)
    assert sigma.min() >= a * (1 - 1e-5) and sigma.max() <= b * (1 + 1e-5)
    cdf = lambda q: norm.cdf((np.log(q) - p_mean) / p_std)                                    # noqa: E731
    for q in (0.15, 0.3, 0.6, 1.2):
        expected = (cdf(q) - cdf(a)) / (cdf(b) - cdf(a))
        assert abs(np.mean(sigma <= q) - expected) < 0.01, q
    assert np.mean(sigma <= a * 1.001) < 0.002                                                   # no atom at a


# ----------------------------------------------------------------------------------------------------------------
# 3. CTM's training pairs (sony/ctm `karras_diffusion.py` get_num_heun_step / ctm_losses, `resample.py`)
# ----------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _ctm_draws(num_scales, max_k, batches=3000, per_batch=16, strategy="weighted"):
    from consistency.objectives import ctm as obj

    def one_batch(key):
        k = obj.draw_heun_steps(jax.random.fold_in(key, 7), max_k, strategy)
        i, j = obj.draw_pair_indices(jax.random.split(key, per_batch), k, num_scales)
        return jnp.broadcast_to(k, i.shape), i, j
    k, i, j = jax.jit(jax.vmap(one_batch))(jax.random.split(jax.random.PRNGKey(0), batches))
    return np.asarray(k), np.asarray(i), np.asarray(j)


def test_ctm_heun_steps_are_one_per_batch_with_p_proportional_to_k():
    from consistency.objectives import ctm as obj
    K = 17
    np.testing.assert_allclose(np.asarray(obj.heun_step_probabilities(K)), 2 * np.arange(1, K + 1) / (K * (K + 1)),
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(obj.heun_step_probabilities(4, "uniform")), [0.25] * 4)
    k, _, _ = _ctm_draws(18, K)
    assert np.all(k == k[:, :1])                                                 # one k per batch
    freq = np.bincount(k[:, 0], minlength=K + 1)[1:] / k.shape[0]
    expected = 2 * np.arange(1, K + 1) / (K * (K + 1))
    assert np.max(np.abs(freq - expected)) < 4 * np.sqrt(expected.max() / k.shape[0])


def test_ctm_pairs_never_clip_u_and_match_ctm_closed_form_probabilities():
    """N = 18, K = 17 (CTM CIFAR-10): P(u = s = σ_min) = Σ_k p(k)/(N − k) = 0.2935 (the per-example form with
    clipping gave 0.53), P(u = s) = Σ_k p(k)·H_{N−k}/(N − k), and i given k is uniform on {0 … N−1−k}."""
    N, K = 18, 17
    k, i, j = _ctm_draws(N, K)
    u = i + k
    assert u.max() <= N - 1 and np.all(j >= u) and np.all(j <= N - 1) and i.min() >= 0
    p = 2 * np.arange(1, K + 1) / (K * (K + 1))
    ks = np.arange(1, K + 1)
    p_end = float(np.sum(p / (N - ks)))
    p_equal = float(np.sum(p * np.array([np.sum(1.0 / np.arange(1, N - kk + 1)) for kk in ks]) / (N - ks)))
    assert p_end == pytest.approx(0.29354, abs=1e-5)
    n = u.size
    assert abs(np.mean((u == N - 1) & (j == N - 1)) - p_end) < 4 * np.sqrt(p_end / n) + 0.01
    assert abs(np.mean(u == j) - p_equal) < 4 * np.sqrt(p_equal / n) + 0.01
    rows = k[:, 0] == 3                                                         # i | k = 3 ~ U{0 … 14}
    freq = np.bincount(i[rows].ravel(), minlength=N - 3) / i[rows].size
    assert len(freq) == N - 3 and np.max(np.abs(freq - 1 / (N - 3))) < 0.02


def test_ctm_dsm_sigmas_half_lognormal_half_rho_uniform_on_0318_80():
    from scipy.stats import norm
    from consistency.objectives import ctm as obj
    n = 20000
    key = jax.random.PRNGKey(1)
    normal, uniform = jax.random.normal(key, (n,)), jax.random.uniform(jax.random.fold_in(key, 1), (n,))
    lognormal = jnp.arange(n) % 2 == 0
    sigma = np.asarray(obj.dsm_sigmas(normal, uniform, lognormal, -1.2, 1.2, 0.002, 80.0, 7.0, 0.7), np.float64)
    low = (80 ** (1 / 7) + 0.7 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert low == pytest.approx(0.318, abs=1e-3)
    ramp = sigma[1::2]
    assert ramp.min() >= low * (1 - 1e-5) and ramp.max() <= 80.0 * (1 + 1e-5)
    # σ^{1/ρ} is uniform on [low^{1/ρ}, 80^{1/ρ}]
    r = (ramp ** (1 / 7) - low ** (1 / 7)) / (80 ** (1 / 7) - low ** (1 / 7))
    for q in (0.25, 0.5, 0.75):
        assert abs(np.mean(r <= q) - q) < 0.02
    logs = np.log(sigma[::2])
    for q in (-2.0, -1.2, 0.0):
        assert abs(np.mean(logs <= q) - norm.cdf((q + 1.2) / 1.2)) < 0.02


# ----------------------------------------------------------------------------------------------------------------
# 4. ECT's t is not clipped (locuslab/ect `training/loss.py`)
# ----------------------------------------------------------------------------------------------------------------

def test_ect_t_is_lognormal_without_clipping_unless_asked():
    from scipy.stats import norm
    from consistency.methods import ecm
    keys = jax.random.split(jax.random.PRNGKey(5), 40000)
    t = np.asarray(ecm.sample_t(keys, -1.1, 2.0), np.float64)
    outside = np.mean((t < 0.002) | (t > 80.0))
    expected = norm.cdf((math.log(0.002) + 1.1) / 2.0) + norm.sf((math.log(80.0) + 1.1) / 2.0)
    assert expected == pytest.approx(0.0083, abs=2e-4)
    assert abs(outside - expected) < 4 * math.sqrt(expected / t.size)
    clipped = np.asarray(ecm.sample_t(keys, -1.1, 2.0, (0.002, 80.0)))
    assert clipped.min() >= 0.002 * (1 - 1e-6) and clipped.max() <= 80.0 * (1 + 1e-6)
    inside = (t >= 0.002) & (t <= 80.0)
    np.testing.assert_array_equal(clipped[inside], t[inside].astype(np.float32))
