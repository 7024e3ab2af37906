"""The contract between the training loop and a method: a declarative :class:`Method` spec.

A method says *what* it trains and the loop does the rest. It declares

* its **trained** parameter sets (:class:`Trained`): each with its own loss, optax optimizer (own lr schedule,
  counted in that set's own updates), update period/phase (``every``/``phase``: DMD2's TTUR of 5 fake-score
  updates per generator update is ``every=5`` on the generator) and sampling EMA (a decay per update);
* its **moving** sets (:class:`Moving`): parameters no optimizer touches that follow a trained set after each of
  its updates, such as the CM target θ⁻ ← μ(k)·θ⁻ + (1 − μ(k))·θ (seed eq. 12) — not frozen, not trained;
* its **frozen** sets: returned by ``init`` (a teacher, a data bank for a closed-form denoiser, feature-net
  params); they are arguments of the compiled step, never constants baked into it (docs/architecture.md, "Params are arguments, never constants");
* ``init(rng, example_batch) -> (trained_params: dict, frozen: dict)`` and
  ``sample(state, rng, num_samples, *, nfe, options, labels=None, params=None) -> x`` (with the sampling EMA of
  ``sample_params`` unless ``params`` is given): ``nfe`` network evaluations, ``options`` one frozen dataclass the
  method declares (``Method.options``, as configured; :func:`sampling_options` overrides fields by name).

A trained set's loss is ``loss(params, state, batch, rng) -> (scalar, metrics)``: ``params`` are the set's own
(differentiated) parameters, ``state`` the whole :class:`TrainState` as it stands at that point of the step
(so a generator's loss sees the fake score just updated before it), ``rng`` a key for this set at this step.
Every schedule (N(k), μ(k), curricula) is computed from the traced ``state.step``.

The loop (``consistency/run/train.py``) owns ``state.step`` and calls :func:`train_step` with the sets due at that
step (:func:`due_sets`, decided on the host): one compiled step per distinct due tuple (two for a 5:1 ratio).
Metrics of a set exist only at the steps that updated it, so averages never mix in zeros for skipped steps; with
more than one trained set they are named ``<set>/<metric>``.

A batch is a dict of numpy / jax arrays with a leading batch axis:
``{'x': float32 [B, ...] in [-1, 1] (images NHWC) or R^d (toys), 'label': int32 [B], 'index': int32 [B]}``
where ``index`` is the global index of the example in the epoch stream; methods fold it into
their rng so results do not depend on the number of devices (docs/architecture.md, "Randomness is per example").
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from consistency.core.errors import ConfigError

PyTree = Any
LossFn = Callable[[PyTree, "TrainState", dict, jax.Array], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to resume, as one pytree.

    step:      int32 scalar, loop steps taken (owned by the loop).
    params:    trained parameter sets by name, e.g. {'online': ...} or {'generator': ..., 'fake': ...}.
    opt_state: one optax state per trained set (same keys as ``params``).
    updates:   int32 scalar per trained set: how many times that set was updated.
    ema:       sampling EMA copies by name (trained sets with an ``ema_decay``).
    moving:    sets that follow a trained set without an optimizer: {'target': θ⁻}.
    frozen:    sets nothing updates: {'teacher': ...}, {'bank': ...}.
    """

    step: jax.Array
    params: dict
    opt_state: dict
    updates: dict
    ema: dict
    moving: dict
    frozen: dict


@dataclasses.dataclass(frozen=True)
class Trained:
    """A parameter set an optimizer updates at loop steps k with ``k % every == phase``."""

    name: str
    loss: LossFn
    optimizer: optax.GradientTransformation
    learning_rate: optax.Schedule | None = None  # lr(update count), logged as '<set>/lr'
    every: int = 1
    phase: int = 0
    ema_decay: float | None = None  # sampling EMA decay per update of this set; None → no sampling EMA

    def __post_init__(self):
        if self.every < 1 or not 0 <= self.phase < self.every:
            raise ValueError(f"trained set {self.name!r}: need every >= 1 and 0 <= phase < every, "
                             f"got every={self.every}, phase={self.phase}")


