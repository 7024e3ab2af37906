"""The notebook's open questions, each answered by one command that writes a table and a plot (issue 11, item 4).

    python launch/science.py --question=a            # EMA target vs none (CD, CT) + the seed §2.1 point-mass prediction
    python launch/science.py --question=b,c,d,e,f,i  # solver order, N, distant pairs, CD+CT, posterior target, weighting
    python launch/science.py --question=g            # why CD gets worse with more steps
    python launch/science.py --question=k            # CT's adaptive N(k), μ(k) and iCT's doubling N(k) for CD
    python launch/science.py --question=n            # DMD without regression: mode dropping, TTUR, exact fake score
    python launch/science.py --question=l            # K Euler sub-steps of the posterior-averaged CT target
    python launch/science.py --question=o            # VE multistep CD against T, and the teacher weight w
    python launch/science.py --question=j            # how much data CD, SiD and DMD2 need; data-free (teacher samples)
    python launch/science.py --question=m            # the CD target vs CT's x₀ + σ_lo z, and each one's error
    python launch/science.py --question=all --seeds=3 --steps=2000

Every setting trains the project's own method (the loop's own step, ``train.Stepper``) on the 2-D mixture of 8
Gaussians (``configs/toy_*.py``; CD's teacher is the *exact* mixture denoiser, so no teacher error enters), for
``--steps`` steps and ``--seeds`` seeds, and is scored on 2000 samples at 1, 2 and 4 steps with sliced W1 (noise floor
of two real draws of 2000 printed with each table) and the fraction of the 8 modes covered. Results are cached per run in
``docs/science/runs.json``, keyed by a hash of the run's full config (so a setting shared by two questions — plain CD
appears in five — trains once, and a rerun only computes what is missing; ``--fresh`` recomputes), and each question's
table (mean ± std over seeds) and plot are written between the markers ``<!-- science:X -->`` and
``<!-- /science:X -->`` of ``docs/science.md``; the prose outside the markers (the answers) is left as it is.

Budget: the defaults (2000 steps, batch 512) are the toy configs' recipe at half length, so that every question fits
in minutes on a 2-core CPU; the answers say where they depend on it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import numpy as np
from absl import flags

from consistency.tools import scripts
from consistency.core.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_QUESTIONS = flags.DEFINE_list("question", ["all"], "Which questions: a, b, c, d, e, f, g, h, i, j, k, l, m, n, o or all.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per setting.")
_STEPS = flags.DEFINE_integer("steps", 2000, "Training steps per run.")
_OUT = flags.DEFINE_string("out", "docs/science.md", "Markdown page; tables go between its science markers.")
_FRESH = flags.DEFINE_bool("fresh", False, "Recompute cached results.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 2000, "Samples per evaluation.")
_ONLY = flags.DEFINE_multi_string("only", [], "Train only the setting with this label (repeatable; one question) and "
                                  "print its rows instead of rewriting the page's block (a row added to a finished "
                                  "table).")
_CACHED_ONLY = flags.DEFINE_bool("cached_only", False, "Train nothing: write the tables from the cached runs (a row "
                                  "with fewer seeds says how many; one with none shows —).")
_MAX_SETTINGS = flags.DEFINE_integer("max_settings", 0, "Run only the first k settings of each question (0: all; "
                                     "for smoke tests).")

NFES = (1, 2, 4)
QUESTION_NFES = {"n": (1,)}   # DMD's one-step generators are sampled at 1 step only


@dataclasses.dataclass(frozen=True)
class Setting:
    label: str
    config: str                 # configs/<file>.py
    overrides: tuple = ()       # (("cm.max_gap", 4), ...)
    steps_scale: float = 1.0    # (f) also reads the posterior target at a quarter of the budget
    data: str = ""              # (j) training points: "" the split (data.toy_size of them) | one of DATA_SOURCES


def _s(label, config, steps_scale=1.0, data="", **overrides):
    return Setting(label, config, tuple((k.replace("__", "."), v) for k, v in overrides.items()), steps_scale, data)


CD, CT, ICT = "configs/toy_cd.py", "configs/toy_ct.py", "configs/toy_ict.py"
DMD = "configs/toy_dmd.py"
MCM_VE = "configs/toy_mcm_ve.py"
O_SEGMENTS = (1, 2, 4, 8, 16)   # T of (o); the 17-interval grid gives M = round(17/T) = 17, 8, 4, 2, 1 links
# (o)(ii) an imperfect teacher with a known error: the exact denoiser of the mixture with every component's std × 2
# (0.1 → 0.2), whose ODE ends on that widened mixture (teacher.oracle_std_scale, methods/components/teachers.py).
O_WIDE_TEACHER = 2.0
SID, DMD2 = "configs/toy_sid.py", "configs/toy_dmd2.py"
# (j) data-free sources, data.toy_size points each: the teacher's own samples (its deterministic EDM sampler, Heun on 18
# Karras points = 35 NFE, from σ_max·z), or no information about the data at all (N(0, s²I), s the data's RMS std).
DATA_SOURCES = {"teacher": "teacher samples (Heun, 35 NFE)", "noise": "N(0, s²I) points, s = the data's std"}
# (m) CD with CT's target: configs/toy_ct.py set to toy_cd.py's recipe, so that the target input x̂_lo is the only
# difference (checked by same_recipe_but_target before anything trains).
CD_RECIPE_FOR_CT = dict(cm__curriculum="fixed", cm__num_scales=18, cm__weighting="uniform", optim__lr=1e-3,
                        training__ema_decay=0.999)

QUESTIONS = {
    "a": ("EMA target vs none (CD and CT)", [
        _s("CD, θ⁻ = sg θ (no EMA)", CD),
        _s("CD, μ = 0.99", CD, cm__target_ema=0.99),
        _s("CT, μ(k) schedule (CT 2023)", CT),
        _s("CT, θ⁻ = sg θ (no EMA)", CT, cm__target_schedule="fixed", cm__target_ema=0.0),
        _s("CT lr 1e-4, μ(k)", CT, optim__lr=1e-4),
        _s("CT lr 1e-4, no EMA", CT, optim__lr=1e-4, cm__target_schedule="fixed", cm__target_ema=0.0),
    ]),
    "b": ("Solver order for CD, at equal N and at equal teacher NFE per target", [
        _s("Euler, N = 18 (1 NFE/target)", CD, cm__solver="euler"),
        _s("Heun, N = 18 (2 NFE/target)", CD, cm__solver="heun"),
        _s("DPM-Solver-2, N = 18 (2 NFE/target)", CD, cm__solver="dpm_solver_2"),
        _s("Euler ×2 steps, N = 18 (2 NFE/target)", CD, cm__solver="euler", cm__teacher_steps=2),
    ]),
    "c": ("N for CD", [_s(f"N = {n}", CD, cm__num_scales=n) for n in (6, 12, 18, 40, 80)]),
    "d": ("Distant-step pairs (seed eq. 13), CD", [_s(f"max_gap = {g}", CD, cm__max_gap=g) for g in (1, 2, 4, 8)]),
    "e": ("CD + CT combined (seed eq. 14) and close pairs CD / distant pairs CT", [
        _s("CD", CD),
        _s("CD + 1·CT", CD, cm__ct_weight=1.0),
        _s("max_gap 4, all CD", CD, cm__max_gap=4),
        _s("max_gap 4, gap ≤ 2 CD, > 2 CT", CD, cm__max_gap=4, cm__split_gap=2),
        _s("max_gap 4, gap ≤ 1 CD, > 1 CT", CD, cm__max_gap=4, cm__split_gap=1),
    ]),
    "f": ("Posterior-averaged CT target (seed eq. 22–25) vs the single-sample target, iCT", [
        *[_s(f"{name}, ¼ budget", ICT, 0.25, cm__posterior=p, cm__posterior_k=k) for name, p, k in (
            ("single sample", "none", 0), ("batch", "batch", 0), ("dataset", "dataset", 0))],
        *[_s(name, ICT, cm__posterior=p, cm__posterior_k=k) for name, p, k in (
            ("single sample", "none", 0), ("batch", "batch", 0), ("dataset", "dataset", 0),
            ("dataset, k-NN (k = 16)", "dataset", 16))],
    ]),
    "i": ("Weighting λ(σ) for CD and iCT", [
        *[_s(f"CD, {w}", CD, cm__weighting=w) for w in ("uniform", "snr", "snr+1", "truncated_snr", "inv_delta")],
        *[_s(f"iCT, {w}", ICT, cm__weighting=w) for w in ("uniform", "snr", "snr+1", "truncated_snr", "inv_delta")],
    ]),
    "k": ("Adaptive N(k) and μ(k) (CM App. C, iCT §3.4) for CD, against CD's fixed N, at the same budget", [
        _s("CD, N = 18, θ⁻ = sg θ (toy_cd.py)", CD),
        _s("CD, CT's N(k) 2 → 151 and μ(k)", CD, cm__curriculum="ct", cm__s0=2, cm__s1=150,
           cm__target_schedule="ct", cm__mu0=0.9),
        _s("CD, iCT's doubling N(k) 11 → 1281, θ⁻ = sg θ", CD, cm__curriculum="ict", cm__s0=10, cm__s1=1280),
        _s("CD, CT's N(k) 2 → 18, θ⁻ = sg θ", CD, cm__curriculum="ct", cm__s0=2, cm__s1=17),
        _s("CD, CT's N(k) 2 → 151, θ⁻ = sg θ", CD, cm__curriculum="ct", cm__s0=2, cm__s1=150),
        _s("CT, N(k) 2 → 151, θ⁻ = sg θ (toy_ct.py)", CT),
        _s("CT, N = 18, θ⁻ = sg θ", CT, cm__curriculum="fixed", cm__num_scales=18),
    ]),
    "n": ("DMD with and without regression (and when it fails), TTUR 5:1, DMD2's recipe, exact-fake-score control", [
        _s("DMD, λ_reg = 0.25, 1:1 (toy_dmd.py)", DMD),
        # when the 1:1 run without regression fails: the same run stopped after one step and at 1/10, 1/4, 1/2
        _s("DMD, no regression, 1:1, after one step (the start)", DMD, steps_scale=1e-6, dmd__regression_weight=0.0),
        *[_s(f"DMD, no regression, 1:1, {frac:g} of the budget", DMD, steps_scale=frac, dmd__regression_weight=0.0)
          for frac in (0.1, 0.25, 0.5)],
        _s("DMD, no regression, 1:1", DMD, dmd__regression_weight=0.0),
        _s("control: no regression, 1:1, exact D_fake of 4096 G samples", DMD,
           dmd__regression_weight=0.0, dmd__fake_score="empirical", dmd__fake_pool=4096),
        _s("DMD, no regression, TTUR 5:1", DMD, dmd__regression_weight=0.0, dmd__ttur=5),
        _s("DMD2 (toy_dmd2.py: TTUR 5:1 + GAN, no regression)", DMD2),
    ]),
    "l": ("More than one ODE step for the posterior-averaged CT target (seed eq. 22–25), iCT", [
        _s("single sample (any K: the same target)", ICT, cm__posterior="none"),
        *[_s(f"{name}, K = {k}", ICT, cm__posterior=p, cm__posterior_substeps=k)
          for name, p in (("batch", "batch"), ("dataset", "dataset")) for k in (1, 2, 4)]]),
    "o": ("VE multistep CD (seed eq. 48–54) against T, exact and widened (stds × 2) mixture teachers",
          [_s(f"T = {t}", MCM_VE, mcm__segments=t) for t in O_SEGMENTS]
          + [_s(f"T = {t}, teacher stds × {O_WIDE_TEACHER:g}", MCM_VE, mcm__segments=t,
                teacher__oracle_std_scale=O_WIDE_TEACHER) for t in O_SEGMENTS]),
}
QUESTIONS["j"] = ("Which subset of the data does distillation need (CD, SiD, DMD2)", [
    _s("CD, 100 % (100,000 points)", CD),
    _s("CD, 10 % (10,000)", CD, data__toy_size=10_000),
    _s("CD, 1 % (1,000)", CD, data__toy_size=1_000),
    _s("CD, data-free: 100,000 teacher samples", CD, data="teacher"),
    _s("CD, 512 points (one batch)", CD, data__toy_size=512),
    _s("CD, no data: 100,000 N(0, s²I) points", CD, data="noise"),
    _s("SiD, 100 %", SID),
    _s("SiD, 1 %", SID, data__toy_size=1_000),
    _s("DMD2, 100 %", DMD2),
    _s("DMD2, 10 %", DMD2, data__toy_size=10_000),
    _s("DMD2, 1 %", DMD2, data__toy_size=1_000),
    _s("DMD2, data-free: 100,000 teacher samples", DMD2, data="teacher"),
])
QUESTIONS["m"] = ("The CD target (one teacher Heun step) vs the CT target x₀ + σ_lo z, same recipe", [
    _s("CD target: Heun step of the teacher from x_hi", CD),
    _s("CT target: x₀ + σ_lo z (same z)", CT, **CD_RECIPE_FOR_CT),
])
ALL = ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o")


# ----------------------------------------------------------------------------------------------------------
# Running one setting
# ----------------------------------------------------------------------------------------------------------

def load_config(setting: Setting, steps: int, seed: int):
    config = scripts.load_config_file(os.path.join(REPO, setting.config))
    for key, value in setting.overrides:
        block, field = key.split(".")
        config[block][field] = value
    config.training.num_steps = max(1, int(round(steps * setting.steps_scale)))
    config.seed = int(seed)
    config.eval.num_samples = int(_NUM_SAMPLES.value) if flags.FLAGS.is_parsed() else 2000
    return config


def ensure_ode_pairs(config) -> None:
    """DMD's regression pairs (``config.dmd.pairs``) for an oracle teacher, written once if missing, as
    configs/toy_dmd.py's docstring makes them (launch/make_ode_pairs.py: 4096 pairs, Heun on 40 points, seed 0)."""
    from consistency.core import fileio
    from consistency.methods.components import teachers
    if config.method != "dmd" or float(config.dmd.regression_weight) <= 0 or fileio.exists(config.dmd.pairs):
        return
    if not config.teacher.oracle:
        raise ConfigError(f"config.dmd.pairs: {config.dmd.pairs!r} does not exist; make it with "
                          "launch/make_ode_pairs.py --teacher=WORKDIR")
    os.makedirs(os.path.dirname(os.path.abspath(config.dmd.pairs)), exist_ok=True)
    teachers.write_ode_pairs(config, config.dmd.pairs, 4096, num_steps=40, solver="heun", seed=0)




