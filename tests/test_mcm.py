"""Multistep consistency models (docs/methods.md §8) against exact answers (§15 O1, O2, O5, O9): the DDIM/invDDIM target
chain, boundary identities, the exact Gaussian student as the MCM optimum (loss and gradient zero), the two VE limits
of §8.2 by value, the T-step sampler with the exact student, N(i) traced from the step, the config validator, and a
short run through the real loop that beats the untrained model."""
import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from consistency.diffusion import oracles
from consistency.run import train
from consistency.core.errors import ConfigError
from consistency.config import base_config
from consistency.data import make_dataset
from consistency.diffusion import distances, preconditioning, processes, schedules
from consistency.methods import base, mcm
from consistency.objectives import mcm as obj
from consistency.objectives.mcm import Level

MU, S = 0.7, 0.3  # toy:gaussian1d = N(0.7, 0.3²)


def vp_level(t, schedule="cosine"):
    t = jnp.asarray(t, jnp.float32)
    return Level(t, *processes.vp_alpha_sigma(t, schedule))


def ve_level(sigma):
    sigma = jnp.asarray(sigma, jnp.float32)
    return Level(sigma, jnp.ones_like(sigma), sigma)


def exact_flow(z, frm: Level, to: Level, mean=MU, std=S):
    """Exact PF-ODE map of N(mean, std²) between two levels of z = αx + σε (docs/methods.md §15 O2/O5)."""
    return oracles.vp_gaussian_flow(z, frm.alpha, frm.sigma, to.alpha, to.sigma, mean, std)


def exact_student(boundaries_of, mean=MU, std=S):
    """The MCM optimum per segment: x̂*(z, t) = invDDIM_{t→b}(exact z_b, z) (docs/methods.md §15 O5)."""
    def x0(z, tau, level_of):
        t, b = level_of(tau), level_of(boundaries_of(tau))
        return obj.x0_reference(exact_flow(z, t, b, mean, std), z, t, b)
    return x0


# ----------------------------------------------------------------------------------------------------------
# Target chain and identities
# ----------------------------------------------------------------------------------------------------------

def test_o5_vector_through_the_teacher_step():
    # docs/methods.md §15 O5: α_t = cos(πt/2), μ = 0, s = 0.5, z_t = 1, t = 0.9 → 0.5: x̂ 0.03984, DDIM 0.73963,
    # aDDIM (exact posterior variance) 0.79899, exact 0.79793.
    def lvl(t):
        t = jnp.full((1,), t, jnp.float32)
        return Level(t, jnp.cos(math.pi * t / 2), jnp.sin(math.pi * t / 2))
    t, s, z = lvl(0.9), lvl(0.5), jnp.ones((1, 1))

    def teacher(zz, tau):
        return oracles.vp_gaussian_posterior_mean(zz, t.alpha, t.sigma, 0.0, 0.5)
    x0 = teacher(z, t.tau)
    np.testing.assert_allclose(x0[0, 0], 0.03984, atol=1e-5)
    np.testing.assert_allclose(obj.teacher_step("ddim", teacher, z, t, s)[0, 0], 0.73963, atol=1e-5)
    var = oracles.vp_gaussian_posterior_variance(t.alpha, t.sigma, 0.5)
    x_data = x0 + jnp.sqrt(var / 0.75)[:, None]  # so that v_x = η‖x̂ − x‖²/d is the exact posterior variance
    np.testing.assert_allclose(obj.teacher_step("addim", teacher, z, t, s, x_data, 0.75)[0, 0], 0.79899, atol=1e-5)
    exact = oracles.vp_gaussian_flow(z, t.alpha, t.sigma, s.alpha, s.sigma, 0.0, 0.5)
    np.testing.assert_allclose(exact[0, 0], 0.79793, atol=1e-5)


