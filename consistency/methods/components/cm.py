"""The consistency-model trainer shared by CD, CT and iCT (seed §1–§2; docs/methods.md §3–§6).

One train step, whose behaviour is set by ``config.cm`` fields (each notebook ablation is one field):

* target input x̂_lo:  'cd' — teacher ODE solve σ_hi → σ_lo (``solver``, ``teacher_steps``; seed eq. 12);
  'ct' — x₀ + σ_lo z with the same z (seed eq. 20), or a posterior-averaged E[x₀|x] (``posterior``; seed eq. 22–25);
* pairs: neighbours (lo, lo+1) or distant pairs (lo, lo+g), g ~ U{1…max_gap} (seed eq. 13);
  ``split_gap``: close pairs take the CD target, distant pairs the CT target (the notebook's rule);
  ``ct_weight``: CD plus a CT term on an independent arbitrary pair (seed eq. 14);
* grid: fixed N, CT's N(k) or iCT's doubling N(k), all traced from ``state.step`` on a fixed-size grid (no recompiles);
* index sampling uniform or iCT's discrete lognormal; distance l2 | l1 | pseudo_huber | feature; weighting λ;
* target network θ⁻: EMA μ (fixed or CT's μ(k)); μ = 0 means θ⁻ = stopgrad(θ) and no copy is stored (iCT).
The online and target passes share the noise and the dropout key (docs/methods.md §18 item 1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from consistency.core import schema
from consistency.core.errors import ConfigError
from consistency.diffusion import cm_sampling, distances, schedules
from consistency.methods.components import teachers
from consistency.methods import base
from consistency.methods.components import common
from consistency.objectives import consistency as cm_obj


# ------------------------------------------------------------------------------------------------------------------
# config.cm, shared by CD, CT and iCT (docs/methods.md §4–§6). Defaults: CM paper CIFAR-10 CD.
# ------------------------------------------------------------------------------------------------------------------

CONFIG_BLOCK = "cm"
CURRICULA = ("fixed", "ct", "ict")
TARGET_SCHEDULES = ("fixed", "ct")
DISTANCES = ("l2", "l1", "pseudo_huber", "feature")
WEIGHTINGS = ("uniform", "snr", "snr+1", "truncated_snr", "inv_delta")
CONFIG_FIELDS = {
    "num_scales": schema.Field(18, "N of the Karras grid when curriculum == 'fixed' (CD CIFAR-10: 18)", lo=2,
                               fix="use at least 2 grid points (CD CIFAR-10: 18)"),
    "curriculum": schema.Field("fixed", "'fixed' (N = num_scales) | 'ct' (Song 2023 N(k)) | 'ict' (doubling N(k))",
                               choices=CURRICULA),
    "s0": schema.Field(2, "curriculum start (CT: 2, iCT: 10)", lo=1),
    "s1": schema.Field(150, "curriculum end (CT: 150, iCT: 1280)", lo=1),
    "target_ema": schema.Field(0.0, "μ of θ⁻ when target_schedule == 'fixed'; 0 → θ⁻ = stopgrad(θ), no copy kept",
                               lo=0, hi=1, hi_open=True, fix="use 0 (θ⁻ = stopgrad θ) or a decay below 1"),
    "target_schedule": schema.Field("fixed", "'fixed' | 'ct' (μ(k) from mu0, s0, s1)", choices=TARGET_SCHEDULES),
    "mu0": schema.Field(0.9, "CT μ₀", lo=0, hi=1, hi_open=True),
    "mu_form": schema.Field("code", "'code' μ₀^{s₀/(N−1)} (jcm/cm) | 'paper' μ₀^{s₀/N} (docs/methods.md §17 item 1)",
                            choices=("code", "paper")),
    "distance": schema.Field("l2", "'l2' | 'l1' | 'pseudo_huber' | 'feature' (LPIPS-like, in-project feature net)",
                             choices=DISTANCES),
    "huber_c": schema.Field(-1.0, "pseudo-Huber c; < 0 → 0.00054·√d (iCT)",
                            fix="use a pseudo-Huber c > 0, or < 0 for iCT's 0.00054·√d"),
    "weighting": schema.Field("uniform", "'uniform' | 'snr' | 'snr+1' | 'truncated_snr' | 'inv_delta' (iCT 1/Δσ)",
                              choices=WEIGHTINGS),
    "index_sampling": schema.Field("uniform", "'uniform' over pairs | 'lognormal' (iCT discrete lognormal)",
                                   choices=("uniform", "lognormal")),
    "p_mean": schema.Field(-1.1, "iCT lognormal index sampling: mean of ln σ"),
    "p_std": schema.Field(2.0, "iCT lognormal index sampling: std of ln σ", lo=0, lo_open=True),
    "solver": schema.Field("heun", "CD teacher solver: 'euler' | 'heun' | 'dpm_solver_2' (notebook ablation: solver "
                           "order)", choices=("euler", "heun", "dpm_solver_2")),
    "teacher_steps": schema.Field(1, "solver steps per target (notebook: multi-step teacher)", lo=1),
    "max_gap": schema.Field(1, "pairs (i, i+g), g ~ U{1..max_gap} (seed eq. 13: distant-step pairs)", lo=1),
    "ct_weight": schema.Field(0.0, "CD + ct_weight·CT on an arbitrary pair (seed eq. 14)", lo=0),
    "split_gap": schema.Field(0, "> 0: pairs with gap ≤ split_gap use the CD target, farther ones the CT target", lo=0),
    "posterior": schema.Field("none", "CT target E[x₀|x]: 'none' (x₀, seed eq. 17 n=1) | 'batch' | 'dataset' (seed "
                              "eq. 22–25)", choices=("none", "batch", "dataset")),
    "posterior_k": schema.Field(0, "> 0: k nearest neighbours only", lo=0),
    "posterior_substeps": schema.Field(1, "Euler sub-steps σ_hi → σ_lo of the posterior-averaged PF-ODE, x̄ "
                                       "re-evaluated at each (seed eq. 24 is 1; nb §1.5 'what if we do more?')", lo=1,
                                       fix="use 1 (seed eq. 24) or more sub-steps"),
    "init_from_teacher": schema.Field(True, "CD: start the student from the teacher's EMA weights"),
}


def validate_config(config) -> None:
    """``config.cm``: its fields (:data:`CONFIG_FIELDS`), then the rules across them."""
    schema.check_block(config, CONFIG_BLOCK, CONFIG_FIELDS)
    cm = config.cm
    if cm.curriculum != "fixed" or cm.target_schedule == "ct":
        # CT: N(0) = s0 points, at least 2 to form a pair (and μ(k) = μ0^{s0/(N−1)}); iCT: N = s0·2^k + 1 ≥ 2.
        least = 1 if (cm.curriculum == "ict" and cm.target_schedule != "ct") else 2
        schema.require(cm.s0 >= least, "cm.s0", f"the curriculum would start with {cm.s0 + (1 if least == 1 else 0)} "
                       "grid point(s), too few for a pair", f"use s0 >= {least} (CT: 2, iCT: 10)")
        schema.require(cm.s0 <= cm.s1, "cm.s0", f"the curriculum start s0 = {cm.s0} is above its end cm.s1 = "
                       f"{cm.s1}", "use s0 <= s1 (CT: 2 → 150, iCT: 10 → 1280)")
    schema.require(cm.posterior_substeps == 1 or cm.posterior != "none", "cm.posterior_substeps",
                   f"{cm.posterior_substeps} sub-steps of the single-sample target change nothing (x₀ + σz solves its "
                   "ODE exactly, seed eq. 18–20)", "set cm.posterior to 'batch' or 'dataset', or use 1")


def refuse_teacher_terms(config) -> None:
    """CT and iCT train without a teacher: no CD term mixed in (``ct_weight``, ``split_gap``)."""
    cm = config.cm
    schema.require(cm.ct_weight == 0, "cm.ct_weight", f"{cm.ct_weight} mixes in CD, which needs a teacher, but "
                   f"method is {config.method!r}", "set it to 0, or use method='cd'")
    schema.require(cm.split_gap == 0, "cm.split_gap", f"{cm.split_gap} splits pairs between CD and CT, which needs "
                   f"a teacher, but method is {config.method!r}", "set it to 0, or use method='cd'")



def grid_size(cm) -> int:
    """Static length of the σ grid: N for a fixed grid, s₁ + 1 for a curriculum."""
    return int(cm.num_scales) if cm.curriculum == "fixed" else int(cm.s1) + 1


def num_scales_at(cm, step, total_steps):
    if cm.curriculum == "fixed":
        return jnp.asarray(cm.num_scales, jnp.int32)
    if cm.curriculum == "ct":
        return schedules.ct_num_steps(step, total_steps, cm.s0, cm.s1)
    if cm.curriculum == "ict":
        return schedules.ict_num_steps(step, total_steps, cm.s0, cm.s1)
    raise ConfigError(f"config.cm.curriculum: must be 'fixed', 'ct' or 'ict', got {cm.curriculum!r}")


def target_decay_at(cm, step, total_steps):
    if cm.target_schedule == "fixed":
        return jnp.asarray(cm.target_ema, jnp.float32)
    if cm.target_schedule == "ct":
        return schedules.ct_target_decay(step, total_steps, cm.s0, cm.s1, cm.mu0, cm.mu_form)
    raise ConfigError(f"config.cm.target_schedule: must be 'fixed' or 'ct', got {cm.target_schedule!r}")


def keeps_target_copy(cm) -> bool:
    return not (cm.target_schedule == "fixed" and float(cm.target_ema) == 0.0)


def validate_cm(config, kind: str):
    """The ``config.cm`` block and the rules of method ``kind``'s family, as :func:`consistency.config.validate`
    checks them (a method built without the CLI gets the same one-line errors)."""
    validate_config(config)
    if kind == "ct":
        refuse_teacher_terms(config)


def make_distance(config, example_shape):
    cm = config.cm
    if cm.distance == "feature":
        from consistency.objectives.feature_distance import make_feature_distance
        return make_feature_distance(config, example_shape)
    c = None if cm.huber_c < 0 else float(cm.huber_c)
    return distances.get_distance(cm.distance, c), None


SIGMA_BIN_EDGES = (0.1, 1.0, 10.0)  # fixed decades of σ_hi, so the curves are comparable between runs and schedules


def loss_by_sigma(per_example, weight, sigma_hi) -> dict:
    """Diagnostics for TensorBoard: the weighted loss's share from each σ_hi decade (``loss_share_*`` sums to 1),
    its mean in the decade (0 when the batch drew none), and the range of the pair weight λ — with 1/Δσ the
    weight grows with N(k), and a few small-σ pairs can carry most of the gradient."""
    edges = (0.0,) + SIGMA_BIN_EDGES + (float("inf"),)
    names = ("lt0.1", "0.1to1", "1to10", "ge10")
    total = jnp.sum(per_example) + 1e-30
    out = {"weight_min": jnp.min(weight), "weight_max": jnp.max(weight)}
    for name, lo, hi in zip(names, edges[:-1], edges[1:]):
        mask = (sigma_hi >= lo) & (sigma_hi < hi)
        part = jnp.sum(jnp.where(mask, per_example, 0.0))
        out[f"loss_share_sigma_{name}"] = part / total
        out[f"loss_mean_sigma_{name}"] = part / jnp.maximum(jnp.sum(mask), 1)
    return out


def make(config, dataset, kind: str) -> base.Method:
    """Build CD (kind='cd') or CT/iCT (kind='ct') from ``config.cm``."""
    validate_cm(config, kind)
    cm, f, total = config.cm, config.diffusion, int(config.training.num_steps)
    net = common.build_net(config, dataset.example_shape)
    f_apply = common.consistency_function(net, f.sigma_min, f.sigma_data)
    conditional = common.is_conditional(config)
    example_shape = tuple(dataset.example_shape)
    size = grid_size(cm)
    distance, feature_params = make_distance(config, example_shape)
    uses_teacher = kind == "cd"
    teacher_params, teacher_apply = teachers.load_teacher(config, dataset) if uses_teacher else (None, None)
    bank = jnp.asarray(dataset.arrays()[0], jnp.float32) if (kind == "ct" and cm.posterior == "dataset") else None
    data_range = getattr(dataset, "data_range", None) if config.sampling.clip else None

    def init(rng, batch):
        params = common.init_params(net, rng, batch["x"], conditional)
        if uses_teacher and cm.init_from_teacher and config.teacher.workdir:
            params = _init_from(params, teacher_params)
        frozen = {}
        if uses_teacher:
            frozen["teacher"] = teacher_params
        if bank is not None:
            frozen["bank"] = bank
        if feature_params is not None:
            frozen["features"] = feature_params
        return {"online": params}, frozen

    def draw_pairs(keys, n):
        """Per-example (σ_lo, σ_hi, gap) on the Karras grid with n points (traced)."""
        grid = schedules.karras_sigmas(n, f.sigma_min, f.sigma_max, f.rho, size=size)
        if cm.index_sampling == "lognormal":
            pmf = schedules.lognormal_index_pmf(grid, n, cm.p_mean, cm.p_std)
        else:
            pmf = schedules.uniform_index_pmf(size, n)
        lo = jax.vmap(lambda k: schedules.sample_index(jax.random.fold_in(k, 11), pmf))(keys)
        if cm.max_gap > 1:
            gap = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 12), (), 1, cm.max_gap + 1))(keys)
        else:
            gap = jnp.ones_like(lo)
        hi = jnp.minimum(lo + gap, n - 1)
        return grid[lo], grid[hi], hi - lo

    def loss(online, state, batch, rng):
        x = batch["x"]
        keys = base.example_keys(rng, batch["index"])
        labels = common.batch_labels(config, batch)
        n = num_scales_at(cm, state.step, total)
        mu = target_decay_at(cm, state.step, total)
        sigma_lo, sigma_hi, gap = draw_pairs(keys, n)
        noise = base.per_example_normal(jax.vmap(lambda k: jax.random.fold_in(k, 13))(keys), x.shape[1:], x.dtype)
        x_hi = x + cm_obj.bcast(sigma_hi, x) * noise
        dropout_rng = jax.random.fold_in(rng, 14)
        target_params = state.moving["target"] if keeps_target_copy(cm) else jax.lax.stop_gradient(online)

        def teacher(y, s):
            return teacher_apply(state.frozen["teacher"], y, s, labels)

        def ct_point(x_noisy, s_hi, s_lo):
            if cm.posterior == "none":
                return cm_obj.ct_target_point(x, noise, s_lo)
            pool = x if cm.posterior == "batch" else state.frozen["bank"]
            return cm_obj.posterior_ode_target(x_noisy, s_hi, s_lo, pool, cm.posterior_k, cm.posterior_substeps,
                                               f.rho)

        if kind == "cd":
            # Distant pairs span up to max_gap grid intervals: take teacher_steps·max_gap solver steps on a per-example
            # Karras sub-grid, so the teacher path is never coarser than the training grid.
            x_lo = cm_obj.teacher_target_point(teacher, x_hi, sigma_hi, sigma_lo, cm.solver,
                                               cm.teacher_steps * cm.max_gap)
            if cm.split_gap > 0:
                x_lo = jnp.where(cm_obj.bcast(gap <= cm.split_gap, x), x_lo, ct_point(x_hi, sigma_hi, sigma_lo))
        else:
            x_lo = ct_point(x_hi, sigma_hi, sigma_lo)
        x_lo = jax.lax.stop_gradient(x_lo)
        weight = cm_obj.pair_weight(cm.weighting, sigma_lo, sigma_hi)

        extra = None
        if kind == "cd" and cm.ct_weight > 0:  # seed eq. 14: + CT on an independent arbitrary pair (k ≠ j)
            ekeys = jax.vmap(lambda k: jax.random.fold_in(k, 15))(keys)
            grid = schedules.karras_sigmas(n, f.sigma_min, f.sigma_max, f.rho, size=size)
            kj = jax.vmap(lambda k: jax.random.choice(k, size, (2,), replace=False,
                                                      p=(jnp.arange(size) < n) / n))(ekeys)
            s_a, s_b = grid[jnp.min(kj, 1)], grid[jnp.max(kj, 1)]
            extra = (x + cm_obj.bcast(s_b, x) * noise, s_b, jax.lax.stop_gradient(x + cm_obj.bcast(s_a, x) * noise),
                     s_a, cm_obj.pair_weight(cm.weighting, s_a, s_b))

        def consistency_term(p, xa, sa, xb, sb, w):
            f_online = f_apply(p, xa, sa, labels, train=True, dropout_rng=dropout_rng)
            f_target = jax.lax.stop_gradient(f_apply(target_params, xb, sb, labels, train=True,
                                                     dropout_rng=dropout_rng))
            if feature_params is not None:
                return w * distance(state.frozen["features"], f_online, f_target)
            return w * distance(f_online, f_target)

        per_example = consistency_term(online, x_hi, sigma_hi, x_lo, sigma_lo, weight)
        total_loss = jnp.mean(per_example)
        metrics = {"loss_cm": total_loss, "num_scales": n.astype(jnp.float32), "target_decay": mu,
                   "sigma_hi_mean": jnp.mean(sigma_hi), **loss_by_sigma(per_example, weight, sigma_hi)}
        if extra is not None:
            ct_loss = jnp.mean(consistency_term(online, *extra))
            metrics["loss_ct"] = ct_loss
            total_loss = total_loss + cm.ct_weight * ct_loss
        return total_loss, jax.lax.stop_gradient(metrics)

    def sample(state, rng, num_samples, *, nfe, options, labels=None, params=None):
        """One- or multi-step CM sampling (CM Alg. 1) on the σ list of :func:`common.cm_sampling_sigmas` (one network
        evaluation per σ)."""
        sigmas = common.cm_sampling_sigmas(config, options.sigmas, nfe)
        params = state.ema["online"] if params is None else params
        cond = None if labels is None else jnp.asarray(labels, jnp.int32)

        def fn(xx, s, c):
            return f_apply(params, xx, s, c)
        return cm_sampling.consistency_sample(fn, rng, (num_samples,) + example_shape, sigmas, f.sigma_min,
                                              data_range, cond)

    moving = ()
    if keeps_target_copy(cm):  # θ⁻ ← μ(k) θ⁻ + (1 − μ(k)) θ after each update (seed eq. 12)
        moving = (base.Moving("target", source="online", decay=lambda step: target_decay_at(cm, step, total)),)
    return base.Method(name=config.method, init=init,
                       trained=(common.trained_set(config, "online", loss, sampled=True),), moving=moving,
                       sample=sample, options=common.CMOptions(), sampling_nfe=common.cm_sampling_nfe(config),
                       describe_sampler=common.describe_cm_sampler(config), default_nfes=(1, 2))


def _init_from(params, teacher_params):
    """Copy the teacher's weights into the student when the trees match (CM: `finetune=True`)."""
    if jax.tree.structure(params) != jax.tree.structure(teacher_params) or any(
            a.shape != b.shape for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(teacher_params))):
        raise ConfigError("config.cm.init_from_teacher: the student network differs from the teacher's; use the "
                          "teacher's config.model or set cm.init_from_teacher=False")
    return jax.tree.map(jnp.asarray, teacher_params)