def training_points(config, dataset, data: str):
    """(j) The ``dataset`` that serves ``data.toy_size`` points of ``data`` (DATA_SOURCES) instead of its split."""
    from consistency.data import with_examples
    num = int(config.data.toy_size)
    if data == "teacher":
        from consistency.methods.components import teachers
        _, points, _ = teachers.make_ode_pairs(config, num, num_steps=18, solver="heun", seed=1_000 + int(config.seed))
    elif data == "noise":
        rng = np.random.default_rng([2_000, int(config.seed)])
        points = float(dataset.data_std) * rng.standard_normal((num,) + tuple(dataset.example_shape))
    else:
        raise ConfigError(f"Setting.data: {data!r} is not one of {', '.join(DATA_SOURCES)} or ''")
    return with_examples(dataset, points)


def train_state(config, data: str = ""):
    """Train ``config`` with the project's train step (on ``data``: see :func:`training_points`); returns (method,
    state, dataset)."""
    import jax
    ensure_ode_pairs(config)
    from consistency.run import train
    from consistency.methods import base, get_method
    dataset = train.build_dataset(config)
    if data:
        dataset = training_points(config, dataset, data)
    method = get_method(config, dataset)
    rng = jax.random.PRNGKey(config.seed)
    state = base.init_state(method, jax.random.fold_in(rng, 1), dataset.batch(0))
    stepper = train.Stepper(method, donate=True)
    root = jax.random.fold_in(rng, 2)
    for k in range(int(config.training.num_steps)):
        state, metrics = stepper(state, dataset.batch(k), root, step=k)
        if k % 100 == 0:
            jax.block_until_ready(metrics)
    return method, state, dataset


