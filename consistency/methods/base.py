"""The contract between the training loop and a method.

A method is three pure functions bundled in :class:`Method`:

* ``init(rng, example_batch) -> TrainState``
* ``train_step(state, batch, rng) -> (state, metrics)``: jittable, no Python side effects;
  every schedule (N(k), mu(k), curricula) is computed from the traced ``state.step``.
* ``sample(state, rng, num_samples, **kwargs) -> x``: draws samples with the sampling (EMA) params.

The loop (``consistency/train.py``) never names a method: it calls these three functions,
shards the batch, checkpoints ``TrainState`` and logs ``metrics``.

A batch is a dict of numpy / jax arrays with a leading batch axis:
``{'x': float32 [B, ...] in [-1, 1] (images NHWC) or R^d (toys), 'label': int32 [B], 'index': int32 [B]}``
where ``index`` is the global index of the example in the epoch stream; methods fold it into
their rng so results do not depend on the number of devices (DESIGN.md, "Randomness is per example").
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to resume, as one pytree.

    step:      int32 scalar, number of optimizer steps taken.
    params:    trained parameter sets by name, e.g. {'online': ...} or {'generator': ..., 'fake': ...}.
    opt_state: one optax state per trained set (same keys as ``params``).
    ema:       sampling EMA copies by name (usually a subset of ``params``' keys).
    frozen:    parameter sets no optimizer touches: {'teacher': ...}, the CM target θ⁻ {'target': ...}.
    """

    step: jax.Array
    params: dict
    opt_state: dict
    ema: dict
    frozen: dict


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    init: Callable[[jax.Array, dict], TrainState]
    train_step: Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]
    sample: Callable[..., jax.Array]
    # Name of the parameter set whose EMA is used for sampling/eval (e.g. 'online', 'generator').
    sample_params: str = "online"
    # NFE → keyword arguments of ``sample`` that spend exactly that many network evaluations (evaluation at a list
    # of NFEs). Default: one evaluation per step (consistency models, one-step generators).
    nfe_kwargs: Callable[[int], dict] = lambda nfe: {"num_steps": int(nfe)}


def example_keys(rng: jax.Array, index: jax.Array) -> jax.Array:
    """One PRNG key per example, folded from the step key and the global example index."""
    return jax.vmap(lambda i: jax.random.fold_in(rng, i))(index)


def per_example_normal(keys: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Standard normal noise of per-example ``shape``, one draw per key (device-count invariant)."""
    return jax.vmap(lambda k: jax.random.normal(k, shape, dtype))(keys)


def ema_update(ema: PyTree, params: PyTree, decay: jax.Array | float) -> PyTree:
    """ψ ← r·ψ + (1−r)·θ (METHODS.md §1.5)."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def ema_decay_from_half_life(half_life_images: float, batch_size: int) -> float:
    """EDM half-life → per-step decay r = 0.5^(B/H) (METHODS.md §1.5: H=0.5M, B=512 → 0.99929)."""
    return 0.5 ** (batch_size / half_life_images)


def apply_gradients(state: TrainState, name: str, grads: PyTree, optimizer: optax.GradientTransformation,
                    ema_decay: jax.Array | float | None = None) -> TrainState:
    """One optax step on parameter set ``name``; refresh its sampling EMA when it has one."""
    updates, opt = optimizer.update(grads, state.opt_state[name], state.params[name])
    new = optax.apply_updates(state.params[name], updates)
    params = {**state.params, name: new}
    opt_state = {**state.opt_state, name: opt}
    ema = state.ema
    if name in ema and ema_decay is not None:
        ema = {**ema, name: ema_update(ema[name], new, ema_decay)}
    return state.replace(params=params, opt_state=opt_state, ema=ema)
