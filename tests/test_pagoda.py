"""PaGoDA (docs/methods.md §9, §15 O8) against exact answers: the teacher inversion of a 1-D Gaussian is the closed-form
linear encoder and its optimal linear decoder is the inverse, inversion then sampling returns the data to solver
precision (Gaussian and empirical-data oracles), the adaptive GAN weight equals the hand-computed last-layer ratio, a
grown generator reproduces the bilinear upsampling of its previous stage before training, the sharded inversion
resumes, and invert → train → grow runs from the CLI pieces end to end."""
from __future__ import annotations

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from consistency.tools import inversion
from consistency import methods, presets
from consistency.diffusion import oracles
from consistency.run import train
from consistency.core.errors import ConfigError
from consistency.config import validate
from consistency.methods import base
from consistency.nets.growing import GrowBlock, upsample_bilinear
from consistency.objectives import pagoda as obj

MU, S, SIGMA_MIN, SIGMA_MAX = 0.4, 0.3, 0.002, 80.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gaussian_data(n=4000, seed=0):
    return MU + S * jax.random.normal(jax.random.PRNGKey(seed), (n, 1))


def test_inverting_a_gaussian_gives_the_exact_linear_encoder_and_the_variance_mismatch():
    """E(x) = μ + √((s² + σ_max²)/s²)(x − μ) (O8) from the Heun inversion of the exact N(μ, s²) denoiser; the encoded
    variance is s² + σ_max² against σ_max² for sampling."""
    x = gaussian_data()
    sigmas = inversion.inversion_sigmas(80, SIGMA_MIN, SIGMA_MAX)
    x_T = inversion.invert(oracles.gaussian_denoiser(MU, S), x, sigmas)
    # x sits at σ_min, not 0: the exact encoder of x_{σ_min} ~ N(μ, s² + σ_min²) differs from the σ = 0 one by O(σ_min²).
    exact = inversion.gaussian_encoder(x, MU, np.sqrt(S ** 2 + SIGMA_MIN ** 2), SIGMA_MAX)
    np.testing.assert_allclose(np.asarray(x_T), np.asarray(exact), rtol=2e-3, atol=2e-3 * SIGMA_MAX)
    encoded, sampling = obj.latent_variance_mismatch(S, SIGMA_MAX)
    measured = float(jnp.var(x_T))
    print(f"latent variance: encoded {measured:.2f} (exact s² + σ_max² = {float(encoded):.2f}) vs sampling "
          f"σ_max² = {float(sampling):.2f}")
    assert measured == pytest.approx(float(encoded), rel=0.05)
    assert float(encoded) - float(sampling) == pytest.approx(S ** 2)


