"""Drawing samples from a method and picturing them: the sampler cache, class labels, real reference points, PNG grids.

Below the loop and the reports (both use it); it never names a method.
"""
from __future__ import annotations

import functools
import inspect
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from consistency import images


def to_host(tree):
    """Replicated device values → numpy (on multi-host, from this host's first replica; docs/platform.md §4b)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)
    return jax.tree.map(fetch, tree)


def accepts_keyword(fn: Callable, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def sample_labels(config, num_samples: int, method=None) -> np.ndarray | None:
    """Balanced class labels 0, 1, …, C−1, 0, … for class-conditional models (None when unconditional or when
    the method's ``sample`` takes no ``labels``)."""
    num_classes = int(config.model.num_classes)
    if num_classes <= 0 or (method is not None and not accepts_keyword(method.sample, "labels")):
        return None
    return (np.arange(num_samples) % num_classes).astype(np.int32)


@functools.lru_cache(maxsize=16)
def make_sampler(method, num_samples: int, **static_kwargs) -> Callable:
    """``sampler(state, rng, array_kwargs) -> samples``: ``method.sample`` jitted, with ``num_samples`` and
    ``static_kwargs`` (solver names, step counts, CFG scale) fixed and ``array_kwargs`` (e.g. labels) traced.
    Cached, so the periodic grids and the evaluation of one method compile once per sample count."""
    @jax.jit
    def sampler(state, rng, array_kwargs):
        return method.sample(state, rng, num_samples, **array_kwargs, **static_kwargs)
    return sampler


def draw_samples(config, method, state, rng, num_samples: int, sampler: Callable | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """(samples [N, ...] float32 numpy in data space, labels [N] or None)."""
    labels = sample_labels(config, num_samples, method)
    sampler = sampler or make_sampler(method, num_samples)
    array_kwargs = {} if labels is None else {"labels": jnp.asarray(labels)}
    samples = to_host(sampler(state, rng, array_kwargs))
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
        grid = images.image_grid(samples)
        return images.upscale(grid, max(1, 256 // grid.shape[1]))
    flat = samples.reshape(len(samples), -1)[:, :2]
    ref = None if reference is None else reference.reshape(len(reference), -1)[:, :2]
    return images.scatter_image(flat, ref, title=title)


def write_sample_grid(writer, workdir: str, name: str, step: int, samples: np.ndarray, dataset,
                      reference: np.ndarray | None = None) -> str:
    """``WORKDIR/samples/<name>.png`` (process 0) and, with a writer, a TensorBoard image 'samples'."""
    picture = render_samples(samples, dataset, reference, title=f"step {step}")
    path = os.path.join(workdir, "samples", f"{name}.png")
    if jax.process_index() == 0:
        images.save_png(path, picture)
    if writer is not None:
        writer.write_images(step, {"samples": picture[None]})
    return path
