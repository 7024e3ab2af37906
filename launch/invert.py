"""Invert a teacher's training split, data → noise, for PaGoDA (``consistency/inversion.py``; METHODS.md §9).

Every row of the split (decoded as the teacher was trained on it, so at the teacher's resolution) is integrated up
the PF-ODE with Heun (default 40 steps, PaGoDA's official setting) and written as resumable shards; ``--flip`` also
inverts the mirrored images (CIFAR / ImageNet runs with ``data.random_flip``). Then the round trip (invert, sample
back) is measured on ``--roundtrip_num`` rows for each ``--roundtrip`` grid size and written to roundtrip.json.

    python launch/invert.py --teacher=workdirs/digits_teacher --out=workdirs/digits_teacher/inversion
    python launch/invert.py --oracle=mixture --data=toy:8gaussians --toy_size=20000 --out=workdirs/toy_inversion

A run then reads it with ``--config.data.latents=DIR`` (configs/*_pagoda.py set it).
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_TEACHER = flags.DEFINE_string("teacher", "", "A trained EDM workdir (its sampling EMA params are the teacher).")
_ORACLE = flags.DEFINE_string("oracle", "", "Closed-form teacher instead: 'mixture' | 'empirical' | 'gaussian'.")
_DATA = flags.DEFINE_string("data", "", "Dataset of an --oracle teacher, e.g. toy:8gaussians.")
_TOY_SIZE = flags.DEFINE_integer("toy_size", 0, "Points of a toy dataset (0: the config default).")
_SPLIT = flags.DEFINE_string("split", "train", "Split to invert.")
_OUT = flags.DEFINE_string("out", "", "Inversion directory (default: TEACHER/inversion).")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 40, "Heun steps from σ_min to σ_max (PaGoDA: 40).")
_SOLVER = flags.DEFINE_string("solver", "heun", "'heun' | 'euler' | 'dpm_solver_2'.")
_FLIP = flags.DEFINE_bool("flip", False, "Also invert the mirrored images (for data.random_flip runs).")
_SHARD = flags.DEFINE_integer("shard_size", 512, "Rows per shard (and per compiled call).")
_ROUNDTRIP = flags.DEFINE_list("roundtrip", ["10", "20", "40", "80"], "Grid sizes of the round-trip table.")
_ROUNDTRIP_NUM = flags.DEFINE_integer("roundtrip_num", 256, "Rows the round trip is measured on.")


def teacher_setup(teacher: str, oracle: str, data: str, toy_size: int = 0):
    """(config naming the teacher, with the teacher's data config)."""
    from consistency.config import ConfigError, base_config, load_run_config
    if bool(teacher) == bool(oracle):
        raise ConfigError("invert: give exactly one of --teacher=WORKDIR or --oracle=NAME (with --data)")
    if teacher:
        try:
            c = load_run_config(teacher)
        except FileNotFoundError as e:
            raise ConfigError(f"invert: --teacher: {e}") from None
        c.teacher.workdir, c.teacher.oracle = teacher, ""
    else:
        if not data:
            raise ConfigError("invert: --oracle needs --data, e.g. --data=toy:8gaussians")
        c = base_config()
        c.data.name = data
        c.teacher.oracle = oracle
    if toy_size:
        c.data.toy_size = toy_size
    c.data.random_flip = False
    return c


def run(config, out: str, split: str = "train", num_steps: int = 40, solver: str = "heun", flip: bool = False,
        shard_size: int = 512, roundtrip=(10, 20, 40, 80), roundtrip_num: int = 256, log=print) -> dict:
    """Invert ``split`` of the teacher's data into ``out`` and write roundtrip.json; returns the meta."""
    import jax.numpy as jnp
    import numpy as np

    from consistency import inversion, teachers
    from consistency.data import make_dataset
    dataset = make_dataset(config.data, 1, config.seed, split=split)
    params, apply = teachers.load_teacher(config, dataset)
    conditional = int(config.model.num_classes) > 0 and bool(config.teacher.workdir)

    def denoiser(x, sigma, cond=None):
        return apply(params, x, sigma, cond)

    images, labels = dataset.arrays()
    f = config.diffusion
    meta = {"data": dataset.name, "split": split, "resolution": int(config.data.resolution),
            "teacher": config.teacher.workdir or f"{config.teacher.oracle}:{config.data.name}"}
    start = time.time()
    meta = inversion.invert_split(
        denoiser, images, labels, out, meta, num_steps=num_steps, sigma_min=f.sigma_min, sigma_max=f.sigma_max,
        rho=f.rho, solver=solver, flip=flip, shard_size=shard_size, conditional=conditional,
        progress=lambda kind, k, n: log(f"{kind} shard {k + 1}/{n}"))
    log(f"inverted {meta['size']} rows of {dataset.name}/{split} ({', '.join(meta['kinds'])}) in "
        f"{time.time() - start:.1f} s: {out}")
    count = min(roundtrip_num, len(images))
    cond = jnp.asarray(labels[:count]) if conditional else None
    rows = inversion.roundtrip_errors(denoiser, jnp.asarray(images[:count]), [int(n) for n in roundtrip],
                                      f.sigma_min, f.sigma_max, f.rho, solver, cond)
    data_std = float(np.std(images))
    _, latents, _ = inversion.load_latents(out)
    per_pixel = latents.reshape(len(latents), -1).std(0)
    report = {"rows": rows, "num": count, "data_std": data_std, "latent_std": float(latents.std()),
              "latent_std_per_coordinate_min": float(per_pixel.min()),
              "latent_std_per_coordinate_max": float(per_pixel.max()),
              "sampling_latent_std": float(f.sigma_max),
              "encoded_latent_std_gaussian_prediction": float(np.sqrt(data_std ** 2 + f.sigma_max ** 2))}
    inversion._write_json(os.path.join(out, inversion.ROUNDTRIP), report)
    log(inversion.roundtrip_table(rows))
    log(f"latent std of the {meta['size']} inverted rows: {report['latent_std']:.4g} (per coordinate "
        f"{per_pixel.min():.3g} … {per_pixel.max():.3g}) vs sampling σ_max = {f.sigma_max} "
        f"(Gaussian prediction √(s² + σ_max²) = {report['encoded_latent_std_gaussian_prediction']:.4g}, s = {data_std:.3g})")
    return meta


def main(_):
    config = teacher_setup(_TEACHER.value, _ORACLE.value, _DATA.value, _TOY_SIZE.value)
    out = _OUT.value or (os.path.join(_TEACHER.value, "inversion") if _TEACHER.value else "")
    if not out:
        raise app.UsageError("--out=DIR is required with --oracle")
    run(config, out, _SPLIT.value, _NUM_STEPS.value, _SOLVER.value, _FLIP.value, _SHARD.value,
        [int(n) for n in _ROUNDTRIP.value], _ROUNDTRIP_NUM.value)
    print(json.dumps({"out": out}))


if __name__ == "__main__":
    from consistency.config import ConfigError
    try:
        app.run(main)
    except ConfigError as e:
        sys.exit(f"error: {e}")
