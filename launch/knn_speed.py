"""Time the k-NN posterior-averaged CT target (docs/science.md (f)): the blocked neighbour search of
``posterior_mean_estimate(..., top_k=k)`` against ``lax.top_k`` over the whole bank, jitted, after compilation.

    python launch/knn_speed.py --batch=512 --bank=100000 --dim=2 --k=16
"""
from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from consistency.objectives import consistency as cm_obj

_BATCH = flags.DEFINE_integer("batch", 512, "Queries (the training batch).")
_BANK = flags.DEFINE_integer("bank", 100_000, "Bank rows (the toy dataset).")
_DIM = flags.DEFINE_integer("dim", 2, "Dimension of a point.")
_K = flags.DEFINE_integer("k", 16, "Neighbours.")
_SECONDS = flags.DEFINE_float("seconds", 5.0, "Time each variant for about this long (at least one call).")


def top_k_over_bank(x, sigma, bank, k):
    """The previous implementation: [B, M] logits, ``lax.top_k`` on every row, softmax over the survivors."""
    sq = jnp.sum(x ** 2, 1, keepdims=True) - 2.0 * x @ bank.T + jnp.sum(bank ** 2, 1)[None]
    logits = -jnp.maximum(sq, 0.0) / (2.0 * sigma[:, None] ** 2)
    kth = jax.lax.top_k(logits, k)[0][:, -1:]
    return jax.nn.softmax(jnp.where(logits >= kth, logits, -jnp.inf), axis=1) @ bank


def timed(fn, *args) -> tuple[float, float, jax.Array]:
    start = time.time()
    out = fn(*args).block_until_ready()
    first = time.time() - start
    start, calls = time.time(), 0
    while calls == 0 or time.time() - start < _SECONDS.value:
        fn(*args).block_until_ready()
        calls += 1
    return first, (time.time() - start) / calls, out


def main(_):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((_BATCH.value, _DIM.value)), jnp.float32)
    bank = jnp.asarray(rng.standard_normal((_BANK.value, _DIM.value)), jnp.float32)
    sigma = jnp.full((_BATCH.value,), 0.5, jnp.float32)
    k = _K.value
    blocked = jax.jit(lambda a, s, b: cm_obj.posterior_mean_estimate(a, s, b, k))
    dense = jax.jit(lambda a, s, b: top_k_over_bank(a, s, b, k))
    first_b, call_b, out_b = timed(blocked, x, sigma, bank)
    first_d, call_d, out_d = timed(dense, x, sigma, bank)
    print(json.dumps({"batch": _BATCH.value, "bank": _BANK.value, "dim": _DIM.value, "k": k,
                      "blocked_first_s": round(first_b, 2), "blocked_call_s": round(call_b, 3),
                      "top_k_first_s": round(first_d, 2), "top_k_call_s": round(call_d, 3),
                      "max_abs_difference": float(jnp.max(jnp.abs(out_b - out_d)))}))


if __name__ == "__main__":
    app.run(main)