@dataclasses.dataclass(frozen=True)
class Moving:
    """A set that follows trained set ``source`` after each of its updates: ψ ← μ(step)·ψ + (1 − μ(step))·θ."""

    name: str
    source: str
    decay: Callable[[jax.Array], jax.Array]  # μ as a function of the traced loop step


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The sampling options of a method whose sampler takes nothing beyond the NFE, labels and params."""


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    init: Callable[[jax.Array, dict], tuple[dict, dict]]
    trained: tuple[Trained, ...]
    # sample(state, rng, num_samples, *, nfe, options, labels=None, params=None) -> x: exactly ``nfe`` network
    # evaluations; ``options`` an instance of ``type(Method.options)``; ``labels`` int [N] (class-conditional
    # models) and ``params`` (a params pytree replacing the sampling EMA) are traced arrays.
    sample: Callable[..., jax.Array]
    moving: tuple[Moving, ...] = ()
    # Name of the set whose EMA is used for sampling/eval (e.g. 'online', 'generator').
    sample_params: str = "online"
    # The sampler's options as configured (a frozen dataclass: a CM's σ list, EDM's solver and CFG scale, CTM's γ,
    # …; built from ``config.sampling`` and the method's block), overridden per call with :func:`sampling_options`.
    options: Any = NoOptions()
    # The NFE of the configured sampler (periodic grids, ``--mode=sample``, ``Loaded.sample`` without ``nfe``).
    sampling_nfe: int = 1
    # NFEs evaluated when ``config.eval.nfes`` is empty.
    default_nfes: tuple[int, ...] = (1, 2)
    # (nfe, options) → what the sampler does at that NFE, for the reports (e.g. the σ list of a CM sampler).
    describe_sampler: Callable[[int, Any], dict] = lambda nfe, options: dataclasses.asdict(options)

    def __post_init__(self):
        names = [t.name for t in self.trained]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"method {self.name!r}: trained sets must be a non-empty list of distinct names, "
                             f"got {names}")
        for m in self.moving:
            if m.source not in names:
                raise ValueError(f"method {self.name!r}: moving set {m.name!r} follows unknown set {m.source!r}")
        if not (dataclasses.is_dataclass(self.options) and type(self.options).__dataclass_params__.frozen):
            raise ValueError(f"method {self.name!r}: options must be a frozen dataclass instance, got "
                             f"{type(self.options).__name__}")

    @property
    def options_type(self) -> type:
        return type(self.options)

    @property
    def trained_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.trained)


# ----------------------------------------------------------------------------------------------------------
# What the loop calls
# ----------------------------------------------------------------------------------------------------------

def init_state(method: Method, rng: jax.Array, batch: dict) -> TrainState:
    """The state at step 0: ``method.init`` params, fresh optimizer states, EMA and moving copies of their sets."""
    params, frozen = method.init(rng, batch)
    missing = set(method.trained_names) - set(params)
    if missing:
        raise ValueError(f"method {method.name!r}: init returned no params for trained sets {sorted(missing)}")
    params = {name: params[name] for name in method.trained_names}
    opt_state = {t.name: t.optimizer.init(params[t.name]) for t in method.trained}
    ema = {t.name: jax.tree.map(jnp.copy, params[t.name]) for t in method.trained if t.ema_decay is not None}
    moving = {m.name: jax.tree.map(jnp.copy, params[m.source]) for m in method.moving}
    updates = {name: jnp.zeros((), jnp.int32) for name in method.trained_names}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state, updates=updates, ema=ema,
                      moving=moving, frozen=dict(frozen))


def due_sets(method: Method, step: int) -> tuple[str, ...]:
    """Names of the trained sets updated at loop step ``step`` (0-based: the step being taken), in spec order."""
    return tuple(t.name for t in method.trained if int(step) % t.every == t.phase)


def updates_in(total_steps: int, every: int = 1, phase: int = 0) -> int:
    """How many updates a set with period ``every`` and ``phase`` gets in loop steps 0 … total_steps − 1."""
    total_steps = int(total_steps)
    return 0 if total_steps <= phase else (total_steps - 1 - phase) // every + 1


def split_micro_batches(batch: dict, micro_batches: int) -> dict:
    """[B, ...] → [k, B/k, ...]: micro-batch j holds rows j, j+k, j+2k, … so that each device of a batch sharded over
    its leading axis keeps its own rows (the reshape moves no data between devices when B/k divides over them)."""
    k = int(micro_batches)
    return jax.tree.map(lambda v: jnp.moveaxis(v.reshape((v.shape[0] // k, k) + v.shape[1:]), 1, 0), batch)


def loss_and_grads(loss_fn: Callable, params, state, batch: dict, key, micro_batches: int = 1):
    """``((loss, aux), grads)`` of ``loss_fn(params, state, batch, key)``; with ``micro_batches`` k > 1 the mean over k
    micro-batches of B/k rows (``lax.scan``: one micro-batch's activations live at a time) — gradient accumulation.

    Every micro-batch sees the same ``key``; methods draw their noise per example from the global example index
    (:func:`example_keys`), so each example gets the draw it gets in the full batch, and for a loss that is a mean of
    per-example terms the result equals the full-batch gradient (tests/test_precision.py). Objectives coupled across
    the batch (CT's batch posterior target, GAN terms over batch statistics) see micro-batches instead, and aux
    metrics are averaged over micro-batches (a per-batch max becomes a mean of maxima)."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if int(micro_batches) == 1:
        return grad_fn(params, state, batch, key)
    micro = split_micro_batches(batch, micro_batches)
    shapes = jax.eval_shape(grad_fn, params, state, jax.tree.map(lambda v: v[0], micro), key)
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.result_type(s.dtype, jnp.float32)), shapes)

    def accumulate(total, one):
        return jax.tree.map(lambda t, v: t + v, total, grad_fn(params, state, one, key)), None

    total, _ = jax.lax.scan(accumulate, zero, micro)
    return jax.tree.map(lambda t: t / micro_batches, total)


