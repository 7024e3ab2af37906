"""Multistep consistency models, MCM: T segments, each a consistency model jumping to its segment start
(Heek et al. 2024, arXiv 2403.06807; seed §3, eq. 44–54; docs/methods.md §8). ``config.method = 'mcm'``.

``config.mcm.process``:
* 'vp' (docs/methods.md §8.1): z_t = α_t x + σ_t ε on the schedule ``config.diffusion.vp_schedule``; segment k covers
  t ∈ (k/T, (k+1)/T]·t_max with t_step = k/T·t_max; F_θ(z_t, t) = DDIM_{t→t_step}(x̂_θ, z_t) (nb (44)). The time is
  rescaled so that u = t/t_max = 1 is σ_VE = ``diffusion.sigma_max`` (t_max = 0.992 for the cosine schedule at
  σ_max = 80): the cosine schedule reaches α = 0 (σ_VE = ∞) only at t = 1, where no VE teacher is defined [derived].
* 've' (docs/methods.md §8.2, the notebook's own derivation): x_σ = x + σ z; boundaries σ_min = b_0 < … < b_T = σ_max
  (``mcm.boundaries`` or T + 1 Karras points); f_θ(x, σ, b) = (b/σ)x + (1 − b/σ)x^θ(x, σ) (seed eq. 51).

Both are the same algorithm with α ≡ 1 for VE (:mod:`consistency.objectives.mcm`). Within a segment the grid has
M(i) = max(1, round(N(i)/T)) steps (uniform in t for VP, Karras-spaced in σ^{1/ρ} for VE, so T equal segments of a
Karras grid are the global Karras grid), with N(i) the annealed teacher-step count (docs/methods.md §8.1 step 5) traced
from the step. Training draws a segment k ~ U{0…T−1} and a step j ~ U{1…M}: t at position k + j/M, s at
k + (j−1)/M, boundary at k (docs/methods.md §8.1 step 1).
* MCD (``mcm.mode='distill'``): z_s = one teacher step (aDDIM with η, DDIM = the Euler step of seed eq. 50, or Heun);
  the teacher is ``teachers.load_teacher`` (a VE denoiser D_φ) used in VP as x̂ = D_φ(z_t/α_t, σ_t/α_t)
  (docs/methods.md §0 "VE ↔ VP"), guided with ``mcm.cfg_scale`` w (docs/methods.md §2 CFG) for class-conditional models;
* MCT (``mcm.mode='train'``): data in place of the teacher, z_s = α_s x + σ_s ε (docs/methods.md §8.1 step 2).
The target chain is under sg (x̂⁻ → ẑ → invDDIM); θ⁻ is an EMA (``mcm.target_ema``, a :class:`base.Moving`) or
sg θ when μ = 0. The student is the EDM-preconditioned network in VE coordinates, x̂_θ(z, t) = D_θ(z/α, σ/α)
(docs/methods.md §1.1), so it can start from the teacher's weights; the 'eps' loss space reads it as
ε_θ = (z_t − α_t x̂_θ)/σ_t (nb (47) corrected).

Sampling (docs/methods.md §8.1 "Sampling", §8.2 last line): z at the top level (VP: z ~ N(0, I); VE: σ_max·z), then for
k = T…1: z ← DDIM(x̂_θ(z, b_k), z, b_k → b_{k−1}). A T-segment model samples in exactly T network evaluations
(train one model per T; :func:`validate_config` refuses ``eval.nfes`` ≠ T).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from consistency.core import schema
from consistency.methods.components import teachers
from consistency.core.errors import ConfigError
from consistency.diffusion import cm_sampling, distances, processes, schedules
from consistency.methods import base
from consistency.methods.components import common
from consistency.objectives import mcm as mcm_obj
from consistency.objectives.mcm import Level

PROCESSES = ("vp", "ve")
MODES = ("distill", "train")
DISTANCES = ("pseudo_huber", "l2")


# ----------------------------------------------------------------------------------------------------------
# Config validation
# ----------------------------------------------------------------------------------------------------------

_fail = schema.fail


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# config.mcm: MCM, Heek et al. 2024 (seed eq. 44–54; docs/methods.md §8). Defaults: the VP MCD recipe of
# docs/methods.md §8.1.
CONFIG_BLOCK = "mcm"
CONFIG_FIELDS = {
    "process": schema.Field("vp", "'vp' DDIM/aDDIM form (docs/methods.md §8.1) | 've' the notebook's eq. 51 form (§8.2)",
                            choices=PROCESSES),
    "mode": schema.Field("distill", "'distill' MCD (teacher step) | 'train' MCT (data in place of the teacher, §8.1 "
                                    "step 2)", choices=MODES),
    "segments": schema.Field(4, 'T: segments = sampling steps; T = 1 is a CM (MCM paper: 1…16, ImageNet-64 at 8)',
                             lo=1, fix="use the number of sampling steps T (MCM paper: 1, 2, 4, 8, 16)"),
    "boundaries": schema.Field((), "VE only: ascending σ boundaries b_0 < … < b_T (T + 1 values); () → T + 1 Karras "
                                   "points", fix="use () (T + 1 Karras points) or T + 1 ascending σ values"),
    "num_steps_start": schema.Field(64.0, "teacher steps N(i) over the whole range at i = 0 (unofficial MCM port, §8.1 "
                                          "step 5)",
                                    lo=1, fix="use a teacher-step count N over the whole range (MCM: 64 → 1280)"),
    "num_steps_end": schema.Field(1280.0, 'N(i) after the ramp (§8.1 step 5); equal to num_steps_start → a fixed grid',
                                  lo=1, fix="use a teacher-step count N over the whole range (MCM: 64 → 1280)"),
    "num_steps_ramp": schema.Field(100_000, 'i at which the log-linear ramp of N(i) ends (§8.1 step 5)',
                                   lo=1, fix="use the step at which N(i) reaches num_steps_end (MCM: 100000)"),
    "teacher_solver": schema.Field("addim", "'addim' (§8.1) | 'ddim' (= VE Euler, seed eq. 50) | 'heun' (EDM, in VE "
                                            "coordinates)", choices=mcm_obj.TEACHER_SOLVERS),
    "addim_eta": schema.Field(0.75, "η of aDDIM's v_x = η·‖x̂_tch − x‖²/d (docs/methods.md §8.1)",
                              lo=0, fix="use η = 0.75 (docs/methods.md §8.1)"),
    "loss_space": schema.Field("x", "'x' x̂_θ vs invDDIM target (§8.1 step 4) | 'eps' corrected nb (47) (§17 item 11) | "
                                    "'jump' F_θ vs ẑ at the segment start (nb (46); VE: nb (52))",
                               choices=mcm_obj.LOSS_SPACES),
    "weighting": schema.Field("snr+1", "λ(t): 'snr+1' (§8.1 step 4) | 'snr' | 'uniform'", choices=mcm_obj.WEIGHTINGS),
    "distance": schema.Field("pseudo_huber", "'pseudo_huber' (§8.1 step 4) | 'l2'", choices=DISTANCES),
    "huber_c": schema.Field(1e-4, 'pseudo-Huber c ("ε = 1e-4", §8.1 step 4, unofficial port); < 0 → 0.00054·√d (iCT)',
                            fix="use 1e-4, or < 0 for iCT's 0.00054·√d"),
    "target_ema": schema.Field(0.0, 'μ of the target θ⁻ (§8.1 step 4: "θ⁻ an EMA", no value given); 0 → θ⁻ = sg θ',
                               lo=0, hi=1, hi_open=True, fix="use 0 (θ⁻ = sg θ) or a decay below 1"),
    "cfg_scale": schema.Field(1.0, 'w of the guided teacher D_w = D_∅ + w(D_c − D_∅) (docs/methods.md §2; nb (44))',
                              lo=0, fix="use 1 (no guidance) or w >= 0"),
    "init_from_teacher": schema.Field(True, "workdir teacher: the student starts from the teacher's EMA weights"),
}


def TEACHER_USE(config):   # noqa: N802  (a declaration: consistency.config.teacher_use)
    """MCD distils a teacher; MCT ('train') uses the data in place of one. None for an unknown mode (its own error)."""
    return {"distill": ("required", "mcm.mode='train' (MCT)"),
            "train": ("unused", "mcm.mode='distill' (MCD)")}.get(config.mcm.mode)


def validate_config(config) -> None:
    """Raise one ConfigError line ``config.mcm.<field>: <problem>; <fix>`` (or ``config.teacher`` / ``config.eval``)
    for any value the MCM method cannot use; builds nothing."""
    schema.check_block(config, CONFIG_BLOCK, CONFIG_FIELDS)   # every field: type, choices, bounds
    m, f = config.mcm, config.diffusion
    if m.cfg_scale != 1 and int(config.model.num_classes) <= 0:
        raise _fail("mcm.cfg_scale", f"{m.cfg_scale} guides the teacher by class but the model is unconditional",
                    "set it to 1, or use a class-conditional model and teacher (model.num_classes > 0)")
    _validate_boundaries(m, f)
    if m.process == "vp" and f.sigma_max <= 0:
        raise _fail("diffusion.sigma_max", f"{f.sigma_max} is not > 0", "use the teacher's top level (EDM: 80)")
    bad = [n for n in tuple(config.eval.nfes) if n != m.segments]
    if bad:
        raise _fail("eval.nfes", f"{tuple(config.eval.nfes)} asks a T = {m.segments} multistep model for "
                    f"{bad} steps, but it samples in exactly T network evaluations",
                    f"use () or ({m.segments},), and train one model per T with --config.mcm.segments=<T>")


def _validate_boundaries(m, f) -> None:
    b = tuple(m.boundaries)
    if not b:
        return
    if m.process != "ve":
        raise _fail("mcm.boundaries", f"{b} is set but mcm.process is 'vp', whose segments are k/T",
                    "clear it, or use mcm.process='ve'")
    if len(b) != m.segments + 1 or not all(_is_number(v) for v in b):
        raise _fail("mcm.boundaries", f"{b} is not T + 1 = {m.segments + 1} numbers",
                    f"list σ_min = b_0 < … < b_T = σ_max, e.g. {tuple(round(float(v), 4) for v in _karras(m, f))}")
    if not (0 < b[0] and all(lo < hi for lo, hi in zip(b, b[1:]))):
        raise _fail("mcm.boundaries", f"{b} is not strictly ascending above 0", "list σ values from low to high")
    if b[-1] > f.sigma_max:
        raise _fail("mcm.boundaries", f"the top boundary {b[-1]} is above diffusion.sigma_max = {f.sigma_max}",
                    f"end the list at sigma_max = {f.sigma_max}")


def _karras(m, f):
    return schedules.karras_sigmas(int(m.segments) + 1, f.sigma_min, f.sigma_max, f.rho)


# ----------------------------------------------------------------------------------------------------------
# The two processes: positions k + j/M in segment units → noise levels
# ----------------------------------------------------------------------------------------------------------

class Process(NamedTuple):
    """``level(k, frac)`` → the :class:`Level` at position k + frac (k: segment [B] int, frac ∈ [0, 1]);
    ``boundary(k)`` → the Level of b_k exactly; ``coefficients(τ)`` → (α, σ); ``initial(rng, shape)`` → z at b_T."""

    level: Callable
    boundary: Callable
    coefficients: Callable
    initial: Callable


def vp_process(num_segments: int, sigma_max: float, schedule: str) -> Process:
    """VP: t = (k + frac)/T·t_max, t_max = t(σ_VE = σ_max) (module doc; docs/methods.md §8.1 step 1)."""
    t_max = float(processes.ve_sigma_to_vp_t(sigma_max, schedule))

    def coefficients(tau):
        return processes.vp_alpha_sigma(tau, schedule)

    def make_level(tau):
        return Level(tau, *coefficients(tau))

    def level(k, frac):
        return make_level((jnp.asarray(k, jnp.float32) + frac) / num_segments * t_max)

    def boundary(k):
        return make_level(jnp.asarray(k, jnp.float32) / num_segments * t_max)

    def initial(rng, shape):
        return cm_sampling.per_sample_normal(rng, shape)  # z_1 ~ N(0, I) (docs/methods.md §8.1 Sampling)

    return Process(level, boundary, coefficients, initial)


def ve_process(boundaries, rho: float) -> Process:
    """VE: σ = (b_k^{1/ρ} + frac·(b_{k+1}^{1/ρ} − b_k^{1/ρ}))^ρ within segment k (Karras spacing, EDM eq. 5)."""
    b = jnp.asarray(boundaries, jnp.float32)
    roots = b ** (1.0 / rho)

    def coefficients(tau):
        return jnp.ones_like(tau), tau

    def level(k, frac):
        sigma = (roots[k] + frac * (roots[k + 1] - roots[k])) ** rho
        sigma = jnp.where(frac == 0, b[k], jnp.where(frac == 1, b[jnp.minimum(k + 1, len(boundaries) - 1)], sigma))
        return Level(sigma, jnp.ones_like(sigma), sigma)

    def boundary(k):
        sigma = b[k]
        return Level(sigma, jnp.ones_like(sigma), sigma)

    def initial(rng, shape):
        return b[-1] * cm_sampling.per_sample_normal(rng, shape)  # x = σ_max·z (CM Alg. 1)

    return Process(level, boundary, coefficients, initial)


def make_process(config) -> Process:
    m, f = config.mcm, config.diffusion
    if m.process == "vp":
        return vp_process(int(m.segments), float(f.sigma_max), f.vp_schedule)
    bounds = tuple(float(v) for v in m.boundaries) or tuple(float(v) for v in _karras(m, f))
    return ve_process(bounds, float(f.rho))


def steps_per_segment(m, step):
    """M(i) = max(1, round(N(i)/T)) with N(i) the annealed teacher-step count (docs/methods.md §8.1 step 5), traced."""
    n = schedules.mcm_teacher_steps(step, float(m.num_steps_start), float(m.num_steps_end), int(m.num_steps_ramp))
    return n, jnp.maximum(1, jnp.round(n / int(m.segments))).astype(jnp.int32)


def draw_pairs(keys, num_segments: int, steps):
    """Per-example segment k ~ U{0…T−1} and step j ~ U{1…M} (traced M) (docs/methods.md §8.1 step 1)."""
    k = jax.vmap(lambda key: jax.random.randint(jax.random.fold_in(key, 21), (), 0, num_segments))(keys)
    u = jax.vmap(lambda key: jax.random.uniform(jax.random.fold_in(key, 22)))(keys)
    j = jnp.clip(1 + jnp.floor(u * steps).astype(jnp.int32), 1, steps)
    return k, j


# ----------------------------------------------------------------------------------------------------------
# Networks as functions of (z, τ)
# ----------------------------------------------------------------------------------------------------------

def vp_from_ve_denoiser(ve_denoiser: Callable, coefficients: Callable) -> Callable:
    """x̂(z, τ) = D(z/α, σ/α): a VE denoiser D(x, σ_VE) read in the process's own coordinates (docs/methods.md §0
    "VE ↔ VP"; the identity for VE, α ≡ 1)."""
    def x0(z, tau):
        alpha, sigma = coefficients(tau)
        alpha = jnp.broadcast_to(alpha, z.shape[:1])
        return ve_denoiser(z / processes.broadcast_to_data(alpha, z), jnp.broadcast_to(sigma / alpha, z.shape[:1]))
    return x0


def make_distance(m) -> Callable:
    if m.distance == "l2":
        return distances.l2
    return distances.get_distance("pseudo_huber", None if m.huber_c < 0 else float(m.huber_c))


# ----------------------------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------------------------

def make(config, dataset) -> base.Method:
    validate_config(config)
    m, f = config.mcm, config.diffusion
    num_segments = int(m.segments)
    example_shape = tuple(dataset.example_shape)
    net = common.build_net(config, example_shape)
    student_apply = common.edm_denoiser(net, f.sigma_data)  # x̂_θ = D_θ in VE coordinates (docs/methods.md §1.1)
    conditional = common.is_conditional(config)
    process = make_process(config)
    distance = make_distance(m)
    distilling = m.mode == "distill"
    teacher_params, teacher_apply = teachers.load_teacher(config, dataset) if distilling else (None, None)
    data_range = getattr(dataset, "data_range", None) if config.sampling.clip else None
    null_label = int(config.model.num_classes)

    def init(rng, batch):
        params = common.init_params(net, rng, batch["x"], conditional)
        if distilling and m.init_from_teacher and config.teacher.workdir:
            params = _init_from(params, teacher_params)
        return {"online": params}, ({"teacher": teacher_params} if distilling else {})

    def network(params, labels, **kwargs):
        return vp_from_ve_denoiser(lambda x, s: student_apply(params, x, s, labels, **kwargs), process.coefficients)

    def loss(online, state, batch, rng):
        x = batch["x"]
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        n_total, steps = steps_per_segment(m, state.step)
        k, j = draw_pairs(keys, num_segments, steps)
        t = process.level(k, j / steps)
        s = process.level(k, (j - 1) / steps)
        boundary = process.boundary(k)
        noise = base.per_example_normal(jax.vmap(lambda key: jax.random.fold_in(key, 23))(keys), x.shape[1:],
                                        x.dtype)
        z_t = mcm_obj.perturb(x, noise, t)
        if distilling:
            teacher_ve = teachers.guided_teacher(teacher_apply, state.frozen["teacher"], labels,
                                                 float(m.cfg_scale), null_label)
            teacher = vp_from_ve_denoiser(teacher_ve, process.coefficients)
            z_s = mcm_obj.teacher_step(m.teacher_solver, teacher, z_t, t, s, x, float(m.addim_eta))
        else:
            z_s = mcm_obj.perturb(x, noise, s)  # MCT: data in place of the teacher (docs/methods.md §8.1 step 2)
        dropout_rng = jax.random.fold_in(rng, 24)  # one dropout key for the online and target passes (§18 item 1)
        target_params = state.moving["target"] if m.target_ema > 0 else jax.lax.stop_gradient(online)
        per_example, _ = mcm_obj.multistep_consistency_loss(
            network(online, labels, train=True, dropout_rng=dropout_rng),
            network(target_params, labels, train=True, dropout_rng=dropout_rng),
            x, noise, t, s, boundary, z_s, space=m.loss_space, weighting=m.weighting, distance=distance)
        total = jnp.mean(per_example)
        metrics = {"loss_mcm": total, "teacher_steps": n_total, "steps_per_segment": steps.astype(jnp.float32),
                   "target_decay": jnp.asarray(m.target_ema, jnp.float32)}
        if num_segments <= 8:  # per-segment diagnostic (jcm logs loss per σ-quartile, docs/methods.md §2)
            for seg in range(num_segments):
                inside = (k == seg).astype(jnp.float32)
                metrics[f"loss_segment_{seg}"] = jnp.sum(per_example * inside) / jnp.maximum(jnp.sum(inside), 1.0)
        return total, jax.lax.stop_gradient(metrics)

    def sample(state, rng, num_samples, *, nfe, options, labels=None, params=None):
        """T-step multistep sampling from the top boundary down (module doc); ``nfe`` must be T."""
        if int(nfe) != num_segments:
            raise ValueError(f"a T = {num_segments} multistep consistency model samples in exactly {num_segments} "
                             f"steps, got nfe={nfe}; train one model per T (config.mcm.segments)")
        params = state.ema["online"] if params is None else params
        cond = None if labels is None else jnp.asarray(labels, jnp.int32)
        return multistep_sample(network(params, cond), process, num_segments, rng,
                                (num_samples,) + example_shape, data_range)

    moving = ()
    if m.target_ema > 0:  # θ⁻ ← μ θ⁻ + (1 − μ) θ after each update (docs/methods.md §1.5, §8.1 step 4)
        moving = (base.Moving("target", source="online", decay=lambda step: jnp.asarray(m.target_ema, jnp.float32)),)
    return base.Method(name=config.method, init=init,
                       trained=(common.trained_set(config, "online", loss, sampled=True),), moving=moving,
                       sample=sample, sampling_nfe=num_segments, default_nfes=(num_segments,))


def multistep_sample(x0_fn: Callable, process: Process, num_segments: int, rng, shape, clip_range=None):
    """z at b_T, then z ← DDIM_{b_k→b_{k−1}}(x0_fn(z, b_k), z) for k = T…1 (docs/methods.md §8.1 Sampling; VE: f(x, b_k,
    b_{k−1}) of seed eq. 51, §8.2). Returns z at b_0 (VP: t = 0, so x̂ itself; VE: σ_min). T network evaluations."""
    z = process.initial(rng, shape)
    batch = shape[0]
    never = jnp.zeros((batch,), bool)
    for k in range(num_segments, 0, -1):
        top, bottom = process.boundary(k), process.boundary(k - 1)
        top = Level(*(jnp.broadcast_to(v, (batch,)) for v in top))
        bottom = Level(*(jnp.broadcast_to(v, (batch,)) for v in bottom))
        z = mcm_obj.jump_to_boundary(x0_fn(z, top.tau), z, top, bottom, never)
    return z if clip_range is None else jnp.clip(z, clip_range[0], clip_range[1])


def _init_from(params, teacher_params):
    """The teacher's EMA weights as the student's start (the student network must be the teacher's)."""
    same = jax.tree.structure(params) == jax.tree.structure(teacher_params) and all(
        a.shape == b.shape for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(teacher_params)))
    if not same:
        raise ConfigError("config.mcm.init_from_teacher: the student network differs from the teacher's; use the "
                          "teacher's config.model or set mcm.init_from_teacher=False")
    return jax.tree.map(jnp.asarray, teacher_params)
