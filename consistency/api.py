"""Inference API: open a training workdir and draw samples.

>>> import jax, consistency
>>> run = consistency.load("runs/digits_edm")           # latest checkpoint; load(workdir, step=500) for another
>>> x = run.sample(jax.random.PRNGKey(0), 16)           # [16, H, W, C] in [-1, 1], with the EMA params
>>> x = run.sample(jax.random.PRNGKey(0), 16, num_steps=10, solver="euler")   # method-specific options
>>> run.config.method, run.step, run.params             # the saved config, the step, the sampling EMA params
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from consistency import sampling, train


@dataclasses.dataclass
class Loaded:
    """A restored run: its config, method, full TrainState and the step it was saved at."""

    config: ml_collections.ConfigDict
    method: Any
    state: Any
    step: int
    dataset: Any

    @property
    def params(self):
        """The sampling parameters: the EMA of the method's ``sample_params`` set (the raw params if it has none)."""
        from consistency.methods import base
        return base.sampling_params(self.method, self.state)

    def sample(self, rng: jax.Array, num_samples: int, **kwargs) -> jax.Array:
        """``method.sample(state, rng, num_samples, **kwargs)``, jitted; array-valued kwargs (``labels``, a params
        pytree) are traced, the others (solver, num_steps, cfg_scale, …) are compile-time constants."""
        arrays = {k: v for k, v in kwargs.items() if _is_array_tree(v)}
        static = {k: v for k, v in kwargs.items() if k not in arrays}
        sampler = sampling.make_sampler(self.method, int(num_samples), **static)  # cached per (n, static kwargs)
        return sampler(self.state, rng, jax.tree.map(jnp.asarray, arrays))


def _is_array_tree(value) -> bool:
    leaves = jax.tree.leaves(value)
    return bool(leaves) and all(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves)


def load(workdir: str, step: int | None = None, config: ml_collections.ConfigDict | None = None) -> Loaded:
    """Restore checkpoint ``step`` (None → the latest) of the run in ``workdir``.

    ``config`` defaults to the run's ``WORKDIR/config.json``; pass a modified copy to change sampling settings
    (the network and data fields must match the checkpoint). Raises FileNotFoundError when there is no run or no
    finished checkpoint.
    """
    config = train.load_config(workdir) if config is None else config
    restored = train.restore_run(config, workdir, step)
    return Loaded(config=config, method=restored.method, state=restored.state, step=restored.step,
                  dataset=restored.dataset)