def train_step(method: Method, state: TrainState, batch: dict, rng: jax.Array,
               due: tuple[str, ...], micro_batches: int = 1) -> tuple[TrainState, dict]:
    """Update the ``due`` sets in spec order, each from its own loss; then the moving sets that follow them.

    Every set's gradient passes through :func:`sanitize_gradients` before its optimizer (NaN → 0, ±inf → ±1e5, as
    SiD's training loop does for both its networks); ``grad_norm`` is the norm of the sanitised gradient.

    The first set takes ``rng`` itself, set i > 0 takes ``fold_in(rng, i)``. ``state.step`` is left alone (the loop
    advances it). ``micro_batches`` > 1 accumulates each set's gradient over that many micro-batches
    (:func:`loss_and_grads`; ``config.training.grad_accumulation``).
    """
    metrics: dict[str, jax.Array] = {}
    prefix_names = len(method.trained) > 1
    for index, spec in enumerate(method.trained):
        if spec.name not in due:
            continue
        key = rng if index == 0 else jax.random.fold_in(rng, index)
        (loss, aux), grads = loss_and_grads(spec.loss, state.params[spec.name], state, batch, key, micro_batches)
        grads = sanitize_gradients(grads)
        count = state.updates[spec.name]
        state = _apply_update(state, spec, grads)
        for m in method.moving:
            if m.source == spec.name:
                state = state.replace(moving={**state.moving, m.name: ema_update(
                    state.moving[m.name], state.params[spec.name], m.decay(state.step))})
        produced = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        if spec.learning_rate is not None:
            produced["lr"] = jnp.asarray(spec.learning_rate(count), jnp.float32)
        metrics.update({(f"{spec.name}/{k}" if prefix_names else k): v for k, v in produced.items()})
    return state, metrics


