"""DMD / DMD2, ADD and SiD objectives against exact answers (seed eq. 59–83; docs/methods.md §10–§12, §15 O7 and O11).

Toys (docs/methods.md §15 O7), every coordinate independent:
- the notebook's toy: data N(0, 1), x_g = θ + z, fake denoiser (x_t + φσ²)/(1 + σ²), i.e. the exact denoiser of N(φ, 1);
- two parameters: data N(0.7, 0.3²), G = a·z + b, with the *exact* fake denoiser of the current generator, N(b, a²),
  whose parameters are frozen in the generator step (they are the oracle of sg(a, b)).
Everything runs in float64 (module fixture), so "exact" means agreement to ~1e-12, or to the stated cancellation floor
(differences of O(1) denoiser outputs at σ = 0.002).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consistency.diffusion import oracles
from consistency.diffusion import distances
from consistency.objectives import add, dmd, sid

MU, S = 0.7, 0.3            # docs/methods.md §15 O7 "two parameters"
DIM = 16                    # coordinates per example: keeps the per-sample normalisers mean_CHW|·| concentrated
TOY_STEPS = 600             # gradient-descent steps of every toy training run (they share one set of draws)
SIGMAS = np.array([0.002, 0.05, 0.3, 1.0, 2.5, 10.0, 24.4, 80.0])  # numpy: float64 once the fixture enables x64


@pytest.fixture(scope="module", autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


# ----------------------------------------------------------------------------------------------------------------
# Parametrised toy networks: params are explicit arguments, as in a train step.
# ----------------------------------------------------------------------------------------------------------------

def gaussian_apply(params, x, sigma):
    """Exact denoiser of N(mean, std²) per coordinate (docs/methods.md §15 O2), with (mean, std) as parameters."""
    return oracles.gaussian_denoiser(params["mean"], params["std"])(x, sigma)


def generator_apply(params, z):
    """G = a·z + b (docs/methods.md §15 O7)."""
    return params["a"] * z + params["b"]


def exact_fake_denoiser(generator_params):
    """The exact fake denoiser of the current generator's distribution N(b, a²), frozen (an oracle of sg(a, b))."""
    frozen = jax.lax.stop_gradient(generator_params)
    return lambda x, sigma: gaussian_apply({"mean": frozen["b"], "std": jnp.abs(frozen["a"])}, x, sigma)


def discriminator_apply(params, x, sigma=None):
    """A small smooth discriminator: v·tanh(W x/√(1+σ²) + c) → one logit per example."""
    flat = x.reshape(x.shape[0], -1)
    if sigma is not None:
        flat = flat / jnp.sqrt(1.0 + sigma[:, None] ** 2)
    return jnp.tanh(flat @ params["w"] + params["c"]) @ params["v"]


def _discriminator_params(dim, hidden=8, seed=3):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {"w": jax.random.normal(k1, (dim, hidden)), "c": jax.random.normal(k2, (hidden,)),
            "v": jax.random.normal(k3, (hidden,))}


TEACHER = {"mean": MU, "std": S}  # Python floats: float64 under the fixture
REAL = lambda x, sigma: gaussian_apply(TEACHER, x, sigma)  # noqa: E731


def _normals(seed, *shapes):
    keys = jax.random.split(jax.random.PRNGKey(seed), len(shapes))
    return [jax.random.normal(k, s, jnp.float64) for k, s in zip(keys, shapes)]