def test_the_optimal_linear_decoder_is_the_inverse_encoder_and_training_reaches_it():
    """A linear G(x_T) = a·x_T + b trained on L_rec (l2) from the inverted latents reaches a = s/√(s² + σ_max²),
    b = μ(1 − a) — the inverse of the encoder (tolerance 1% on a, 0.01 on b)."""
    x = gaussian_data()
    x_T = inversion.invert(oracles.gaussian_denoiser(MU, S), x, inversion.inversion_sigmas(80, SIGMA_MIN, SIGMA_MAX))
    from consistency.diffusion import distances

    def loss(p):
        return jnp.mean(obj.reconstruction_loss(p["a"] * x_T / SIGMA_MAX + p["b"], x, distances.l2))
    params, opt = {"a": jnp.zeros(()), "b": jnp.zeros(())}, optax.adam(0.05)
    state = opt.init(params)
    step = jax.jit(lambda p, s: (lambda g: (optax.apply_updates(p, opt.update(g, s)[0]), opt.update(g, s)[1]))(
        jax.grad(loss)(p)))
    for _ in range(1500):
        params, state = step(params, state)
    a = float(params["a"]) / SIGMA_MAX
    a_exact = S / np.sqrt(S ** 2 + SIGMA_MAX ** 2)
    assert a == pytest.approx(a_exact, rel=0.01)
    assert float(params["b"]) == pytest.approx(MU * (1 - a_exact), abs=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("oracle", ["gaussian", "empirical"])
def test_inversion_then_sampling_returns_the_data_to_solver_precision(oracle):
    """Round trip on the Gaussian and on the empirical-data oracle (points of the bank itself): the error falls with
    the grid like a second-order solver's and is below 2e-3 at 80 Heun steps."""
    if oracle == "gaussian":
        x, D = gaussian_data(256), oracles.gaussian_denoiser(MU, S)
    else:
        bank = jax.random.normal(jax.random.PRNGKey(1), (64, 4))
        x, D = bank[:32], oracles.empirical_denoiser(bank)
    rows = inversion.roundtrip_errors(D, x, [20, 40, 80], SIGMA_MIN, SIGMA_MAX)
    errors = [r["mean_abs_error"] for r in rows]
    assert errors[2] < 2e-3 and errors[0] > errors[1] > errors[2], rows
    assert "| 80 | 160 |" in inversion.roundtrip_table(rows)


def test_adaptive_weight_is_the_last_layer_gradient_ratio_computed_by_hand():
    """For a tiny net y = W₂ tanh(W₁x) + b₂: ∂L/∂W₂ = Σ_n (∂L/∂y_n) h_nᵀ, ∂L/∂b₂ = Σ_n ∂L/∂y_n; with L_rec = mean (y − t)²
    and L_gan = −mean c·y, λ = clip(‖∇_last L_rec‖/(‖∇_last L_gan‖ + ε), 0.01, 10)·w with the VQGAN-style ε = 1e-4 of
    the CTM code PaGoDA builds on (sony/ctm ``calculate_adaptive_weight``; docs/fidelity.md)."""
    rng = np.random.default_rng(0)
    params = {"hidden": {"kernel": rng.normal(size=(3, 5))}, "dense_out": {"kernel": rng.normal(size=(5, 2)),
                                                                          "bias": rng.normal(size=(2,))}}
    x, t, c = rng.normal(size=(7, 3)), rng.normal(size=(7, 2)), rng.normal(size=(2,))

    def net(p):
        return jnp.tanh(x @ p["hidden"]["kernel"]) @ p["dense_out"]["kernel"] + p["dense_out"]["bias"]
    rec, gan = (lambda p: jnp.mean((net(p) - t) ** 2)), (lambda p: -jnp.mean(net(p) @ c))
    h = np.tanh(x @ params["hidden"]["kernel"])
    y = h @ params["dense_out"]["kernel"] + params["dense_out"]["bias"]
    d_rec, d_gan = 2 * (y - t) / y.size, -np.broadcast_to(c, y.shape) / len(y)
    by_hand = [np.sqrt(np.sum((h.T @ d) ** 2) + np.sum(d.sum(0) ** 2)) for d in (d_rec, d_gan)]
    for w in (0.2, 1.0):
        got = obj.adaptive_adversarial_weight(obj.last_layer_grad(params, ("dense_out",), rec),
                                              obj.last_layer_grad(params, ("dense_out",), gan), w)
        assert float(got) == pytest.approx(np.clip(by_hand[0] / (by_hand[1] + 1e-4), 0.01, 10) * w, rel=1e-5)
    tiny = obj.adaptive_adversarial_weight({"k": jnp.ones(3) * 1e-9}, {"k": jnp.ones(3)}, 1.0)
    assert float(tiny) == pytest.approx(0.01)


def test_a_new_growth_block_starts_as_bilinear_upsampling():
    y = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
    block = GrowBlock(channels=8)
    params = block.init(jax.random.PRNGKey(1), y)["params"]
    out, h = block.apply({"params": params}, y)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(upsample_bilinear(y)))
    assert out.shape == (2, 16, 16, 1) and h.shape == (2, 16, 16, 8)


