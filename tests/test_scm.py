"""sCM in TrigFlow (docs/methods.md §13.2, §15 O6, O9) against exact answers: the TrigFlow Gaussian's velocity and
consistency function, the EDM → TrigFlow conversion for the Gaussian and mixture oracles, a zero tangent at the exact
consistency function and a loss gradient that points back to it, jax.jvp against a float64 central difference
through a real network, f(x, 0) = x, an EDM-preconditioned network being an sCM consistency function as is, the
samplers' times, one-line config errors, short runs through the loop, and 1-step sCD covering the mixture's modes."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consistency import presets
from consistency.diffusion import oracles
from consistency.run import train
from consistency.core.errors import ConfigError
from consistency.config import validate
from consistency.methods import scm
from consistency.objectives import scm as obj

SD = 0.5


def times(n=64, lo=0.05, hi=1.5):
    return jnp.linspace(lo, hi, n)


def gaussian_points(s, t, seed=0):
    """x_t ~ N(0, v(t)) per row, [B, 1]."""
    return jax.random.normal(jax.random.PRNGKey(seed), (t.shape[0], 1)) * jnp.sqrt(obj.gaussian_variance(t, s, SD))[:, None]


@pytest.mark.parametrize("s", [0.2, 0.5, 1.3])
def test_converted_gaussian_denoiser_gives_the_trigflow_gaussian_velocity(s):
    """E[dx/dt | x_t] from the EDM oracle D(x/cos t, σ_d tan t) = sin t cos t (σ_d² − s²)/v(t)·x_t (O6)."""
    t = times()
    x = gaussian_points(s, t)
    velocity = obj.trigflow_velocity(oracles.gaussian_denoiser(0.0, s), SD)
    np.testing.assert_allclose(np.asarray(velocity(x, t)), np.asarray(obj.gaussian_velocity(x, t, s, SD)),
                               rtol=1e-4, atol=1e-5)


def test_converted_mixture_denoiser_gives_the_mixture_velocity_computed_in_trigflow():
    """The mixture posterior written directly in TrigFlow coordinates: x_t | k ~ N(cos t μ_k, cos²t s_k² + sin²t σ_d²),
    E[x₀|x_t, k] = μ_k + cos t s_k²/v_k (x_t − cos t μ_k), velocity (cos t x_t − E[x₀|x_t])/sin t."""
    w = jnp.array([0.3, 0.7])
    means = jnp.array([[-1.0, 0.5], [0.8, -0.2]])
    stds = jnp.array([0.2, 0.4])
    t = times(32)
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 2)) * 1.2
    cos, sin = jnp.cos(t)[:, None, None], jnp.sin(t)[:, None, None]
    v = cos[..., 0] ** 2 * stds[None] ** 2 + sin[..., 0] ** 2 * SD ** 2                        # [B, K]
    diff = x[:, None, :] - cos * means[None]                                                  # [B, K, 2]
    logp = jnp.log(w)[None] - jnp.sum(diff ** 2, -1) / (2 * v) - jnp.log(v)                   # 2-D: −(d/2)·ln v
    post = jax.nn.softmax(logp, axis=1)
    x0_k = means[None] + (cos[..., 0] * stds[None] ** 2 / v)[..., None] * diff
    x0 = jnp.sum(post[..., None] * x0_k, axis=1)
    expected = (jnp.cos(t)[:, None] * x - x0) / jnp.sin(t)[:, None]
    velocity = obj.trigflow_velocity(oracles.mixture_denoiser(w, means, stds), SD)
    np.testing.assert_allclose(np.asarray(velocity(x, t)), np.asarray(expected), rtol=1e-4, atol=1e-4)


def test_gaussian_with_the_data_std_has_zero_velocity_and_identity_consistency_but_nonzero_network_output():
    """O6 with s = σ_d: F* = 0 and f* = x, while the CM network output is (cos t − 1)x/(σ_d sin t) ≠ 0."""
    t = times()
    x = gaussian_points(SD, t)
    np.testing.assert_allclose(np.asarray(obj.gaussian_velocity(x, t, SD, SD)), 0.0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(obj.gaussian_consistency(x, t, SD, SD)), np.asarray(x), rtol=1e-6)
    F = obj.gaussian_consistency_F(x, t, SD, SD)
    np.testing.assert_allclose(np.asarray(F), np.asarray((jnp.cos(t)[:, None] - 1) * x / (SD * jnp.sin(t)[:, None])),
                               rtol=1e-4, atol=1e-6)
    assert float(jnp.max(jnp.abs(F))) > 0.1


@pytest.mark.parametrize("s", [0.2, 1.3])
def test_exact_consistency_function_has_zero_tangent_along_the_exact_flow(s):
    """With F = F* (f = f*) and dx/dt the exact velocity, g = cos t·df*/dt = 0 (r = 1): the sCD loss gradient
    −2e^{−w} g·∂F vanishes at the exact solution; the un-warmed g (r = 0) does not vanish."""
    t = times()
    x = gaussian_points(s, t, seed=2)
    dxdt = obj.gaussian_velocity(x, t, s, SD)
    F_value, J = obj.tangent_jvp(lambda xx, tt: obj.gaussian_consistency_F(xx, tt, s, SD), x, t, dxdt)
    g = obj.tangent(F_value, J, x, t, dxdt, SD, 1.0)
    np.testing.assert_allclose(np.asarray(g), 0.0, atol=2e-5)
    assert float(jnp.max(jnp.abs(obj.tangent(F_value, J, x, t, dxdt, SD, 0.0)))) > 1e-2


@pytest.mark.parametrize("a", [-0.3, 0.3])
def test_loss_gradient_points_back_to_the_exact_consistency_function(a):
    """Student F_a = F* + a·x on N(0, σ_d²): the expected sCD gradient dL/da has the sign of a (descent moves a → 0),
    with and without tangent normalisation."""
    t = jax.random.uniform(jax.random.PRNGKey(3), (4096,), minval=0.05, maxval=1.5)
    x = gaussian_points(SD, t, seed=4)
    dxdt = obj.gaussian_velocity(x, t, SD, SD)

    def loss(a_, normalise):
        def F(xx, tt):
            return obj.gaussian_consistency_F(xx, tt, SD, SD) + a_ * xx
        F_value, J = obj.tangent_jvp(lambda xx, tt: F(xx, tt), x, t, dxdt)
        g = obj.tangent(jax.lax.stop_gradient(F_value), jax.lax.stop_gradient(J), x, t, dxdt, SD, 1.0)
        if normalise:
            g = obj.normalize_tangent(g)
        value, _ = obj.scm_loss(F(x, t), g, jnp.zeros_like(t))
        return jnp.mean(value)
    for normalise in (False, True):
        grad = float(jax.grad(loss)(a, normalise))
        assert np.sign(grad) == np.sign(a), (normalise, grad)


def tiny_config(mode="distill", steps=4, **scm_fields):
    c = presets.toy_distillation(presets.new("scm"), "scm", fit_steps=20)
    c.model.update(dict(hidden=32, depth=2, embed_dim=16))
    c.scm.mode = mode
    if mode == "train":
        c.teacher.oracle = ""
        c.scm.init = "scratch"
    c.scm.update(scm_fields)
    c.scm.tangent_warmup_steps = 2
    c.training.update(dict(num_steps=steps, batch_size=32, log_every=2, ckpt_every=steps, sample_every=0))
    c.eval.update(dict(num_samples=64, nfes=(1, 2)))
    return c


def network_of(c):
    dataset = train.build_dataset(c)
    net = scm.common.build_net(c, dataset.example_shape)
    params = scm.common.init_params(net, jax.random.PRNGKey(5), dataset.batch(0)["x"], False)
    return net, params


@pytest.mark.slow
def test_jvp_tangent_equals_a_float64_central_difference_through_a_real_network():
    """J = cos t sin t·dF/dt from jax.jvp against central differences in float64: the x direction to 1e-6 (h = 1e-5,
    error O(h²)); the t direction at h = 1e-3, as the nets compute their Fourier features of t in float32 (smaller h
    only adds that rounding). Then the float32 finite-difference fallback against the float32 jvp."""
    c = tiny_config(time_input="trigflow")
    net, params = network_of(c)
    F = scm.trigflow_network(c, net)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), params)
        x = jax.random.normal(jax.random.PRNGKey(6), (16, 2), jnp.float64)
        t = jnp.linspace(0.1, 1.5, 16, dtype=jnp.float64)
        dxdt = jax.random.normal(jax.random.PRNGKey(7), (16, 2), jnp.float64)
        fn = lambda xx, tt: F(p64, xx, tt)  # noqa: E731
        cs = jnp.cos(t) * jnp.sin(t)
        _, J = obj.tangent_jvp(fn, x, t, dxdt)
        _, J_x = jax.jvp(fn, (x, t), (cs[:, None] * dxdt, jnp.zeros_like(t)))
        h = 1e-5
        fd_x = (fn(x + h * cs[:, None] * dxdt, t) - fn(x - h * cs[:, None] * dxdt, t)) / (2 * h)
        np.testing.assert_allclose(np.asarray(J_x), np.asarray(fd_x), rtol=1e-6, atol=1e-9)
        h = 1e-3
        fd_t = (fn(x, t + h * cs) - fn(x, t - h * cs)) / (2 * h)
        np.testing.assert_allclose(np.asarray(J - J_x), np.asarray(fd_t), rtol=1e-3, atol=2e-4)
    x32, t32, d32 = (jnp.asarray(v, jnp.float32) for v in (x, t, dxdt))
    _, J32 = obj.tangent_jvp(lambda xx, tt: F(params, xx, tt), x32, t32, d32)
    _, J_fd = obj.tangent_finite_difference(lambda xx, tt: F(params, xx, tt), x32, t32, d32)   # the fallback
    np.testing.assert_allclose(np.asarray(J_fd), np.asarray(J32), rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("time_input", ["edm", "trigflow"])
def test_boundary_f_of_x_at_zero_is_x_through_a_real_network(time_input):
    c = tiny_config(time_input=time_input)
    net, params = network_of(c)
    F = scm.trigflow_network(c, net)
    x = jax.random.normal(jax.random.PRNGKey(8), (8, 2)) * 2
    t0 = jnp.zeros((8,))
    np.testing.assert_array_equal(np.asarray(obj.consistency_output(x, t0, F(params, x, t0), SD)), np.asarray(x))


def test_an_edm_preconditioned_network_is_an_scm_consistency_function():
    """f_θ(x_t, t) = cos t·x_t − sin t σ_d F_θ = D_θ(x_t/cos t, σ_d tan t) with D_θ the same network under EDM
    preconditioning (objectives/scm.py, derived from EDM Table 1)."""
    c = tiny_config()
    net, params = network_of(c)
    F = scm.trigflow_network(c, net)
    D = scm.common.edm_denoiser(net, SD)
    x = jax.random.normal(jax.random.PRNGKey(9), (16, 2))
    t = jnp.linspace(0.05, 1.55, 16)
    f = obj.consistency_output(x, t, F(params, x, t), SD)
    np.testing.assert_allclose(np.asarray(f), np.asarray(D(params, x / jnp.cos(t)[:, None], SD * jnp.tan(t))),
                               rtol=2e-5, atol=2e-5)


def test_sampling_times_and_time_sampler():
    t_max = obj.t_max_for(80.0, SD)
    assert obj.sampling_times(1, t_max, 1.1) == [t_max]
    assert obj.sampling_times(2, t_max, 1.1) == [t_max, 1.1]
    assert obj.sampling_times(3, t_max, 1.0) == [t_max, 1.0, 0.5]
    n = jax.random.normal(jax.random.PRNGKey(0), (20000,))
    t = obj.sample_t(n, -1.0, 1.4, SD, float(obj.t_from_sigma(0.002, SD)), t_max)
    sigma = SD * jnp.tan(t)
    inside = (sigma > 0.0021) & (sigma < 79.9)
    np.testing.assert_allclose(float(jnp.mean(jnp.log(sigma[inside]))), -1.0, atol=0.05)   # lognormal σ
    assert float(t.max()) <= t_max + 1e-6 and float(t.min()) > 0


@pytest.mark.parametrize("field,value,match", [
    ("mode", "online", r"^config\.scm\.mode: 'online' is not one of"),
    ("jvp", "forward", r"^config\.scm\.jvp: 'forward' is not one of"),
    ("tangent_norm_const", 0.0, r"^config\.scm\.tangent_norm_const: 0\.0 is not"),
    ("time_input", "trigflow", r"^config\.scm\.time_input: 'trigflow', but init='teacher' copies an EDM network"),
    ("mid_t", 1.6, r"^config\.scm\.mid_t: 1\.6 is not"),
    ("tangent_norm", "spatial", r"^config\.scm\.tangent_norm: 'spatial' is not one of 'paper', 'fastgen'"),
    ("t_sampling", "normal", r"^config\.scm\.t_sampling: 'normal' is not one of 'clip', 'truncate'"),
])
def test_bad_scm_fields_are_one_line_errors(field, value, match):
    c = tiny_config()
    c.scm[field] = value
    with pytest.raises(ConfigError, match=match) as error:
        validate(c)
    assert "\n" not in str(error.value)


def test_sct_with_an_oracle_is_refused():
    c = tiny_config(mode="train")
    c.teacher.oracle = "mixture"
    with pytest.raises(ConfigError, match=r"^config\.teacher\.oracle: method 'scm' starts from a network .*scm\.mode='distill' \(sCD\)"):
        validate(c)


@pytest.mark.slow
@pytest.mark.parametrize("mode,jvp,fastgen", [("distill", "jvp", False), ("train", "finite_difference", False),
                                              ("distill", "jvp", True)])
def test_short_runs_through_the_loop(tmp_path, mode, jvp, fastgen):
    c = tiny_config(mode=mode, jvp=jvp, time_input="edm" if mode == "distill" else "trigflow")
    if fastgen:   # FastGen's tangent normalisation and truncated lognormal (docs/fidelity.md)
        c.scm.update(dict(tangent_norm="fastgen", t_sampling="truncate"))
    state = train.train_and_evaluate(c, str(tmp_path / mode))
    assert int(state.step) == 4 and set(state.params["online"]) == {"net", "weighting"}
    report = json.load(open(os.path.join(tmp_path, mode, "eval", "metrics_4.json")))
    assert report["nfes"] == [1, 2]
    assert all(report[f"nfe_{n}"]["finite_fraction"] == 1.0 for n in (1, 2))
    assert report["train/tangent_warmup"] == 1.0 and np.isfinite(report["train/loss_scm"])


@pytest.mark.quality
def test_one_step_scd_from_the_exact_mixture_covers_the_eight_modes(tmp_path):
    """sCD from the exact 8-Gaussian denoiser with sCM's Adam (β₂ 0.99): 1-step samples reach all eight modes within
    4000 steps of a 128-wide MLP (configs/toy_scd.py's 8000 steps: sliced W1 0.087). At 2500 steps the outcome sat on
    the edge: a float-level change of the compiled step (the gradient sanitiser of docs/fidelity.md, exact on finite
    values) turned 8/8 modes into 7/8."""
    c = presets.toy_distillation(presets.new("scm"), "scm", fit_steps=1000)
    c.model.update(dict(hidden=128, depth=3))
    c.scm.tangent_warmup_steps = 300
    c.optim.update(dict(lr=2e-4, b2=0.99))
    c.training.update(dict(num_steps=4000, batch_size=256, ckpt_every=4000, sample_every=0, log_every=500))
    c.eval.update(dict(num_samples=2000, nfes=(1,)))
    train.train_and_evaluate(c, str(tmp_path / "scd"))
    report = json.load(open(os.path.join(tmp_path, "scd", "eval", "metrics_4000.json")))
    assert report["nfe_1"]["mode_coverage"] == 1.0 and report["nfe_1"]["swd"] < 0.25, report["nfe_1"]


@pytest.mark.slow
@pytest.mark.parametrize("w", [1.0, 2.5])
def test_guided_scd_teacher_velocity_on_a_class_conditional_empirical_teacher(w):
    """CFG on the sCD teacher against exact answers: the class-conditional empirical oracle's D_c is the empirical
    denoiser of class c's points alone and D_∅ that of all points, so the guided velocity must equal
    v_c + (w − 1)(v_c − v_∅) with each v = (cos t·x_t − D(x_t/cos t, σ_d tan t))/sin t computed from those banks."""
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(30, 2)).astype(np.float32) + np.repeat(np.array([[-2, 0], [2, 0], [0, 2]]), 10, 0)
    bank_labels = np.repeat(np.arange(3), 10)
    c = tiny_config()
    c.model.num_classes = 3
    c.scm.cfg_scale = w

    def teacher_apply(p, x, sigma, cond=None):
        return oracles.class_conditional_empirical_denoiser(p["bank"], p["labels"], 3)(x, sigma, cond)

    t = times(24, 0.1, 1.5)
    labels = jnp.asarray(np.arange(24) % 3, jnp.int32)
    x_t = jnp.asarray(rng.normal(size=(24, 2)) * 1.5, jnp.float32)
    got = scm.teacher_velocity(c, teacher_apply, {"bank": bank, "labels": bank_labels}, labels)(x_t, t)

    def velocity(denoiser, x, tt):
        return obj.trigflow_velocity(denoiser, SD)(x[None], tt[None])[0]
    expected = []
    for i in range(24):
        v_c = velocity(oracles.empirical_denoiser(bank[bank_labels == int(labels[i])]), x_t[i], t[i])
        v_null = velocity(oracles.empirical_denoiser(bank), x_t[i], t[i])
        expected.append(v_c + (w - 1.0) * (v_c - v_null))
    np.testing.assert_allclose(np.asarray(got), np.asarray(jnp.stack(expected)), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_guided_scd_trains_and_samples_by_class_through_the_loop(tmp_path):
    """A class-conditional sCD run (8-Gaussian classes = mixture components) from the class-conditional empirical
    oracle with cfg_scale 2 goes through the loop and evaluates its class-conditional samples."""
    c = tiny_config(steps=4, init="scratch")
    c.teacher.oracle = "empirical"
    c.model.num_classes = 8
    c.data.conditional = True
    c.scm.cfg_scale = 2.0
    state = train.train_and_evaluate(c, str(tmp_path / "cfg"))
    report = json.load(open(os.path.join(tmp_path, "cfg", "eval", "metrics_4.json")))
    assert int(state.step) == 4 and np.isfinite(report["train/loss_scm"])
    assert all(report[f"nfe_{n}"]["finite_fraction"] == 1.0 for n in (1, 2))
