"""Pieces shared by the score-distillation methods DMD, DMD2, ADD and SiD (docs/methods.md §10–§12, §14).

Each of them trains a one-step (or few-step) generator G_θ against a frozen teacher through the multi-network method
contract (``consistency/methods/base.py``), never around it:

* trained sets, run in this order inside one compiled step (the second set's loss sees the first set just updated):
  'fake' (DMD/DMD2/SiD: the fake denoiser D_fake, with DMD2's diffusion-GAN head inside it) or 'discriminator'
  (ADD: heads on frozen features), then 'generator' (G_θ, ``sampled=True``: its EMA is what samples and evaluation
  use). Update ratios are ``every`` periods read from the method's config block (TTUR: the generator is due
  at steps k ≡ ttur − 1 mod ttur, so the fake/GAN side takes ``ttur`` updates before each generator update;
  DMD2 with ``dmd2.generator_first`` — its default, as DMD2's code — runs 'generator' first, at steps ≡ 0);
* frozen sets, arguments of the compiled step (docs/methods.md §18 item 2): 'teacher' (a trained EDM run's EMA params or
  a closed-form oracle's arrays, :func:`consistency.methods.components.teachers.load_teacher`), DMD's 'pairs', the feature-net params.

Generator (docs/methods.md §10.1, §12): the teacher's denoiser architecture evaluated at one noise level,
G_θ(z) = D_θ(σ_g·z, σ_g), with σ_g = σ_max (DMD2's EDM code) or σ_init = 2.5 (SiD). A K-step generator (DMD2 backward
simulation, ADD's student levels) evaluates D_θ at a descending σ list whose first entry is σ_g.

Initialisation of G and the fake denoiser (``<block>.init``):

* ``'teacher'`` — copies of the teacher network (DMD §3.1, DMD2, SiD: docs/methods.md §10.1, §12). A closed-form teacher
  (toys, ``teacher.oracle='mixture'``) has no weights to copy, so the network is first *fitted to the oracle* for
  ``<block>.init_fit_steps`` Adam steps inside ``init`` (:func:`fit_to_teacher`: regression of D_θ(x + σn, σ) onto
  the exact D*(x + σn, σ), ln σ uniform on [ln σ_min, ln σ_max], x from the first training batch, EDM weight
  λ(σ)). That short pre-training stands in for "initialised from the teacher"; G and the fake then start equal.
* ``'scratch'`` — independent random initialisations (used to show what the teacher initialisation buys).

Every noise draw is per example (keys folded from ``batch['index']``), so results do not depend on the device count.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from consistency.core import schema
from consistency.methods.components import teachers
from consistency.core.errors import ConfigError
from consistency.diffusion import cm_sampling, preconditioning
from consistency.diffusion.processes import broadcast_to_data
from consistency.methods import base
from consistency.methods.components import common
from consistency.objectives import dmd as dmd_objective

METHODS = ("dmd", "dmd2", "add", "sid")
INITS = ("teacher", "scratch")
FIT_LR = 1e-3          # Adam lr of the oracle fit (init='teacher' with a closed-form teacher)


# ----------------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Networks:
    """The networks of a distillation method: G and D_fake share ``net`` (the teacher's architecture)."""

    net: Any                     # flax module of config.model
    denoiser: Callable           # D_θ(params, x, σ, labels) with EDM preconditioning (EDM Table 1)
    teacher_params: Any          # frozen; enters the step as state.frozen['teacher']
    teacher_apply: Callable      # teacher_apply(params, x, σ, labels) -> x0_hat
    teacher_is_network: bool     # a trained EDM run (True) or a closed-form oracle (False)
    example_shape: tuple
    conditional: bool
    sigma_data: float
    data_range: Any              # (lo, hi) to clip samples to, or None


def build_networks(config, dataset) -> Networks:
    """Generator/fake architecture from ``config.model``, the teacher from ``config.teacher``."""
    net = common.build_net(config, dataset.example_shape)
    teacher_params, teacher_apply = teachers.load_teacher(config, dataset)
    data_range = getattr(dataset, "data_range", None) if config.sampling.clip else None
    if data_range is not None and not all(math.isfinite(v) for v in data_range):
        data_range = None
    return Networks(net=net, denoiser=common.edm_denoiser(net, config.diffusion.sigma_data),
                    teacher_params=teacher_params, teacher_apply=teacher_apply,
                    teacher_is_network=bool(config.teacher.workdir), example_shape=tuple(dataset.example_shape),
                    conditional=common.is_conditional(config), sigma_data=float(config.diffusion.sigma_data),
                    data_range=data_range)


def denoiser_fn(nets: Networks, params, labels=None) -> Callable:
    """``D(x, σ)`` of the generator/fake architecture with ``params`` bound (the objectives' denoiser contract)."""
    return lambda x, sigma: nets.denoiser(params, x, sigma, labels)


def teacher_fn(nets: Networks, state, labels=None) -> Callable:
    """The frozen teacher ``D_real(x, σ)`` with its params taken from ``state.frozen`` under sg (parameters frozen,
    inputs not: docs/methods.md §12)."""
    return dmd_objective.with_frozen_parameters(
        lambda p, x, sigma: nets.teacher_apply(p, x, sigma, labels), state.frozen["teacher"])


def generate(nets: Networks, params, z, sigma: float, labels=None):
    """G_θ(z) = D_θ(σ·z, σ): the generator at its input level (docs/methods.md §10.1 DMD2 EDM code: σ = σ_max;
    §12 SiD: σ_init = 2.5). ``z`` ~ N(0, I)."""
    return nets.denoiser(params, sigma * z, jnp.full(z.shape[:1], sigma, z.dtype), labels)


def fold(keys, tag: int):
    """Per-example keys for one purpose: fold_in(k_i, tag)."""
    return jax.vmap(lambda k: jax.random.fold_in(k, tag))(keys)


def normal_like(keys, tag: int, shape):
    """Per-example standard normal draws of per-example ``shape`` (device-count invariant)."""
    return base.per_example_normal(fold(keys, tag), tuple(shape))


def per_example_uniform_index(keys, tag: int, low: int, high: int):
    """i ~ U{low … high} per example (both ends included)."""
    return jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, tag), (), low, high + 1))(keys)


