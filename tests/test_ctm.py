"""CTM (docs/methods.md §13.1) against exact answers: the jump map's identities through a real network, the exact Gaussian
trajectory map zeroing the soft-consistency loss, the masked per-example teacher Heun steps, the adaptive DSM weight,
γ-sampling with the exact map, and a short run through the loop (teacher untouched, every NFE finite)."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consistency.diffusion import oracles
from consistency import presets
from consistency.methods.components import teachers
from consistency.run import train
from consistency.diffusion import schedules, solvers
from consistency.methods import base, ctm
from consistency import methods
from consistency.objectives import ctm as obj

MEAN, STD = 0.3, 0.5
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def exact_g(x, t, s):
    """g* such that G(x, t, s) is the exact PF-ODE map of N(MEAN, STD²): (G* − (s/t)x)/(1 − s/t), and g*(x, t, t) =
    D*(x, t), the limit s → t (the Euler direction)."""
    t_ = t[:, None]
    s_ = s[:, None]
    flow = oracles.gaussian_flow(x, t, s, MEAN, STD)
    ratio = s_ / t_
    same = jnp.abs(1 - ratio) < 1e-6
    return jnp.where(same, oracles.gaussian_denoiser(MEAN, STD)(x, t), (flow - ratio * x) / jnp.where(same, 1, 1 - ratio))


def tiny_config(steps=10):
    c = presets.toy_distillation(presets.new("ctm"), "ctm", fit_steps=30)
    c.model.update(dict(hidden=32, depth=2, embed_dim=16))
    c.ctm.num_scales, c.ctm.heun_steps = 8, 3
    c.training.update(dict(num_steps=steps, batch_size=32, log_every=5, ckpt_every=steps, sample_every=0))
    c.eval.update(dict(num_samples=64, nfes=(1, 2)))
    return c


def test_jump_identities_through_a_real_network():
    """G(x, t, t) = x (docs/methods.md §15 O9); at init g(x, t, s) = the teacher-copied D(x, t) for every s (the target
    embedding starts at zero), so G(x, t, s) is the teacher's DDIM jump."""
    c = tiny_config()
    dataset = train.build_dataset(c)
    method = methods.get_method(c, dataset)
    state = base.init_state(method, jax.random.PRNGKey(0), dataset.batch(0))
    params = state.params["online"]
    nets = ctm.distillation.build_networks(c, dataset)
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 2)) * 3
    t = jnp.full((16,), 3.0)
    s = jnp.linspace(0.002, 3.0, 16)
    G = method_G(c, nets, params)
    np.testing.assert_allclose(np.asarray(G(x, t, t)), np.asarray(x), atol=1e-6)
    plain = {k: v for k, v in params.items() if k != "target_embed"}
    d = nets.denoiser(plain, x, t, None)
    np.testing.assert_allclose(np.asarray(G(x, t, s)), np.asarray(solvers.ve_ddim(x, d, t, s)), atol=1e-5)


def method_G(c, nets, params):
    """G_θ through the same apply the method uses (net with c_noise_target)."""
    from consistency.diffusion import preconditioning
    from consistency.diffusion.processes import broadcast_to_data

    def g(x, t, s):
        c_skip, c_out, c_in, c_noise = preconditioning.edm_scalings(t, c.diffusion.sigma_data)
        c_noise_s = preconditioning.edm_scalings(s, c.diffusion.sigma_data)[3]
        out = nets.net.apply({"params": params}, broadcast_to_data(c_in, x) * x, c_noise, None, c_noise_target=c_noise_s)
        return broadcast_to_data(c_skip, x) * x + broadcast_to_data(c_out, x) * out
    return obj.trajectory_map(g)