def score(config, method, state, dataset, nfes=NFES, sigmas_by_nfe=None, reference_config=None) -> dict:
    """{'nfe_1': {'swd':…, 'mode_coverage':…}, …} on ``config.eval.num_samples`` samples, against the held-out split
    of ``reference_config`` (default ``config``; (j) passes the recipe's own, since a toy's test split has
    data.toy_size points)."""
    import jax
    from consistency.run import reports, sampling
    from consistency.methods import base
    out = {}
    num = int(config.eval.num_samples)
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 10_000_019)
    for nfe in nfes:
        options = method.options
        if sigmas_by_nfe and nfe in sigmas_by_nfe:
            options = base.sampling_options(method, sigmas=tuple(sigmas_by_nfe[nfe]))
        samples, _ = sampling.draw_samples(config, method, state, rng, num,
                                           sampler=sampling.make_sampler(method, num, nfe, options))
        metrics = reports.score_samples(reference_config or config, dataset, samples, seed=config.seed)
        out[f"nfe_{nfe}"] = {k: float(metrics[k]) for k in ("swd", "mode_coverage", "swd_floor") if k in metrics}
    return out


# ----------------------------------------------------------------------------------------------------------
# (a) the seed §2.1 point-mass prediction
# ----------------------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------------------
# (g) multistep degradation: the model's error per σ and the choice of intermediate σ's
# ----------------------------------------------------------------------------------------------------------

G_SIGMAS = (0.05, 0.1, 0.3, 0.821, 2.0, 10.0, 80.0)
G_SCHEDULES = {
    "default [80, 0.821, 0.287, 0.1]": {2: (80.0, 0.821), 4: (80.0, 0.821, 0.287, 0.1)},
    "high [80, 10, 3, 1]": {2: (80.0, 3.0), 4: (80.0, 10.0, 3.0, 1.0)},
    "mid [80, 2, 1, 0.5]": {2: (80.0, 1.0), 4: (80.0, 2.0, 1.0, 0.5)},
}


def exact_consistency(mixture, x, sigma: float, sigma_min: float, num_steps: int = 200):
    """f*(x, σ): the PF-ODE from σ to σ_min with the exact mixture denoiser (Heun, ``num_steps`` Karras steps)."""
    import jax.numpy as jnp
    from consistency.diffusion import oracles
    from consistency.diffusion import solvers
    denoiser = oracles.mixture_denoiser(*mixture)   # dataset.mixture = (weights, means, stds)
    grid = solvers.edm_sampling_sigmas(num_steps, sigma_min, sigma)[:-1]   # σ → σ_min, no final 0
    return solvers.solve(lambda y, s, cond=None: denoiser(y, s), jnp.asarray(x), grid, "heun")


def score_exact(config, dataset, sigmas_by_nfe) -> dict:
    """The control of (g): the exact consistency function f* (above) in the same multistep sampler (CM Alg. 1, same
    re-noising) and the same σ lists. A perfect f is exact at every step count, so what this loses is the sampler's."""
    import jax
    from consistency.run import reports
    from consistency.diffusion import cm_sampling
    sigma_min = float(config.diffusion.sigma_min)
    num = int(config.eval.num_samples)
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 10_000_019)

    def f_exact(x, sigma, cond=None):
        return exact_consistency(dataset.mixture, x, float(sigma[0]), sigma_min)

    out = {}
    for nfe in NFES:
        sigmas = tuple(sigmas_by_nfe.get(nfe, (float(config.diffusion.sigma_max),)))
        samples = cm_sampling.consistency_sample(f_exact, rng, (num,) + tuple(dataset.example_shape), sigmas,
                                                 sigma_min)
        metrics = reports.score_samples(config, dataset, np.asarray(samples), seed=config.seed)
        out[f"nfe_{nfe}"] = {k: float(metrics[k]) for k in ("swd", "mode_coverage") if k in metrics}
    return out