def test_sharded_inversion_resumes_and_refuses_other_settings(tmp_path):
    """Shards on disk are kept (an interrupted run continues; a finished one redoes nothing); other settings in the
    same directory are refused in one line; the loader refuses an unfinished inversion."""
    x = np.asarray(gaussian_data(10)).astype(np.float32)
    labels = np.zeros(10, np.int32)
    calls = []
    D = oracles.gaussian_denoiser(MU, S)
    kwargs = dict(num_steps=8, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, shard_size=4)
    meta = {"data": "toy", "split": "train", "resolution": 0, "teacher": "gaussian"}
    out = str(tmp_path / "inv")
    inversion.invert_split(lambda v, s, c=None: D(v, s), x, labels, out, meta, **kwargs,
                           progress=lambda kind, k, n: calls.append(k))
    assert calls == [0, 1, 2]
    reference = np.load(inversion.shard_path(out, "plain", 1))
    os.remove(inversion.shard_path(out, "plain", 1))                      # as if interrupted before shard 1
    meta_path = os.path.join(out, inversion.META)
    json.dump(dict(json.load(open(meta_path)), complete=False), open(meta_path, "w"))
    with pytest.raises(ConfigError, match=r"^config\.data\.latents: the inversion in .* is unfinished"):
        inversion.load_latents(out)
    calls.clear()
    inversion.invert_split(lambda v, s, c=None: D(v, s), x, labels, out, meta, **kwargs,
                           progress=lambda kind, k, n: calls.append(k))
    assert calls == [1]
    np.testing.assert_array_equal(np.load(inversion.shard_path(out, "plain", 1)), reference)
    loaded_meta, latents, mirrored = inversion.load_latents(out)
    assert latents.shape == (10, 1) and mirrored is None and loaded_meta["complete"]
    with pytest.raises(ConfigError, match=r"^invert: .* other settings \(num_steps\)"):
        inversion.invert_split(lambda v, s, c=None: D(v, s), x, labels, out, meta, **dict(kwargs, num_steps=9))


def digits_teacher(workdir):
    c = presets.digits(presets.new("edm"), "edm")
    c.model.update(dict(channels=8, channel_mult=(1,), num_res_blocks=1))
    c.training.update(dict(num_steps=2, batch_size=16, ckpt_every=2, sample_every=0, log_every=1))
    c.eval.update(dict(num_samples=16, nfes=(3,)))
    train.train_and_evaluate(c, workdir)
    return c


def pagoda_config(teacher, latents, stage, steps=2, prior="sigma_max"):
    c = presets.digits_distillation(presets.new("pagoda"), "pagoda", teacher_workdir=teacher)
    c.model.update(dict(channels=8, channel_mult=(1,), num_res_blocks=1))
    c.data.latents = latents
    c.data.resolution = 8 * 2 ** (stage - 1) if stage > 1 else 0
    c.pagoda.update(dict(stage=stage, features="input", distance="l2", grow_channels=8, prior=prior))
    c.discriminator.update(dict(name="mlp", channels=16, depth=1))
    c.training.update(dict(num_steps=steps, batch_size=16, ckpt_every=steps, sample_every=0, log_every=1))
    c.eval.update(dict(num_samples=16, nfes=(1,)))
    return c