def test_boundary_identities():
    z, x0 = jnp.array([[0.3, -1.2]]), jnp.array([[0.9, 0.1]])
    t = vp_level(jnp.array([0.4]))
    # DDIM_{t→t}(x̂, z_t) = z_t (docs/methods.md §15 O9), by the formula and exactly through the boundary switch.
    np.testing.assert_allclose(obj.jump_to_boundary(x0, z, t, t, jnp.array([False])), z, rtol=1e-6)
    assert bool(jnp.all(obj.jump_to_boundary(x0, z, t, t, jnp.array([True])) == z))
    # VE: f(x, b, b) = x (seed eq. 51), in both the preconditioning form and the α ≡ 1 jump.
    b = ve_level(jnp.array([0.7]))
    np.testing.assert_allclose(preconditioning.multistep_boundary(z, b.sigma, b.sigma, x0), z, rtol=1e-6)
    np.testing.assert_allclose(obj.jump_to_boundary(x0, z, b, b, jnp.array([False])), z, rtol=1e-6)
    # The VE jump is eq. 51 for b < σ.
    sig = ve_level(jnp.array([3.0]))
    np.testing.assert_allclose(obj.jump_to_boundary(x0, z, sig, b, jnp.array([False])),
                               preconditioning.multistep_boundary(z, sig.sigma, b.sigma, x0), rtol=1e-6)