def per_sigma_error(config, method, state, dataset, n: int = 1000) -> dict:
    """Mean |f_θ(x, σ) − f*(x, σ)| over x = x₀ + σz, x₀ from the data, at each σ of G_SIGMAS (f* as above)."""
    import jax
    import jax.numpy as jnp
    from consistency.run import sampling
    from consistency.methods import base
    from consistency.methods.components import common
    f = common.consistency_function(common.build_net(config, dataset.example_shape), config.diffusion.sigma_min,
                                    config.diffusion.sigma_data)
    params = base.sampling_params(method, state)
    x0 = jnp.asarray(sampling.reference_points(dataset, n))[:n]
    out = {}
    for k, sigma in enumerate(G_SIGMAS):
        z = jax.random.normal(jax.random.PRNGKey(100 + k), x0.shape)
        x = x0 + sigma * z
        exact = exact_consistency(dataset.mixture, x, sigma, config.diffusion.sigma_min)
        got = f(params, x, jnp.full((n,), sigma))
        out[str(sigma)] = float(jnp.mean(jnp.linalg.norm(got - exact, axis=-1)))
    return out


# ----------------------------------------------------------------------------------------------------------
# (h) SiD's L¹ vs L² on the notebook's 1-D Gaussian (seed eq. 73–83, docs/methods.md §15 O7)
# ----------------------------------------------------------------------------------------------------------

H_LOSSES = ("L¹ = E‖x_φ − x_ψ‖² (seed eq. 73)", "L² = SiD, α = 1.2 (seed eq. 81–82, code sign)",
            "DMD (seed eq. 77–78)")
H_CHECKPOINTS = (0, 10, 30, 100, 300)


def notebook_toy_trajectories(seed: int, steps: int = 300, batch: int = 256, lr: float = 0.5, theta0: float = 2.0):
    """θ_k for x_g = θ + z on data N(0, 1), the fake denoiser exact for the current generator (φ = sg θ, the seed's
    φ*(θ) = θ), σ from SiD's generator sampler, plain gradient descent on each loss (the project's objectives)."""
    import jax
    import jax.numpy as jnp
    from consistency.diffusion import oracles
    from consistency.objectives import dmd, sid
    real = oracles.gaussian_denoiser(0.0, 1.0)

    def l1(x, n, sigma, fake):
        noisy = x + sigma[:, None] * n
        return jnp.mean((fake(noisy, sigma) - real(noisy, sigma)) ** 2)

    def l2(x, n, sigma, fake):
        return jnp.mean(sid.generator_loss(x, n, sigma, real, fake, alpha=1.2, normalise=False, reduce="mean")[0])

    def dm(x, n, sigma, fake):
        return jnp.mean(dmd.distribution_matching_loss(x, n, sigma, real, fake, normalise=False, reduce="mean")[0])

    def run(loss):
        def step(theta, key):
            kz, kn, ks = jax.random.split(key, 3)
            z, n = jax.random.normal(kz, (batch, 1)), jax.random.normal(kn, (batch, 1))
            sigma = sid.sample_generator_sigmas(ks, (batch,))
            fake = oracles.gaussian_denoiser(jax.lax.stop_gradient(theta), 1.0)
            grad = jax.grad(lambda t: loss(t + z, n, sigma, fake))(theta)
            return theta - lr * grad, theta
        keys = jax.random.split(jax.random.PRNGKey(seed), steps + 1)
        last, path = jax.lax.scan(step, jnp.float32(theta0), keys[:-1])
        return np.append(np.asarray(path), float(last))
    return {name: run(loss) for name, loss in zip(H_LOSSES, (l1, l2, dm))}