@pytest.mark.slow
def test_invert_train_and_grow_end_to_end(tmp_path):
    """The digits pipeline at toy sizes: a teacher, its inversion (launch/invert.py), stage 1 at 8×8 trained on the
    (image, latent) pairs, then stage 2 at 16×16 warm-started from it: before any stage-2 step the grown generator's
    output is exactly the bilinear upsampling of the stage-1 generator's; a wrong stage is refused in one line."""
    teacher = str(tmp_path / "teacher")
    digits_teacher(teacher)
    latents = str(tmp_path / "inversion")
    inversion.run(inversion.teacher_setup(teacher, "", ""), latents, num_steps=2, shard_size=512,
                   roundtrip=(2,), roundtrip_num=8, log=lambda *_: None)
    assert json.load(open(os.path.join(latents, inversion.ROUNDTRIP)))["rows"][0]["num_steps"] == 2

    stage1 = pagoda_config(teacher, latents, 1, prior="latent")
    first = train.train_and_evaluate(stage1, str(tmp_path / "stage1"))
    assert {k: int(v) for k, v in first.updates.items()} == {"discriminator": 1, "generator": 1}
    _, latent_rows, _ = inversion.load_latents(latents)
    np.testing.assert_allclose(np.asarray(first.frozen["prior"]["std"]), latent_rows.astype(np.float64).std(0), rtol=1e-4, atol=1e-3)
    report = json.load(open(os.path.join(tmp_path, "stage1", "eval", "metrics_2.json")))
    assert report["nfe_1"]["finite_fraction"] == 1.0 and np.isfinite(report["train/generator/loss_rec"])

    stage2 = pagoda_config(teacher, latents, 2, prior="latent")
    stage2.training.init_from = str(tmp_path / "stage1")
    stage2.training.init_sets = ("generator",)
    dataset = train.build_dataset(stage2)
    assert dataset.batch(0)["x"].shape[1:] == (16, 16, 1) and dataset.batch(0)["latent"].shape[1:] == (8, 8, 1)
    method = methods.get_method(stage2, dataset)
    fresh = base.init_state(method, jax.random.PRNGKey(0), dataset.batch(0))
    grown = train.warm_start_from(fresh, str(tmp_path / "stage1"), ("generator",))
    method1 = methods.get_method(stage1, train.build_dataset(stage1))
    rng = jax.random.PRNGKey(7)
    old = method1.sample(first, rng, 4, nfe=1, options=method1.options)
    new = method.sample(grown, rng, 4, nfe=1, options=method.options)
    np.testing.assert_allclose(np.asarray(new), np.asarray(jnp.clip(upsample_bilinear(old), -1, 1)), atol=1e-6)
    state = train.train_and_evaluate(stage2, str(tmp_path / "stage2"))
    assert int(state.step) == 2 and set(state.params["generator"]) == {"base", "grow_1"}

    wrong = pagoda_config(teacher, latents, 3)
    wrong.data.resolution = 16
    with pytest.raises(ConfigError, match=r"^config\.pagoda\.stage: 3 turns \(8, 8, 1\) latents into \(32, 32, 1\)"):
        methods.get_method(wrong, train.build_dataset(wrong))


@pytest.mark.parametrize("field,value,match", [
    ("distance", "lpips", r"^config\.pagoda\.distance: 'lpips' is not one of"),
    ("stage", 0, r"^config\.pagoda\.stage: 0 is not"),
    ("features", "classifier", r"^config\.pagoda\.features: toys have no feature network"),
])
def test_bad_pagoda_fields_are_one_line_errors(field, value, match):
    c = presets.toy_distillation(presets.new("pagoda"), "pagoda", fit_steps=10)
    c.data.latents = "somewhere"
    c.pagoda.update(dict(features="input", distance="l2"))
    c.pagoda[field] = value
    with pytest.raises(ConfigError, match=match) as error:
        validate(c)
    assert "\n" not in str(error.value)


def test_missing_latents_are_refused_with_the_command_that_makes_them(tmp_path):
    c = presets.toy_distillation(presets.new("pagoda"), "pagoda", fit_steps=10)
    c.pagoda.update(dict(features="input", distance="l2"))
    with pytest.raises(ConfigError, match=r"^config\.data\.latents: '' but PaGoDA trains on .*launch/invert\.py"):
        validate(c)
    c.data.latents = str(tmp_path / "none")
    with pytest.raises(ConfigError, match=r"^config\.data\.latents: no inversion in .*launch/invert\.py"):
        train.build_dataset(c)