def _notebook_toy(theta, phi, seed=0, batch=64):
    """x_g = θ + z; real = N(0, 1) denoiser; fake = (x_t + φσ²)/(1 + σ²); σ from SIGMAS repeated over the batch."""
    z, n = _normals(seed, (batch, 1), (batch, 1))
    sigma = jnp.tile(SIGMAS, batch // len(SIGMAS))
    real = oracles.gaussian_denoiser(0.0, 1.0)
    fake = oracles.gaussian_denoiser(phi, 1.0)
    return z, n, sigma, real, fake


def printed_seed_eq_83(x_generated, noise, sigma, real_denoiser, fake_denoiser, alpha):
    """Seed eq. 83 *as printed* (w = 1): σ⁻²⟨x_φ − x_ψ, x_ψ − G⟩ − α‖x_φ − x_ψ‖², the notebook's x_ψ = real, x_φ = fake.
    Its first term has the opposite sign of seed eq. 81 and the SiD code (docs/methods.md §17 item 19). Test-only."""
    noisy = x_generated + sigma[:, None] * noise
    d_r, d_f = real_denoiser(noisy, sigma), fake_denoiser(noisy, sigma)
    first = jnp.sum((d_f - d_r) * (d_r - x_generated), axis=1) / sigma ** 2
    return first - alpha * jnp.sum((d_f - d_r) ** 2, axis=1)


# ----------------------------------------------------------------------------------------------------------------
# Notebook toy (docs/methods.md §15 O7)
# ----------------------------------------------------------------------------------------------------------------

@jax.jit
def _dmd_toy_quantities(theta, phi):
    z, n, sigma, real, fake = _notebook_toy(theta, phi)
    x = theta + z
    gradient, _ = dmd.distribution_matching_gradient(x, n, sigma, real, fake, normalise=False)
    dtheta = jax.grad(lambda t: jnp.sum(dmd.distribution_matching_loss(t + z, n, sigma, real, fake,
                                                                       normalise=False)[0]))(theta)
    normalised, aux = dmd.distribution_matching_gradient(x, n, sigma, real, fake, normalise=True)
    return sigma, x, gradient, dtheta, normalised, aux["real_denoised"]


@pytest.mark.parametrize("theta,phi", [(0.8, 0.8), (-1.3, 0.4), (2.0, -0.7)])
def test_dmd_gradient_on_notebook_toy_equals_seed_eq_78(theta, phi):
    sigma, x, gradient, dtheta, normalised, real_denoised = _dmd_toy_quantities(theta, phi)
    expected = phi / (1.0 + sigma[:, None] ** 2)                      # seed eq. 78, every sample, any x_t
    # (D_fake − D_real)/σ² cancels ~6 digits at σ = 0.002, hence 1e-9 rather than 1e-15.
    np.testing.assert_allclose(gradient, expected, rtol=1e-9)
    # Through the surrogate, ∂/∂θ Σ_i L_i = Σ_i g_i·∂x_i/∂θ = Σ_i φ/(1+σ_i²) (∂x/∂θ = 1).
    np.testing.assert_allclose(dtheta, jnp.sum(expected), rtol=1e-9)
    # The DMD weight: g = (D_fake − D_real)/mean|x − D_real| = cφ/mean|x − D_real|, c = σ²/(1+σ²).
    c = sigma ** 2 / (1.0 + sigma ** 2)
    np.testing.assert_allclose(normalised[:, 0], c * phi / jnp.abs(x - real_denoised)[:, 0], rtol=1e-9)


@jax.jit
def _sid_toy_gradients(alpha, theta=0.9, phi=0.6):
    z, n, sigma, real, fake = _notebook_toy(theta, phi)

    def per_sample_gradient(loss_fn):
        return jax.vmap(jax.grad(lambda t, zi, ni, si: loss_fn(t + zi[None], ni[None], si[None])[0]),
                        in_axes=(None, 0, 0, 0))(theta, z, n, sigma)

    code = per_sample_gradient(lambda x, nn, s: sid.generator_loss(x, nn, s, real, fake, alpha, normalise=False)[0])
    printed = per_sample_gradient(lambda x, nn, s: printed_seed_eq_83(x, nn, s, real, fake, alpha))
    return sigma, code, printed


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.2])
def test_sid_gradient_on_notebook_toy_is_c_squared_phi_and_printed_eq_83_flips_it(alpha):
    phi = 0.6
    sigma, code, printed = _sid_toy_gradients(alpha)
    c = sigma ** 2 / (1.0 + sigma ** 2)
    # docs/methods.md §15 O7: dL/dθ = c²φ for any α (c² ≈ 1.6e-11 at σ = 0.002 is a cancellation of O(1) terms: 1e-6).
    np.testing.assert_allclose(code, c ** 2 * phi, rtol=1e-6)
    np.testing.assert_allclose(printed, -c ** 2 * phi / sigma ** 2, rtol=1e-6)   # opposite sign


def _notebook_toy_step(loss_fn, lr):
    """One gradient-descent step on θ (x_g = θ + z) with the exact fake score φ = sg θ (docs/methods.md §15 O7)."""
    real = oracles.gaussian_denoiser(0.0, 1.0)

    def step(theta, draws):
        z, n, sigma = draws
        fake = oracles.gaussian_denoiser(jax.lax.stop_gradient(theta), 1.0)
        grad = jax.grad(lambda t: jnp.mean(loss_fn(t + z, n, sigma, real, fake)))(theta)
        theta = theta - lr * grad
        return theta, theta
    return step


@jax.jit
def _notebook_toy_trajectories(z, n, sigma):
    """θ_k under the SiD code form (from θ₀ = 2) and under seed eq. 83 as printed (from θ₀ = 0.1), lr 0.5, α = 1.2."""
    code = _notebook_toy_step(lambda *a: sid.generator_loss(*a, alpha=1.2, reduce="mean")[0], 0.5)
    printed = _notebook_toy_step(lambda x, nn, s, r, f: printed_seed_eq_83(x, nn, s, r, f, 1.2) / DIM, 0.5)
    return (jax.lax.scan(code, jnp.float64(2.0), (z, n, sigma))[1],
            jax.lax.scan(printed, jnp.float64(0.1), (z[:100], n[:100], sigma[:100]))[1])