# ----------------------------------------------------------------------------------------------------------------
# Noise levels on DMD2's 1000-point Karras grid (docs/methods.md §1.4 "DMD2"), drawn per example
# ----------------------------------------------------------------------------------------------------------------

def grid_sigmas(config, block, keys, tag: int, low: int, high: int):
    """σ = grid[i], i ~ U{low … high} per example, on the ascending ``block.num_train_timesteps``-point Karras grid of
    ``config.diffusion`` (index 0 = σ_min; DMD2 `karras_sigmas`)."""
    f = config.diffusion
    grid = dmd_objective.training_sigma_grid(int(block.num_train_timesteps), f.sigma_min, f.sigma_max, f.rho)
    return grid[per_example_uniform_index(keys, tag, low, high)]


def distribution_matching_sigmas(config, block, keys, tag: int):
    """DM-gradient σ: index ~ U{⌊0.02T⌋ … ⌊0.98T⌋} (DMD §3.2; DMD2 `min_step_percent`/`max_step_percent`;
    docs/methods.md §1.4: U[20, 980] of 1000, σ ∈ [0.0032, 72.05])."""
    low, high = dmd_objective.distribution_matching_index_range(
        int(block.num_train_timesteps), float(block.min_step_fraction), float(block.max_step_fraction))
    return grid_sigmas(config, block, keys, tag, low, high)


def timestep_sigmas(config, block, timesteps) -> list[float]:
    """Discrete teacher timesteps (0 = σ_min … T−1 = σ_max) as EDM σ on the block's grid, e.g. DMD2 SDXL / ADD
    {999, 749, 499, 249} → {80, 17.5, 2.50, 0.168} (:func:`consistency.objectives.dmd.sigmas_at_timesteps`)."""
    f = config.diffusion
    sig = dmd_objective.sigmas_at_timesteps(jnp.asarray(tuple(int(t) for t in timesteps)),
                                            int(block.num_train_timesteps), f.sigma_min, f.sigma_max, f.rho)
    return [float(s) for s in np.asarray(sig)]


# ----------------------------------------------------------------------------------------------------------------
# Initialisation
# ----------------------------------------------------------------------------------------------------------------

