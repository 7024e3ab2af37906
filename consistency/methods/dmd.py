"""DMD — Distribution Matching Distillation (Yin et al. 2023, arXiv 2311.18828; docs/methods.md §10.1), and the
distribution-matching family builder that DMD2 (``consistency/methods/dmd2.py``) shares.

Trained sets, in step order (fake first, so the generator's loss sees the fake score just updated):

* 'fake' — D_fake, trained online on the current generator's samples: λ(σ)‖D_fake(sg x + σn, σ) − sg x‖², x = G(z),
  σ = grid[i], i ~ U{0 … T−1} (seed eq. 66 with the sg of docs/methods.md §17 item 15; DMD2 `compute_loss_fake`).
  DMD2 adds its diffusion-GAN discriminator here (the head sits on the fake U-Net's encoder and both train together).
* 'generator' — G_θ(z) = D_θ(σ_g z, σ_g): the surrogate ½‖x − sg(x − g)‖² whose x-gradient is the distribution-
  matching gradient g = (D_fake − D_real)/sg(mean|x − D_real|) at x_t = x + σn, σ from index U{20 … 980}
  (seed eq. 63 in VE form; docs/methods.md §10.1), plus DMD's regression λ_reg·d(G(z), y) on stored teacher ODE pairs
  (DMD §3.3; ``config.dmd.pairs``, made by ``launch/make_ode_pairs.py``) and/or DMD2's GAN term.

Update ratio: ``<block>.ttur`` fake updates per generator update (DMD 1:1, DMD2 5:1). Frozen: {'teacher', 'pairs',
'features' (for the 'feature' regression distance)}. Sampling: one step from the generator's EMA (K steps for a
DMD2 backward-simulation generator).
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from consistency.core import schema
from consistency.core import fileio
from consistency.core.errors import ConfigError
from consistency.diffusion import distances
from consistency.methods import base
from consistency.methods.components import common, distillation, teachers
from consistency.objectives import dmd as dmd_objective

NAME = "dmd"
REGRESSION_DISTANCES = ("l2", "pseudo_huber", "feature")


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------

def validate_family(config, name: str) -> int:
    """Rules across the fields DMD and DMD2 share; returns the generator's number of levels."""
    b, f = config[name], config.diffusion
    distillation.validate_common(config, name)
    levels = 1
    if "generator_timesteps" in b:
        levels = distillation.validate_timesteps(config, name, "generator_timesteps")
        if levels > 1:
            distillation.require(b.generator_sigma in (0, f.sigma_max), f"{name}.generator_sigma",
                                 f"{b.generator_sigma} conflicts with generator_timesteps, which start at σ_max",
                                 "set it to 0 (a multistep generator starts at diffusion.sigma_max)")
    distillation.validate_eval_nfes(config, name, levels)
    return levels


# config.dmd: DMD, Yin et al. 2023 (docs/methods.md §10.1).
CONFIG_BLOCK = "dmd"
CONFIG_FIELDS = {
    **distillation.init_fields('G and D_fake start from the teacher (DMD §3.1)'),
    "generator_sigma": schema.Field(0.0, 'σ_g of G(z) = D_θ(σ_g z, σ_g); 0 → diffusion.sigma_max (DMD2 EDM code)',
                                    lo=0, hi="diffusion.sigma_max", fix="use 0 (→ diffusion.sigma_max) or a level in (0, sigma_max]"),
    "ttur": distillation.ttur_field(1, 'fake updates per generator update (DMD: 1:1 [unverified])'),
    **distillation.grid_fields('teacher grid T (DMD2 EDM code: 1000-point Karras grid, index 0 = σ_min)',
                               'DM-gradient t ~ U[0.02 T, 0.98 T] (DMD §3.2; docs/methods.md §1.4)',
                               'upper end of that index range, as a fraction of T'),
    "normalise": schema.Field(True, "g = (D_fake − D_real)/mean|x − D_real| (DMD §3.2 weight); False → s_fake − s_real"),
    "reduce": schema.Field("mean", "surrogate ½‖x − sg(x − g)‖²: 'mean' over B·d (DMD2 code) | 'sum' over pixels",
                           choices=("mean", "sum")),
    "fake_weighting": schema.Field("edm", "fake DSM λ: 'edm' 1/σ² + 1/σ_d² (DMD2 code) | 'uniform' (seed eq. 66)",
                                   choices=("edm", "uniform")),
    "regression_weight": schema.Field(0.25, 'λ_reg (DMD [unverified], docs/methods.md §10.1); 0 → no regression term',
                                      lo=0, fix="use DMD's 0.25, or 0 (no regression)"),
    "regression_distance": schema.Field("l2", "'l2' | 'pseudo_huber' | 'feature' (LPIPS-like in-project net; DMD uses "
                                              "LPIPS)", choices=REGRESSION_DISTANCES),
    "huber_c": schema.Field(-1.0, 'pseudo-Huber c; < 0 → 0.00054·√d (iCT)',
                            fix="use a pseudo-Huber c > 0, or < 0 for 0.00054·√d"),
    "pairs": schema.Field("", '.npz of teacher ODE pairs (z, y): launch/make_ode_pairs.py (DMD §3.3)',
                          fix="use '' or an .npz from launch/make_ode_pairs.py"),
    "fake_score": schema.Field("learned", "D_fake in the DM gradient: 'learned' (DMD) | 'empirical' — a control, not "
                                          "DMD: the exact denoiser of the empirical distribution of fake_pool fresh "
                                          "samples of the current generator (seed eq. 6 on sg G(z′); toys)",
                               choices=("learned", "empirical")),
    "fake_pool": schema.Field(4096, "fake_score='empirical': generator samples per step", lo=2,
                              fix="use a pool of at least 2 samples (e.g. 4096)"),
}
TEACHER_USE = "required"


