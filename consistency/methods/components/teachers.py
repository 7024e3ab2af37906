"""Teachers: any denoiser whose parameters are an argument of the compiled step (docs/architecture.md "A denoiser is a function").

* a trained EDM workdir: its saved ``config.json`` builds the network and only the sampling EMA params are read from
  the checkpoint (an Orbax partial restore: no Method, no dataset, no optimizer state is built or loaded);
* a closed-form oracle (``config.teacher.oracle``) whose "params" are the data that define it: 'mixture' (exact, toy
  mixtures; ``teacher.oracle_std_scale`` ≠ 1 widens its components: a teacher with a known error), 'empirical'
  (seed eq. 6 over the training split), 'gaussian' (moment-matched Gaussian).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from consistency.core import fileio
from consistency.nets import wrappers
from consistency.core.errors import ConfigError
from consistency.config import load_run_config


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """The sampling params of a finished run: its config, the step they were saved at, the params themselves."""
    config: Any
    step: int
    params: Any


# What data.resolution = 0 ("the files' own size") means for the built-in image sets.
NATIVE_RESOLUTION = {"digits": 8, "mnist5k": 28, "mnist": 28, "cifar10": 32}


def _image_resolution(data) -> int | None:
    """The side length a run's images have: data.resolution, or the set's native size when it is 0 (None: unknown)."""
    return int(data.get("resolution", 0) or 0) or NATIVE_RESOLUTION.get(str(data.get("name", "")))


def _grows_resolution(method: str) -> bool:
    """Whether the method's student may run at another resolution than its teacher: its module's
    ``GROWS_RESOLUTION`` (PaGoDA's growing stages, docs/methods.md §9)."""
    from consistency import methods
    return bool(getattr(methods.module_of(method), "GROWS_RESOLUTION", False))


def check_teacher_data(config: Any) -> None:
    """The teacher in ``config.teacher.workdir`` was trained on this run's data (``data.name``) at its resolution
    (``data.resolution``); else one ConfigError line naming the teacher's workdir and both values."""
    try:
        teacher = load_run_config(config.teacher.workdir)
    except (FileNotFoundError, ValueError):
        return   # a teacher without config.json: teachers.load_teacher reports it
    fields = ["name"] + ([] if _grows_resolution(config.method) else ["resolution"])
    for field in fields:
        mine, theirs = config.data.get(field), teacher.data.get(field)
        if field == "resolution" and None not in (_image_resolution(config.data), _image_resolution(teacher.data)):
            same = _image_resolution(config.data) == _image_resolution(teacher.data)   # 0 = the native size
        else:
            same = mine == theirs
        if not same:
            raise ConfigError(
                f"config.data.{field}: the teacher in {config.teacher.workdir!r} was trained with data.{field} = "
                f"{theirs!r}, this run has {mine!r}; use --config.data.{field}={theirs} or a teacher trained on "
                f"{mine!r}")


def load_sampling_params(workdir: str, step: int | None = None) -> TrainedRun:
    """The sampling EMA params (of the set named in the checkpoint's meta, 'online' for EDM) of ``workdir``'s
    checkpoint ``step`` (None → the newest that restores and matches its digests), as numpy arrays.
    FileNotFoundError (one line) when there is none."""
    from consistency.core import checkpoint
    config = load_run_config(workdir)
    picked = {}

    def choose(tree, meta):
        name = meta.get("sample_params", "online")
        group = "ema" if name in tree.get("ema", {}) else "params"
        picked.update(group=group, name=name)
        return {group: {name: tree[group][name]}}
    step, restored, _ = checkpoint.read_step_items(workdir, choose, step)
    group, name = picked["group"], picked["name"]
    return TrainedRun(config=config, step=step, params=restored[group][name])


def config_for_teacher(teacher: str, oracle: str, data: str, command: str):
    """The config whose ``teacher`` block names the teacher of a launch script (``command``: its name in errors): a
    trained EDM workdir (its saved config, data included) or an ``oracle`` on ``data``; one ConfigError line else."""
    from consistency.config import base_config
    if bool(teacher) == bool(oracle):
        raise ConfigError(f"{command}: give exactly one of --teacher=WORKDIR or --oracle=NAME (with --data)")
    if teacher:
        try:
            c = load_run_config(teacher)
        except FileNotFoundError as e:
            raise ConfigError(f"{command}: --teacher: {e}") from None
        c.teacher.workdir, c.teacher.oracle = teacher, ""
        return c
    if not data:
        raise ConfigError(f"{command}: --oracle needs --data, e.g. --data=toy:8gaussians")
    c = base_config()
    c.data.name = data
    c.teacher.oracle = oracle
    return c


def oracle_mixture(config, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, means, stds) of the 'mixture' oracle: the toy's own mixture, its stds × ``teacher.oracle_std_scale``.
    With a scale s ≠ 1 the teacher is the exact denoiser of the *widened* mixture, so its ODE ends on that mixture: a
    teacher error known in closed form. Coupling each component with its widened self bounds the plain W1 of every 1-D
    projection by |s − 1|·σ·√(2/π) (an upper bound for the mixture: projected components overlap)."""
    if getattr(dataset, "mixture", None) is None:
        raise ConfigError(f"config.teacher.oracle: 'mixture' needs a toy mixture dataset, got {config.data.name!r}; "
                          "use teacher.oracle='empirical'")
    w, m, s = dataset.mixture
    return w, m, np.asarray(s) * float(config.teacher.get("oracle_std_scale", 1.0))


def oracle_name(config) -> str:
    """'mixture:toy:8gaussians' (with ' stds×2' for a widened mixture): the oracle a file of teacher outputs came from."""
    te = config.teacher
    scale = float(te.get("oracle_std_scale", 1.0))
    return f"{te.oracle}:{config.data.name}" + (f" stds×{scale:g}" if scale != 1.0 else "")


def load_teacher(config, dataset) -> tuple[Any, wrappers.NetworkApply]:
    """(teacher_params, teacher_apply) from ``config.teacher`` (module doc)."""
    from consistency.diffusion import oracles
    t = config.teacher
    if t.workdir and t.oracle:
        raise ConfigError("config.teacher: set either teacher.workdir or teacher.oracle, not both")
    if t.workdir:
        try:
            run = load_sampling_params(t.workdir)
        except FileNotFoundError as e:
            raise ConfigError(f"config.teacher.workdir: no trained checkpoint in {t.workdir!r} ({e}); train one with "
                              "configs/digits_edm.py or point teacher.workdir at an EDM workdir") from None
        if run.config.method != "edm":
            raise ConfigError(f"config.teacher.workdir: {t.workdir!r} holds a {run.config.method!r} run; "
                              "a teacher must be an 'edm' run")
        net = wrappers.build_net(run.config, dataset.example_shape)
        params = jax.tree.map(jnp.asarray, run.params)
        return params, wrappers.edm_denoiser(net, run.config.diffusion.sigma_data)
    if t.oracle == "mixture":
        w, m, s = oracle_mixture(config, dataset)
        params = {"weights": jnp.asarray(w, jnp.float32), "means": jnp.asarray(m, jnp.float32),
                  "stds": jnp.asarray(s, jnp.float32)}
        return params, lambda p, x, sigma, labels=None, **_: oracles.mixture_denoiser(
            p["weights"], p["means"], p["stds"])(x, sigma)
    if t.oracle == "empirical":
        x, y = dataset.arrays()
        params = {"bank": jnp.asarray(x, jnp.float32)}
        if int(config.model.num_classes) > 0:        # a class-conditional model gets the class-conditional oracle
            null = int(config.model.num_classes)
            params["labels"] = jnp.asarray(y, jnp.int32)
            return params, lambda p, x, sigma, labels=None, **_: oracles.class_conditional_empirical_denoiser(
                p["bank"], p["labels"], null)(x, sigma, labels)
        return params, lambda p, x, sigma, labels=None, **_: oracles.empirical_denoiser(p["bank"])(x, sigma)
    if t.oracle == "gaussian":
        x, _ = dataset.arrays()
        params = {"mean": jnp.asarray(x.mean(0), jnp.float32), "std": jnp.asarray(x.std(0), jnp.float32)}
        return params, lambda p, x, sigma, labels=None, **_: oracles.gaussian_denoiser(p["mean"], p["std"])(x, sigma)
    raise ConfigError("config.teacher: this method needs a teacher; set teacher.workdir to a trained EDM run "
                      "(configs/digits_edm.py) or teacher.oracle to 'mixture' | 'empirical' | 'gaussian'")


def make_ode_pairs(config, num: int, num_steps: int = 18, solver: str = "heun", seed: int = 0, chunk: int = 512):
    """Teacher ODE pairs for DMD's regression loss (DMD §3.3; docs/methods.md §10.1): z ~ N(0, I) and y = the teacher's
    deterministic sampler from σ_max·z (EDM Alg. 1 on ``num_steps`` Karras points; 18 = 35 NFE). Returns
    (z, y, σ_max) with float32 arrays [num, *example_shape]."""
    from consistency.data import build_dataset
    from consistency.core.runtime import prefer_fast_cpu_random
    from consistency.diffusion import solvers
    prefer_fast_cpu_random()
    dataset = build_dataset(config)
    params, apply = load_teacher(config, dataset)
    f = config.diffusion
    sigmas = solvers.edm_sampling_sigmas(num_steps, f.sigma_min, f.sigma_max, f.rho)
    shape = tuple(dataset.example_shape)

    @jax.jit
    def solve(p, z):
        return solvers.solve(lambda x, s, cond=None: apply(p, x, s, None), sigmas[0] * z, sigmas, solver)

    z = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (num,) + shape), np.float32)
    ys = []
    for start in range(0, num, chunk):
        part = z[start:start + chunk]
        padded = np.pad(part, ((0, chunk - len(part)),) + ((0, 0),) * len(shape))  # one shape: one compilation
        ys.append(np.asarray(solve(params, jnp.asarray(padded)))[: len(part)])
    return z, np.concatenate(ys).astype(np.float32), float(sigmas[0])


def write_ode_pairs(config, path: str, num: int, num_steps: int = 18, solver: str = "heun", seed: int = 0,
                    chunk: int = 512):
    """:func:`make_ode_pairs` written atomically to ``path`` (.npz: z, y, sigma_max, num_steps, solver, teacher)."""
    z, y, sigma_max = make_ode_pairs(config, num, num_steps, solver, seed, chunk)
    te = config.teacher
    fileio.save_npz(path, z=z, y=y, sigma_max=np.float64(sigma_max), num_steps=np.int64(num_steps),
                    solver=np.str_(solver), teacher=np.str_(te.workdir or oracle_name(config)))
    return z, y, sigma_max


def guided_teacher(teacher_apply, params, labels, cfg_scale: float, null_label: int) -> Callable:
    """D_φ(x, σ) or, for w ≠ 1 and labels, D_w = D_∅ + w(D_c − D_∅) (docs/methods.md §2 CFG; nb (44))."""
    def plain(x, sigma, cond=None):
        return teacher_apply(params, x, sigma, cond)
    if labels is None:
        return lambda x, sigma: plain(x, sigma)
    if cfg_scale == 1.0:
        return lambda x, sigma: plain(x, sigma, labels)
    from consistency.diffusion import denoisers
    guided = denoisers.classifier_free_guidance(plain, cfg_scale, null_label)
    return lambda x, sigma: guided(x, sigma, labels)