@pytest.mark.quality
def test_toy_pagoda_from_the_exact_teacher_covers_the_eight_modes(tmp_path):
    """Invert 4096 points of the 8-Gaussian mixture with its exact denoiser, then 1-step PaGoDA (configs/toy_pagoda.py
    at 1200 steps, 600 updates per network) covers every mode (measured: see the assertion message)."""
    latents = str(tmp_path / "inversion")
    inversion.run(inversion.teacher_setup("", "mixture", "toy:8gaussians", 4096), latents, shard_size=4096,
                   roundtrip=(40,), roundtrip_num=256, log=lambda *_: None)
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", "toy_pagoda.py"))
    cfg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cfg)
    c = cfg.get_config()
    c.data.update(dict(toy_size=4096, latents=latents))
    c.pagoda.init_fit_steps = 1000
    c.training.update(dict(num_steps=1200, ckpt_every=1200, sample_every=0, log_every=600))
    c.eval.num_samples = 2000
    train.train_and_evaluate(c, str(tmp_path / "run"))
    report = json.load(open(os.path.join(tmp_path, "run", "eval", "metrics_1200.json")))["nfe_1"]
    assert report["mode_coverage"] == 1.0 and report["swd"] < 0.1, report


# ----------------------------------------------------------------------------------------------------------------
# CFG (seed eq. 56–58): E(x, c, w), G(z, c, w), D(x, c, w)
# ----------------------------------------------------------------------------------------------------------------

def two_class_bank():
    """16 2-D points in two classes, far enough apart that guidance visibly moves the trajectories."""
    x = jax.random.normal(jax.random.PRNGKey(3), (16, 2)) * 0.3
    labels = jnp.arange(16) % 2
    return x + jnp.where(labels[:, None] == 0, -1.0, 1.0), labels


def test_guided_inversion_stores_one_latent_per_scale_each_the_inverse_of_the_guided_sampler(tmp_path):
    """With ``guidance_scales`` each row is inverted once per w with D_w = D_∅ + w(D_c − D_∅) of the exact
    class-conditional empirical denoiser (computed here by hand from its two banks): latents [n, K, d]; w = 1 is the
    plain conditional inversion; sampling back with the same guided teacher returns the data to solver precision,
    so G(·, c, w) is trained towards the w-guided sampler. The loader refuses a run whose scales differ."""
    bank, labels = two_class_bank()
    D = oracles.class_conditional_empirical_denoiser(bank, labels, null_label=2)
    x, y = np.asarray(bank[:8], np.float32), np.asarray(labels[:8], np.int32)
    meta = {"data": "toy", "split": "train", "resolution": 0, "teacher": "empirical"}
    kwargs = dict(num_steps=40, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, shard_size=8, conditional=True)
    out = str(tmp_path / "guided")
    stored = inversion.invert_split(D, x, y, out, meta, guidance_scales=(1.0, 3.0), null_label=2, **kwargs)
    assert stored["guidance_scales"] == [1.0, 3.0]
    _, latents, _ = inversion.load_latents(out)
    assert latents.shape == (8, 2, 2)
    sigmas = inversion.inversion_sigmas(40, SIGMA_MIN, SIGMA_MAX)
    cond = jnp.asarray(y)

    def guided(v, s, c):                       # D_∅ + w(D_c − D_∅) by hand, w = 3
        null = D(v, s, jnp.full_like(c, 2))
        return null + 3.0 * (D(v, s, c) - null)
    np.testing.assert_allclose(latents[:, 0], np.asarray(inversion.invert(D, jnp.asarray(x), sigmas, cond=cond)),
                               rtol=1e-4, atol=1e-3)
    by_hand = np.asarray(inversion.invert(guided, jnp.asarray(x), sigmas, cond=cond))
    np.testing.assert_allclose(latents[:, 1], by_hand, rtol=1e-4, atol=1e-3)
    assert np.abs(latents[:, 1] - latents[:, 0]).max() > 1.0          # guidance moved the latents
    back = np.asarray(inversion.reconstruct(guided, jnp.asarray(latents[:, 1]), sigmas, cond=cond))
    assert np.abs(back - x).mean() < 2e-3
    with pytest.raises(ConfigError, match=r"^config\.pagoda\.guidance_scales: \(1\.0, 2\.0\) but .* was inverted "
                                          r"with guidance scales \(1\.0, 3\.0\)"):
        inversion.attach_latents(None, out, (1.0, 2.0))     # the scales are checked before the data
    with pytest.raises(ConfigError, match=r"unconditional"):
        inversion.invert_split(lambda v, s, c=None: v, x, y, str(tmp_path / "x"), meta,
                               **dict(kwargs, conditional=False), guidance_scales=(2.0,))