def test_target_chain_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    x, noise, z_s = (jnp.asarray(rng.normal(size=(3, 2)), jnp.float32) for _ in range(3))
    t, s, b = vp_level(jnp.array([0.7, 0.55, 0.3])), vp_level(jnp.array([0.65, 0.5, 0.0])), \
        vp_level(jnp.array([0.5, 0.5, 0.0]))

    def student(z, tau):
        return 0.4 * z + 0.1 * tau[:, None]

    def target(z, tau):
        return -0.2 * z + 0.3 * tau[:, None]
    c = 1e-4
    per_example, aux = obj.multistep_consistency_loss(student, target, x, noise, t, s, b, z_s, space="x",
                                                      weighting="snr+1", distance=distances.get_distance(
                                                          "pseudo_huber", c))
    a = np.asarray
    at, st, as_, ss, ab, sb = (a(v)[:, None] for v in (t.alpha, t.sigma, s.alpha, s.sigma, b.alpha, b.sigma))
    z_t = at * a(x) + st * a(noise)
    x_minus = a(target(z_s, s.tau))
    z_hat = ab * x_minus + sb / np.where(ss > 0, ss, 1.0) * (a(z_s) - as_ * x_minus)  # DDIM_{s→b}(x̂⁻, z_s)
    z_hat[1:] = a(z_s)[1:]                                               # s = b: ẑ = z_s (boundary condition)
    x_ref = (z_hat - sb / st * z_t) / (ab - at * sb / st)               # invDDIM_{t→b}(ẑ, z_t)
    x_student = a(student(jnp.asarray(z_t), t.tau))
    sq = np.sum((x_student - x_ref) ** 2, axis=1)
    want = (1.0 / st[:, 0] ** 2) * (np.sqrt(sq + c * c) - c)             # (SNR + 1)·pseudo-Huber, SNR + 1 = 1/σ_t²
    np.testing.assert_allclose(a(aux["z_hat"]), z_hat, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a(per_example), want, rtol=2e-4)
    # invDDIM is DDIM's inverse: the student that predicts x_ref jumps exactly onto ẑ; ε* of the corrected nb (47) is
    # the ε of that same x_ref.
    np.testing.assert_allclose(obj.jump_to_boundary(jnp.asarray(x_ref), jnp.asarray(z_t), t, b, jnp.zeros(3, bool)),
                               z_hat, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(obj.eps_reference(jnp.asarray(z_hat), jnp.asarray(z_t), t, b),
                               obj.eps_from_x0(jnp.asarray(x_ref), jnp.asarray(z_t), t), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------
# The exact Gaussian student is the optimum
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("space", obj.LOSS_SPACES)
def test_exact_gaussian_student_has_zero_loss_and_zero_gradient(space):
    """docs/methods.md §15 O5: with the exact teacher (the exact flow t → s) the MCM optimum per segment,
    invDDIM(exact z_{t_step}, z_t), has loss 0 and a vanishing gradient; a perturbed student does not."""
    num_segments, steps = 4, 8
    process = mcm.vp_process(num_segments, 80.0, "cosine")
    rng = np.random.default_rng(1)
    batch = 64
    k = jnp.asarray(rng.integers(0, num_segments, batch))
    j = jnp.asarray(rng.integers(1, steps + 1, batch))
    t, s, b = process.level(k, j / steps), process.level(k, (j - 1) / steps), process.boundary(k)
    x = jnp.asarray(MU + S * rng.normal(size=(batch, 1)), jnp.float32)
    noise = jnp.asarray(rng.normal(size=(batch, 1)), jnp.float32)
    z_s = exact_flow(obj.perturb(x, noise, t), t, s)
    bound = {"t": b}

    def exact(z, tau):  # per example: the segment start of the pair, known from k
        level = Level(tau, *process.coefficients(tau))
        return obj.x0_reference(exact_flow(z, level, bound["t"]), z, level, bound["t"])

    def loss(a):
        student = lambda z, tau: exact(z, tau) + a * z  # noqa: E731
        per, _ = obj.multistep_consistency_loss(student, exact, x, noise, t, s, b, z_s, space=space,
                                                weighting="uniform", distance=distances.l2)
        return jnp.mean(per)
    value, grad = jax.value_and_grad(loss)(0.0)
    assert float(value) < 1e-9 and abs(float(grad)) < 1e-4, (value, grad)
    assert float(loss(0.1)) > 1e-4


def test_t_step_sampler_with_the_exact_student_is_the_exact_flow():
    """Sampling (docs/methods.md §8.1 / §8.2) with the per-segment optimum reproduces the exact PF-ODE map from the top
    level to b_0, in T network evaluations, for both processes."""
    shape = (16, 1)
    for name, process in (("vp", mcm.vp_process(3, 80.0, "cosine")),
                          ("ve", mcm.ve_process(tuple(float(v) for v in schedules.karras_sigmas(4)), 7.0))):
        bounds = [process.boundary(i) for i in range(4)]
        calls = []

        def x0_fn(z, tau):
            calls.append(1)
            i = int(np.argmin([abs(float(bb.tau) - float(tau[0])) for bb in bounds]))  # called at b_i, jumps to b_{i−1}
            top = Level(*(jnp.broadcast_to(v, tau.shape) for v in bounds[i]))
            below = Level(*(jnp.broadcast_to(v, tau.shape) for v in bounds[i - 1]))
            return obj.x0_reference(exact_flow(z, top, below), z, top, below)
        out = mcm.multistep_sample(x0_fn, process, 3, jax.random.PRNGKey(0), shape)
        z_top = process.initial(jax.random.PRNGKey(0), shape)
        full = lambda v: jnp.broadcast_to(v, (16,))  # noqa: E731
        want = exact_flow(z_top, Level(*map(full, bounds[3])), Level(*map(full, bounds[0])))
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4, err_msg=name)
        assert len(calls) == 3


# ----------------------------------------------------------------------------------------------------------
# The VE limits of docs/methods.md §8.2
# ----------------------------------------------------------------------------------------------------------

def _xtheta(x, sigma):
    return 0.5 * jnp.tanh(x) + 0.01 * jnp.log(sigma)[:, None]


def test_ve_one_segment_is_a_cm_with_skip_sigma_min_over_sigma():
    sigma_min, sigma_max = 0.002, 80.0
    process = mcm.ve_process((sigma_min, sigma_max), 7.0)
    grid = schedules.karras_sigmas(18, sigma_min, sigma_max, 7.0)
    rng = np.random.default_rng(2)
    n = jnp.asarray(rng.integers(1, 18, 32))
    t, s = process.level(jnp.zeros_like(n), n / 17), process.level(jnp.zeros_like(n), (n - 1) / 17)
    np.testing.assert_allclose(t.sigma, grid[n], rtol=1e-5)   # one segment of M = 17 steps is CD's N = 18 grid
    np.testing.assert_allclose(s.sigma, grid[n - 1], rtol=1e-5)
    b = process.boundary(jnp.zeros_like(n))
    x = jnp.asarray(rng.normal(size=(32, 2)), jnp.float32)
    noise = jnp.asarray(rng.normal(size=(32, 2)), jnp.float32)
    teacher = lambda z, sig: jnp.zeros_like(z) + 0.2  # noqa: E731
    z_s = obj.teacher_step("ddim", teacher, obj.perturb(x, noise, t), t, s)
    per, _ = obj.multistep_consistency_loss(_xtheta, _xtheta, x, noise, t, s, b, z_s, space="jump",
                                            weighting="uniform", distance=distances.l2)

    def cm_f(y, sig):  # CM with c_skip = σ_min/σ, c_out = 1 − σ_min/σ (docs/methods.md §8.2 "Limits")
        c_skip = (sigma_min / sig)[:, None]
        return c_skip * y + (1 - c_skip) * _xtheta(y, sig)
    x_n = x + t.sigma[:, None] * noise
    x_euler = x_n + ((s.sigma - t.sigma) / t.sigma)[:, None] * (x_n - 0.2)   # seed eq. 50
    want = distances.l2(cm_f(x_n, t.sigma), cm_f(x_euler, s.sigma))
    np.testing.assert_allclose(per, want, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(cm_f(x, jnp.full((32,), sigma_min)), x, rtol=1e-6)  # f(x, σ_min) = x
    # Point-mass data (docs/methods.md §15 O1): the exact CM c + (σ_min/σ)(x − c) is this family with x^θ ≡ c: loss 0.
    point = lambda z, sig: jnp.full_like(z, 0.2)  # noqa: E731
    per0, _ = obj.multistep_consistency_loss(point, point, x, noise, t, s, b, z_s, space="jump", weighting="uniform",
                                             distance=distances.l2)
    assert float(jnp.max(per0)) < 1e-10


def test_ve_boundaries_at_every_grid_point_give_denoiser_distillation():
    grid = tuple(float(v) for v in schedules.karras_sigmas(18))
    process = mcm.ve_process(grid, 7.0)   # T = 17 segments of M = 1 step: b = σ_{n−1}
    rng = np.random.default_rng(3)
    k = jnp.asarray(rng.integers(0, 17, 32))
    t, s, b = process.level(k, jnp.ones(32)), process.level(k, jnp.zeros(32)), process.boundary(k)
    assert bool(jnp.all(s.tau == b.tau))
    x, noise = (jnp.asarray(rng.normal(size=(32, 2)), jnp.float32) for _ in range(2))
    teacher = lambda z, sig: 0.8 * jnp.tanh(z)  # noqa: E731
    z_t = obj.perturb(x, noise, t)
    z_s = obj.teacher_step("ddim", teacher, z_t, t, s)
    per, _ = obj.multistep_consistency_loss(_xtheta, _xtheta, x, noise, t, s, b, z_s, space="jump",
                                            weighting="uniform", distance=distances.l2)
    want = obj.denoiser_distillation_limit(_xtheta(z_t, t.sigma), teacher(z_t, t.sigma), t.sigma, s.sigma)
    np.testing.assert_allclose(per, want, rtol=2e-4, atol=1e-10)  # float32: a difference of two points of size σ·x


def test_ve_target_is_a_convex_combination_of_teacher_and_student():
    """seed eq. 50 into eq. 51 (eq. 53–54): the project's VE target ẑ = (b/σ_n)x_n + b(1/σ_{n−1} − 1/σ_n)D_φ
    + (1 − b/σ_{n−1})x^θ(x^φ_{n−1}, σ_{n−1}), and in x-space (invDDIM at σ_n) w·D_φ + (1 − w)·x^θ with
    w = b(σ_n − σ_{n−1})/(σ_{n−1}(σ_n − b)) ∈ [0, 1]; w = 1 next to the boundary (docs/science.md (o))."""
    boundaries = tuple(float(v) for v in schedules.karras_sigmas(5))
    process = mcm.ve_process(boundaries, 7.0)
    rng = np.random.default_rng(4)
    k = jnp.asarray(rng.integers(0, 4, 64))
    j = jnp.asarray(rng.integers(1, 5, 64), jnp.float32)
    t, s, b = process.level(k, j / 4), process.level(k, (j - 1) / 4), process.boundary(k)
    x, noise = (jnp.asarray(rng.normal(size=(64, 2)), jnp.float32) for _ in range(2))
    teacher = lambda z, sig: 0.8 * jnp.tanh(z) - 0.1 * jnp.log(sig)[:, None]  # noqa: E731
    z_t = obj.perturb(x, noise, t)
    z_s = obj.teacher_step("ddim", teacher, z_t, t, s)
    at_b = s.tau == b.tau
    _, chain = obj.multistep_consistency_loss(_xtheta, _xtheta, x, noise, t, s, b, z_s, space="jump",
                                              weighting="uniform", distance=distances.l2)
    col = lambda v: np.asarray(v, np.float64)[:, None]  # noqa: E731
    sn, sp, bb = col(t.sigma), col(s.sigma), col(b.sigma)
    d_phi = np.asarray(teacher(z_t, t.sigma), np.float64)
    x_theta = np.where(col(at_b) > 0, 0.0, np.asarray(_xtheta(z_s, jnp.where(at_b, t.sigma, s.sigma)), np.float64))
    split = bb / sn * np.asarray(z_t) + bb * (1 / sp - 1 / sn) * d_phi + (1 - bb / sp) * x_theta
    np.testing.assert_allclose(np.asarray(chain["z_hat"]), split, rtol=1e-4, atol=1e-4)
    w = col(obj.ve_teacher_weight(t.sigma, s.sigma, b.sigma))
    assert np.all((w >= 0) & (w <= 1 + 1e-6)) and np.allclose(w[np.asarray(at_b)], 1.0, atol=1e-6)
    reference = np.asarray(obj.x0_reference(chain["z_hat"], z_t, t, b), np.float64)
    np.testing.assert_allclose(reference, w * d_phi + (1 - w) * x_theta, rtol=1e-3, atol=1e-3)
    # far above the boundary (b ≪ σ, Δσ ≪ σ) w ≈ bΔσ/σ²: b = 0.002, σ 80 → 79 gives 3.2e-7
    assert float(obj.ve_teacher_weight(80.0, 79.0, 0.002)) == pytest.approx(0.002 * 1.0 / 80.0 ** 2, rel=0.02)


# ----------------------------------------------------------------------------------------------------------
# The method: traced schedule, validator, a short run through the loop
# ----------------------------------------------------------------------------------------------------------

def toy_config(process="vp", segments=2, **mcm_fields):
    c = base_config()
    c.method = "mcm"
    c.data.name = "toy:gaussian1d"
    c.model.name = "mlp"
    c.model.hidden = 64
    c.model.depth = 2
    c.model.fourier_scale = 1.0
    c.training.batch_size = 128
    c.training.ema_decay = 0.99
    c.optim.lr = 2e-3
    c.teacher.oracle = "mixture"
    c.mcm.process = process
    c.mcm.segments = segments
    if process == "ve":
        c.mcm.update(dict(teacher_solver="ddim", loss_space="jump", weighting="uniform", distance="l2",
                          num_steps_start=17.0, num_steps_end=17.0))
    c.mcm.update(mcm_fields)
    return c


def test_teacher_steps_traced_from_the_step_without_recompiling():
    c = toy_config("vp", 2, num_steps_start=8.0, num_steps_end=64.0, num_steps_ramp=6, target_ema=0.5)
    ds = make_dataset(c.data, c.training.batch_size, 0)
    method = mcm.make(c, ds)
    state = base.init_state(method, jax.random.PRNGKey(0), ds.batch(0))
    assert "target" in state.moving
    traces = []
    (online,) = method.trained

    def counted(*args):
        traces.append(1)
        return online.loss(*args)
    method = dataclasses.replace(method, trained=(dataclasses.replace(online, loss=counted),))
    state, step_metrics = train.run_steps(method, state, ds, jax.random.PRNGKey(0), 8)
    hist = [{n: float(v) for n, v in metrics.items()} for metrics in step_metrics]
    assert len(traces) == 1
    for k in range(8):
        n = float(schedules.mcm_teacher_steps(k, 8.0, 64.0, 6))
        assert hist[k]["teacher_steps"] == pytest.approx(n, rel=1e-5)
        assert hist[k]["steps_per_segment"] == max(1, round(n / 2))
    assert hist[0]["steps_per_segment"] == 4 and hist[7]["steps_per_segment"] == 32
    assert all(np.isfinite(h["loss"]) for h in hist)


@pytest.mark.parametrize("fields, field", [
    (dict(segments=0), "config.mcm.segments"),
    (dict(process="vq"), "config.mcm.process"),
    (dict(boundaries=(0.002, 1.0, 80.0)), "config.mcm.boundaries"),          # VP has no σ boundaries
    (dict(target_ema=1.0), "config.mcm.target_ema"),
    (dict(cfg_scale=2.0), "config.mcm.cfg_scale"),                              # unconditional model
    (dict(mode="train"), "config.teacher.oracle"),                              # MCT with a teacher
])
def test_validator_names_the_field(fields, field):
    from consistency.config import validate   # the teacher's use is declared by mcm (TEACHER_USE), checked there
    c = toy_config("vp", 2)
    c.mcm.update(fields)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate(c)


def test_validator_checks_ve_boundaries_teacher_and_nfes():
    c = toy_config("ve", 2, boundaries=(0.002, 80.0))
    with pytest.raises(ConfigError, match=r"config\.mcm\.boundaries: .* T \+ 1 = 3"):
        mcm.validate_config(c)
    c = toy_config("ve", 2)
    c.teacher.oracle = ""
    from consistency.config import validate
    with pytest.raises(ConfigError, match=r"config\.teacher: method 'mcm' distils a teacher.*mcm\.mode='train' \(MCT\)"):
        validate(c)
    c = toy_config("ve", 2)
    c.eval.nfes = (1, 2)
    with pytest.raises(ConfigError, match=r"config\.eval\.nfes: .*exactly T"):
        mcm.validate_config(c)
    mcm.validate_config(toy_config("ve", 2, boundaries=(0.002, 0.5, 80.0)))


def _w1_to_exact_gaussian(samples):
    x = np.sort(np.asarray(samples).ravel())
    q = stats.norm.ppf((np.arange(len(x)) + 0.5) / len(x), MU, S)
    return float(np.mean(np.abs(x - q)))


@pytest.mark.quality
@pytest.mark.parametrize("process", ["vp", "ve"])
def test_short_training_through_the_loop_beats_the_untrained_model(process, tmp_path):
    c = toy_config(process, 2)
    if process == "vp":
        c.mcm.num_steps_start = c.mcm.num_steps_end = 16.0
    c.training.num_steps = 300
    c.training.log_every = 100
    c.training.ckpt_every = c.training.sample_every = 300
    c.eval.num_samples = 500
    c.sampling.num_samples = 64
    state = train.train_and_evaluate(c, str(tmp_path / "run"))
    report = json.load(open(os.path.join(tmp_path, "run", "eval", "metrics_300.json")))
    assert report["nfes"] == [2] and report["nfe_2"]["finite_fraction"] == 1.0
    ds = make_dataset(c.data, c.training.batch_size, 0)
    method = mcm.make(c, ds)
    untrained = base.init_state(method, jax.random.PRNGKey(0), ds.batch(0))
    rng = jax.random.PRNGKey(7)
    w_trained = _w1_to_exact_gaussian(method.sample(state, rng, 4000, nfe=method.sampling_nfe,
                                                    options=method.options))
    w_untrained = _w1_to_exact_gaussian(method.sample(untrained, rng, 4000, nfe=method.sampling_nfe,
                                                      options=method.options))
    # Measured: VP 0.076, VE < 0.06 after 300 steps; untrained ≈ 0.75 (W1 to the exact N(0.7, 0.3²) quantiles).
    assert w_trained < 0.1 and w_trained < 0.2 * w_untrained, (w_trained, w_untrained)


@pytest.mark.slow
def test_mcd_on_two_gaussians_follows_the_exact_flow_better_as_segments_grow(tmp_path):
    """MCM Fig. 1's setting: the 1-D two-Gaussian toy (½N(−0.5, 0.1²) + ½N(0.5, 0.1²)) distilled from its exact
    mixture denoiser (VE form, seed eq. 50–52). The T-step sampler from x = σ_max z is compared with the exact PF-ODE
    endpoint of the same z (400 Heun steps of the exact denoiser). 600 steps per T, the same budget for each."""
    from consistency.methods.components import teachers
    from consistency.diffusion import solvers
    errors = {}
    for segments in (2, 4, 8):
        c = toy_config("ve", segments, num_steps_start=16.0, num_steps_end=16.0)
        c.data.name = "toy:mog1d"
        c.training.update(dict(num_steps=600, log_every=300, ckpt_every=600, sample_every=0))
        c.eval.update(dict(num_samples=200))
        state = train.train_and_evaluate(c, str(tmp_path / f"T{segments}"))
        ds = make_dataset(c.data, c.training.batch_size, 0)
        method = mcm.make(c, ds)
        rng = jax.random.PRNGKey(11)
        x = np.asarray(method.sample(state, rng, 2000, nfe=segments, options=method.options))
        z_top = mcm.make_process(c).initial(rng, (2000, 1))
        params, apply = teachers.load_teacher(c, ds)
        grid = solvers.edm_sampling_sigmas(400, c.diffusion.sigma_min, c.diffusion.sigma_max, c.diffusion.rho)
        grid = grid[grid > 0]
        exact = solvers.solve(lambda y, s, cond=None: apply(params, y, s, None), z_top, grid, "heun")
        errors[segments] = float(np.mean(np.abs(x - np.asarray(exact))))
    # Measured (this machine, mean |x_T − x_exact| with modes at ±0.5 of std 0.1): T = 2 0.192, T = 4 0.171,
    # T = 8 0.075. The error falls with T; stated tolerance: T = 8 within 0.1 of the exact flow and < 0.6 × T = 2's.
    assert errors[2] > errors[4] > errors[8], errors
    assert errors[8] < 0.1 and errors[8] < 0.6 * errors[2], errors