def run_question_h() -> str:
    runs = [notebook_toy_trajectories(seed) for seed in range(_SEEDS.value)]
    lines = [f"*SiD's L¹ vs L² on the notebook's 1-D Gaussian.* `python launch/science.py --question=h "
             f"--seeds={_SEEDS.value}` — data N(0, 1), generator x_g = θ + z from θ₀ = 2, the fake denoiser exact for "
             "the current generator (φ = sg θ), σ from SiD's sampler, gradient descent at lr 0.5 with 256 draws per "
             "step; |θ − θ*| (θ* = 0) after k steps, mean ± std over seeds:", "",
             "| loss | " + " | ".join(f"k = {k}" for k in H_CHECKPOINTS) + " |", "|---|" + "---|" * len(H_CHECKPOINTS)]
    for name in H_LOSSES:
        lines.append(f"| {name} | " + " | ".join(mean_std([abs(r[name][k]) for r in runs]) for k in H_CHECKPOINTS)
                     + " |")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.0, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name in H_LOSSES:
        for j, r in enumerate(runs):
            ax.plot(np.abs(r[name]) + 1e-12, color={0: "C0", 1: "C1", 2: "C2"}[H_LOSSES.index(name)],
                    label=name.split(" (")[0] if j == 0 else None, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("|θ − θ*|")
    ax.legend(fontsize=7)
    fig.tight_layout()
    picture = os.path.join(os.path.dirname(os.path.abspath(_OUT.value)), "science", "h.png")
    os.makedirs(os.path.dirname(picture), exist_ok=True)
    fig.savefig(picture, dpi=110)
    lines += ["", "![(h)](science/h.png)"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# (m) the CD target vs the CT target: the same recipe, and each target's distance from the exact ODE step
# ----------------------------------------------------------------------------------------------------------

TARGET_ONLY_FIELDS = {"method", "teacher.oracle", "cm.init_from_teacher"}   # CT reads no teacher; CD's init is scratch


def config_differences(a, b) -> dict:
    """{dotted field: (value in a, value in b)} for the fields where two resolved configs differ."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out
    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def check_same_recipe_but_target(settings) -> list:
    """(m): the two settings' configs may differ only in TARGET_ONLY_FIELDS (else ConfigError, before training)."""
    cd, ct = (load_config(s, _STEPS.value, 0) for s in settings)
    extra = {k: v for k, v in config_differences(cd, ct).items() if k not in TARGET_ONLY_FIELDS}
    if extra:
        raise ConfigError(f"(m): the CD and CT settings differ in more than the target: {extra}")
    return sorted(config_differences(cd, ct))


def target_error_table(config, seeds: int, num: int = 4096) -> list[dict]:
    """Per pair (σ_n, σ_{n+1}) of the config's fixed Karras grid: :func:`consistency.objectives.consistency.
    target_errors` with the exact mixture denoiser, x₀ drawn from the mixture, one draw of ``num`` per seed; and the
    notebook's "f looks at a different mode": the fraction of draws whose target, carried to σ_min by the exact
    consistency function f*, lands nearest a different mixture mean than x* does (``flip_cd``, ``flip_ct``)."""
    import jax
    import jax.numpy as jnp
    from consistency.data import toys
    from consistency.diffusion import oracles, schedules
    from consistency.objectives import consistency as cm_obj
    from consistency.diffusion import solvers
    f = config.diffusion
    w, m, sd = toys.toy_mixture(config.data.name)
    denoiser = oracles.mixture_denoiser(w, m, sd)

    @jax.jit
    def f_star(x, sigma):   # exact_consistency, compiled once for every σ
        grid = solvers.edm_sampling_sigmas(200, f.sigma_min, sigma)[:-1]
        return solvers.solve(lambda y, s, cond=None: denoiser(y, s), x, grid, "heun")

    grid = [float(v) for v in schedules.karras_sigmas(int(config.cm.num_scales), f.sigma_min, f.sigma_max, f.rho)]
    rows = []
    for lo, hi in zip(grid[:-1], grid[1:]):
        per_seed = []
        for seed in range(seeds):
            x0, _ = toys.sample_toy(config.data.name, num, np.random.default_rng([3_000, seed]))
            z = jax.random.normal(jax.random.PRNGKey(3_000 + seed), x0.shape)
            errors, points = cm_obj.target_errors(denoiser, x0, z, lo, hi, solver=config.cm.solver,
                                                  return_points=True)
            ends = np.asarray(f_star(jnp.concatenate([points[k] for k in ("exact", "cd", "ct")]), jnp.float32(lo)))
            nearest = np.argmin(((ends[:, None, :] - m[None]) ** 2).sum(-1), axis=1).reshape(3, num)
            mode = dict(zip(("exact", "cd", "ct"), nearest))
            errors.update({f"flip_{k}": float(np.mean(mode[k] != mode["exact"])) for k in ("cd", "ct")})
            per_seed.append(errors)
        rows.append({"sigma_lo": lo, "sigma_hi": hi, **{k: [r[k] for r in per_seed] for k in per_seed[0]}})
    return rows


def _plot_target_errors(path: str, rows) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.0, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    hi = [r["sigma_hi"] for r in rows]
    for key, label in (("cd", "CD target (1 Heun step)"), ("ct", "CT target x₀ + σ_lo z"),
                       ("ct_bias", "CT: bias² (its mean = exact-D Euler step)"), ("ct_variance", "CT: variance")):
        ax.plot(hi, [max(np.mean(r[key]), 1e-16) for r in rows], marker="o", ms=3, label=label,
                ls="--" if key.startswith("ct_") else "-")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("σ_{n+1} (pair σ_n < σ_{n+1}, N = 18)")
    ax.set_ylabel("E‖target − x*‖²")
    ax.set_title("(m) distance of each target from the exact ODE step", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def target_error_lines(config) -> list[str]:
    rows = target_error_table(config, _SEEDS.value)
    picture = os.path.join(os.path.dirname(os.path.abspath(_OUT.value)), "science", "m_targets.png")
    _plot_target_errors(picture, rows)
    lines = ["", "Each target's squared distance from the exact ODE step x* (the exact mixture PF-ODE from x_hi = x₀ + "
             "σ_{n+1}z to σ_n, 200 Heun steps), E‖x̂ − x*‖² over 4096 draws of (x₀, z) per seed, mean ± std over "
             f"{_SEEDS.value} seeds; CT's split into bias² (its mean given x_hi is the Euler step with the exact "
             "denoiser) and variance ((1 − σ_n/σ_{n+1})² tr Cov[x₀ | x_hi]):", "",
             "| σ_n → σ_{n+1} | CD: one Heun step | CT: x₀ + σ_n z | CT bias² | CT variance | CT / CD | "
             "other mode: CD | other mode: CT |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = float(np.mean(r["ct"]) / max(np.mean(r["cd"]), 1e-30))
        lines.append(f"| {r['sigma_lo']:.3g} → {r['sigma_hi']:.3g} | " + " | ".join(
            mean_std(r[k]) for k in ("cd", "ct", "ct_bias", "ct_variance")) + f" | {ratio:.3g} | " + " | ".join(
            mean_std(r[k]) for k in ("flip_cd", "flip_ct")) + " |")
    lines += ["", "*other mode*: the fraction of draws whose target, carried to σ_min by the exact consistency "
              "function f* (the exact PF-ODE, 200 Heun steps), ends nearest a different mixture mean than x* does — "
              "the notebook's \"f_θ(x) and f_θ(x̂) look at different modes\", measured. Squared distances below "
              "~1e-12 are float32 rounding."]
    lines += ["", "![(m) targets](science/m_targets.png)"]
    return lines


# ----------------------------------------------------------------------------------------------------------
# Tables, plots, the page
# ----------------------------------------------------------------------------------------------------------

def mean_std(values) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "—"
    mean, std = float(np.mean(values)), float(np.std(values))
    return f"{mean:.3g} ± {std:.2g}" if abs(mean) < 0.01 else f"{mean:.3f} ± {std:.3f}"


def setting_table(labels, cells: dict, steps: dict, nfes=NFES) -> list[str]:
    """Markdown rows: label | steps | sliced W1 at each NFE | modes at each NFE; ``cells[label]`` = per-seed dicts."""
    head = ["setting", "steps"] + [f"SW1 @{n}" for n in nfes] + [f"modes @{n}" for n in nfes]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in labels:
        runs = cells.get(label, [])
        sw = [mean_std([r[f"nfe_{n}"]["swd"] for r in runs if f"nfe_{n}" in r]) for n in nfes]   # one-step rows
        modes = [mean_std([8 * r[f"nfe_{n}"]["mode_coverage"] for r in runs if f"nfe_{n}" in r]) for n in nfes]
        rows.append(f"| {label} | {steps.get(label, '—')} | " + " | ".join(sw + modes) + " |")
    return rows


def save_figure(fig, path: str) -> None:
    """Lay out ``fig`` and write it to ``path`` (its folder made if missing)."""
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)


def plot_settings(path: str, title: str, labels, cells: dict, nfes=NFES, floor: float = float("nan")) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = np.arange(len(labels))
    for j, nfe in enumerate(nfes):
        means = [np.mean([r[f"nfe_{nfe}"]["swd"] for r in cells.get(lab, []) if f"nfe_{nfe}" in r] or [np.nan])
                 for lab in labels]
        stds = [np.std([r[f"nfe_{nfe}"]["swd"] for r in cells.get(lab, []) if f"nfe_{nfe}" in r] or [np.nan])
                for lab in labels]
        ax.errorbar(xs + 0.1 * (j - 1), means, yerr=stds, fmt="o-", capsize=3, label=f"{nfe} step(s)")
    if math.isfinite(floor):
        ax.axhline(floor, color="gray", ls="--", lw=1, label="noise floor")
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("sliced W1 (mean ± std over seeds)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _cache_path(key: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(_OUT.value)), "science", f"{key}.json")


def _load_cache(key: str) -> dict:
    path = _cache_path(key)
    if _FRESH.value or not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _save_cache(key: str, cache: dict) -> None:
    """``cache`` merged over the file on disk (:func:`reports.merge_json`): questions run at once in two processes
    each keep the other's runs."""
    from consistency.run import reports
    reports.merge_json(_cache_path(key), cache)


# Fields added after runs.json was built: left out of the hash while at their default, so that adding a field to a
# config block does not orphan every cached run (the run it describes is the same run).
HASH_NEUTRAL_DEFAULTS = {("cm", "posterior_substeps"): 1, ("dmd", "fake_score"): "learned", ("dmd", "fake_pool"): 4096,
                         ("teacher", "oracle_std_scale"): 1.0}


def run_key(config, data: str = "") -> str:
    """A run's identity: the hash of its resolved config (seed and steps included) and, for (j), its data source."""
    import hashlib
    neutral = [(block, field) for (block, field), default in HASH_NEUTRAL_DEFAULTS.items()
               if block in config and field in config[block] and config[block][field] == default]
    if neutral:
        config = config.copy_and_resolve_references()
        with config.unlocked():
            for block, field in neutral:
                del config[block][field]
    text = config.to_json(sort_keys=True) + (f"|data={data}" if data else "")
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _command(key: str) -> str:
    return f"python launch/science.py --question={key} --seeds={_SEEDS.value} --steps={_STEPS.value}"


def run_settings_question(key: str) -> str:
    title, settings = QUESTIONS[key]
    nfes = QUESTION_NFES.get(key, NFES)
    settings = settings[:_MAX_SETTINGS.value] if _MAX_SETTINGS.value > 0 else settings
    if _ONLY.value:
        unknown = [label for label in _ONLY.value if label not in {s.label for s in settings}]
        if unknown:
            raise ConfigError(f"--only: {unknown[0]!r} is not a setting of question {key}; use one of "
                              + ", ".join(repr(s.label) for s in settings))
        settings = [s for s in settings if s.label in _ONLY.value]
    differing = check_same_recipe_but_target(settings) if key == "m" and len(settings) == 2 else None
    cache = _load_cache("runs")
    cells, steps = {}, {}
    for setting in settings:
        cells[setting.label] = []
        for seed in range(_SEEDS.value):
            config = load_config(setting, _STEPS.value, seed)
            steps[setting.label] = int(config.training.num_steps)
            cell = run_key(config, setting.data)
            if cell not in cache and _CACHED_ONLY.value:
                continue
            if cell not in cache:
                start = time.time()
                method, state, dataset = train_state(config, setting.data)
                reference = load_config(dataclasses.replace(setting, overrides=()), _STEPS.value, seed)
                run_nfes = tuple(n for n in nfes if n in tuple(config.eval.nfes) or not config.eval.nfes)  # SiD: 1
                cache[cell] = dict(score(config, method, state, dataset, nfes=run_nfes, reference_config=reference),
                                   seconds=round(time.time() - start, 1), config=setting.config,
                                   overrides=[list(o) for o in setting.overrides],
                                   steps=int(config.training.num_steps), seed=seed, **(
                                       {"data": setting.data} if setting.data else {}))
                _save_cache("runs", cache)
                print(f"[{key}] {setting.label} seed {seed}: " + ", ".join(
                    f"{n}-step SW1 {cache[cell][f'nfe_{n}']['swd']:.3f}" for n in nfes), flush=True)
            cells[setting.label].append(cache[cell])
    short = {s.label: f"{s.label} ({len(cells[s.label])} of {_SEEDS.value} seeds)" for s in settings
             if len(cells[s.label]) < _SEEDS.value}
    if short:   # --cached_only: say which rows are incomplete
        cells = {short.get(k, k): v for k, v in cells.items()}
        steps = {short.get(k, k): v for k, v in steps.items()}
    labels = [short.get(s.label, s.label) for s in settings]
    if _ONLY.value:
        return "\n".join(setting_table(labels, cells, steps, nfes))
    picture = os.path.join(os.path.dirname(os.path.abspath(_OUT.value)), "science", f"{key}.png")
    floors = [r[f"nfe_{n}"].get("swd_floor") for runs in cells.values() for r in runs for n in nfes if f"nfe_{n}" in r]
    floor = float(np.mean([f for f in floors if f is not None])) if any(f is not None for f in floors) else float("nan")
    plot_settings(picture, f"({key}) {title}", labels, cells, nfes, floor)
    lines = [f"*{title}.* `{_command(key)}` — {_SEEDS.value} seeds, mean ± std; SW1 = sliced W1 on "
             f"{_NUM_SAMPLES.value} samples (noise floor, two real draws of that size: {floor:.3f} on average), "
             "modes = of 8 covered.", ""]
    if differing is not None:
        lines[0] += f" The two configs differ only in: {', '.join(f'`{k}`' for k in differing)}."
    if key == "j":
        lines[0] += (" Every row is scored against the same held-out set (the recipe's own, 100,000 points); the "
                     "percentages set `data.toy_size`, the training points.")
    lines += setting_table(labels, cells, steps, nfes)
    if key == "m" and differing is not None:
        lines += target_error_lines(load_config(settings[0], _STEPS.value, 0))
    if key == "a":
        lines += ["", "Seed §2.1 prediction (one-parameter model on a point mass, expected gradient of eq. 42, "
                  "Adam-free gradient descent at lr 1e-3, N = 18): steps until |θ − ε| falls to 1 % of its start —",
                  "", "| target | steps to 1 % |", "|---|---|"]
        from consistency.diffusion import oracles
        for mu in (0.0, 0.9, 0.99, 0.999):
            lines.append(f"| {'θ⁻ = sg θ' if mu == 0 else f'μ = {mu}'} | {oracles.point_mass_prediction(mu)} |")
    lines += ["", f"![({key})](science/{key}.png)"]
    return "\n".join(lines)


def run_question_g() -> str:
    """CD trained as configs/toy_cd.py: per-σ error of f_θ against f*, and 2/4-step quality under three σ lists, with
    the exact f* in the same sampler as the control (a perfect consistency function is exact at every step count)."""
    cache = _load_cache("g")
    setting = _s("CD", CD)
    for seed in range(_SEEDS.value):
        config = load_config(setting, _STEPS.value, seed)
        cell = f"CD|{config.training.num_steps}|{seed}"
        if cell in cache:
            continue
        method, state, dataset = train_state(config)
        entry = {"error_by_sigma": per_sigma_error(config, method, state, dataset)}
        for name, sigmas in G_SCHEDULES.items():
            entry[name] = score(config, method, state, dataset, nfes=(1, 2, 4), sigmas_by_nfe=sigmas)
            entry["exact f* | " + name] = score_exact(config, dataset, sigmas)
        cache[cell] = entry
        _save_cache("g", cache)
        print(f"[g] seed {seed}: " + json.dumps(entry["error_by_sigma"]), flush=True)
    runs = [cache[f"CD|{_STEPS.value}|{seed}"] for seed in range(_SEEDS.value) if f"CD|{_STEPS.value}|{seed}" in cache]
    lines = [f"*Why CD gets worse with more steps.* `{_command('g')}` — {len(runs)} seeds.", "",
             "Error of the trained consistency function against the exact one, mean ‖f_θ(x, σ) − f*(x, σ)‖ over "
             "x = x₀ + σz (f*: the exact mixture PF-ODE, 200 Heun steps):", "",
             "| σ | " + " | ".join(str(s) for s in G_SIGMAS) + " |", "|---|" + "---|" * len(G_SIGMAS),
             "| error | " + " | ".join(mean_std([r["error_by_sigma"][str(s)] for r in runs]) for s in G_SIGMAS) + " |",
             "", "Sliced W1 at 1 / 2 / 4 steps for three choices of the intermediate σ's:", "",
             "| σ list | SW1 @1 | SW1 @2 | SW1 @4 | modes @4 |", "|---|---|---|---|---|"]
    for name in G_SCHEDULES:
        cells = [mean_std([r[name][f"nfe_{n}"]["swd"] for r in runs]) for n in NFES]
        modes = mean_std([8 * r[name]["nfe_4"]["mode_coverage"] for r in runs])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {modes} |")
    for name in G_SCHEDULES:
        key = "exact f* | " + name
        cells = [mean_std([r[key][f"nfe_{n}"]["swd"] for r in runs if key in r]) for n in NFES]
        modes = mean_std([8 * r[key]["nfe_4"]["mode_coverage"] for r in runs if key in r])
        lines.append(f"| control: exact f*, {name} | " + " | ".join(cells) + f" | {modes} |")
    picture = os.path.join(os.path.dirname(os.path.abspath(_OUT.value)), "science", "g.png")
    _plot_g(picture, runs)
    lines += ["", "![(g)](science/g.png)"]
    return "\n".join(lines)


def _plot_g(path, runs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9.0, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    means = [np.mean([r["error_by_sigma"][str(s)] for r in runs]) for s in G_SIGMAS]
    stds = [np.std([r["error_by_sigma"][str(s)] for r in runs]) for s in G_SIGMAS]
    ax.errorbar(G_SIGMAS, means, yerr=stds, fmt="o-", capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("σ")
    ax.set_ylabel("mean ‖f_θ − f*‖")
    ax.set_title("model error per σ", fontsize=9)
    ax = fig.add_subplot(1, 2, 2)
    for name in G_SCHEDULES:
        ax.errorbar(NFES, [np.mean([r[name][f"nfe_{n}"]["swd"] for r in runs]) for n in NFES],
                    yerr=[np.std([r[name][f"nfe_{n}"]["swd"] for r in runs]) for n in NFES], fmt="o-", capsize=3,
                    label=name.split(" [")[0])
    ax.axhline(0.057, color="gray", ls="--", lw=1)
    ax.set_xlabel("steps")
    ax.set_ylabel("sliced W1")
    ax.set_title("quality per step count and σ list", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# (o) VE multistep CD: the target as a convex combination of teacher and student (seed eq. 50–54)
# ----------------------------------------------------------------------------------------------------------

def mean_teacher_weight(config) -> tuple[float, int]:
    """(mean of w over the training pairs, links per segment M) on the method's own grid: segment k ~ U{0…T−1}, link
    j ~ U{1…M} (``mcm.draw_pairs``), σ_n = level(k, j/M), σ_{n−1} = level(k, (j−1)/M), b = b_k, w of
    ``objectives.mcm.ve_teacher_weight``. Closed form from the grid, no training."""
    import jax.numpy as jnp
    from consistency.methods import mcm
    from consistency.objectives import mcm as mcm_obj
    process = mcm.make_process(config)
    _, steps = mcm.steps_per_segment(config.mcm, jnp.asarray(0))
    steps, segments = int(steps), int(config.mcm.segments)
    k = jnp.repeat(jnp.arange(segments), steps)
    j = jnp.tile(jnp.arange(1, steps + 1), segments).astype(jnp.float32)
    hi, lo, b = process.level(k, j / steps), process.level(k, (j - 1) / steps), process.boundary(k)
    return float(jnp.mean(mcm_obj.ve_teacher_weight(hi.sigma, lo.sigma, b.sigma))), steps


def score_teacher_controls(config, dataset) -> dict:
    """The controls of (o), from the teacher's mixture denoiser D* (the exact one, or the widened one of (o)(ii)) and
    the same initial noise as score():

    'denoiser': D* in the student's own T-step sampler (the VE jumps of seed eq. 51 between the same boundaries): the
      student whose every link had w = 1, i.e. T = N (plain denoiser distillation);
    'fixed point': the training target's fixed point with this teacher: the teacher's Euler steps (seed eq. 50) through
      all M links of every segment, top down (T·M DDIM steps of D*). A student that fitted every link exactly would
      sample this; the student's distance from it is the accumulated fitting error the bound of (o) is about;
    'teacher law': exact draws of the teacher's own mixture (no solver), the teacher's error alone (0 + the noise floor
      for the exact teacher)."""
    import jax
    import jax.numpy as jnp
    from consistency.diffusion import oracles
    from consistency.methods import mcm
    from consistency.methods.components import teachers
    from consistency.objectives import mcm as mcm_obj
    from consistency.run import reports
    process = mcm.make_process(config)
    segments = int(config.mcm.segments)
    _, links = mcm.steps_per_segment(config.mcm, jnp.asarray(0))
    links = int(links)
    mixture = teachers.oracle_mixture(config, dataset)
    denoiser = oracles.mixture_denoiser(*mixture)
    x0_fn = mcm.vp_from_ve_denoiser(lambda x, sigma: denoiser(x, sigma), process.coefficients)
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 10_000_019)   # as score()
    num = int(config.eval.num_samples)
    shape = (num,) + tuple(dataset.example_shape)
    out = {"denoiser": mcm.multistep_sample(x0_fn, process, segments, rng, shape)}
    z, never = process.initial(rng, shape), jnp.zeros((num,), bool)
    for k in range(segments - 1, -1, -1):
        for j in range(links, 0, -1):
            hi = process.level(jnp.full((num,), k), jnp.full((num,), j / links))
            lo = process.level(jnp.full((num,), k), jnp.full((num,), (j - 1) / links))
            z = mcm_obj.jump_to_boundary(x0_fn(z, hi.tau), z, hi, lo, never)
    out["fixed point"] = z
    from consistency.data import toys
    out["teacher law"] = toys.sample_mixture(mixture, num, np.random.default_rng(config.seed + 10_000_019))[0]
    return {name: float(reports.score_samples(config, dataset, np.asarray(x), seed=config.seed)["swd"])
            for name, x in out.items()}


def run_question_o() -> str:
    title, settings = QUESTIONS["o"]
    settings = settings[:_MAX_SETTINGS.value] if _MAX_SETTINGS.value > 0 else settings
    cache = _load_cache("runs")
    rows = ["| teacher | T | links per segment M | mean w | SW1 @T | modes @T | control: fixed point (T·M Euler steps "
            "of D*) | control: D* in the T-step sampler | control: the teacher's own law (exact draws) | seconds |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    from consistency.run import train
    curve = []
    for setting in settings:
        runs = []
        for seed in range(_SEEDS.value):
            config = load_config(setting, _STEPS.value, seed)
            t = int(config.mcm.segments)
            cell = run_key(config)
            if cell not in cache:
                start = time.time()
                method, state, dataset = train_state(config)
                cache[cell] = dict(score(config, method, state, dataset, nfes=(t,)),
                                   seconds=round(time.time() - start, 1), config=setting.config,
                                   overrides=[list(o) for o in setting.overrides],
                                   steps=int(config.training.num_steps), seed=seed)
                _save_cache("runs", cache)
                print(f"[o] {setting.label} seed {seed}: SW1 {cache[cell][f'nfe_{t}']['swd']:.3f}", flush=True)
            runs.append(cache[cell])
        weight, links = mean_teacher_weight(config)
        swd = [r[f"nfe_{t}"]["swd"] for r in runs]
        controls = [score_teacher_controls(c, train.build_dataset(c))
                    for c in (load_config(setting, _STEPS.value, seed) for seed in range(_SEEDS.value))]
        scale = float(config.teacher.oracle_std_scale)
        teacher = "exact" if scale == 1.0 else f"stds × {scale:g}"
        rows.append(f"| {teacher} | {t} | {links} | {weight:.3g} | {mean_std(swd)} | "
                    f"{mean_std([8 * r[f'nfe_{t}']['mode_coverage'] for r in runs])} | "
                    f"{mean_std([c['fixed point'] for c in controls])} | "
                    f"{mean_std([c['denoiser'] for c in controls])} | "
                    f"{mean_std([c['teacher law'] for c in controls])} | "
                    f"{np.mean([r['seconds'] for r in runs]):.0f} |")
        curve.append((teacher, t, weight, float(np.mean(swd)), float(np.std(swd)),
                      float(np.mean([c['teacher law'] for c in controls]))))
    picture = os.path.join(os.path.dirname(os.path.abspath(_OUT.value)), "science", "o.png")
    floors = [r[k]["swd_floor"] for r in cache.values() if r.get("config") == MCM_VE for k in r
              if k.startswith("nfe_") and "swd_floor" in r[k]]
    floor = float(np.mean(floors)) if floors else float("nan")
    _plot_o(picture, curve, floor)
    lines = [f"*{title}.* `{_command('o')}` — {_SEEDS.value} seeds, mean ± std; one model per T, sampled in its own "
             f"T steps (NFE = T); SW1 = sliced W1 on {_NUM_SAMPLES.value} samples (noise floor, two real draws of "
             f"that size: {floor:.3f} on average), modes = of 8 covered; mean w = the "
             "teacher's weight in the x-space target averaged over the training pairs (closed form from the grid, "
             "`objectives/mcm.py` `ve_teacher_weight`).", ""] + rows + ["", "![(o)](science/o.png)"]
    return "\n".join(lines)


def _plot_o(path, curve, floor):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(8.0, 3.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    for teacher in dict.fromkeys(c[0] for c in curve):
        mine = [c for c in curve if c[0] == teacher]
        line = ax.errorbar([c[1] for c in mine], [c[3] for c in mine], yerr=[c[4] for c in mine], fmt="o-",
                           capsize=3, label=f"student, {teacher} teacher")
        if teacher != "exact":   # the teacher's own error: where the student can at best arrive
            ax.axhline(float(np.mean([c[5] for c in mine])), color=line[0].get_color(), ls=":", lw=1,
                       label=f"{teacher} teacher's own law")
    ax.axhline(floor, color="gray", ls="--", lw=1, label="noise floor")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("T (segments = NFE)")
    ax.set_ylabel("sliced W1")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    exact = [c for c in curve if c[0] == "exact"] or curve   # w depends on the grid only, not on the teacher
    ax.plot([c[1] for c in exact], [c[2] for c in exact], "o-")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("T")
    ax.set_ylabel("mean teacher weight w")
    save_figure(fig, path)


def main(argv):
    del argv
    keys = ALL if "all" in _QUESTIONS.value else tuple(_QUESTIONS.value)
    unknown = [k for k in keys if k not in ALL]
    if unknown:   # before anything is set up or compiled
        raise ConfigError(f"--question: {unknown[0]!r} is not one of {', '.join(ALL)} or all")
    if _ONLY.value and (len(keys) != 1 or keys[0] in ("g", "h", "o")):
        raise ConfigError("--only: name one question with a settings table (a–f, i, l), e.g. --question=f")
    import jax
    from consistency.run import train
    train.prefer_fast_cpu_random()
    if jax.default_backend() == "cpu":
        jax.config.update("jax_threefry_partitionable", False)
    from consistency.run import reports
    for key in keys:
        special = {"g": run_question_g, "h": run_question_h, "o": run_question_o}
        body = special.get(key, lambda: run_settings_question(key))()
        if _ONLY.value:   # rows for a finished table: printed, the page is left as it is
            print(body, flush=True)
            continue
        page = open(_OUT.value).read() if os.path.exists(_OUT.value) else "# The notebook's open questions\n"
        with open(_OUT.value + ".tmp", "w") as f:
            f.write(reports.replace_block(page, key, body))
        os.replace(_OUT.value + ".tmp", _OUT.value)
        print(f"wrote ({key}) into {_OUT.value}", flush=True)


if __name__ == "__main__":
    scripts.run(main)