def test_sid_code_sign_drives_theta_to_zero_and_printed_sign_diverges():
    z, n = _toy_draws(TOY_STEPS)
    code, printed = _notebook_toy_trajectories(z, n, _toy_sigmas("sid", TOY_STEPS))
    assert bool(jnp.all(jnp.diff(jnp.abs(code[:30])) < 0)), code[:30]   # |θ| contracts every step ...
    assert float(jnp.max(jnp.abs(code[-100:]))) < 1e-9, code[-5:]     # ... to θ = 0 (float64 noise floor)
    assert bool(jnp.all(jnp.diff(jnp.abs(printed)) > 0)), printed    # printed sign: |θ| grows every step ...
    assert abs(float(printed[-1])) > 10 * 0.1, printed[-5:]          # ... away from the optimum θ = 0


# ----------------------------------------------------------------------------------------------------------------
# Two-parameter generator G = a z + b on N(0.7, 0.3²) (docs/methods.md §15 O7)
# ----------------------------------------------------------------------------------------------------------------

def _two_parameter_generator_loss(method, x, noise, sigma, fake, alpha):
    """Per-example generator loss of ``method`` on x = G(z)."""
    if method in ("dmd", "dmd-unnormalised"):
        return dmd.distribution_matching_loss(x, noise, sigma, REAL, fake, normalise=method == "dmd",
                                              reduce="mean")[0]
    if method == "sid":
        return sid.generator_loss(x, noise, sigma, REAL, fake, alpha=alpha, reduce="mean")[0]
    if method == "add-distillation":
        return add.distillation_loss(x, REAL, noise, sigma)
    raise ValueError(method)


@functools.lru_cache(maxsize=None)
def _toy_draws(steps, batch=128, seed=0):
    """z, n ~ N(0, I) of shape [steps, batch, DIM], drawn once and shared by every toy training run."""
    kz, kn = jax.random.split(jax.random.PRNGKey(seed))
    return (jax.random.normal(kz, (steps, batch, DIM), jnp.float64),
            jax.random.normal(kn, (steps, batch, DIM), jnp.float64))


def _toy_sigmas(method, steps, batch=128, seed=1):
    """Each method's own σ sampler (DMD2 grid U{20…980}; SiD u ~ U[0, 0.8]; ADD: the teacher's whole grid)."""
    key = jax.random.PRNGKey(seed)
    if method.startswith("dmd"):
        return dmd.sample_distribution_matching_sigmas(key, (steps, batch)).astype(jnp.float64)
    if method == "sid":
        return sid.sample_generator_sigmas(key, (steps, batch), dtype=jnp.float64)
    return dmd.sample_fake_score_sigmas(key, (steps, batch)).astype(jnp.float64)


@functools.partial(jax.jit, static_argnames=("method",))
def _gradient_descent_on_two_parameters(method, alpha, lr, z, n, sigma):
    """Gradient descent on (a, b) from (1, −0.5), fresh z, n, σ each step, exact frozen fake score of N(b, a²)."""
    def step(params, draws):
        z, n, sigma = draws
        fake = exact_fake_denoiser(params)
        grads = jax.grad(lambda p: jnp.mean(
            _two_parameter_generator_loss(method, generator_apply(p, z), n, sigma, fake, alpha)))(params)
        params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
        return params, params
    params0 = {"a": jnp.float64(1.0), "b": jnp.float64(-0.5)}
    return jax.lax.scan(step, params0, (z, n, sigma))[1]


def _train_two_parameter_generator(method, alpha=1.0, lr=0.05, steps=None):
    steps = steps or TOY_STEPS
    z, n = _toy_draws(steps)
    return _gradient_descent_on_two_parameters(method, alpha, lr, z, n, _toy_sigmas(method, steps))


@pytest.mark.parametrize("method,alpha,lr", [
    ("dmd", 1.0, 0.05),
    ("dmd-unnormalised", 1.0, 0.01),
    ("sid", 0.5, 0.05),
    ("sid", 1.0, 0.05),
    ("sid", 1.2, 0.05),
])
def test_two_parameter_generator_converges_to_data_with_exact_fake_score(method, alpha, lr):
    trajectory = _train_two_parameter_generator(method, alpha, lr)
    a, b = float(trajectory["a"][-1]), float(trajectory["b"][-1])
    # With the exact fake score every per-sample gradient vanishes at p_θ = p_data, so GD settles without noise.
    assert abs(a - S) < 1e-4 and abs(b - MU) < 1e-4, (method, alpha, a, b)


