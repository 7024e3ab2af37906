"""Where the project follows the authors' released code (docs/fidelity.md), checked against closed forms:
the gradient sanitiser of every trained set (SiD), sCM's two tangent normalisations (paper / FastGen), CTM's training
pairs and DSM noise levels (sony/ctm), ECT's unclipped t, FastGen's truncated lognormal."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from consistency.methods import base

# ----------------------------------------------------------------------------------------------------------------
# 1. Gradient sanitiser (SiD `training/sid_training_loop.py`: nan → 0, ±inf → ±1e5)
# ----------------------------------------------------------------------------------------------------------------


def test_sanitizer_maps_nan_and_inf_as_sid_and_leaves_finite_bits_alone():
    finite = np.array([0.0, -0.0, 1e-45, -3.5, 1e5, 2e5, -3e38, 3.4028235e38], np.float32)
    out = np.asarray(base.sanitize_gradients({"w": jnp.asarray(finite)})["w"])
    assert out.tobytes() == finite.tobytes()          # bitwise, including finite values above 1e5 and −0.0
    special = jnp.asarray([np.nan, np.inf, -np.inf, 7.0], jnp.float32)
    np.testing.assert_array_equal(np.asarray(base.sanitize_gradients(special)), [0.0, 1e5, -1e5, 7.0])
    half = base.sanitize_gradients(jnp.asarray([np.inf, -np.inf], jnp.float16))
    np.testing.assert_array_equal(np.asarray(half, np.float32), [65504.0, -65504.0])   # float16 max, never inf


def _adam_trajectory(sanitize, steps=3):
    """Adam on one parameter whose first gradient is +inf and later ones 1: the parameter after each step."""
    opt = optax.adam(0.1)
    w = jnp.zeros((2,))
    state = opt.init(w)
    out = []
    for k in range(steps):
        g = jnp.asarray([np.inf if k == 0 else 1.0, 1.0], jnp.float32)
        updates, state = opt.update(sanitize(g), state, w)
        w = optax.apply_updates(w, updates)
        out.append(np.asarray(w))
    return np.stack(out), state


def test_one_infinite_gradient_does_not_freeze_adam():
    ours, ours_state = _adam_trajectory(base.sanitize_gradients)
    old, old_state = _adam_trajectory(jnp.nan_to_num)                       # the former ±float-max mapping
    # float-max² overflows: ν = inf, and every later update of that entry is m/(√inf + ε) = 0 — frozen.
    assert np.isinf(np.asarray(old_state[0].nu)[0])
    assert old[1, 0] == old[2, 0]
    # 1e5: ν = (1 − β₂)·1e10 stays finite and the entry keeps moving (against the gradient 1, so it decreases).
    assert np.all(np.isfinite(np.asarray(ours_state[0].nu)))
    assert ours[2, 0] < ours[1, 0] < ours[0, 0] < 0.0
    np.testing.assert_array_equal(ours[:, 1], old[:, 1])                    # finite entries: identical


def test_every_trained_set_is_sanitised_by_the_loop():
    """A two-set method whose losses give ±inf and NaN gradient entries: both sets update finitely, grad_norm is the
    sanitised norm, and a set with finite gradients gets exactly plain Adam's update."""
    bad = jnp.asarray([np.inf, -np.inf, np.nan, 1.0], jnp.float32)

    @jax.custom_vjp
    def with_grad(p):
        return p

    with_grad.defvjp(lambda p: (p, None), lambda _, g: (bad * jnp.ones_like(g),))

    def inf_loss(p, state, batch, rng):
        return jnp.sum(with_grad(p)), {}

    def finite_loss(p, state, batch, rng):
        return jnp.sum(p * jnp.arange(4.0)), {}

    method = base.Method(
        name="two", init=lambda rng, batch: ({"a": jnp.zeros(4), "b": jnp.zeros(4)}, {}),
        trained=(base.Trained("a", inf_loss, optax.adam(0.1)), base.Trained("b", finite_loss, optax.adam(0.1))),
        sample=lambda *a, **k: None)
    batch = {"x": jnp.zeros((2, 1)), "label": jnp.zeros((2,), jnp.int32), "index": jnp.arange(2)}
    state = base.init_state(method, jax.random.PRNGKey(0), batch)
    new, metrics = base.train_step(method, state, batch, jax.random.PRNGKey(1), ("a", "b"))
    a = np.asarray(new.params["a"])
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, [-0.1, 0.1, 0.0, -0.1], rtol=1e-5)       # Adam's first step: −lr·sign(g)
    np.testing.assert_allclose(float(metrics["a/grad_norm"]), math.sqrt(2e10 + 1.0), rtol=1e-6)
    plain, _ = optax.adam(0.1).update(jnp.arange(4.0), optax.adam(0.1).init(jnp.zeros(4)), jnp.zeros(4))
    assert np.asarray(new.params["b"]).tobytes() == np.asarray(optax.apply_updates(jnp.zeros(4), plain)).tobytes()
