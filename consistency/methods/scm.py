"""sCM — continuous-time consistency models in TrigFlow: sCT and sCD (Lu & Song 2024, arXiv 2410.11081; docs/methods.md
§13.2; the formulas and their derivations are in ``consistency/objectives/scm.py``).

Trained set 'online' = {'net': F_θ's network, 'weighting': w_φ} (one loss trains both, as in sCM); sampled with the EMA
of 'net'. Per example (``config.scm``):

* t = arctan(e^{P_mean + P_std n}/σ_d) clipped to [t(σ_min), t(σ_max)]; z ~ N(0, σ_d²); x_t = cos t·x₀ + sin t·z;
* dx_t/dt: sCT (``mode='train'``) the conditional velocity cos t·z − sin t·x₀; sCD (``mode='distill'``) the
  teacher's σ_d F_teacher = (cos t·x_t − D_φ(x_t/cos t, σ_d tan t))/sin t, any VE/EDM teacher or oracle, guided with
  ``cfg_scale`` w as dx = dx_c + (w − 1)(dx_c − dx_∅) (FastGen);
* F_θ(x_t, t) = −net(x_t/σ_d, c_noise(t)): with ``time_input='edm'`` c_noise = ¼ ln(σ_d tan t), EDM's own
  conditioning, so F_θ is exactly the TrigFlow form of an EDM-preconditioned network and the student can start as a
  copy of the EDM teacher (``init='teacher'``); ``'trigflow'`` c_noise = t (sCM §4.1, for networks trained from
  scratch in TrigFlow);
* J from one ``jax.jvp`` of F_{sg θ} (``jvp='jvp'``) or a central difference (``'finite_difference'``), sharing the
  dropout key with the online pass; the tangent g with warm-up r = min(1, k/``tangent_warmup_steps``), normalised
  by ‖g‖ + ``tangent_norm_const`` (``tangent_norm='paper'``, sCM §4.2) or ‖g‖/√d + c (``'fastgen'``, FastGen's
  default); L = e^{−w_φ(t)}·mean_d‖F_θ − sg F_θ − g‖² + w_φ(t). ln σ ~ N(p_mean, p_std²) clipped to
  [σ_min, σ_max] (``t_sampling='clip'``) or truncated to it (``'truncate'``, FastGen); docs/fidelity.md.

Network: the project's U-Net / MLP as they are. sCM's adaptive double normalisation (a stability change of its
ImageNet networks) is not built: nothing here shows it to matter yet, and an unchanged EDM network keeps the exact
teacher initialisation above.

Sampling: f(x, t) = cos t·x − sin t·σ_d F_θ at t_max = t(σ_max), then (2 steps) at ``mid_t`` (sCM 1.1, FastGen
arctan(0.821/σ_d) — docs/methods.md §17 item 20), re-noising x = cos t·x₀ + sin t·σ_d z between steps.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from consistency.core import schema
from consistency.nets import wrappers
from consistency.methods.components import teachers
from consistency.methods import base
from consistency.methods.components import common, distillation
from consistency.nets.embeddings import AdaptiveWeight
from consistency.objectives import scm as scm_obj

NAME = "scm"
MODES = ("train", "distill")
TIME_INPUTS = ("edm", "trigflow")
JVPS = ("jvp", "finite_difference")


# config.scm: sCM, Lu & Song 2024 (docs/methods.md §13.2). Defaults: FastGen's CIFAR-10 sCD recipe where
# docs/methods.md §13.2 gives one.
CONFIG_BLOCK = "scm"
CONFIG_FIELDS = {
    "mode": schema.Field("distill", "'distill' sCD (teacher velocity) | 'train' sCT (conditional velocity cos t z − sin "
                                    "t x₀)", choices=MODES),
    **distillation.init_fields("'teacher' copies the EDM teacher (sCD; sCT from an EDM checkpoint) | 'scratch'"),
    "time_input": schema.Field("edm", "c_noise: 'edm' ¼ ln(σ_d tan t) (an EDM net is an sCM F as is) | 'trigflow' t "
                                      "(sCM)", choices=TIME_INPUTS),
    "p_mean": schema.Field(-1.0, 'ln σ ~ N(p_mean, p_std²), t = arctan(σ/σ_d) (CIFAR-10: −1.0, 1.4 [unofficial code])'),
    "p_std": schema.Field(1.4, "std of ln σ (CIFAR-10: 1.4 [unofficial code])", lo=0, lo_open=True),
    "tangent_warmup_steps": schema.Field(10_000, 'r = min(1, k / this) (sCM §4.2)',
                                         lo=0, fix="use 0 (no warm-up) or a step count (sCM: 10000)"),
    "tangent_norm_const": schema.Field(0.1, 'c of g / (‖g‖ + c) (sCM §4.2)', lo=0, lo_open=True, fix="use sCM's 0.1"),
    "tangent_norm": schema.Field("paper", "'paper' g/(‖g‖ + c) (sCM §4.2) | 'fastgen' g/(‖g‖/√d + c) (docs/fidelity.md)",
                                 choices=scm_obj.TANGENT_NORMS),
    "t_sampling": schema.Field("clip", "lognormal σ 'clip'ped to [σ_min, σ_max] | 'truncate'd to it (FastGen)",
                               choices=scm_obj.T_SAMPLINGS),
    "jvp": schema.Field("jvp", "'jvp' (jax.jvp, exact) | 'finite_difference' (central, ε = 1e-3·t)", choices=JVPS),
    "mid_t": schema.Field(1.1, "2-step sampler's intermediate t (sCM 1.1; FastGen arctan(0.821/σ_d) = 1.0238)",
                          lo=0, lo_open=True, fix="use sCM's 1.1 or FastGen's arctan(0.821/σ_d)"),
    "cfg_scale": schema.Field(1.0, 'sCD teacher guidance w: dx = dx_c + (w − 1)(dx_c − dx_∅)',
                              lo=0, fix="use 1 (no guidance)"),
}


def TEACHER_USE(config):   # noqa: N802  (a declaration: consistency.config.teacher_use)
    """sCD distils a teacher; sCT trains from data, optionally starting from an EDM workdir (never an oracle). None
    for an unknown mode (its own error)."""
    return {"distill": ("required", "scm.mode='train' (sCT)"),
            "train": ("optional", "scm.mode='distill' (sCD)")}.get(config.scm.mode)


def validate_config(config) -> None:
    """``config.scm`` (one ConfigError line naming the field)."""
    schema.check_block(config, CONFIG_BLOCK, CONFIG_FIELDS)   # every field: type, choices, bounds
    s, f, te = config.scm, config.diffusion, config.teacher
    distillation.number(s.mid_t, "scm.mid_t", 0, scm_obj.t_max_for(f.sigma_max, f.sigma_data), lo_open=True,
                        hi_open=True, fix=f"use sCM's {scm_obj.PAPER_MID_T} or FastGen's "
                        f"{math.atan2(scm_obj.FASTGEN_MID_SIGMA, f.sigma_data):.4f}")
    distillation.require(f.process == "ve", "diffusion.process", f"{f.process!r}: sCM converts a VE/EDM teacher to "
                         "TrigFlow (σ = σ_d tan t)", "use 've'")
    if s.mode != "distill":
        distillation.require(s.init == "scratch" or bool(te.workdir), "scm.init", "'teacher' but sCT has no "
                             "teacher to copy", "set teacher.workdir to an EDM run to start from, or init='scratch'")
    if s.init == "teacher":
        distillation.require(s.time_input == "edm", "scm.time_input", f"{s.time_input!r}, but init='teacher' copies "
                             "an EDM network, which reads c_noise = ¼ ln σ", "use time_input='edm'")
        distillation.require(not te.oracle or s.init_fit_steps > 0, "scm.init_fit_steps", "0, but init='teacher' "
                             "with an oracle teacher has no weights to copy", "fit first (e.g. 2000) or init='scratch'")
    distillation.require(s.cfg_scale == 1 or int(config.model.num_classes) > 0, "scm.cfg_scale",
                         f"{s.cfg_scale} guides by class but the model is unconditional", "use 1")


def trigflow_network(config, net):
    """F(params, x_t, t, labels, train=False, dropout_rng=None) = −net(x_t/σ_d, c_noise(t)) (module doc): with
    ``scm.time_input='edm'`` c_noise = ¼ ln(σ_d tan t), t clipped to [t(σ_min), π/2) inside the embedding only, so
    f(x, 0) = cos 0·x − 0·F = x stays exact."""
    s, f = config.scm, config.diffusion
    sd = float(f.sigma_data)
    t_min = float(scm_obj.t_from_sigma(f.sigma_min, sd))

    def c_noise(t):
        if s.time_input == "trigflow":
            return t
        t = jnp.clip(t, t_min, math.pi / 2 - 1e-6)
        return 0.25 * (math.log(sd) + jnp.log(jnp.sin(t)) - jnp.log(jnp.cos(t)))   # ¼ ln(σ_d tan t)

    def F(params, x_t, t, labels=None, train=False, dropout_rng=None):
        t = jnp.broadcast_to(jnp.asarray(t, x_t.dtype), x_t.shape[:1])
        rngs = {"dropout": dropout_rng} if (train and dropout_rng is not None) else {}
        return -net.apply({"params": params}, x_t / sd, c_noise(t), labels, train=train, rngs=rngs)
    return F


def teacher_velocity(config, teacher_apply, teacher_params, labels):
    """(x_t, t) → σ_d F_teacher = (cos t·x_t − D(x_t/cos t, σ_d tan t))/sin t with D guided by ``scm.cfg_scale`` w
    (seed (44): D_w = D_c + (w − 1)(D_c − D_∅)).  The velocity is affine in D with class-independent coefficients, so
    this is FastGen's guided velocity dx_c + (w − 1)(dx_c − dx_∅) exactly."""
    D = teachers.guided_teacher(teacher_apply, teacher_params, labels, float(config.scm.cfg_scale),
                                int(config.model.num_classes))
    return scm_obj.trigflow_velocity(D, float(config.diffusion.sigma_data))