def test_exact_gaussian_trajectory_map_zeroes_the_soft_consistency_loss():
    """With G = the exact flow map of N(μ, s²) and x_u from the exact teacher's Heun steps on a fine grid, x_est and
    x_tgt agree to the Heun error; a g off by 5% does not."""
    grid = jnp.flip(schedules.karras_sigmas(200, SIGMA_MIN, SIGMA_MAX, 7.0))
    n = 512
    key = jax.random.PRNGKey(0)
    k = jnp.asarray(19, jnp.int32)                           # one k per batch (sony/ctm)
    i, j = obj.draw_pair_indices(jax.random.split(key, n), k, 200)
    u_index = i + k
    t, u, s = grid[i], grid[u_index], grid[j]
    x0 = MEAN + STD * jax.random.normal(jax.random.fold_in(key, 2), (n, 1))
    x_t = x0 + t[:, None] * jax.random.normal(jax.random.fold_in(key, 3), (n, 1))
    teacher = oracles.gaussian_denoiser(MEAN, STD)
    x_u = obj.teacher_heun_chain(lambda y, sg: teacher(y, sg), x_t, grid, i, k)
    np.testing.assert_allclose(np.asarray(x_u), np.asarray(oracles.gaussian_flow(x_t, t, u, MEAN, STD)), rtol=1e-3,
                               atol=1e-4)
    G = obj.trajectory_map(exact_g)
    x_est, x_tgt = obj.soft_consistency_points(G, G, G, x_t, t, x_u, u, s, SIGMA_MIN)
    exact_end = oracles.gaussian_flow(x_t, t, jnp.full_like(t, SIGMA_MIN), MEAN, STD)
    np.testing.assert_allclose(np.asarray(x_est), np.asarray(exact_end), atol=1e-4)
    assert float(jnp.max(jnp.abs(x_est - x_tgt))) < 1e-3

    G_off = obj.trajectory_map(lambda x, tt, ss: 1.05 * exact_g(x, tt, ss))
    est_off, tgt_off = obj.soft_consistency_points(G_off, G_off, G_off, x_t, t, x_u, u, s, SIGMA_MIN)
    assert float(jnp.mean((est_off - tgt_off) ** 2)) > 100 * float(jnp.mean((x_est - x_tgt) ** 2))


@pytest.mark.parametrize("k", [0, 1, 4])
def test_heun_chain_equals_per_example_loops(k):
    grid = jnp.flip(schedules.karras_sigmas(10, SIGMA_MIN, SIGMA_MAX, 7.0))
    teacher = oracles.gaussian_denoiser(MEAN, STD)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 1)) * 20
    start = jnp.array([0, 2, 5, 9 - k])
    out = jax.jit(lambda xx, kk: obj.teacher_heun_chain(lambda y, sg: teacher(y, sg), xx, grid, start, kk))(
        x, jnp.asarray(k, jnp.int32))
    for b in range(4):
        y = x[b:b + 1]
        for n in range(int(start[b]), int(start[b]) + k):
            y = solvers.heun_step(lambda z, sg, c=None: teacher(z, sg), y, grid[n], grid[n + 1])
        np.testing.assert_allclose(np.asarray(out[b]), np.asarray(y[0]), rtol=1e-6, atol=1e-6)


def test_adaptive_weight_is_the_ratio_of_gradient_norms():
    a = {"kernel": jnp.array([[3.0, 0.0]]), "bias": jnp.array([4.0])}
    b = {"kernel": jnp.array([[1.0, 0.0]]), "bias": jnp.array([0.0])}
    assert float(obj.adaptive_weight(a, b)) == pytest.approx(5.0 / (1.0 + 1e-4), rel=1e-6)   # sony/ctm's ε = 1e-4
    assert float(obj.adaptive_weight(a, jax.tree.map(jnp.zeros_like, b))) == pytest.approx(1e4)  # 5/1e-4 clipped


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_gamma_sampling_with_the_exact_map_reaches_the_data_distribution(gamma):
    """Any γ keeps the exact marginal at every level when G is exact: the samples are N(μ, s² + σ_min²)."""
    G = obj.trajectory_map(exact_g)
    sigmas = [80.0, 5.0, 0.5, SIGMA_MIN]
    n = 20000
    key = jax.random.PRNGKey(3)
    x = obj.gamma_sample(G, 80.0 * jax.random.normal(key, (n, 1)), sigmas, gamma,
                         lambda i: jax.random.normal(jax.random.fold_in(key, i + 1), (n, 1)))
    expected_std = np.sqrt(STD ** 2 + SIGMA_MIN ** 2)
    assert float(jnp.mean(x)) == pytest.approx(MEAN, abs=4 * expected_std / np.sqrt(n) + 1e-3)
    assert float(jnp.std(x)) == pytest.approx(expected_std, rel=0.03)


