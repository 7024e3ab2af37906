"""Time the k-NN posterior-averaged CT target (docs/science.md (f)): the two-level neighbour search of
``posterior_mean_estimate(..., top_k=k)`` against the previous running k smallest over bank tiles and against
``lax.top_k`` over the whole bank (``--dense``), jitted, after compilation; all outputs are compared. With
``--full_average`` also the average over the whole bank (top_k = 0, the dataset pool of docs/science.md (l)): the
tiled online softmax against the dense [B, M] form.

    python launch/knn_speed.py --batch=512 --bank=100000 --dim=2 --k=16
    python launch/knn_speed.py --k=16 --nodense --full_average      # the dataset-pool average, tiled vs dense
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
_DENSE = flags.DEFINE_bool("dense", True, "Also time lax.top_k over the whole bank (about 50 s a call on 2 cores).")
_FULL = flags.DEFINE_bool("full_average", False, "Also time the whole-bank average (top_k = 0): tiled vs dense.")
_SECONDS = flags.DEFINE_float("seconds", 5.0, "Time each variant for about this long (at least one call).")


def top_k_over_bank(x, sigma, bank, k):
    """The previous implementation: [B, M] logits, ``lax.top_k`` on every row, softmax over the survivors."""
    sq = jnp.sum(x ** 2, 1, keepdims=True) - 2.0 * x @ bank.T + jnp.sum(bank ** 2, 1)[None]
    logits = -jnp.maximum(sq, 0.0) / (2.0 * sigma[:, None] ** 2)
    kth = jax.lax.top_k(logits, k)[0][:, -1:]
    return jax.nn.softmax(jnp.where(logits >= kth, logits, -jnp.inf), axis=1) @ bank


def running_k_smallest(x, sigma, bank, k, block=4096):
    """The implementation before the two-level search: a ``lax.scan`` over bank tiles keeping the k smallest of
    (the k so far ∪ the tile) with :func:`smallest_k`, i.e. k ``min`` passes over every tile."""
    m, d = bank.shape
    num_blocks = -(-m // block)
    tiles = jnp.pad(bank, ((0, num_blocks * block - m), (0, 0))).reshape(num_blocks, block, d)
    valid = (jnp.arange(num_blocks * block) < m).reshape(num_blocks, block)
    q2 = jnp.sum(x ** 2, 1, keepdims=True)

    def merge(carry, inputs):
        best_sq, best_index = carry
        tile, ok, offset = inputs
        sq = jnp.where(ok[None], jnp.maximum(q2 - 2.0 * x @ tile.T + jnp.sum(tile ** 2, 1)[None], 0.0), jnp.inf)
        index = jnp.broadcast_to(offset + jnp.arange(block), sq.shape)
        new_sq, pos = cm_obj.smallest_k(jnp.concatenate([best_sq, sq], 1), k)
        return (new_sq, jnp.take_along_axis(jnp.concatenate([best_index, index], 1), pos, 1)), None

    init = (jnp.full((x.shape[0], k), jnp.inf, x.dtype), jnp.zeros((x.shape[0], k), jnp.int32))
    (sq, index), _ = jax.lax.scan(merge, init, (tiles, valid, jnp.arange(num_blocks, dtype=jnp.int32) * block))
    w = jax.nn.softmax(-sq / (2.0 * sigma[:, None] ** 2), axis=1)
    return jnp.einsum("bk,bkd->bd", w, bank[index])


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
    two_level = jax.jit(lambda a, s, b: cm_obj.posterior_mean_estimate(a, s, b, k))
    running = jax.jit(lambda a, s, b: running_k_smallest(a, s, b, k))
    first_t, call_t, out_t = timed(two_level, x, sigma, bank)
    first_r, call_r, out_r = timed(running, x, sigma, bank)
    report = {"batch": _BATCH.value, "bank": _BANK.value, "dim": _DIM.value, "k": k,
              "two_level_first_s": round(first_t, 2), "two_level_call_s": round(call_t, 3),
              "running_k_first_s": round(first_r, 2), "running_k_call_s": round(call_r, 3),
              "max_abs_difference_running_k": float(jnp.max(jnp.abs(out_t - out_r)))}
    if _DENSE.value:
        dense = jax.jit(lambda a, s, b: top_k_over_bank(a, s, b, k))
        first_d, call_d, out_d = timed(dense, x, sigma, bank)
        report.update(top_k_first_s=round(first_d, 2), top_k_call_s=round(call_d, 3),
                      max_abs_difference_top_k=float(jnp.max(jnp.abs(out_t - out_d))))
    if _FULL.value:
        tiled = jax.jit(lambda a, s, b: cm_obj.posterior_mean_estimate(a, s, b))
        dense = jax.jit(lambda a, s, b: cm_obj.posterior_mean_estimate(a, s, b, block=b.shape[0]))  # one [B, M] matrix
        first_f, call_f, out_f = timed(tiled, x, sigma, bank)
        first_e, call_e, out_e = timed(dense, x, sigma, bank)
        report.update(full_tiled_first_s=round(first_f, 2), full_tiled_call_s=round(call_f, 4),
                      full_dense_first_s=round(first_e, 2), full_dense_call_s=round(call_e, 4),
                      max_abs_difference_full=float(jnp.max(jnp.abs(out_f - out_e))))
    print(json.dumps(report))

if __name__ == "__main__":
    app.run(main)