def make(config, dataset) -> base.Method:
    validate_config(config)
    s, f = config.scm, config.diffusion
    sd = float(f.sigma_data)
    distilling = s.mode == "distill"
    shape = tuple(dataset.example_shape)
    conditional = common.is_conditional(config)
    weight_net = AdaptiveWeight()
    uses_teacher = distilling or s.init == "teacher"
    nets = distillation.build_networks(config, dataset) if uses_teacher else None
    net = nets.net if nets is not None else common.build_net(config, shape)
    t_min, t_max = float(scm_obj.t_from_sigma(f.sigma_min, sd)), scm_obj.t_max_for(f.sigma_max, sd)
    data_range = getattr(dataset, "data_range", None) if config.sampling.clip else None
    if data_range is not None and not all(math.isfinite(v) for v in data_range):
        data_range = None

    F = trigflow_network(config, net)
    # The tangent's JVP runs in float32 even under training.compute_dtype='bfloat16' (sCM §4; docs/methods.md §18 item 6).
    F_tangent = trigflow_network(config, wrappers.full_precision(net))

    def consistency_fn(params, labels):
        return lambda x_t, t: scm_obj.consistency_output(x_t, t, F(params, x_t, t, labels), sd)

    def init(rng, batch):
        k_net, k_weight = jax.random.split(rng)
        if s.init == "teacher":
            params, _ = distillation.init_generator_and_fake(config, NAME, nets, k_net, batch, with_fake=False)
        else:
            params = common.init_params(net, k_net, batch["x"], conditional)
        weighting = weight_net.init(k_weight, jnp.zeros((1,)))["params"]
        frozen = {"teacher": nets.teacher_params} if distilling else {}
        return {"online": {"net": params, "weighting": weighting}}, frozen

    def loss(online, state, batch, rng):
        x = batch["x"]
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        if s.t_sampling == "truncate":
            uniform = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1), ()))(keys)
            t = scm_obj.sample_t_truncated(uniform, float(s.p_mean), float(s.p_std), sd, float(f.sigma_min),
                                           float(f.sigma_max))
        else:
            t = scm_obj.sample_t(distillation.normal_like(keys, 1, ()), float(s.p_mean), float(s.p_std), sd, t_min,
                                 t_max)
        z = sd * distillation.normal_like(keys, 2, shape)
        x_t = scm_obj.forward(x, z, t)
        if distilling:
            velocity = teacher_velocity(config, nets.teacher_apply, state.frozen["teacher"], labels)
            dxdt = jax.lax.stop_gradient(velocity(x_t, t))
        else:
            dxdt = scm_obj.conditional_velocity(x, z, t)
        dropout_rng = jax.random.fold_in(rng, 3)   # one key for the online pass and the tangent (§18 item 1)
        frozen_net = jax.lax.stop_gradient(online["net"])

        def F_minus(xx, tt):
            return F_tangent(frozen_net, xx, tt, labels, train=True, dropout_rng=dropout_rng)
        tangent_fn = scm_obj.tangent_jvp if s.jvp == "jvp" else scm_obj.tangent_finite_difference
        F_minus_value, J = tangent_fn(F_minus, x_t, t, dxdt)
        r = scm_obj.tangent_warmup(state.step, int(s.tangent_warmup_steps))
        g = scm_obj.tangent(F_minus_value, J, x_t, t, dxdt, sd, r)
        g_norm = scm_obj.tangent_norm(g)
        g = scm_obj.normalize_tangent(g, float(s.tangent_norm_const), s.tangent_norm)
        F_theta = F(online["net"], x_t, t, labels, train=True, dropout_rng=dropout_rng)
        log_weight = weight_net.apply({"params": online["weighting"]}, t)
        per_example, unweighted = scm_obj.scm_loss(F_theta, g, log_weight)
        metrics = {"loss_scm": jnp.mean(per_example), "loss_unweighted": jnp.mean(unweighted),
                   "tangent_norm": jnp.mean(g_norm), "tangent_warmup": r, "log_weight": jnp.mean(log_weight),
                   "t_mean": jnp.mean(t)}
        return jnp.mean(per_example), jax.lax.stop_gradient(metrics)

    def sample(state, rng, num_samples, *, nfe, options, labels=None, params=None):
        params = state.ema["online"]["net"] if params is None else params
        cond = None if labels is None else jnp.asarray(labels, jnp.int32)
        times = scm_obj.sampling_times(int(nfe), t_max, float(options.mid_t))
        x = scm_obj.multistep_sample(consistency_fn(params, cond), rng, (num_samples,) + shape, times, sd)
        return x if data_range is None else jnp.clip(x, *data_range)

    return base.Method(name=NAME, init=init, trained=(common.trained_set(config, "online", loss, sampled=True),),
                       sample=sample, options=SCMOptions(mid_t=float(s.mid_t)), default_nfes=(1, 2))


@dataclasses.dataclass(frozen=True)
class SCMOptions:
    """sCM sampling: ``mid_t``, the TrigFlow time of the second step of a 2-step sampler (``scm.mid_t``)."""
    mid_t: float