def same_structure(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.shape(x) == np.shape(y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def copy_teacher(nets: Networks, params, block_name: str):
    """The teacher's weights as the initial params of G / D_fake (docs/methods.md §10.1, §12); the trees must match."""
    if not same_structure(params, nets.teacher_params):
        raise ConfigError(f"config.{block_name}.init: 'teacher' copies the teacher's weights, but config.model builds "
                          "a different network; use the teacher run's config.model or set init='scratch'")
    return jax.tree.map(lambda p: jnp.array(p, copy=True), nets.teacher_params)


def fit_to_teacher(nets: Networks, params, teacher_params, x_pool, rng, steps: int, config, lr: float = FIT_LR):
    """``steps`` Adam steps of min E λ(σ)‖D_θ(x + σn, σ) − D*(x + σn, σ)‖² with D* the (closed-form) teacher.

    x from ``x_pool`` (the first training batch), ln σ ~ U[ln σ_min, ln σ_max] so that every level a generator or
    fake denoiser is evaluated at is covered (σ_max = 80 included), λ(σ) = 1/σ² + 1/σ_d² (EDM, so the error is
    measured in the network's output space). Regressing on the teacher's *output* rather than on x keeps the data
    pool from being memorised. Runs inside ``init`` (a ``fori_loop``), so a fresh run and a resumed one agree.
    """
    f = config.diffusion
    optimizer = optax.adam(lr)
    x_pool = jnp.asarray(x_pool, jnp.float32)
    n = x_pool.shape[0]
    lo, hi = math.log(f.sigma_min), math.log(f.sigma_max)

    def loss_fn(p, key):
        k_sigma, k_noise = jax.random.split(key)
        sigma = jnp.exp(jax.random.uniform(k_sigma, (n,), minval=lo, maxval=hi))
        noisy = x_pool + broadcast_to_data(sigma, x_pool) * jax.random.normal(k_noise, x_pool.shape)
        target = jax.lax.stop_gradient(nets.teacher_apply(teacher_params, noisy, sigma, None))
        error = jnp.mean(((nets.denoiser(p, noisy, sigma, None) - target) ** 2).reshape(n, -1), axis=1)
        return jnp.mean((1.0 / sigma ** 2 + 1.0 / f.sigma_data ** 2) * error)

    def body(i, carry):
        p, opt_state = carry
        grads = jax.grad(loss_fn)(p, jax.random.fold_in(rng, i))
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    params, _ = jax.lax.fori_loop(0, int(steps), body, (params, optimizer.init(params)))
    return params


def init_generator_and_fake(config, block_name: str, nets: Networks, rng, batch, with_fake: bool = True):
    """(generator params, fake params or None) per ``<block>.init`` (module doc)."""
    block = config[block_name]
    k_gen, k_fake, k_fit = jax.random.split(rng, 3)
    x = batch["x"]
    generator = common.init_params(nets.net, k_gen, x, nets.conditional)
    if block.init == "scratch":
        fake = common.init_params(nets.net, k_fake, x, nets.conditional) if with_fake else None
        return generator, fake
    if nets.teacher_is_network:
        generator = copy_teacher(nets, generator, block_name)
    else:
        generator = fit_to_teacher(nets, generator, nets.teacher_params, x, k_fit, int(block.init_fit_steps), config)
    fake = jax.tree.map(jnp.copy, generator) if with_fake else None
    return generator, fake


# ----------------------------------------------------------------------------------------------------------------
# Discriminator heads on inner features (DMD2: the fake-score U-Net's encoder output; docs/methods.md §10.2)
# ----------------------------------------------------------------------------------------------------------------

def encoder_features(nets: Networks) -> Callable:
    """``features(params, x, σ, labels) -> {name: array}``: the generator/fake network's named inner features at the
    preconditioned input c_in·x, c_noise (EDM Table 1), without the decoder (``encoder_only=True``)."""
    def features(params, x, sigma, labels=None):
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:1])
        _, _, c_in, c_noise = preconditioning.edm_scalings(sigma, nets.sigma_data)
        return nets.net.apply({"params": params}, broadcast_to_data(c_in, x) * x, c_noise, labels,
                              encoder_only=True)
    return features