def toy_cfg_config(latents, scales):
    c = presets.toy_distillation(presets.new("pagoda"), "pagoda", fit_steps=10)
    c.data.update(dict(latents=latents, conditional=True, toy_size=8))
    c.model.num_classes = 2
    c.pagoda.update(dict(features="input", distance="l2", guidance_scales=scales))
    return c


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet", "mlp"])
def test_the_guidance_embedding_starts_at_zero_so_a_copied_teacher_is_unchanged_at_every_w(name):
    """G(·, c, w) with the zero-initialised w embedding equals the network without it, for every w; once the embedding
    is non-zero the output depends on w. The same for the discriminator's (c, w) projection."""
    from consistency.nets import heads
    from consistency.nets.mlp import MLP
    from consistency.nets.unet import UNet
    if name == "unet":
        net, x = UNet(channels=8, channel_mult=(1,), num_res_blocks=1, num_classes=3, attn_resolutions=()), \
            jnp.ones((2, 8, 8, 1))
    else:
        net, x = MLP(hidden=16, depth=2, num_classes=3), jnp.ones((2, 2))
    c_noise, labels = jnp.array([0.1, -0.5]), jnp.array([0, 2])
    params = net.init(jax.random.PRNGKey(0), x, c_noise, labels, guidance=jnp.ones((2,)))["params"]
    plain = net.apply({"params": {k: v for k, v in params.items() if k != "guidance_embed"}}, x, c_noise, labels)
    for w in (1.0, 2.5):
        np.testing.assert_array_equal(net.apply({"params": params}, x, c_noise, labels, guidance=jnp.full((2,), w)),
                                      plain)
    moved = jax.tree.map(lambda p: p + 0.1, params)
    outs = [net.apply({"params": moved}, x, c_noise, labels, guidance=jnp.full((2,), w)) for w in (1.0, 2.5)]
    assert float(jnp.abs(outs[0] - outs[1]).max()) > 1e-3

    projection = heads.ClassProjection(num_classes=3)
    phi = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 8))
    head_params = projection.init(jax.random.PRNGKey(2), phi, labels, jnp.ones((2,)))["params"]
    np.testing.assert_allclose(projection.apply({"params": head_params}, phi, labels, jnp.full((2,), 3.0)),
                               projection.apply({"params": {"class_embed": head_params["class_embed"]}}, phi, labels),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="num_classes > 0"):
        heads.ClassProjection(num_classes=0).init(jax.random.PRNGKey(2), phi, labels, jnp.ones((2,)))


