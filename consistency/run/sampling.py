"""Drawing samples from a method and picturing them: the sampler cache, class labels, real reference points, PNG grids.

Below the loop and the reports (both use it); it never names a method.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from consistency.run import pictures


def to_host(tree):
    """Replicated device values → numpy (on multi-host, from this host's first replica; docs/platform.md §4b)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)
    return jax.tree.map(fetch, tree)


def sample_labels(config, num_samples: int) -> np.ndarray | None:
    """Balanced class labels 0, 1, …, C−1, 0, … for class-conditional models (None when unconditional)."""
    num_classes = int(config.model.num_classes)
    if num_classes <= 0:
        return None
    return (np.arange(num_samples) % num_classes).astype(np.int32)


@functools.lru_cache(maxsize=16)
def make_sampler(method, num_samples: int, nfe: int | None = None, options=None) -> Callable:
    """``sampler(state, rng, arrays) -> samples``: ``method.sample`` jitted with ``num_samples``, ``nfe`` (default the
    configured ``method.sampling_nfe``) and ``options`` (a frozen dataclass, default ``method.options``) fixed and
    ``arrays`` (``labels``, ``params``) traced. Cached, so the periodic grids and the evaluation of one method
    compile once per (sample count, NFE, options)."""
    nfe = int(method.sampling_nfe if nfe is None else nfe)
    options = method.options if options is None else options

    @jax.jit
    def sampler(state, rng, arrays):
        return method.sample(state, rng, num_samples, nfe=nfe, options=options, **arrays)
    return sampler


def draw_samples(config, method, state, rng, num_samples: int, sampler: Callable | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """(samples [N, ...] float32 numpy in data space, labels [N] or None); ``sampler`` defaults to the configured
    one (:func:`make_sampler` with the method's ``sampling_nfe`` and ``options``)."""
    labels = sample_labels(config, num_samples)
    sampler = sampler or make_sampler(method, num_samples)
    arrays = {} if labels is None else {"labels": jnp.asarray(labels)}
    samples = to_host(sampler(state, rng, arrays))
    return np.asarray(samples, np.float32), labels


def reference_points(dataset, num_points: int = 2000) -> np.ndarray:
    """``num_points`` real examples: the start of the (shuffled) training stream, ``dataset.batch(0), batch(1), …``
    (this host's share). Cheap for any dataset size, unlike decoding the whole split."""
    parts, count, step = [], 0, 0
    while count < num_points:
        x = np.asarray(dataset.batch(step)["x"], np.float32)
        parts.append(x)
        count, step = count + len(x), step + 1
    return np.concatenate(parts)[:num_points]


def render_samples(samples: np.ndarray, dataset, reference: np.ndarray | None = None, title: str = "") -> np.ndarray:
    """A uint8 picture of samples: an image grid (upscaled to ≥ 256 px) or a toy scatter / histogram."""
    if dataset.kind == "image":
        grid = pictures.image_grid(samples)
        return pictures.upscale(grid, max(1, 256 // grid.shape[1]))
    flat = samples.reshape(len(samples), -1)[:, :2]
    ref = None if reference is None else reference.reshape(len(reference), -1)[:, :2]
    return pictures.scatter_image(flat, ref, title=title)


def write_sample_grid(writer, workdir: str, name: str, step: int, samples: np.ndarray, dataset,
                      reference: np.ndarray | None = None) -> str:
    """``WORKDIR/samples/<name>.png`` (process 0) and, with a writer, a TensorBoard image 'samples'."""
    picture = render_samples(samples, dataset, reference, title=f"step {step}")
    path = os.path.join(workdir, "samples", f"{name}.png")
    if jax.process_index() == 0:
        pictures.save_png(path, picture)
    if writer is not None:
        writer.write_images(step, {"samples": picture[None]})
    return path