@pytest.mark.slow
def test_short_run_through_the_loop(tmp_path):
    c = tiny_config(steps=10)
    dataset = train.build_dataset(c)
    teacher_before, _ = teachers.load_teacher(c, dataset)
    state = train.train_and_evaluate(c, str(tmp_path / "ctm"))
    assert int(state.step) == 10 and set(state.moving) == {"target"}
    for a, b in zip(jax.tree.leaves(state.frozen["teacher"]), jax.tree.leaves(teacher_before)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    report = json.load(open(os.path.join(tmp_path, "ctm", "eval", "metrics_10.json")))
    assert report["nfes"] == [1, 2]
    assert all(report[f"nfe_{n}"]["finite_fraction"] == 1.0 for n in (1, 2))
    assert "train/loss_ctm" in report and "train/dsm_weight" in report


@pytest.mark.parametrize("field,value,match", [
    ("heun_steps", 8, r"^config\.ctm\.heun_steps: 8 is not in \[1, 7\]; use 1 … num_scales − 1 = 7"),
    ("target_ema", 1.0, r"^config\.ctm\.target_ema: 1\.0 is not"),
    ("distance", "lpips", r"^config\.ctm\.distance: 'lpips' is not one of"),
    ("gamma", 1.5, r"^config\.ctm\.gamma: 1\.5 is not"),
    ("heun_step_strategy", "linear", r"^config\.ctm\.heun_step_strategy: 'linear' is not one of 'weighted', 'uniform'"),
    ("dsm_sigmas", "uniform", r"^config\.ctm\.dsm_sigmas: 'uniform' is not one of 'half_uniform', 'lognormal'"),
    ("dsm_uniform_fraction", 0.0, r"^config\.ctm\.dsm_uniform_fraction: 0\.0 is not"),
])
def test_bad_ctm_fields_are_one_line_errors(field, value, match):
    from consistency.core.errors import ConfigError
    from consistency.config import validate
    c = tiny_config()
    c.ctm[field] = value
    with pytest.raises(ConfigError, match=match) as error:
        validate(c)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_gan_stage_trains_a_discriminator_and_weights_the_generator_term_adaptively(tmp_path):
    """ctm.gan_weight > 0: a 'discriminator' set (hinge on real vs sg x_est) updated every step before the generator,
    the generator's GAN weight clip(‖∇_last L_CTM‖/‖∇_last L_GAN‖, 0.01, 10), the teacher untouched."""
    c = tiny_config(steps=6)
    c.ctm.gan_weight = 1.0
    c.ctm.gan_features = "input"
    c.discriminator.update(dict(name="mlp", channels=16, depth=1))
    c.training.log_every = 3
    dataset = train.build_dataset(c)
    teacher_before, _ = teachers.load_teacher(c, dataset)
    state = train.train_and_evaluate(c, str(tmp_path / "ctm_gan"))
    assert {k: int(v) for k, v in state.updates.items()} == {"discriminator": 6, "online": 6}
    for a, b in zip(jax.tree.leaves(state.frozen["teacher"]), jax.tree.leaves(teacher_before)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    report = json.load(open(os.path.join(tmp_path, "ctm_gan", "eval", "metrics_6.json")))
    assert 0.01 <= report["train/online/gan_weight"] <= 10.0
    assert np.isfinite(report["train/discriminator/loss_hinge"]) and np.isfinite(report["train/online/loss_gan"])
    assert report["nfe_1"]["finite_fraction"] == 1.0


@pytest.mark.slow
def test_gan_stage_warm_starts_from_a_finished_ctm_run(tmp_path):
    """CTM's two-stage recipe (docs/methods.md §13.1: CTM+DSM, then GAN fine-tuning of that model): training.init_from
    copies the finished run's jump map, its sampling EMA and θ⁻; the new discriminator and every optimizer state
    start fresh; a run of another width is refused in one line."""
    from consistency.core.errors import ConfigError
    stage1 = tiny_config(steps=4)
    first = train.train_and_evaluate(stage1, str(tmp_path / "stage1"))
    stage2 = tiny_config(steps=3)
    stage2.ctm.gan_weight = 1.0
    stage2.ctm.gan_features = "input"
    stage2.discriminator.update(dict(name="mlp", channels=16, depth=1))
    dataset = train.build_dataset(stage2)
    fresh = base.init_state(methods.get_method(stage2, dataset), jax.random.PRNGKey(0), dataset.batch(0))
    warm = train.warm_start_from(fresh, str(tmp_path / "stage1"))
    for group, name in (("params", "online"), ("ema", "online"), ("moving", "target")):
        assert leaves_equal(getattr(warm, group)[name], getattr(first, group)[name]), (group, name)
        assert not leaves_equal(getattr(fresh, group)[name], getattr(first, group)[name])
    assert leaves_equal(warm.params["discriminator"], fresh.params["discriminator"])
    assert leaves_equal(warm.opt_state, fresh.opt_state) and int(warm.step) == 0
    stage2.training.init_from = str(tmp_path / "stage1")
    state = train.train_and_evaluate(stage2, str(tmp_path / "stage2"))
    assert {k: int(v) for k, v in state.updates.items()} == {"discriminator": 3, "online": 3}
    wider = tiny_config(steps=1)
    wider.model.hidden = 48
    wide_state = base.init_state(methods.get_method(wider, dataset), jax.random.PRNGKey(0), dataset.batch(0))
    with pytest.raises(ConfigError, match=r"^config\.training\.init_from: set params/online of .* does not match"):
        train.warm_start_from(wide_state, str(tmp_path / "stage1"))
    with pytest.raises(ConfigError, match=r"^config\.training\.init_from: no finished checkpoint"):
        train.warm_start_from(fresh, str(tmp_path / "missing"))


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))