def validate_config(config) -> None:
    """``config.dmd`` (one ConfigError line naming the field)."""
    schema.check_block(config, CONFIG_BLOCK, CONFIG_FIELDS)   # every field: type, choices, bounds
    b = config.dmd
    validate_family(config, NAME)
    if b.regression_weight > 0:
        distillation.require(bool(b.pairs), "dmd.pairs", f"empty, but dmd.regression_weight = {b.regression_weight} "
                             "needs teacher ODE pairs", "make them with `python launch/make_ode_pairs.py "
                             "--teacher=WORKDIR --num=N --out=PATH.npz` and set dmd.pairs=PATH.npz, or set "
                             "dmd.regression_weight=0")
    # The file itself is read (and a missing one refused in one line) by make(): a config names its pairs before
    # launch/make_ode_pairs.py has written them.
    if b.fake_score == "empirical":
        distillation.require(int(config.model.num_classes) == 0, "dmd.fake_score", "'empirical' draws an unlabelled "
                             "pool of generator samples, but the model is class-conditional", "use 'learned'")


# ----------------------------------------------------------------------------------------------------------------
# Pairs
# ----------------------------------------------------------------------------------------------------------------

def load_pairs(path: str, example_shape, sigma_g: float, oracle: str = "") -> dict:
    """{'z', 'y'} float32 arrays of ``launch/make_ode_pairs.py`` (checked against the data shape and σ_g, and, for an
    oracle teacher (``oracle``: :func:`teachers.oracle_name`), against the oracle the file records)."""
    if not fileio.exists(path):
        raise ConfigError(f"config.dmd.pairs: {path!r} does not exist; make it with `python launch/make_ode_pairs.py "
                          "--teacher=WORKDIR (or --oracle=mixture --data=toy:8gaussians) --num=4096 --out=PATH` "
                          "(see configs/toy_dmd.py)")
    data = fileio.load_npz(path)
    z, y = np.asarray(data["z"], np.float32), np.asarray(data["y"], np.float32)
    sigma_max = float(data["sigma_max"]) if "sigma_max" in data else sigma_g
    if z.shape != y.shape or tuple(z.shape[1:]) != tuple(example_shape):
        raise ConfigError(f"config.dmd.pairs: {path!r} holds pairs of shape {z.shape[1:]}, the data is "
                          f"{tuple(example_shape)}; regenerate them with launch/make_ode_pairs.py for this data")
    if abs(sigma_max - sigma_g) > 1e-6 * max(1.0, sigma_g):
        raise ConfigError(f"config.dmd.pairs: {path!r} starts its ODE at σ = {sigma_max}, the generator at "
                          f"σ_g = {sigma_g}; regenerate the pairs or set dmd.generator_sigma={sigma_max}")
    made_by = str(data["teacher"]) if "teacher" in data else ""
    if oracle and made_by and made_by != oracle:
        raise ConfigError(f"config.dmd.pairs: {path!r} holds the ODE ends of teacher {made_by!r}, this run distils "
                          f"{oracle!r}; regenerate them with launch/make_ode_pairs.py or point dmd.pairs elsewhere")
    return {"z": z, "y": y}


