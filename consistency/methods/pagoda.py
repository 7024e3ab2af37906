"""PaGoDA — one-step generator from teacher inversion, reconstruction + adversarial loss, progressive growing
(Kim et al. 2024, arXiv 2405.14822, ``sony/pagoda``; seed eq. 55–58; docs/methods.md §9; objectives in
``consistency/objectives/pagoda.py``).

Pipeline (README "PaGoDA"): train an EDM teacher at a low resolution R; invert its training split once,
``python launch/invert.py --teacher=W`` (``consistency/tools/inversion.py``: Heun 40 steps, data → noise, sharded and
resumable); train stage 1 here at R with ``data.latents`` pointing at the inversion; then each growing stage s = 2, 3
doubles the output with ``pagoda.stage = s``, ``data.resolution = 2^{s−1} R`` and ``training.init_from`` = the
previous stage's workdir (``training.init_sets = ('generator',)``: the discriminator of a new resolution starts
fresh). The encoder stays the teacher-resolution inversion of the same (downsampled) real image throughout.

Trained sets, alternating 1:1 as in the official code (``pagoda.alternate``: D at even loop steps, G at odd ones):

* 'discriminator' — ``config.discriminator`` heads on frozen features (``pagoda.features``: the in-project
  classifier, the LPIPS / EfficientNet stand-in; 'teacher' encoder maps; 'input' for 2-D toys), inputs resized to the
  feature net's resolution (PaGoDA resizes to 224) and DiffAugmented (``pagoda.augment``); hinge on real x vs
  sg G(σ_max ε), optional R1. One implementation with ADD and CTM (:func:`consistency.methods.discriminator.projected_discriminator`).
* 'generator' (sampled; EMA ``training.ema_decay``) — params {'base': the teacher's network at R, 'grow_k': the
  ×2 blocks of ``consistency/nets/growing.py``}. G(x_T) = GrowBlocks(D_base(x_T, σ_max)), i.e. the teacher's EDM
  preconditioning applies c_in(σ_max) to the latent (G_θ(c_in(σ_max)·E(x)) of docs/methods.md §9). Loss
  ``reconstruction_weight``·d(G(E(x)), x) + λ_adv·(−D(G(σ_max ε))), λ_adv adaptive (``pagoda.adaptive``, last
  layer = the newest block's output conv) or fixed ``discriminator_weight``.

Frozen: {'teacher' (for 'teacher' features), 'features' (classifier params), 'prior' (``pagoda.prior='latent'``)}.
Sampling: one step, x = G(σ_max z), z ~ N(0, I) at the teacher's resolution — or, with ``pagoda.prior='latent'``,
G(m + s⊙z) with the per-coordinate mean and std of the inverted latents, which a learned teacher leaves far from
σ_max (``consistency/tools/inversion.py``, "The latent prior"); the GAN's fake images use the same prior.

CFG (seed eq. 56–58; ``pagoda.guidance_scales`` = w_1 … w_K). The inversion is run once per w with the guided
teacher D_w = D_∅ + w(D_c − D_∅) (``launch/invert.py --guidance_scales``), so every row carries K latents
E(x, c, w_k). Each example draws k ~ U{1 … K} — p(w | x, c) = p(w), uniform on the grid, the factorisation of
eq. 57 with w independent of the image — and G, D are conditioned on (c, w_k):
L_rec = d(G(E(x, c, w), c, w), x) (eq. 58) and the hinge on D(x, c, w) vs D(G(σ_max ε, c, w), c, w). The scale
enters G through a zero-initialised embedding added to the noise-level embedding (``consistency/nets/embeddings.py``
``guidance_embedding``), so G starts as the teacher at every w, and D's class projection E[c] gains a
zero-initialised e(w). G(·, c, w) is trained to undo the w-guided teacher's inversion, i.e. to be the w-guided
teacher's one-step sampler; one trained generator samples at any w (``pagoda.sample_guidance``, or
``sample(..., guidance=w)``).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from consistency.core import schema
from consistency.data.latents import latent_prior
from consistency.diffusion import distances
from consistency.methods import base
from consistency.methods.components import discriminator
from consistency.methods.components import common, distillation
from consistency.nets.growing import GrowBlock, block_name
from consistency.objectives import add as add_objective
from consistency.objectives import dmd as dmd_objective
from consistency.objectives import pagoda as obj

NAME = "pagoda"
DISTANCES = ("l2", "pseudo_huber", "feature")
PRIORS = ("sigma_max", "latent")
LAST_LAYERS = ("conv_out", "dense_out")


# config.pagoda: PaGoDA, Kim et al. 2024 (docs/methods.md §9). Defaults: the official 64→64 stage.
CONFIG_BLOCK = "pagoda"
CONFIG_FIELDS = {
    **distillation.init_fields("the base generator starts as a copy of the teacher (PaGoDA) | 'scratch'"),
    "stage": schema.Field(1, '1: teacher resolution R; s: output 2^(s−1)·R through s − 1 growth blocks',
                          lo=1, fix="use 1 (teacher resolution), 2 (2×) or 3 (4×)"),
    "grow_channels": schema.Field(64, 'width of each growth block (consistency/nets/growing.py)', lo=4),
    "grow_res_blocks": schema.Field(1, 'residual blocks per growth block', lo=0),
    "distance": schema.Field("feature", "L_rec d: 'feature' (in-project classifier; PaGoDA LPIPS / cnn_vit) | 'l2' | "
                                        "'pseudo_huber'", choices=DISTANCES),
    "huber_c": schema.Field(-1.0, 'pseudo-Huber c; < 0 → 0.00054·√d (iCT)',
                            fix="use a pseudo-Huber c > 0, or < 0 for 0.00054·√d"),
    "reconstruction_weight": schema.Field(1.0, "weight of L_rec, the reconstruction of x from its inverted latent (PaGoDA: 1)",
                                          lo=0, lo_open=True),
    "discriminator_weight": schema.Field(0.2, 'GAN weight (PaGoDA 64→64: 0.2 adaptive; growing stages: 1)',
                                         lo=0, fix="use PaGoDA's 0.2 (stage 1, adaptive) or 1 (growing stages); 0 trains L_rec alone"),
    "adaptive": schema.Field(True, 'λ_adv = clip(‖∇_last L_rec‖/‖∇_last L_GAN‖, 0.01, 10)·discriminator_weight'),
    "prior": schema.Field("sigma_max", "generator input at sampling (and for the GAN's fakes): 'sigma_max' σ_max·ε "
                                       "(PaGoDA) | 'latent' the per-coordinate Gaussian of the inverted latents "
                                       "(consistency/tools/inversion.py)", choices=PRIORS),
    "alternate": schema.Field(True, 'D and G alternate 1:1, one set per loop step (official step % 2); False → both'),
    "r1_weight": schema.Field(0.0, 'γ·R1 on real inputs (not in PaGoDA)', lo=0, fix="use 0 (PaGoDA) or e.g. 1e-5"),
    "features": schema.Field("classifier", "frozen discriminator features, as add.features: 'classifier' | 'teacher' | "
                                           "'input'", choices=discriminator.FEATURES),
    "feature_sigma": schema.Field(0.002, "'teacher' features: the σ the teacher encoder reads images at",
                                  lo=0, hi="diffusion.sigma_max", lo_open=True),
    "augment": schema.Field("", 'DiffAugment policy of the discriminator inputs, as add.augment',
                            fix="use a DiffAugment policy such as 'translation,cutout', or '' for none"),
    "guidance_scales": schema.Field((), "CFG (seed eq. 56–58): the w grid the latents were inverted with "
                                        "(launch/invert.py --guidance_scales); G and D are conditioned on (c, w), w ~ "
                                        "uniform over the grid", fix="use () or scales w >= 0, e.g. (1, 2, 3)"),
    "sample_guidance": schema.Field(0.0, 'w that sampling/eval uses; 0 → the first scale (or no guidance)',
                                    lo=0, fix="use 0 (the first guidance scale) or a w > 0"),
}
TEACHER_USE = "required"
GROWS_RESOLUTION = True      # stage s > 1 outputs 2^(s−1)·R from a teacher at R (teachers.check_teacher_data)
DATA_EXTRAS = ("latents",)   # batches carry 'latent' = E(x) from data.latents (launch/invert.py)


def validate_config(config) -> None:
    """``config.pagoda`` (one ConfigError line naming the field)."""
    schema.check_block(config, CONFIG_BLOCK, CONFIG_FIELDS)   # every field: type, choices, bounds
    p = config.pagoda
    distillation.validate_common(config, NAME)
    discriminator.validate_augment(config, "pagoda.augment")
    distillation.check_head_block(config)
    toy = str(config.data.name).startswith("toy:")
    invert = (f"python launch/invert.py --oracle={config.teacher.oracle or 'mixture'} --data={config.data.name} "
              "--out=DIR" if toy else "python launch/invert.py --teacher=WORKDIR --out=DIR")
    distillation.require(bool(config.data.latents), "data.latents", "'' but PaGoDA trains on (example, inverted "
                         "latent) pairs", f"make them with {invert} and set data.latents=DIR")
    distillation.require(not toy or p.stage == 1, "pagoda.stage", f"{p.stage}, but 2-D points have no resolution to "
                         "grow", "use 1 for toys")
    distillation.require(not toy or (p.features == "input" and p.distance != "feature"), "pagoda.features",
                         "toys have no feature network", "use features='input' and distance 'l2' or 'pseudo_huber'")
    distillation.require(p.features != "teacher" or p.stage == 1, "pagoda.features", "'teacher' encoder maps exist "
                         "at the teacher's resolution only", "use 'classifier' for growing stages")
    distillation.require(p.features != "teacher" or bool(config.teacher.workdir), "pagoda.features", "'teacher' "
                         "needs a trained teacher network", "use 'input' for toys or set teacher.workdir")
    distillation.require(p.stage == 1 or bool(config.teacher.workdir), "pagoda.stage", f"{p.stage} grows a "
                         "teacher network, but the teacher is an oracle", "use stage 1 with oracle teachers")
    distillation.validate_eval_nfes(config, NAME, 1)
    scales = tuple(p.guidance_scales)
    if scales:
        for w in scales:
            distillation.number(w, "pagoda.guidance_scales", 0, fix="use scales w >= 0, e.g. (1, 2, 3)")
        distillation.require(len(set(scales)) == len(scales), "pagoda.guidance_scales", f"{scales} repeats a scale",
                             "list each w once")
        distillation.require(int(config.model.num_classes) > 0 and bool(config.data.conditional),
                             "pagoda.guidance_scales", "CFG guides by class but the run is unconditional",
                             "set model.num_classes, data.conditional=True and a conditional teacher, or ()")
        distillation.require(int(config.discriminator.num_classes) > 0, "discriminator.num_classes",
                             "0, but PaGoDA's CFG conditions D on (c, w) through its class projection",
                             "set it to model.num_classes")
    distillation.require(float(p.sample_guidance) == 0 or bool(scales), "pagoda.sample_guidance",
                         f"{p.sample_guidance} but the generator is not conditioned on w", "set pagoda.guidance_scales")


def _distance(config, shape):
    """(distance(frozen, a, b) -> [B], feature params or None) for ``pagoda.distance``."""
    p = config.pagoda
    if p.distance == "feature":
        from consistency.objectives.feature_distance import make_feature_distance
        fn, params = make_feature_distance(config, shape, field="pagoda.distance", resize=True)
        return (lambda frozen, a, b: fn(frozen["features"], a, b)), params
    if p.distance == "pseudo_huber":
        c = None if p.huber_c < 0 else float(p.huber_c)
        return (lambda frozen, a, b: distances.pseudo_huber(a, b, c)), None
    return (lambda frozen, a, b: distances.l2(a, b)), None


def latent_shape(config, dataset) -> tuple:
    """Per-example shape of the inverted latents (the teacher's resolution), checked against ``pagoda.stage``."""
    from consistency.core.errors import ConfigError
    if "latent" not in dataset.extras:
        raise ConfigError("config.data.latents: the dataset serves no latents; set data.latents to an inversion "
                          "directory (launch/invert.py)")
    scales = tuple(config.pagoda.guidance_scales)
    stored = dataset.extras["latent"][0]
    if scales and (stored.ndim < 3 or stored.shape[1] != len(scales)):
        raise ConfigError(f"config.pagoda.guidance_scales: {len(scales)} scales but the latents have shape "
                          f"{stored.shape[1:]} per row; invert with launch/invert.py --guidance_scales")
    shape = tuple(stored.shape[2:] if scales else stored.shape[1:])
    factor = 2 ** (int(config.pagoda.stage) - 1)
    data_shape = tuple(dataset.example_shape)
    expected = shape if len(shape) != 3 else (shape[0] * factor, shape[1] * factor, shape[2])
    if expected != data_shape:
        raise ConfigError(f"config.pagoda.stage: {config.pagoda.stage} turns {shape} latents into {expected} images, "
                          f"but the data is {data_shape}; set data.resolution={expected[0] if len(shape) == 3 else 0}"
                          " or the stage that matches")
    return shape


def make(config, dataset) -> base.Method:
    validate_config(config)
    p, f = config.pagoda, config.diffusion
    data_shape = tuple(dataset.example_shape)
    teacher_shape = latent_shape(config, dataset)
    low = dataclasses.replace(dataset, example_shape=teacher_shape)     # the teacher's view of the data
    nets = distillation.build_networks(config, low)
    blocks = [GrowBlock(channels=int(p.grow_channels), num_res_blocks=int(p.grow_res_blocks),
                        max_groups=int(config.model.num_groups)) for _ in range(int(p.stage) - 1)]
    sigma_max = float(f.sigma_max)
    disc = discriminator.projected_discriminator(config, dataclasses.replace(nets, example_shape=data_shape), p.features,
                                       float(p.feature_sigma), p.augment)
    distance, distance_params = _distance(config, data_shape)
    scales = tuple(float(w) for w in p.guidance_scales)
    sample_w = (float(p.sample_guidance) or scales[0]) if scales else None
    latents = dataset.extras["latent"][0]
    prior = latent_prior(latents[:, 0] if scales else latents) if p.prior == "latent" else None
    feature_params = disc.feature_params if disc.feature_params is not None else distance_params
    data_range = getattr(dataset, "data_range", None) if config.sampling.clip else None
    if data_range is not None and not all(abs(v) < float("inf") for v in data_range):
        data_range = None

    def generator(params, x_T, labels=None, guidance=None):
        """G(x_T, c, w) = GrowBlocks(D_base(x_T, σ_max, c, w)) (module doc); ``guidance`` w [B] with CFG."""
        y = nets.denoiser(params["base"], x_T, jnp.full(x_T.shape[:1], sigma_max, x_T.dtype), labels,
                          guidance=guidance)
        h = None
        for k, block in enumerate(blocks, start=1):
            y, h = block.apply({"params": params[block_name(k)]}, y, h)
        return y

    def last_layer_path(params) -> tuple:
        if blocks:
            return (block_name(len(blocks)), "conv_out")
        return ("base", next(n for n in LAST_LAYERS if n in params["base"]))

    def init(rng, batch):
        k_base, k_head, *k_blocks = jax.random.split(rng, 2 + len(blocks))
        base_batch = batch if not blocks else {"x": jnp.zeros((1,) + teacher_shape, jnp.float32)}
        params = {"base": distillation.init_generator_and_fake(config, NAME, nets, k_base, base_batch,
                                                               with_fake=False)[0]}
        if scales:   # the zero-initialised w embedding: G(·, c, w) = the teacher-initialised G(·, c) at every w
            x = jnp.zeros((1,) + teacher_shape, jnp.float32)
            full = nets.net.init(k_base, x, jnp.zeros((1,)), jnp.zeros((1,), jnp.int32),
                                 guidance=jnp.ones((1,)))["params"]
            params["base"] = dict(params["base"], guidance_embed=full["guidance_embed"])
        y, h = jnp.zeros((1,) + teacher_shape, jnp.float32), None
        for k, (block, key) in enumerate(zip(blocks, k_blocks), start=1):
            params[block_name(k)] = block.init(key, y, h)["params"]
            y, h = block.apply({"params": params[block_name(k)]}, y, h)
        frozen = {"teacher": nets.teacher_params}
        if feature_params is not None:
            frozen["features"] = feature_params
        if prior is not None:
            frozen["prior"] = jax.tree.map(jnp.asarray, prior)
        head = disc.init(k_head, frozen, jnp.zeros((1,) + data_shape, jnp.float32),
                         jnp.ones((1,)) if scales else None)
        return {"discriminator": head, "generator": params}, frozen

    def latent_sample(frozen, eps):
        """The generator's input: σ_max·ε (PaGoDA) or, with ``pagoda.prior='latent'``, the per-coordinate Gaussian of
        the inverted latents, mean + std·ε (``consistency/tools/inversion.py``, "The latent prior")."""
        if prior is None:
            return sigma_max * eps
        return frozen["prior"]["mean"] + frozen["prior"]["std"] * eps

    def fake_images(params, frozen, keys, labels, guidance=None):
        """G(z, c, w) with z from the prior at the teacher's resolution: what sampling draws."""
        return generator(params, latent_sample(frozen, distillation.normal_like(keys, 1, teacher_shape)), labels,
                         guidance)

    def guidance_draw(keys, batch):
        """(w [B], E(x, c, w) [B, ...]): k ~ U{1 … K} per example and the row's k-th latent (module doc, CFG); without
        CFG (None, E(x))."""
        if not scales:
            return None, batch["latent"]
        k = distillation.per_example_uniform_index(keys, 2, 0, len(scales) - 1)
        latent = jnp.take_along_axis(batch["latent"], k.reshape((-1, 1) + (1,) * (batch["latent"].ndim - 2)),
                                     axis=1)[:, 0]
        return jnp.asarray(scales, jnp.float32)[k], latent

    def discriminator_loss(params, state, batch, rng):
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        w, _ = guidance_draw(keys, batch)
        fake = fake_images(state.params["generator"], state.frozen, keys, labels, w)
        return discriminator.discriminator_hinge_loss(disc, params, state.frozen, labels, rng, batch["x"], fake, p.r1_weight,
                                            guidance=w)

    def generator_loss(params, state, batch, rng):
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        k_augment = jax.random.fold_in(rng, discriminator.AUGMENT_STREAM)
        w, latent = guidance_draw(keys, batch)
        frozen_d = dmd_objective.with_frozen_parameters(
            lambda d, x: disc.logits(d, state.frozen, labels, k_augment, w)(x), state.params["discriminator"])

        def rec_loss(g):                                               # nb (55); with CFG nb (58); docs/methods.md §9
            x_rec = generator(g, latent, labels, w)
            return jnp.mean(obj.reconstruction_loss(x_rec, batch["x"], lambda a, b: distance(state.frozen, a, b)))

        def gan_loss(g):                                               # hinge generator term −D(G(σ_max ε))
            logits = frozen_d(fake_images(g, state.frozen, keys, labels, w))
            per_logit = logits.reshape(logits.shape[0], -1).shape[1]
            return jnp.mean(add_objective.hinge_generator_loss(logits)) / per_logit

        l_rec = rec_loss(params)
        total = float(p.reconstruction_weight) * l_rec
        metrics = {"loss_rec": l_rec}
        if float(p.discriminator_weight) > 0:
            l_gan = gan_loss(params)
            if p.adaptive:
                path = last_layer_path(params)
                weight = obj.adaptive_adversarial_weight(
                    obj.last_layer_grad(params, path, lambda g: float(p.reconstruction_weight) * rec_loss(g)),
                    obj.last_layer_grad(params, path, gan_loss), float(p.discriminator_weight))
            else:
                weight = jnp.asarray(float(p.discriminator_weight))
            total = total + weight * l_gan
            metrics.update(loss_gan=l_gan, adversarial_weight=weight)
        return total, jax.lax.stop_gradient(metrics)

    def sample(state, rng, num_samples, *, nfe, options, labels=None, params=None):
        """One step; with CFG at w = ``options.guidance`` (default ``pagoda.sample_guidance``, else the first scale),
        labels drawn uniformly when None."""
        guidance = options.guidance
        if int(nfe) != 1:
            raise ValueError(f"PaGoDA's generator is one-step; asked for nfe={nfe}")
        if guidance is not None and not scales:
            raise ValueError("this PaGoDA generator is not conditioned on w (pagoda.guidance_scales is empty)")
        params = state.ema["generator"] if params is None else params
        k_z, k_labels = jax.random.split(rng) if scales else (rng, None)
        cond = None if labels is None else jnp.asarray(labels, jnp.int32)
        w = None
        if scales:
            if cond is None:
                cond = jax.random.randint(k_labels, (num_samples,), 0, int(config.model.num_classes))
            w = jnp.full((num_samples,), sample_w if guidance is None else float(guidance), jnp.float32)
        x = generator(params, latent_sample(state.frozen, jax.random.normal(k_z, (num_samples,) + teacher_shape)),
                      cond, w)
        return x if data_range is None else jnp.clip(x, *data_range)

    every, (d_phase, g_phase) = (2, (0, 1)) if p.alternate else (1, (0, 0))
    trained = (common.trained_set(config, "discriminator", discriminator_loss, every=every, phase=d_phase),
               common.trained_set(config, "generator", generator_loss, every=every, phase=g_phase, sampled=True))
    return base.Method(name=NAME, init=init, trained=trained, sample=sample, sample_params="generator",
                       options=PagodaOptions(guidance=None), default_nfes=(1,))


@dataclasses.dataclass(frozen=True)
class PagodaOptions:
    """PaGoDA sampling: ``guidance``, the CFG scale w the w-conditioned generator takes (None →
    ``pagoda.sample_guidance``, else the first of ``pagoda.guidance_scales``; only with guidance scales)."""
    guidance: float | None = None