@pytest.mark.slow
def test_cfg_pagoda_inverts_per_scale_trains_on_c_and_w_and_samples_at_any_w(tmp_path):
    """Digits at toy sizes: a class-conditional teacher with label dropout, its inversion at w ∈ {1, 2}, stage 1 with
    ``pagoda.guidance_scales=(1, 2)``. Before training, G(z, c, w) is the teacher's one-step D(σ_max z, c) at every w;
    G and D carry their w embeddings; after training one generator samples at w = 1, 2 and 1.5 (between the grid
    points) with different outputs; mismatched scales are refused in one line."""
    teacher = str(tmp_path / "teacher")
    c = presets.digits(presets.new("edm"), "edm")
    c.model.update(dict(channels=8, channel_mult=(1,), num_res_blocks=1, num_classes=10))
    c.data.conditional = True
    c.training.update(dict(num_steps=2, batch_size=16, ckpt_every=2, sample_every=0, log_every=1, label_dropout=0.2))
    c.eval.update(dict(num_samples=16, nfes=(3,)))
    train.train_and_evaluate(c, teacher)
    latents = str(tmp_path / "inversion")
    inversion.run(inversion.teacher_setup(teacher, "", ""), latents, num_steps=2, shard_size=512, roundtrip=(2,),
                  roundtrip_num=8, guidance_scales=(1.0, 2.0), log=lambda *_: None)

    run = pagoda_config(teacher, latents, 1)
    run.model.num_classes = 10
    run.data.conditional = True
    run.discriminator.num_classes = 10
    run.pagoda.guidance_scales = (1.0, 2.0)
    dataset = train.build_dataset(run)
    assert dataset.batch(0)["latent"].shape[1:] == (2, 8, 8, 1)
    method = methods.get_method(run, dataset)
    fresh = base.init_state(method, jax.random.PRNGKey(0), dataset.batch(0))
    assert "guidance_embed" in fresh.params["generator"]["base"]
    assert any("guidance_embed" in jax.tree_util.keystr(path)
               for path, _ in jax.tree_util.tree_leaves_with_path(fresh.params["discriminator"]))
    labels, rng = jnp.arange(4) % 10, jax.random.PRNGKey(5)
    at = {w: np.asarray(method.sample(fresh, rng, 4, nfe=1, options=base.sampling_options(method, guidance=w),
                                      labels=labels)) for w in (1.0, 2.0)}
    np.testing.assert_array_equal(at[1.0], at[2.0])
    from consistency.methods.components import teachers
    teacher_params, teacher_apply = teachers.load_teacher(run, dataset)
    z = jax.random.normal(jax.random.split(rng)[0], (4, 8, 8, 1))
    one_step = teacher_apply(teacher_params, SIGMA_MAX * z, jnp.full((4,), SIGMA_MAX), labels)
    np.testing.assert_allclose(at[1.0], np.clip(np.asarray(one_step), -1, 1), atol=1e-5)

    state = train.train_and_evaluate(run, str(tmp_path / "run"))
    trained = state.params["generator"]           # the raw params: one Adam step has moved the w embedding
    assert float(jnp.abs(trained["base"]["guidance_embed"]["dense_1"]["kernel"]).max()) > 0
    after = {w: np.asarray(method.sample(state, rng, 4, nfe=1, options=base.sampling_options(method, guidance=w),
                                         labels=labels, params=trained))
             for w in (1.0, 1.5, 2.0)}
    assert all(np.all(np.isfinite(v)) for v in after.values())
    assert np.abs(after[1.0] - after[2.0]).max() > 0
    report = json.load(open(os.path.join(tmp_path, "run", "eval", "metrics_2.json")))
    assert report["nfe_1"]["finite_fraction"] == 1.0
    from consistency.run import reports
    rows = reports.guidance_sweep(run, method, state, dataset, (1.0, 2.0), num_samples=20)
    assert [r["w"] for r in rows] == [1.0, 2.0]
    assert all(0 <= r["class_accuracy"] <= 1 and np.isfinite(r["fd"]) for r in rows)
    assert reports.guidance_table(rows).count("\n") == 3
    from consistency import api                   # the CFG teacher's own trend (EDM's cfg_scale), same call
    t = api.load(teacher)
    teacher_rows = reports.guidance_sweep(t.config, t.method, t.state, t.dataset, (1.0, 2.0), num_samples=20)
    assert all(np.isfinite(r["fd"]) for r in teacher_rows) and teacher_rows[0]["fd"] != teacher_rows[1]["fd"]

    wrong = pagoda_config(teacher, latents, 1)
    wrong.pagoda.guidance_scales = (1.0, 3.0)
    wrong.model.num_classes, wrong.data.conditional, wrong.discriminator.num_classes = 10, True, 10
    with pytest.raises(ConfigError, match=r"^config\.pagoda\.guidance_scales: \(1\.0, 3\.0\) but"):
        train.build_dataset(wrong)
    unconditional = pagoda_config(teacher, latents, 1)
    unconditional.pagoda.guidance_scales = (1.0, 2.0)
    with pytest.raises(ConfigError, match=r"^config\.pagoda\.guidance_scales: CFG guides by class"):
        validate(unconditional)

