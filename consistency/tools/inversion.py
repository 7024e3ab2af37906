"""Teacher inversion: the PF-ODE run from data to noise, E(x) = x_T (PaGoDA §3; docs/methods.md §9 "Inversion").

The encoder of PaGoDA is the teacher's deterministic sampler run backwards: x at σ_min integrated up the ascending
Karras grid to σ_max with Heun (the official code: EDM teacher, Heun, 40 steps, σ_max = 80, once on the images and
once on their mirror images). A split is inverted once, offline, into an *inversion directory*:

    meta.json                 what was inverted (data name, split, size, resolution, label checksum, teacher, solver,
                              steps, σ range, shard size, flips) and ``complete`` once every shard exists
    plain_00000.npy, …        latents of rows [k·shard, (k+1)·shard) of the split, float32 [n, *example_shape]
    mirrored_00000.npy, …     the same rows mirrored (``--flip``), for runs with ``data.random_flip``
    roundtrip.json            the round-trip table (:func:`roundtrip_errors`)

Shards are written atomically (:mod:`consistency.core.fileio`: a local temporary file and ``os.replace``, or one bucket upload); a second run skips the shards that exist, so an
interrupted inversion continues where it stopped and a finished one is not redone. A run reads the latents through
``config.data.latents`` (:func:`attach_latents`): they enter every batch as ``batch['latent']``, aligned with the
image the batch shows (mirrored rows take the mirrored latent), and a directory made from another split, dataset,
resolution or label order is refused in one line.

The rows are the split as ``consistency.data`` stores it, decoded at the *teacher's* resolution (its own training
data config): for progressive growing (PaGoDA stage 2+) the encoder input is the teacher-resolution image, while the
generator's target is the same row decoded at the run's higher ``data.resolution``.

The latent prior. Sampling feeds G with σ_max·ε, but a *learned* teacher's inversion of the data is not N(0, σ_max²)
per coordinate: an exact teacher transports p_{σ_min} to the σ_max marginal, a learned one only approximately.
Measured on digits (300-step teacher, 40 Heun steps): per-pixel latent std 19.0 … 78.5 (overall 62.4) against
σ_max = 80 — the border pixels, −1 in every digit, invert to a narrow range (inverting x + σ_min·n instead of the clean
image gave the same 19.3 … 78.5, so the narrowing is the teacher's transport, not the clean start); the exact
8-Gaussian oracle gives 80.4. ``pagoda.prior='latent'`` samples z from the per-coordinate Gaussian of the inverted
latents instead (:func:`latent_prior`).

Exact answers (docs/methods.md §15 O8): for x ~ N(μ, s²) the inversion is linear, x_T = μ + √((s² + σ_max²)/s²)(x − μ)
(:func:`gaussian_encoder`), so inverted latents have variance s² + σ_max² while sampling draws σ_max·ε — PaGoDA's
small train/test mismatch.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from consistency.core import fileio
from consistency.core.errors import ConfigError
from consistency.data.latents import (META, attach_latents, label_checksum, latent_prior,  # noqa: F401  (re-exported)
                                      load_latents, read_meta, shard_path)
from consistency.diffusion import schedules, solvers

ROUNDTRIP = "roundtrip.json"
PAGODA_STEPS = 40                 # PaGoDA's inversion: Heun, 40 steps (docs/methods.md §9 [official code])
KINDS = ("plain", "mirrored")


# ----------------------------------------------------------------------------------------------------------------
# The ODE both ways
# ----------------------------------------------------------------------------------------------------------------

def inversion_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> jax.Array:
    """The ascending Karras grid σ_min = σ_0 < … < σ_{num_steps} = σ_max (EDM eq. 5): ``num_steps`` solver steps
    (Heun: 2·num_steps NFE)."""
    return schedules.karras_sigmas(int(num_steps) + 1, sigma_min, sigma_max, rho)


def invert(denoiser: Callable, x, sigmas, solver: str = "heun", cond=None):
    """E(x): the PF-ODE dx/dσ = (x − D(x, σ))/σ from x at σ = sigmas[0] (≈ the clean image at σ_min) up the
    ascending grid ``sigmas`` to x_T at σ_max (PaGoDA §3 inversion)."""
    return solvers.solve(denoiser, x, sigmas, solver, cond)


def reconstruct(denoiser: Callable, x_T, sigmas, solver: str = "heun", cond=None):
    """The forward sampler on the mirrored grid, σ_max down to σ_min: the inverse of :func:`invert` up to solver
    error."""
    return solvers.solve(denoiser, x_T, jnp.asarray(sigmas)[::-1], solver, cond)


def gaussian_encoder(x, mean, std, sigma_max):
    """The exact inversion of N(μ, s²) data (docs/methods.md §15 O8): x_T = μ + √((s² + σ_max²)/s²)·(x − μ)."""
    return mean + jnp.sqrt((std ** 2 + sigma_max ** 2) / std ** 2) * (x - mean)


# ----------------------------------------------------------------------------------------------------------------
# Inverting a split into a directory
# ----------------------------------------------------------------------------------------------------------------

def _mirror(x: np.ndarray) -> np.ndarray:
    return x[:, :, ::-1] if x.ndim == 4 else x


def _atomic_save(path: str, array: np.ndarray) -> None:
    fileio.save_npy(path, array)


def _write_json(path: str, value: dict) -> None:
    fileio.write_json(path, value, indent=1, sort_keys=True)


def invert_split(denoiser: Callable, images: np.ndarray, labels, out: str, meta: dict, *, num_steps: int,
                 sigma_min: float, sigma_max: float, rho: float = 7.0, solver: str = "heun", flip: bool = False,
                 shard_size: int = 512, conditional: bool = False, guidance_scales=(), null_label: int = 0,
                 progress: Callable | None = None) -> dict:
    """Invert ``images`` [N, ...] (model space, the teacher's resolution) into ``out`` (module doc), resuming: shards
    already on disk are kept. ``denoiser(x, σ, cond)``; ``labels`` enter as cond when ``conditional``. With
    ``guidance_scales`` (w_1 … w_K, a conditional teacher) each row is inverted once per w with the guided teacher
    D_w = D_∅ + w(D_c − D_∅), ∅ = ``null_label``: E(x, c, w) of PaGoDA's CFG (seed eq. 56–58), latents
    [n, K, *example_shape]. ``meta`` describes the data (name, split, resolution); it must equal the meta of an
    existing directory, else ConfigError. Returns the final meta."""
    scales = tuple(float(w) for w in guidance_scales)
    if scales and not conditional:
        raise ConfigError("invert: --guidance_scales guide a class-conditional teacher; this teacher is unconditional")
    fileio.makedirs(out)
    sigmas = inversion_sigmas(num_steps, sigma_min, sigma_max, rho)
    meta = dict(meta, size=int(len(images)), example_shape=list(images.shape[1:]),
                label_checksum=label_checksum(labels), num_steps=int(num_steps), solver=solver,
                sigma_min=float(sigma_min), sigma_max=float(sigma_max), rho=float(rho), shard_size=int(shard_size),
                kinds=list(KINDS if flip else KINDS[:1]), conditional=bool(conditional))
    if scales:
        meta["guidance_scales"] = list(scales)
    path = os.path.join(out, META)
    if fileio.exists(path):
        old = {k: v for k, v in fileio.read_json(path).items() if k != "complete"}
        if old != meta:
            changed = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
            raise ConfigError(f"invert: {out!r} holds an inversion with other settings ({', '.join(changed)}); "
                              "use another --out or delete it")
    _write_json(path, dict(meta, complete=False))

    @jax.jit
    def run(x, cond):
        cond = cond if conditional else None
        if not scales:
            return invert(denoiser, x, sigmas, solver, cond)
        from consistency.diffusion import denoisers
        return jnp.stack([invert(denoisers.classifier_free_guidance(denoiser, w, null_label), x, sigmas, solver, cond)
                          for w in scales], axis=1)

    num_shards = math.ceil(len(images) / shard_size)
    for kind in meta["kinds"]:
        for shard in range(num_shards):
            target = shard_path(out, kind, shard)
            if fileio.exists(target):
                continue
            rows = slice(shard * shard_size, min((shard + 1) * shard_size, len(images)))
            x = images[rows] if kind == "plain" else _mirror(images[rows])
            n = len(x)
            pad = ((0, shard_size - n),) + ((0, 0),) * (x.ndim - 1)   # one shape: one compilation
            cond = np.pad(np.asarray(labels[rows], np.int32), (0, shard_size - n))
            latent = np.asarray(run(jnp.asarray(np.pad(x, pad)), jnp.asarray(cond)))[:n]
            _atomic_save(target, latent.astype(np.float32))
            if progress is not None:
                progress(kind, shard, num_shards)
    meta["complete"] = True
    _write_json(path, meta)
    return meta


# ----------------------------------------------------------------------------------------------------------------
# Round trip
# ----------------------------------------------------------------------------------------------------------------

def roundtrip_errors(denoiser: Callable, x, step_counts, sigma_min: float, sigma_max: float, rho: float = 7.0,
                     solver: str = "heun", cond=None) -> list[dict]:
    """Invert ``x`` and sample back from the latent on the same grid, per grid size: the mean and max |x − x̂| and
    the RMS error, and the latent's std (≈ √(s² + σ_max²) for data of std s)."""
    rows = []
    for n in step_counts:
        sigmas = inversion_sigmas(n, sigma_min, sigma_max, rho)
        x_T = jax.jit(lambda v: invert(denoiser, v, sigmas, solver, cond))(x)
        back = jax.jit(lambda v: reconstruct(denoiser, v, sigmas, solver, cond))(x_T)
        err = np.abs(np.asarray(back) - np.asarray(x))
        rows.append({"num_steps": int(n), "nfe_each_way": int(2 * n if solver == "heun" else n),
                     "mean_abs_error": float(err.mean()), "max_abs_error": float(err.max()),
                     "rms_error": float(np.sqrt(np.mean(err ** 2))), "latent_std": float(np.std(np.asarray(x_T)))})
    return rows


def roundtrip_table(rows: list[dict]) -> str:
    """The round-trip rows as a markdown table."""
    lines = ["| Heun steps | NFE each way | mean abs error | max abs error | RMS error | latent std |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['num_steps']} | {r['nfe_each_way']} | {r['mean_abs_error']:.3g} | {r['max_abs_error']:.3g} | "
              f"{r['rms_error']:.3g} | {r['latent_std']:.4g} |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# The command (launch/invert.py)
# ----------------------------------------------------------------------------------------------------------------

def teacher_setup(teacher: str, oracle: str, data: str, toy_size: int = 0):
    """(config naming the teacher, with the teacher's data config), flips off: the rows are inverted as stored."""
    from consistency.methods.components import teachers
    c = teachers.config_for_teacher(teacher, oracle, data, "invert")
    if toy_size:
        c.data.toy_size = toy_size
    c.data.random_flip = False
    return c


def run(config, out: str, split: str = "train", num_steps: int = 40, solver: str = "heun", flip: bool = False,
        shard_size: int = 512, roundtrip=(10, 20, 40, 80), roundtrip_num: int = 256, guidance_scales=(),
        log=print) -> dict:
    """Invert ``split`` of the teacher's data into ``out`` (once per guidance scale when ``guidance_scales``) and
    write roundtrip.json; returns the meta."""
    from consistency.methods.components import teachers
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
    meta = invert_split(
        denoiser, images, labels, out, meta, num_steps=num_steps, sigma_min=f.sigma_min, sigma_max=f.sigma_max,
        rho=f.rho, solver=solver, flip=flip, shard_size=shard_size, conditional=conditional,
        guidance_scales=guidance_scales, null_label=int(config.model.num_classes),
        progress=lambda kind, k, n: log(f"{kind} shard {k + 1}/{n}"))
    log(f"inverted {meta['size']} rows of {dataset.name}/{split} ({', '.join(meta['kinds'])}) in "
        f"{time.time() - start:.1f} s: {out}")
    count = min(roundtrip_num, len(images))
    cond = jnp.asarray(labels[:count]) if conditional else None
    rows = roundtrip_errors(denoiser, jnp.asarray(images[:count]), [int(n) for n in roundtrip],
                                      f.sigma_min, f.sigma_max, f.rho, solver, cond)
    data_std = float(np.std(images))
    _, latents, _ = load_latents(out)
    if meta.get("guidance_scales"):
        latents = latents[:, 0]                        # the statistics below: the first guidance scale's latents
    per_pixel = latents.reshape(len(latents), -1).std(0)
    report = {"rows": rows, "num": count, "data_std": data_std, "latent_std": float(latents.std()),
              "latent_std_per_coordinate_min": float(per_pixel.min()),
              "latent_std_per_coordinate_max": float(per_pixel.max()),
              "sampling_latent_std": float(f.sigma_max),
              "encoded_latent_std_gaussian_prediction": float(np.sqrt(data_std ** 2 + f.sigma_max ** 2))}
    _write_json(os.path.join(out, ROUNDTRIP), report)
    log(roundtrip_table(rows))
    log(f"latent std of the {meta['size']} inverted rows: {report['latent_std']:.4g} (per coordinate "
        f"{per_pixel.min():.3g} … {per_pixel.max():.3g}) vs sampling σ_max = {f.sigma_max} "
        f"(Gaussian prediction √(s² + σ_max²) = {report['encoded_latent_std_gaussian_prediction']:.4g}, s = {data_std:.3g})")
    return meta