GRADIENT_INF_VALUE = 1e5   # ±inf gradient entries become ±this (SiD `training/sid_training_loop.py`)


def sanitize_gradients(grads: PyTree) -> PyTree:
    """NaN → 0, +inf → +1e5, −inf → −1e5 in every leaf; finite entries pass unchanged, bit for bit (also those above
    1e5). This is SiD's ``torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5)`` (mingyuanzhou/SiD,
    ``training/sid_training_loop.py``, on the fake score's and the generator's gradients), applied here to every
    trained set of every method. ``jnp.nan_to_num``'s default ±float-max would make Adam's second moment
    (1 − β₂)·g² overflow to inf and every later update of that entry 0: the parameter would freeze for good.
    Leaves whose dtype cannot hold 1e5 (float16) get their dtype's largest finite value."""
    def leaf(g):
        if not jnp.issubdtype(g.dtype, jnp.floating):
            return g
        big = min(GRADIENT_INF_VALUE, float(jnp.finfo(g.dtype).max))
        return jnp.nan_to_num(g, nan=0.0, posinf=big, neginf=-big)
    return jax.tree.map(leaf, grads)


def _apply_update(state: TrainState, spec: Trained, grads: PyTree) -> TrainState:
    name = spec.name
    updates, opt = spec.optimizer.update(grads, state.opt_state[name], state.params[name])
    new = optax.apply_updates(state.params[name], updates)
    ema = state.ema
    if spec.ema_decay is not None:
        ema = {**ema, name: ema_update(ema[name], new, spec.ema_decay)}
    return state.replace(params={**state.params, name: new}, opt_state={**state.opt_state, name: opt},
                         updates={**state.updates, name: state.updates[name] + 1}, ema=ema)


def sampling_options(method: Method, options: Any = None, **overrides) -> Any:
    """``options`` (default: the method's configured ``Method.options``) with the named fields replaced; a name the
    method's sampler does not take is a :class:`ConfigError` naming it and the valid ones."""
    options = method.options if options is None else options
    if not isinstance(options, method.options_type):
        raise ConfigError(f"sampling options: method {method.name!r} takes {method.options_type.__name__}, got "
                          f"{type(options).__name__}")
    valid = [f.name for f in dataclasses.fields(options)]
    unknown = [name for name in overrides if name not in valid]
    if unknown:
        raise ConfigError(f"sampling option {unknown[0]!r}: method {method.name!r} samples with "
                          + (f"options {', '.join(valid)}" if valid else "no options") + " (and nfe, labels, params)")
    return dataclasses.replace(options, **overrides) if overrides else options


def sampling_params(method: Method, state: TrainState):
    """The parameters ``sample`` uses: the EMA of ``method.sample_params`` (its raw params if it keeps no EMA)."""
    name = method.sample_params
    return state.ema[name] if name in state.ema else state.params[name]


# ----------------------------------------------------------------------------------------------------------
# Pieces methods share
# ----------------------------------------------------------------------------------------------------------

def example_keys(rng: jax.Array, index: jax.Array) -> jax.Array:
    """One PRNG key per example, folded from the step key and the global example index."""
    return jax.vmap(lambda i: jax.random.fold_in(rng, i))(index)


def per_example_normal(keys: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Standard normal noise of per-example ``shape``, one draw per key (device-count invariant)."""
    return jax.vmap(lambda k: jax.random.normal(k, shape, dtype))(keys)


def ema_update(ema: PyTree, params: PyTree, decay: jax.Array | float) -> PyTree:
    """ψ ← r·ψ + (1−r)·θ (docs/methods.md §1.5)."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def ema_decay_from_half_life(half_life_images: float, images_per_update: int) -> float:
    """EDM half-life → per-update decay r = 0.5^(B/H) (docs/methods.md §1.5: H=0.5M, B=512 → 0.99929)."""
    return 0.5 ** (images_per_update / half_life_images)
