"""Inference API: open a training workdir and draw samples.

>>> import jax, consistency
>>> run = consistency.load("runs/digits_edm")           # latest checkpoint; load(workdir, step=500) for another
>>> x = run.sample(jax.random.PRNGKey(0), 16)           # [16, H, W, C] in [-1, 1], with the EMA params
>>> x = run.sample(jax.random.PRNGKey(0), 16, nfe=10, solver="euler")   # NFE and the method's sampling options
>>> run.config.method, run.step, run.params             # the saved config, the step, the sampling EMA params
>>> d = run.denoise(x, 0.5)                             # EDM runs: the denoiser D(x; σ) with the sampling params
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from consistency.run import restore, sampling, train


@dataclasses.dataclass
class Loaded:
    """A restored run: its config, method, full TrainState and the step it was saved at."""

    config: ml_collections.ConfigDict
    method: Any
    state: Any
    step: int
    dataset: Any
    _jitted_denoiser: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def params(self):
        """The sampling parameters: the EMA of the method's ``sample_params`` set (the raw params if it has none)."""
        from consistency.methods import base
        return base.sampling_params(self.method, self.state)

    def sample(self, rng: jax.Array, num_samples: int, *, nfe: int | None = None, labels=None, params=None,
               options=None, **overrides) -> jax.Array:
        """``method.sample(state, rng, num_samples, nfe=…, options=…)``, jitted (one compilation per sample count, NFE
        and options). ``nfe`` defaults to the run's configured sampler (``method.sampling_nfe``); ``options`` to the
        run's configured options (``method.options``, e.g. ``EDMOptions(solver, cfg_scale, s_churn)``,
        ``CMOptions(sigmas)``, ``CTMOptions(gamma)``), with fields overridden by name (``solver="euler"``); a name
        the method does not take is a :class:`consistency.core.errors.ConfigError` listing the ones it does. ``labels``
        (int [N]) and ``params`` (a params pytree in place of the sampling EMA) are traced arrays."""
        from consistency.methods import base
        options = base.sampling_options(self.method, options, **overrides)
        arrays = {k: v for k, v in (("labels", labels), ("params", params)) if v is not None}
        sampler = sampling.make_sampler(self.method, int(num_samples), nfe, options)
        return sampler(self.state, rng, jax.tree.map(jnp.asarray, arrays))

    def denoise(self, x, sigma, labels=None) -> jax.Array:
        """D(x; σ) of an EDM run (a trained teacher or one imported with ``launch/import_edm.py``) with its sampling
        params: c_skip·x + c_out·F(c_in·x, c_noise, labels) with EDM's preconditioning (EDM Table 1;
        docs/methods.md §1.1).

        ``x``: float32 [N, H, W, C] (NHWC, the run's example shape); ``sigma``: a scalar or [N]; ``labels``: int [N]
        (``num_classes`` = the null label) or None (unconditional; for a class-conditional network, the null
        label). Returns float32 [N, H, W, C]. Jitted, one compilation per input shape."""
        if self.config.method != "edm":
            raise ValueError(f"denoise: {self.config.method!r} runs have no denoiser D(x; σ); it is defined for 'edm' "
                             "runs (trained teachers, launch/import_edm.py imports)")
        x = jnp.asarray(x)
        shape = tuple(self.dataset.example_shape)
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"denoise: x must be float [N, {', '.join(map(str, shape))}] (NHWC), got "
                             f"{x.dtype} {tuple(x.shape)}")
        n = x.shape[0]
        sigma = jnp.asarray(sigma, jnp.float32)
        if sigma.ndim > 1 or (sigma.ndim == 1 and sigma.shape[0] != n):
            raise ValueError(f"denoise: sigma must be a scalar or [{n}], got shape {tuple(sigma.shape)}")
        sigma = jnp.broadcast_to(sigma, (n,))
        conditional = int(self.config.model.num_classes) > 0
        if labels is not None:
            labels = jnp.asarray(labels)
            if labels.shape != (n,) or not jnp.issubdtype(labels.dtype, jnp.integer):
                raise ValueError(f"denoise: labels must be int [{n}] or None, got {labels.dtype} {tuple(labels.shape)}")
            if not conditional:
                raise ValueError("denoise: labels given, but this run's network is unconditional "
                                 "(config.model.num_classes = 0); pass labels=None")
        elif conditional:
            labels = jnp.full((n,), int(self.config.model.num_classes), jnp.int32)   # the null label
        return self._denoiser()(self.params, x.astype(jnp.float32), sigma,
                                None if labels is None else labels.astype(jnp.int32))

    def _denoiser(self):
        if self._jitted_denoiser is None:
            from consistency.nets import wrappers
            net = wrappers.build_net(self.config, tuple(self.dataset.example_shape))
            apply = wrappers.edm_denoiser(net, float(self.config.diffusion.sigma_data))
            self._jitted_denoiser = jax.jit(lambda p, x, s, y: apply(p, x, s, y))
        return self._jitted_denoiser


def load(workdir: str, step: int | None = None, config: ml_collections.ConfigDict | None = None) -> Loaded:
    """Restore checkpoint ``step`` (None → the latest) of the run in ``workdir``.

    ``config`` defaults to the run's ``WORKDIR/config.json``; pass a modified copy to change sampling settings
    (the network and data fields must match the checkpoint). Raises FileNotFoundError when there is no run or no
    finished checkpoint.
    """
    config = train.load_config(workdir) if config is None else config
    restored = restore.restore_run(config, workdir, step)
    return Loaded(config=config, method=restored.method, state=restored.state, step=restored.step,
                  dataset=restored.dataset)
