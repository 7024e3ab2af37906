"""The save guard: a non-finite or blown-up state is never written (:func:`check_state`,
:class:`DivergedStateError`)."""
from __future__ import annotations

import math
import weakref
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any

# Default bound on max|θ| of trained params and EMA at save time. Healthy weights are O(1) (initialisers scale by
# 1/√fan_in) and an Adam step moves a weight by at most ≈ lr, so even 10⁶ steps at lr = 10⁻³ end 10× below it.
# Beyond it float32 can no longer apply such steps (ulp(10⁴) ≈ 10⁻³: an lr = 10⁻⁴ update rounds away), so a
# weight there has stopped training anyway. A blow-up (one lr = 10⁶ Adam step gives |θ| ≈ 10⁶) is caught long
# before float32 overflows to Inf; a bound of 1e6 would let exactly that case through.
DEFAULT_MAX_PARAM_ABS = 1e4
BOUNDED_FIELDS = ("params", "ema")  # the state fields whose max|θ| is bounded (every field must be finite)


class DivergedStateError(FloatingPointError):
    """The state about to be saved is not finite or has blown up; it was not saved."""


_SAVE_BOUNDS: "weakref.WeakKeyDictionary[ocp.CheckpointManager, float]" = weakref.WeakKeyDictionary()


def guard_saves(manager: ocp.CheckpointManager, max_param_abs: float) -> None:
    """Make :func:`save` on ``manager`` refuse a state with max|θ| > ``max_param_abs`` (0 → only the finiteness
    check). Managers not configured here use :data:`DEFAULT_MAX_PARAM_ABS`."""
    _SAVE_BOUNDS[manager] = float(max_param_abs)


def max_param_abs_of(manager: ocp.CheckpointManager) -> float:
    return _SAVE_BOUNDS.get(manager, DEFAULT_MAX_PARAM_ABS)


@jax.jit
def _leaf_summaries(leaves: list) -> tuple[jax.Array, jax.Array]:
    """Per leaf: all finite (bool) and max |x| (float32); integer leaves count as finite with max 0."""
    def summary(x):
        if not jnp.issubdtype(x.dtype, jnp.inexact) or x.size == 0:
            return jnp.array(True), jnp.array(0.0, jnp.float32)
        return jnp.all(jnp.isfinite(x)), jnp.max(jnp.abs(x)).astype(jnp.float32)
    finite, max_abs = zip(*(summary(jnp.asarray(x)) for x in leaves))
    return jnp.stack(finite), jnp.stack(max_abs)


def _host(x) -> np.ndarray:
    """A replicated device value → numpy (multi-host: this host's first replica)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _describe_leaf(path, leaf, value: float) -> str:
    """``params['online'] w1[0, 3] = 1e+06``: the parameter set, the leaf path inside it, its worst element."""
    names = [_key_name(k) for k in path]
    where = f"{names[0]}[{names[1]!r}]" if len(names) > 1 else (names[0] if names else "state")
    inner = ".".join(names[2:]) or "(the whole set)"
    x = _host(leaf)
    if x.ndim:
        bad = ~np.isfinite(x) if not math.isfinite(value) else np.abs(x) == value
        index = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else ()
        inner += "[" + ", ".join(map(str, index)) + "]"
        value = float(x[index]) if index else value
    else:
        value = float(x)
    return f"{where} {inner} = {value:.4g}"


def find_unsafe_leaf(state: PyTree, max_param_abs: float) -> str | None:
    """None when every leaf of ``state`` is finite and max|θ| of the :data:`BOUNDED_FIELDS` leaves is at most
    ``max_param_abs`` (0 → no bound); else a description of the first offending leaf. One jitted reduction: only
    two scalars per leaf reach the host (and the offending leaf, to name its element)."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    if not flat:
        return None
    finite, max_abs = (_host(v) for v in _leaf_summaries([leaf for _, leaf in flat]))
    for (path, leaf), ok in zip(flat, finite):
        if not ok:
            return _describe_leaf(path, leaf, math.nan) + " is not finite"
    if max_param_abs > 0:
        for (path, leaf), m in zip(flat, max_abs):
            if path and _key_name(path[0]) in BOUNDED_FIELDS and m > max_param_abs:
                return (_describe_leaf(path, leaf, float(m)) +
                        f" exceeds training.max_param_abs = {max_param_abs:g}")
    return None


def check_state(state: PyTree, step: int, max_param_abs: float = DEFAULT_MAX_PARAM_ABS,
                last_good: Callable[[], int | None] = lambda: None) -> None:
    """Raise :class:`DivergedStateError` (one line: the leaf, the value, the last good step and the fix) when
    :func:`find_unsafe_leaf` finds one."""
    problem = find_unsafe_leaf(state, max_param_abs)
    if problem is None:
        return
    good = last_good()
    resume = (f"the last good checkpoint is step {good}: rerun to resume from it" if good is not None
              else "no checkpoint was saved yet: rerun to start again")
    raise DivergedStateError(
        f"training diverged: not saving step {step}: {problem}; {resume} with a lower optim.lr, a longer "
        "optim.warmup_steps or, if clipping is on, a smaller optim.grad_clip (training.max_param_abs=0 disables "
        "the bound)")


@jax.jit
def _set_max_abs(params: dict) -> dict:
    return {name: jnp.max(jnp.stack([jnp.max(jnp.abs(x)).astype(jnp.float32) for x in jax.tree.leaves(tree)
                                     if jnp.issubdtype(x.dtype, jnp.inexact) and x.size] or [jnp.float32(0)]))
            for name, tree in params.items()}


def set_max_abs(params: dict) -> dict[str, float]:
    """{set name: max|θ| over its leaves} of a state's ``params`` (one jitted reduction, one scalar per set)."""
    return {name: float(_host(v)) for name, v in _set_max_abs(dict(params)).items()}