def head_config_for(config, feature_shapes: dict):
    """``config.discriminator`` with its feature list resolved: a 'dmd2' head with ``features=()`` reads the U-Net's
    encoder output ``'enc_<coarsest>'`` (DMD2 EDM code, ``DhariwalUNet(return_bottleneck=True)``), other heads keep
    :func:`consistency.nets.heads.head_feature_names`' default."""
    head = config.discriminator.copy_and_resolve_references()
    if head.name == "dmd2" and not tuple(head.features):
        encoder = [name for name, shape in feature_shapes.items() if name.startswith("enc_") and len(shape) == 3]
        if encoder:
            head.features = (min(encoder, key=lambda name: feature_shapes[name][0]),)
    return head


def make_discriminator_head(config, feature_shapes: dict):
    from consistency.nets.heads import make_head
    return make_head(head_config_for(config, feature_shapes), feature_shapes, prefix="discriminator")


def feature_shapes_of(nets: Networks) -> dict:
    return {k: tuple(v) for k, v in nets.net.feature_shapes(nets.example_shape).items()}


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------

def make_sample(nets: Networks, sigmas) -> Callable:
    """``sample(state, rng, num_samples, *, nfe, options, labels=None, params=None)`` with the generator's sampling
    EMA (``options``: :class:`base.NoOptions`).

    ``sigmas`` is the generator's descending σ list (σ_g first; one entry for a one-step generator). ``nfe`` n
    (the configured sampler: all) runs the first n: x = G(σ_0 z, σ_0), then x ← G(x + σ_j n_j, σ_j) — the chain DMD2's backward
    simulation trains (docs/methods.md §10.2 item 4) and CM Alg. 1 with σ_min = 0. NFE = n.
    """
    sigmas = [float(s) for s in sigmas]

    def sample(state, rng, num_samples, *, nfe, options, labels=None, params=None):
        n = int(nfe)
        if not 1 <= n <= len(sigmas):
            raise ValueError(f"this generator is trained at {len(sigmas)} noise level(s) {tuple(sigmas)}; "
                             f"sample with nfe in 1..{len(sigmas)}, got {n}")
        if params is None:
            params = state.ema["generator"] if "generator" in state.ema else state.params["generator"]
        cond = None if labels is None else jnp.asarray(labels, jnp.int32)
        return cm_sampling.consistency_sample(lambda x, s, c: nets.denoiser(params, x, s, c), rng,
                                              (num_samples,) + nets.example_shape, sigmas[:n], 0.0, nets.data_range,
                                              cond)
    return sample


def default_nfes(num_levels: int) -> tuple[int, ...]:
    return (1,) if num_levels == 1 else (1, int(num_levels))


def ttur_phase(every: int) -> int:
    """The generator of a k:1 ratio is due at loop steps ≡ k − 1 (mod k): the fake/GAN side takes its k updates on the
    current generator first (DMD2 TTUR, docs/methods.md §10.2 item 2)."""
    return int(every) - 1


def metric_means(values: dict) -> dict:
    """Batch means of per-example diagnostics, under sg."""
    return {k: jnp.mean(jax.lax.stop_gradient(v)) for k, v in values.items()}


# ----------------------------------------------------------------------------------------------------------------
# Config validation: one ConfigError line `config.<block>.<field>: <problem>; <fix>`, before anything compiles
# ----------------------------------------------------------------------------------------------------------------

# Fields every score-distillation block shares; each method's CONFIG_FIELDS splices them in where its block has them.
def init_fields(init_doc: str) -> dict[str, schema.Field]:
    """``init`` ('teacher' copies the teacher network | 'scratch') and ``init_fit_steps`` (an oracle teacher is first
    fitted for that many Adam steps)."""
    return {"init": schema.Field("teacher", init_doc, choices=INITS),
            "init_fit_steps": schema.Field(0, "oracle teacher + init='teacher': Adam steps fitting the net to the "
                                              "oracle first", lo=0,
                                           fix="use 0 or a step count such as 2000 (oracle teachers only)")}


def grid_fields(grid_doc: str, min_doc: str, max_doc: str) -> dict[str, schema.Field]:
    """The teacher's T-point Karras grid and the index range [min_step_fraction·T, max_step_fraction·T] drawn on it."""
    return {"num_train_timesteps": schema.Field(1000, grid_doc, lo=2,
                                                fix="use the teacher's discretisation, 1000 (DMD2)"),
            "min_step_fraction": schema.Field(0.02, min_doc, lo=0, hi=1),
            "max_step_fraction": schema.Field(0.98, max_doc, lo=0, hi=1)}