def regression_distance(config, block, example_shape):
    """(distance(frozen, a, b) -> [B], feature params or None) for ``block.regression_distance``."""
    name = block.regression_distance
    if name == "feature":
        from consistency.objectives.feature_distance import make_feature_distance
        distance, params = make_feature_distance(config, example_shape)
        return (lambda frozen, a, b: distance(frozen["features"], a, b)), params
    if name == "pseudo_huber":
        c = None if block.huber_c < 0 else float(block.huber_c)
        return (lambda frozen, a, b: distances.pseudo_huber(a, b, c)), None
    return (lambda frozen, a, b: distances.l2(a, b)), None


# ----------------------------------------------------------------------------------------------------------------
# The family builder
# ----------------------------------------------------------------------------------------------------------------

def build(config, dataset, name: str) -> base.Method:
    """DMD (``name='dmd'``) or DMD2 (``'dmd2'``) from ``config.<name>`` (module doc)."""
    b, f = config[name], config.diffusion
    nets = distillation.build_networks(config, dataset)
    shape = nets.example_shape
    sigma_g = float(b.generator_sigma) or float(f.sigma_max)
    timesteps = tuple(b.get("generator_timesteps", ()))
    sigmas = distillation.timestep_sigmas(config, b, timesteps) if len(timesteps) > 1 else [sigma_g]
    num_levels = len(sigmas)
    total = int(b.num_train_timesteps)

    use_regression = name == "dmd" and float(b.regression_weight) > 0
    empirical_pool = int(b.fake_pool) if b.get("fake_score", "learned") == "empirical" else 0
    oracle = teachers.oracle_name(config) if config.teacher.oracle else ""
    pairs = load_pairs(b.pairs, shape, sigma_g, oracle) if use_regression else None
    distance, feature_params = regression_distance(config, b, shape) if use_regression else (None, None)

    use_gan = name == "dmd2" and (float(b.gan_generator_weight) > 0 or float(b.gan_discriminator_weight) > 0)
    features = distillation.encoder_features(nets)
    head = distillation.make_discriminator_head(config, distillation.feature_shapes_of(nets)) if use_gan else None

    def init(rng, batch):
        k_nets, k_head = jax.random.split(rng)
        generator, fake = distillation.init_generator_and_fake(config, name, nets, k_nets, batch)
        fake_set = {"denoiser": fake}
        if use_gan:
            x = jnp.asarray(batch["x"][:1])
            feats = features(fake, x, jnp.full((1,), f.sigma_max), None)
            fake_set["head"] = head.init(k_head, feats, None)["params"]
        frozen = {"teacher": nets.teacher_params}
        if pairs is not None:
            frozen["pairs"] = {k: jnp.asarray(v) for k, v in pairs.items()}
        if feature_params is not None:
            frozen["features"] = feature_params
        return {"generator": generator, "fake": fake_set}, frozen

    def generator_input(params, keys, batch_size, labels):
        """(x_in, σ_in [B]) the generator maps to a sample: σ_g z (one step) or the output of k ~ U{0 … K−1} frozen
        backward-simulation steps (DMD2 paper; :func:`consistency.objectives.dmd.backward_simulation`)."""
        if num_levels == 1:
            z = distillation.normal_like(keys, 1, shape)
            return sigma_g * z, jnp.full((batch_size,), sigma_g)
        rng = keys[0]  # DMD2 draws k once per batch; the batch's first example key seeds the chain
        k = jax.random.randint(jax.random.fold_in(rng, 21), (), 0, num_levels)
        frozen_g = dmd_objective.with_frozen_parameters(lambda p, x, s: nets.denoiser(p, x, s, labels), params)
        return dmd_objective.backward_simulation(frozen_g, jax.random.fold_in(rng, 22), (batch_size,) + shape,
                                                 jnp.asarray(sigmas), k)

    def generated(params, keys, batch_size, labels):
        x_in, s_in = generator_input(params, keys, batch_size, labels)
        return nets.denoiser(params, x_in, s_in, labels)

    def discriminator(params, labels):
        def logits(x_noisy, sigma):
            return head.apply({"params": params["head"]}, features(params["denoiser"], x_noisy, sigma, labels), labels)
        return logits

    def fake_loss(params, state, batch, rng):
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        batch_size = batch["x"].shape[0]
        x = jax.lax.stop_gradient(generated(state.params["generator"], keys, batch_size, labels))
        sigma = distillation.grid_sigmas(config, b, keys, 2, 0, total - 1)    # DMD2 `compute_loss_fake`: U[0, T)
        noise = distillation.normal_like(keys, 3, shape)
        fake = distillation.denoiser_fn(nets, params["denoiser"], labels)
        loss_fake = jnp.mean(dmd_objective.fake_score_loss(fake, x, noise, sigma, b.fake_weighting, f.sigma_data,
                                                           "mean"))            # docs/methods.md §10.2 fake-score loss
        metrics = {"loss_fake": loss_fake}
        loss = loss_fake
        if use_gan:  # DMD2 guidance turn: softplus(D(fake)) + softplus(−D(real)), both noised (docs/methods.md §10.2 GAN)
            high = int(b.gan_max_timestep) - 1
            sigma_real = distillation.grid_sigmas(config, b, keys, 4, 0, high)
            sigma_fake = distillation.grid_sigmas(config, b, keys, 5, 0, high)
            loss_gan = jnp.mean(dmd_objective.diffusion_gan_discriminator_loss(
                discriminator(params, labels), batch["x"], x, distillation.normal_like(keys, 6, shape),
                distillation.normal_like(keys, 7, shape), sigma_real, sigma_fake))
            loss = loss + float(b.gan_discriminator_weight) * loss_gan
            metrics["loss_gan"] = loss_gan
        return loss, metrics

    def generator_loss(params, state, batch, rng):
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        batch_size = batch["x"].shape[0]
        x = generated(params, keys, batch_size, labels)                        # x = G_θ(z), with gradient
        sigma = distillation.distribution_matching_sigmas(config, b, keys, 2)  # docs/methods.md §1.4: U[20, 980]
        noise = distillation.normal_like(keys, 3, shape)
        real = distillation.teacher_fn(nets, state, labels)
        fake = distillation.denoiser_fn(nets, jax.lax.stop_gradient(state.params["fake"]["denoiser"]), labels)
        if empirical_pool:   # the control of docs/science.md (n): D_fake without the fake network's error
            z_pool = jax.random.normal(jax.random.fold_in(rng, 31), (empirical_pool,) + tuple(shape))
            pool = jax.lax.stop_gradient(distillation.generate(nets, jax.lax.stop_gradient(params), z_pool, sigma_g))
            fake = dmd_objective.empirical_denoiser(pool)
        loss_dm, aux = dmd_objective.distribution_matching_loss(x, noise, sigma, real, fake, bool(b.normalise),
                                                                b.reduce)      # seed eq. 63; docs/methods.md §10.1
        loss_dm = jnp.mean(loss_dm)
        loss = loss_dm
        metrics = {"loss_dm": loss_dm, "normaliser": jnp.mean(aux["normaliser"]),
                   "dm_gradient_abs": jnp.mean(jnp.abs(aux["gradient"]))}
        if use_regression:  # DMD §3.3: λ_reg·d(G(z), y) on stored teacher ODE pairs, example i → pair i mod P
            p = state.frozen["pairs"]
            index = batch["index"] % p["z"].shape[0]
            z, y = p["z"][index], p["y"][index]
            y_hat = distillation.generate(nets, params, z, sigma_g, labels)
            loss_reg = jnp.mean(dmd_objective.regression_loss(y_hat, y, lambda a, c: distance(state.frozen, a, c)))
            loss = loss + float(b.regression_weight) * loss_reg
            metrics["loss_reg"] = loss_reg
        if use_gan and float(b.gan_generator_weight) > 0:  # DMD2: softplus(−D(G(z) + σn)), D's params frozen
            frozen_d = dmd_objective.with_frozen_parameters(lambda p, xx, s: discriminator(p, labels)(xx, s),
                                                            state.params["fake"])
            sigma_gan = distillation.grid_sigmas(config, b, keys, 4, 0, int(b.gan_max_timestep) - 1)
            loss_gan = jnp.mean(dmd_objective.diffusion_gan_generator_loss(
                frozen_d, x, distillation.normal_like(keys, 6, shape), sigma_gan))
            loss = loss + float(b.gan_generator_weight) * loss_gan
            metrics["loss_gan"] = loss_gan
        return loss, jax.lax.stop_gradient(metrics)

    every = int(b.ttur)
    fake_set = common.trained_set(config, "fake", fake_loss)
    if b.get("generator_first", False):
        # DMD2's order (tianweiy/DMD2 `main/edm/train_edm.py`, train_one_step): at steps ≡ 0 mod ttur the generator
        # updates first, then the fake score + GAN head, which update at every step.
        trained = (common.trained_set(config, "generator", generator_loss, every=every, phase=0, sampled=True),
                   fake_set)
    else:
        trained = (fake_set, common.trained_set(config, "generator", generator_loss, every=every,
                                                phase=distillation.ttur_phase(every), sampled=True))
    return base.Method(name=name, init=init, trained=trained, sample=distillation.make_sample(nets, sigmas),
                       sample_params="generator", sampling_nfe=num_levels,
                       default_nfes=distillation.default_nfes(num_levels))


def make(config, dataset) -> base.Method:
    validate_config(config)
    return build(config, dataset, NAME)