@functools.partial(jax.jit, static_argnames=("method", "ratio", "steps"))
def _train_with_learned_fake_score(method, alpha, ratio, steps, seed=0):
    """G = a z + b against a *learned* fake denoiser: the Gaussian denoiser with its own (mean, std), trained by
    DSM (EDM λ, fake σ sampler) on fresh sg G(z) draws, ``ratio`` fake Adam steps per generator Adam step (the
    TTUR k:1 of docs/methods.md §10.2; 1:1 SiD/DMD). Returns the generator trajectory."""
    import optax
    batch = 128
    gen_opt, fake_opt = optax.adam(1e-2), optax.adam(2e-2)
    gen0 = {"a": jnp.float64(1.0), "b": jnp.float64(-0.5)}
    fake0 = {"mean": jnp.float64(-0.5), "std": jnp.float64(1.0)}

    def fake_loss(fake, gen, key):
        kz, kn, ks = jax.random.split(key, 3)
        x = jax.lax.stop_gradient(generator_apply(gen, jax.random.normal(kz, (batch, DIM), jnp.float64)))
        sigma = dmd.sample_fake_score_sigmas(ks, (batch,)).astype(jnp.float64)
        noisy = x + sigma[:, None] * jax.random.normal(kn, x.shape, jnp.float64)
        weight = 1.0 / sigma ** 2 + 1.0 / 0.5 ** 2
        return jnp.mean(weight * jnp.mean((gaussian_apply(fake, noisy, sigma) - x) ** 2, axis=1))

    def gen_loss(gen, fake, key):
        kz, kn = jax.random.split(key)
        z = jax.random.normal(kz, (batch, DIM), jnp.float64)
        n = jax.random.normal(kn, (batch, DIM), jnp.float64)
        k_sigma = jax.random.fold_in(key, 9)
        if method == "dmd":
            sigma = dmd.sample_distribution_matching_sigmas(k_sigma, (batch,)).astype(jnp.float64)
        else:
            sigma = sid.sample_generator_sigmas(k_sigma, (batch,), dtype=jnp.float64)
        frozen = jax.lax.stop_gradient(fake)
        fake_fn = lambda x, sg: gaussian_apply(frozen, x, sg)  # noqa: E731
        return jnp.mean(_two_parameter_generator_loss(method, generator_apply(gen, z), n, sigma, fake_fn, alpha))

    def step(carry, key):
        gen, fake, gen_state, fake_state = carry
        for i in range(ratio):
            grads = jax.grad(fake_loss)(fake, gen, jax.random.fold_in(key, i))
            updates, fake_state = fake_opt.update(grads, fake_state)
            fake = optax.apply_updates(fake, updates)
        grads = jax.grad(gen_loss)(gen, fake, jax.random.fold_in(key, 100))
        updates, gen_state = gen_opt.update(grads, gen_state)
        gen = optax.apply_updates(gen, updates)
        return (gen, fake, gen_state, fake_state), gen

    keys = jax.random.split(jax.random.PRNGKey(seed), steps)
    carry = (gen0, fake0, gen_opt.init(gen0), fake_opt.init(fake0))
    return jax.lax.scan(step, carry, keys)[1]


@pytest.mark.quality
@pytest.mark.parametrize("method,alpha,ratio", [("dmd", 1.0, 1), ("dmd", 1.0, 5), ("sid", 1.2, 1), ("sid", 1.2, 5),
                                                ("sid", 0.5, 1)])
def test_two_parameter_generator_converges_with_a_learned_fake_score(method, alpha, ratio):
    """docs/methods.md §15 O7 with the fake score *learned* online (TTUR 1:1 and 5:1): (a, b) → (0.3, 0.7). Tolerance
    0.03 on the mean of the last 200 of 1500 generator steps (Adam noise keeps them jittering around the optimum).
    Measured (a, b): DMD 1:1 (0.298, 0.700), 5:1 (0.300, 0.700); SiD α=1.2 1:1 (0.300, 0.700), 5:1 (0.300, 0.700);
    SiD α=0.5 1:1 (0.287, 0.700)."""
    trajectory = _train_with_learned_fake_score(method, alpha, ratio, 1500)
    a, b = float(jnp.mean(jnp.abs(trajectory["a"][-200:]))), float(jnp.mean(trajectory["b"][-200:]))
    assert abs(a - S) < 0.03 and abs(b - MU) < 0.03, (method, alpha, ratio, a, b)


def test_add_distillation_term_alone_collapses_the_spread():
    # docs/methods.md §11, §15 O7: L_distill alone drives a → 0 (point mass at the data mean), b → μ.
    trajectory = _train_two_parameter_generator("add-distillation", lr=0.5)
    a, b = trajectory["a"], trajectory["b"]
    assert abs(float(jnp.mean(a[-100:]))) < 2e-3 and float(jnp.max(jnp.abs(a[-100:]))) < 1e-2, a[-5:]
    assert abs(float(jnp.mean(b[-100:])) - MU) < 5e-3, b[-5:]