def ttur_field(default: int, doc: str) -> schema.Field:
    """Updates of the fake score (or discriminator) per generator update."""
    return schema.Field(default, doc, lo=1, fix="use 1 (alternate 1:1) or 5 (DMD2 TTUR)")


# The value checks of consistency.core.schema (one message form for every block), under the names these modules use.
fail, require, flag = schema.fail, schema.require, schema.check_flag


def number(value, field: str, lo=None, hi=None, *, lo_open=False, hi_open=False, integer=False, fix="") -> None:
    schema.check_number(value, field, lo, hi, lo_open=lo_open, hi_open=hi_open, integer=integer, fix=fix)


def choice(value, field: str, choices) -> None:
    schema.check_choice(value, field, choices)


def validate_common(config, name: str) -> None:
    """The rules across fields every distillation block shares (its fields, init, init_fit_steps, the T grid and
    ttur among them, are declared in the method's ``CONFIG_FIELDS`` and checked by ``schema.check_block``)."""
    block = config[name]
    te = config.teacher
    require(config.diffusion.process == "ve", "diffusion.process", f"{config.diffusion.process!r}: {name} is "
            "written in VE/EDM coordinates", "use 've'")
    if block.init == "teacher" and te.oracle:
        require(block.init_fit_steps > 0, f"{name}.init_fit_steps", "0, but init='teacher' with a closed-form "
                f"teacher (teacher.oracle={te.oracle!r}) has no weights to copy", "fit the network to the oracle "
                "first (e.g. init_fit_steps=2000) or set init='scratch'")
    if "min_step_fraction" in block:
        require(block.min_step_fraction < block.max_step_fraction, f"{name}.min_step_fraction",
                f"{block.min_step_fraction} is not below max_step_fraction = {block.max_step_fraction}",
                "use e.g. 0.02 and 0.98 (DMD)")


def validate_eval_nfes(config, name: str, num_levels: int) -> None:
    for n in tuple(config.eval.nfes):
        require(isinstance(n, int) and 1 <= n <= num_levels, "eval.nfes",
                f"{tuple(config.eval.nfes)} asks the {name} generator for {n!r} evaluations, but it is trained at "
                f"{num_levels} noise level(s)", f"use NFEs in 1..{num_levels}, or () for the method's default")


def validate_timesteps(config, name: str, field: str) -> int:
    """A descending tuple of distinct timesteps in [0, T) starting at T − 1 (σ_max); returns its length (≥ 1)."""
    block = config[name]
    steps = tuple(block[field])
    total = int(block.num_train_timesteps)
    if not steps:
        return 1
    require(all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < total for t in steps),
            f"{name}.{field}", f"{steps} is not a tuple of integer timesteps in [0, {total})",
            "use e.g. (999, 749, 499, 249) (DMD2 SDXL, ADD)")
    require(all(b < a for a, b in zip(steps, steps[1:])), f"{name}.{field}", f"{steps} is not strictly descending",
            "list timesteps from high to low, e.g. (999, 749, 499, 249)")
    require(steps[0] == total - 1, f"{name}.{field}", f"the first timestep {steps[0]} is not {total - 1} (σ_max)",
            f"start at {total - 1} so that one-step sampling starts from pure noise")
    return len(steps)


def validate_config(config) -> None:
    """The distillation block of ``config.method`` (no-op for other methods): call from
    :func:`consistency.config.validate`, before anything compiles. One ConfigError line on failure."""
    if config.method not in METHODS:
        return
    import importlib
    importlib.import_module(f"consistency.methods.{config.method}").validate_config(config)


def check_head_block(config) -> None:
    """``config.discriminator``'s fields (the head is checked against the network's features in ``make``)."""
    h = config.discriminator
    choice(h.name, "discriminator.name", ("dmd2", "multiscale", "mlp"))
    require(isinstance(tuple(h.features), tuple) and all(isinstance(s, str) for s in h.features),
            "discriminator.features", f"{h.features!r} is not a tuple of feature names", "use () or e.g. ('enc_8',)")
    for field, least in (("channels", 0), ("num_groups", 1), ("end_size", 1), ("depth", 0), ("num_classes", 0),
                         ("cmap_dim", 1)):
        number(h[field], f"discriminator.{field}", least, integer=True)
    choice(h.reduce, "discriminator.reduce", ("concat", "mean"))