def test_add_distillation_gradient_has_no_teacher_jacobian():
    # docs/methods.md §11: ∇ L_distill = 2c(t)(x̂_θ − x̂_ψ)/d per element — the teacher's Jacobian never enters.
    x, noise = _normals(4, (8, DIM), (8, DIM))
    sigma = SIGMAS
    grad = jax.jit(jax.grad(lambda y: jnp.sum(add.distillation_loss(y, REAL, noise, sigma))))(x)
    teacher = REAL(x + sigma[:, None] * noise, sigma)
    expected = 2.0 * add.exponential_weight(sigma)[:, None] * (x - teacher) / DIM
    np.testing.assert_allclose(grad, expected, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Surrogate, R1, GAN losses
# ----------------------------------------------------------------------------------------------------------------

def test_surrogate_gradient_equals_distribution_matching_gradient():
    x, noise = _normals(5, (8, 3, 4, 4), (8, 3, 4, 4))
    sigma = SIGMAS
    fake = oracles.gaussian_denoiser(-0.2, 0.9)
    gradient, _ = dmd.distribution_matching_gradient(x, noise, sigma, REAL, fake)
    for reduce, scale in (("sum", 1.0), ("mean", 1.0 / 48)):
        autodiff = jax.grad(lambda y: jnp.sum(dmd.distribution_matching_surrogate(y, gradient, reduce)))(x)
        np.testing.assert_allclose(autodiff, scale * gradient, rtol=1e-12, atol=1e-15)
        # The full loss recomputes g inside; its x-gradient is the same g (g itself carries none).
        full = jax.grad(lambda y: jnp.sum(dmd.distribution_matching_loss(y, noise, sigma, REAL, fake,
                                                                         reduce=reduce)[0]))(x)
        np.testing.assert_allclose(full, scale * gradient, rtol=1e-12, atol=1e-15)


def test_r1_penalty_equals_finite_differences():
    # docs/methods.md §15 O11: R1 = ‖∇ₓD(x_real)‖², checked by central differences coordinate by coordinate.
    params = _discriminator_params(2)
    x_real = _normals(6, (5, 2))[0]
    disc = jax.jit(lambda x: discriminator_apply(params, x))
    r1 = add.r1_penalty(disc, x_real)
    h = 1e-6
    fd = np.zeros(x_real.shape)
    for j in range(2):
        e = jnp.zeros_like(x_real).at[:, j].set(h)
        fd[:, j] = (disc(x_real + e) - disc(x_real - e)) / (2 * h)
    np.testing.assert_allclose(r1, np.sum(fd ** 2, axis=1), rtol=1e-7)
    # Double backprop: R1 is differentiable in the discriminator's parameters (it trains the discriminator).
    direction = jax.tree.map(jnp.ones_like, params)
    along = lambda t: jnp.sum(add.r1_penalty(  # noqa: E731
        lambda x: discriminator_apply(jax.tree.map(lambda p, d: p + t * d, params, direction), x), x_real))
    fd_param = (along(h) - along(-h)) / (2 * h)
    np.testing.assert_allclose(jax.jit(jax.grad(along))(0.0), fd_param, rtol=1e-6)


def test_gan_losses_on_logits():
    real, fake = jnp.array([2.0, -1.0, 0.3]), jnp.array([-0.5, 1.5, 0.0])
    softplus = lambda v: np.log1p(np.exp(v))  # noqa: E731
    np.testing.assert_allclose(dmd.softplus_discriminator_loss(real, fake), softplus(fake) + softplus(-real))
    np.testing.assert_allclose(dmd.softplus_generator_loss(fake[:, None]), softplus(-fake))
    np.testing.assert_allclose(add.hinge_discriminator_loss(real, fake),
                               np.maximum(1 - real, 0) + np.maximum(1 + fake, 0))
    np.testing.assert_allclose(add.hinge_generator_loss(fake), -fake)
    # K heads sum (ADD Σ_k).
    np.testing.assert_allclose(add.hinge_generator_loss(jnp.stack([fake, 2 * fake], 1)), -3 * fake)


# ----------------------------------------------------------------------------------------------------------------
# Gradients reach only what they should
# ----------------------------------------------------------------------------------------------------------------

GENERATOR = {"a": 0.8, "b": -0.1}
FAKE = {"mean": 0.2, "std": 0.6}


def _inputs(seed=7, batch=8):
    z, noise, noise2 = _normals(seed, (batch, DIM), (batch, DIM), (batch, DIM))
    return z, noise, noise2, SIGMAS[:batch]


def _is_zero(tree):
    return all(bool(jnp.all(leaf == 0)) for leaf in jax.tree.leaves(tree))


def _is_nonzero(tree):
    return all(bool(jnp.any(leaf != 0)) for leaf in jax.tree.leaves(tree))


def test_distribution_matching_loss_trains_only_the_generator():
    z, noise, _, sigma = _inputs()

    def loss(generator, teacher, fake):
        x = generator_apply(generator, z)
        return jnp.sum(dmd.distribution_matching_loss(
            x, noise, sigma, lambda y, s: gaussian_apply(teacher, y, s), lambda y, s: gaussian_apply(fake, y, s))[0])

    g_gen, g_teacher, g_fake = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(GENERATOR, TEACHER, FAKE)
    assert _is_nonzero(g_gen) and _is_zero(g_teacher) and _is_zero(g_fake)


def test_fake_score_losses_do_not_train_the_generator():
    z, noise, _, sigma = _inputs()
    for fake_loss in (lambda f, x: dmd.fake_score_loss(f, x, noise, sigma),
                      lambda f, x: sid.fake_score_loss(f, x, noise, sigma)[0]):
        def loss(generator, fake):
            return jnp.sum(fake_loss(lambda y, s: gaussian_apply(fake, y, s), generator_apply(generator, z)))
        g_gen, g_fake = jax.jit(jax.grad(loss, argnums=(0, 1)))(GENERATOR, FAKE)
        assert _is_zero(g_gen) and _is_nonzero(g_fake)
    # The EDM-weighted DSM value: λ(σ)·mean (D(x + σn) − x)².
    x = generator_apply(GENERATOR, z)
    fake = lambda y, s: gaussian_apply(FAKE, y, s)  # noqa: E731
    lam = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2
    expected = lam * jnp.mean((fake(x + sigma[:, None] * noise, sigma) - x) ** 2, axis=1)
    np.testing.assert_allclose(dmd.fake_score_loss(fake, x, noise, sigma), expected, rtol=1e-12)
    np.testing.assert_allclose(sid.fake_score_loss(fake, x, noise, sigma)[0], DIM * expected, rtol=1e-12)


def test_regression_loss_trains_only_the_generator():
    z, noise, _, sigma = _inputs()

    def loss(generator, teacher):
        target = gaussian_apply(teacher, sigma[:, None] * z, sigma)   # stands in for the teacher's ODE output
        return jnp.sum(dmd.regression_loss(generator_apply(generator, z), target, distances.pseudo_huber))

    g_gen, g_teacher = jax.jit(jax.grad(loss, argnums=(0, 1)))(GENERATOR, TEACHER)
    assert _is_nonzero(g_gen) and _is_zero(g_teacher)


def test_add_losses_never_train_the_teacher_and_the_discriminator_loss_never_trains_the_student():
    z, noise, _, sigma = _inputs()
    disc_params = _discriminator_params(DIM)

    def student_loss(generator, teacher, disc):
        disc_fn = dmd.with_frozen_parameters(discriminator_apply, disc)
        return jnp.sum(add.generator_loss(disc_fn, generator_apply(generator, z),
                                          lambda y, s: gaussian_apply(teacher, y, s), noise, sigma)[0])

    g_gen, g_teacher, g_disc = jax.jit(jax.grad(student_loss, argnums=(0, 1, 2)))(GENERATOR, TEACHER, disc_params)
    assert _is_nonzero(g_gen) and _is_zero(g_teacher) and _is_zero(g_disc)

    x_real = MU + S * z

    def disc_loss(generator, disc):
        disc_fn = lambda x: discriminator_apply(disc, x)  # noqa: E731
        return jnp.sum(add.discriminator_loss(disc_fn, x_real, generator_apply(generator, noise), r1_weight=1.0))

    g_gen, g_disc = jax.jit(jax.grad(disc_loss, argnums=(0, 1)))(GENERATOR, disc_params)
    assert _is_zero(g_gen) and _is_nonzero(g_disc)


def test_diffusion_gan_losses_train_the_right_side():
    z, noise, noise2, sigma = _inputs()
    disc_params = _discriminator_params(DIM)
    x_real = MU + S * z

    def disc_loss(generator, disc):
        disc_fn = lambda x, s: discriminator_apply(disc, x, s)  # noqa: E731
        return jnp.sum(dmd.diffusion_gan_discriminator_loss(disc_fn, x_real, generator_apply(generator, z),
                                                            noise, noise2, sigma, sigma[::-1]))

    g_gen, g_disc = jax.jit(jax.grad(disc_loss, argnums=(0, 1)))(GENERATOR, disc_params)
    assert _is_zero(g_gen) and _is_nonzero(g_disc)

    def gen_loss(generator, disc):
        disc_fn = dmd.with_frozen_parameters(discriminator_apply, disc)
        return jnp.sum(dmd.diffusion_gan_generator_loss(disc_fn, generator_apply(generator, z), noise, sigma))

    g_gen, g_disc = jax.jit(jax.grad(gen_loss, argnums=(0, 1)))(GENERATOR, disc_params)
    assert _is_nonzero(g_gen) and _is_zero(g_disc)
    # Both inputs are noised first: the logits are those of x + σn.
    logits = dmd.diffusion_gan_logits(lambda x, s: discriminator_apply(disc_params, x, s), x_real, noise, sigma)
    np.testing.assert_allclose(logits, discriminator_apply(disc_params, x_real + sigma[:, None] * noise, sigma))


def test_sid_generator_loss_flows_through_denoiser_inputs_but_not_their_parameters():
    z, noise, _, sigma = _inputs()

    def loss(generator, teacher, fake, freeze=True, stop_inputs=False):
        wrap = dmd.with_frozen_parameters if freeze else (lambda f, p: lambda y, s: f(p, y, s))
        real_fn, fake_fn = wrap(gaussian_apply, teacher), wrap(gaussian_apply, fake)
        if stop_inputs:  # the wrong placement: sg on the inputs of both denoisers
            real_fn = (lambda f: lambda y, s: f(jax.lax.stop_gradient(y), s))(real_fn)
            fake_fn = (lambda f: lambda y, s: f(jax.lax.stop_gradient(y), s))(fake_fn)
        return jnp.sum(sid.generator_loss(generator_apply(generator, z), noise, sigma, real_fn, fake_fn)[0])

    g_gen, g_teacher, g_fake = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(GENERATOR, TEACHER, FAKE)
    assert _is_nonzero(g_gen) and _is_zero(g_teacher) and _is_zero(g_fake)
    # Without the freeze the same loss would train the teacher: the freeze is what protects it.
    assert _is_nonzero(jax.jit(jax.grad(lambda t: loss(GENERATOR, t, FAKE, freeze=False)))(TEACHER))
    # The generator gradient includes the path through the denoisers' inputs: it matches central differences of the
    # loss (which see every path; the normaliser w is held at its value, being under sg) ...
    normaliser = sid.generator_loss(generator_apply(GENERATOR, z), noise, sigma, REAL,
                                    lambda y, s: gaussian_apply(FAKE, y, s))[1]["normaliser"]

    @jax.jit
    def loss_fixed_normaliser(a):
        x = generator_apply({"a": a, "b": GENERATOR["b"]}, z)
        unnormalised = sid.generator_loss(x, noise, sigma, lambda y, s: gaussian_apply(TEACHER, y, s),
                                          lambda y, s: gaussian_apply(FAKE, y, s), normalise=False)[0]
        return jnp.sum(unnormalised / normaliser)

    h = 1e-6
    fd = (loss_fixed_normaliser(GENERATOR["a"] + h) - loss_fixed_normaliser(GENERATOR["a"] - h)) / (2 * h)
    np.testing.assert_allclose(g_gen["a"], fd, rtol=1e-7)
    # ... and differs from the gradient with sg on the denoisers' inputs.
    g_stopped = jax.jit(jax.grad(lambda g: loss(g, TEACHER, FAKE, stop_inputs=True)))(GENERATOR)
    assert abs(float(g_stopped["a"] - g_gen["a"])) > 1e-2 * abs(float(g_gen["a"]))


# ----------------------------------------------------------------------------------------------------------------
# Samplers, masks, backward simulation
# ----------------------------------------------------------------------------------------------------------------

def test_dmd2_sigma_samplers_follow_the_1000_point_karras_grid():
    grid = np.asarray(dmd.training_sigma_grid(), np.float64)
    assert grid.shape == (1000,) and grid[0] == pytest.approx(0.002) and grid[-1] == pytest.approx(80.0)
    assert dmd.distribution_matching_index_range() == (20, 980)
    dm = np.asarray(dmd.sample_distribution_matching_sigmas(jax.random.PRNGKey(0), (50_000,)))
    assert dm.min() == pytest.approx(grid[20]) and dm.max() == pytest.approx(grid[980])
    assert grid[20] == pytest.approx(0.0032316, rel=1e-4) and grid[980] == pytest.approx(72.054, rel=1e-4)
    fake = np.asarray(dmd.sample_fake_score_sigmas(jax.random.PRNGKey(1), (50_000,)))
    assert fake.min() == pytest.approx(0.002) and fake.max() == pytest.approx(80.0)
    gan = np.asarray(dmd.sample_gan_sigmas(jax.random.PRNGKey(2), (50_000,), max_timestep=500))
    assert gan.max() == pytest.approx(grid[499])
    np.testing.assert_allclose(dmd.sigmas_at_timesteps([999, 0]), [80.0, 0.002], rtol=1e-6)


def test_sid_sigma_sampler_range():
    s = np.asarray(sid.sample_generator_sigmas(jax.random.PRNGKey(0), (50_000,), dtype=jnp.float64))
    top = (0.8 * 80.0 ** (1 / 7) + 0.2 * 0.002 ** (1 / 7)) ** 7        # u = 0.8
    assert top == pytest.approx(24.408, rel=1e-4)
    assert s.min() >= 0.002 * (1 - 1e-9) and s.max() <= top * (1 + 1e-9)
    assert s.min() < 0.0021 and s.max() > 0.99 * top


@jax.jit
def _sid_losses_and_gradient(x, noise, sigma):
    fake = oracles.gaussian_denoiser(0.1, 0.5)

    def masked_loss(y):
        per_example, aux = sid.generator_loss(y, noise, sigma, REAL, fake)
        return sid.masked_mean(per_example, aux["mask"]), (per_example, aux["mask"])
    grad, (loss, mask) = jax.grad(masked_loss, has_aux=True)(x)
    fake_loss, fake_mask = sid.fake_score_loss(fake, x, noise, sigma)
    return loss, mask, masked_loss(x)[0], grad, fake_loss, fake_mask


def test_sid_masks_replace_nan_filtering():
    clean, noise = _normals(8, (6, DIM), (6, DIM))
    sigma = SIGMAS[:6]
    x = clean.at[2, 3].set(jnp.nan)
    loss, mask, mean, grad, fake_loss, fake_mask = _sid_losses_and_gradient(x, noise, sigma)
    assert bool(jnp.all(jnp.isfinite(loss))) and mask.tolist() == [True, True, False, True, True, True]
    # Examples are independent: the kept rows equal those of the all-finite batch, and the mean renormalises by 5.
    clean_loss, clean_mask, *_ = _sid_losses_and_gradient(clean, noise, sigma)
    keep = np.array([0, 1, 3, 4, 5])
    assert bool(jnp.all(clean_mask)) and float(loss[2]) == 0.0
    np.testing.assert_allclose(loss[keep], clean_loss[keep], rtol=1e-13)
    np.testing.assert_allclose(mean, jnp.mean(clean_loss[keep]), rtol=1e-13)
    assert bool(jnp.all(jnp.isfinite(grad))) and bool(jnp.all(grad[2] == 0))
    assert bool(jnp.all(jnp.isfinite(fake_loss))) and not bool(fake_mask[2]) and int(fake_mask.sum()) == 5


def test_backward_simulation_for_a_multistep_generator():
    levels = add.student_sigmas().astype(jnp.float64)                # {999, 749, 499, 249} → σ, descending
    np.testing.assert_allclose(levels[0], 80.0, rtol=1e-6)
    c = 0.37
    point_mass = lambda x, s: jnp.full_like(x, c)  # noqa: E731
    shape = (20_000, 1)
    simulate = jax.jit(lambda key, k: dmd.backward_simulation(point_mass, key, shape, levels, k, jnp.float64))
    x0, s0 = simulate(jax.random.PRNGKey(0), 0)
    assert float(s0[0]) == pytest.approx(80.0) and float(jnp.std(x0)) == pytest.approx(80.0, rel=0.02)
    for k in (1, 2, 3):  # after k simulated steps: x = c + σ_k n, at level σ_k (k traced: one compilation)
        xk, sk = simulate(jax.random.PRNGKey(k), k)
        assert float(sk[0]) == pytest.approx(float(levels[k]))
        assert float(jnp.mean(xk)) == pytest.approx(c, abs=5 * float(levels[k]) / np.sqrt(shape[0]))
        assert float(jnp.std(xk)) == pytest.approx(float(levels[k]), rel=0.02)

    # Inside a jitted generator step with a traced k: the simulated input carries no gradient, G(x, σ_k) does.
    def generator_net(params, x, sigma):
        return params["a"] * x / jnp.sqrt(1.0 + sigma[:, None] ** 2) + params["b"]

    @jax.jit
    def step(params, k):
        def loss(p):
            frozen = dmd.with_frozen_parameters(generator_net, p)
            x_in, s_in = dmd.backward_simulation(frozen, jax.random.PRNGKey(5), (16, 1), levels, k, jnp.float64)
            return jnp.mean(generator_net(p, x_in, s_in) ** 2), (x_in, s_in)
        return jax.grad(loss, has_aux=True)(params)

    params = {"a": jnp.float64(0.5), "b": jnp.float64(0.2)}
    for k in (0, 2):
        grads, (x_in, s_in) = step(params, k)
        assert float(s_in[0]) == pytest.approx(float(levels[k]))
        # d/da mean(G(x_in)²) with x_in held fixed (it is under sg).
        out = generator_net(params, x_in, s_in)
        expected_a = jnp.mean(2 * out * x_in / jnp.sqrt(1.0 + s_in[:, None] ** 2))
        np.testing.assert_allclose(grads["a"], expected_a, rtol=1e-10)


def test_empirical_denoiser_is_the_gaussian_denoiser_of_its_pool_and_a_point_mass_returns_the_point():
    """dmd.empirical_denoiser (the fake score of docs/science.md (n)'s control): on 40,000 draws of N(μ, s²I) it is
    the closed-form Gaussian denoiser μ + s²/(s² + σ²)(x − μ) (docs/methods.md §15 O2) at typical points of the noised
    data (within 2 std) for σ from s/1.4 up, and
    on a one-point pool it returns that point for every input."""
    rng = np.random.default_rng(0)
    mean, std = np.array([0.5, -1.0], np.float32), 0.7
    pool = jnp.asarray(mean + std * rng.standard_normal((40_000, 2)), jnp.float32)
    z = np.clip(rng.standard_normal((64, 2)), -2.0, 2.0)
    for sigma in (0.5, 1.0, 3.0):
        x = jnp.asarray(mean + np.sqrt(std ** 2 + sigma ** 2) * z, jnp.float32)   # typical points of p_σ
        s = jnp.full((64,), sigma, jnp.float32)
        got = dmd.empirical_denoiser(pool)(x, s)
        want = oracles.gaussian_denoiser(mean, std)(x, s)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=0.03)
    point = jnp.asarray([[0.3, 0.4]], jnp.float32)
    np.testing.assert_allclose(np.asarray(dmd.empirical_denoiser(point)(x, jnp.full((64,), 0.01))),
                               np.broadcast_to([[0.3, 0.4]], (64, 2)), atol=1e-6)
