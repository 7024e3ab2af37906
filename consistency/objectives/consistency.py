"""Shared pieces of every consistency objective (CD, CT, iCT, ECT, the notebook's variants).

Index convention (docs/methods.md §0, pinned here and in the tests): the Karras grid is ascending, σ_0 < … < σ_{N−1};
a training pair is (lo, hi) with σ_lo < σ_hi. The online network sits at σ_hi, the target under stop-gradient at σ_lo:
L = λ(σ_lo, σ_hi)·d(f_θ(x_hi, σ_hi), sg f_θ⁻(x̂_lo, σ_lo))   (seed eq. 12, 21, 26–27).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from consistency.diffusion import solvers


def bcast(v, x):
    """[B] → [B, 1, …] to broadcast against x."""
    return v.reshape((-1,) + (1,) * (x.ndim - 1))


def pair_weight(name: str, sigma_lo, sigma_hi):
    """λ for a pair (docs/methods.md §4 weighting; iCT §3.2 for 1/Δσ). Evaluated at the online (σ_hi) level."""
    snr = 1.0 / sigma_hi ** 2
    if name == "uniform":
        return jnp.ones_like(sigma_hi)
    if name == "snr":
        return snr
    if name == "snr+1":
        return snr + 1.0
    if name == "truncated_snr":
        return jnp.maximum(snr, 1.0)
    if name == "inv_delta":  # iCT: λ(σ_i) = 1/(σ_{i+1} − σ_i)
        return 1.0 / (sigma_hi - sigma_lo)
    raise ValueError(f"unknown weighting {name!r}; choose uniform, snr, snr+1, truncated_snr or inv_delta")


def ct_target_point(x0, noise, sigma_lo):
    """CT's target input x̂_lo = x₀ + σ_lo z with the same z (seed eq. 20: the exact Euler step for D ≡ x₀)."""
    return x0 + bcast(sigma_lo, x0) * noise


def teacher_target_point(teacher, x_hi, sigma_hi, sigma_lo, solver: str = "heun", num_steps: int = 1,
                         rho: float = 7.0):
    """Run the teacher PF-ODE from σ_hi down to σ_lo in ``num_steps`` solver steps (seed eq. 12; nb §1.3 ablation
    "make more ODE steps"). Intermediate levels follow a per-example Karras spacing between the two ends.

    ``teacher(x, sigma) -> x0_hat`` (sigma [B]); result is under stop-gradient by the caller.
    """
    step = {"euler": solvers.euler_step, "heun": solvers.heun_step,       # 1 and 2 teacher evaluations per step
            "dpm_solver_2": solvers.dpm_solver_2_step}.get(solver)         # 2 (Lu et al. 2022, midpoint in log σ)
    if step is None:
        raise ValueError(f"unknown teacher solver {solver!r}; choose 'euler', 'heun' or 'dpm_solver_2'")
    a, b = sigma_hi ** (1.0 / rho), sigma_lo ** (1.0 / rho)
    x = x_hi
    for j in range(num_steps):
        s_from = (a + j / num_steps * (b - a)) ** rho
        s_to = (a + (j + 1) / num_steps * (b - a)) ** rho
        x = step(lambda y, s, cond=None: teacher(y, s), x, s_from, s_to)
    return x


def target_errors(denoiser, x0, noise, sigma_lo: float, sigma_hi: float, solver: str = "heun",
                  exact_steps: int = 200, rho: float = 7.0, return_points: bool = False):
    """How far CD's and CT's target inputs lie from the exact ODE step, for one pair σ_lo < σ_hi (the notebook's §1.3
    question "why a solver rather than x̂ ~ p(x̂ | x₀)?"). ``denoiser(x, σ)`` is the exact D = E[x₀ | x] (an oracle),
    x₀ [B, …] data and ``noise`` z [B, …]; x_hi = x₀ + σ_hi z. With x* the PF-ODE from x_hi to σ_lo (``exact_steps``
    Heun steps of D on a Karras sub-grid), each a mean over the batch of ‖·‖² summed over coordinates:

    * ``cd``: ‖x̂_CD − x*‖², x̂_CD one ``solver`` step of D (seed eq. 12): deterministic given x_hi, so all bias;
    * ``ct``: ‖x₀ + σ_lo z − x*‖² (seed eq. 20), split into ``ct_bias`` = ‖x̂_E − x*‖² and ``ct_variance`` =
      ‖x₀ + σ_lo z − x̂_E‖², where x̂_E is the Euler step with the exact D: since z = (x_hi − x₀)/σ_hi, the CT target
      is (σ_lo/σ_hi)x_hi + (1 − σ_lo/σ_hi)x₀, whose mean given x_hi is exactly that Euler step (seed eq. 17–19) and
      whose variance is (1 − σ_lo/σ_hi)² tr Cov[x₀ | x_hi].

    With ``return_points`` also the points themselves, {'exact', 'cd', 'ct'} [B, …], as a second value.
    """
    x0 = jnp.asarray(x0, jnp.float32)
    batch = x0.shape[0]
    lo, hi = jnp.full((batch,), sigma_lo, jnp.float32), jnp.full((batch,), sigma_hi, jnp.float32)
    x_hi = x0 + bcast(hi, x0) * noise
    a, b = sigma_hi ** (1.0 / rho), sigma_lo ** (1.0 / rho)
    sub_grid = (a + jnp.arange(exact_steps + 1) / exact_steps * (b - a)) ** rho   # σ_hi → σ_lo, Karras spacing
    exact = solvers.solve(lambda y, s, cond=None: denoiser(y, jnp.full((batch,), s)), x_hi, sub_grid, "heun")
    cd = teacher_target_point(denoiser, x_hi, hi, lo, solver, 1, rho)
    euler = teacher_target_point(denoiser, x_hi, hi, lo, "euler", 1, rho)
    ct = ct_target_point(x0, noise, lo)

    def mean_sq(u, v):
        return float(jnp.mean(jnp.sum(((u - v) ** 2).reshape(batch, -1), axis=1)))
    errors = {"cd": mean_sq(cd, exact), "ct": mean_sq(ct, exact), "ct_bias": mean_sq(euler, exact),
              "ct_variance": mean_sq(ct, euler)}
    return (errors, {"exact": exact, "cd": cd, "ct": ct}) if return_points else errors


def posterior_mean_estimate(x_noisy, sigma, bank, top_k: int = 0, block: int = 1024):
    """E[x₀ | x_σ] estimated over a set of data points (seed eq. 22–25; docs/methods.md §5 "posterior-averaged target").

    Softmax weights w_j ∝ exp(−‖x_σ − x^j‖²/(2σ²)) over ``bank`` [M, …] (the minibatch or the whole dataset). With the
    whole training set this is exactly the empirical ideal denoiser of seed eq. 6. ``top_k > 0`` keeps only the k nearest
    neighbours (the notebook's k-NN estimate; the softmax narrows it at small σ, but at large σ it cannot grow past k,
    where seed eq. 23 asks for nearly the whole dataset — docs/science.md (f)); they are
    found by :func:`nearest_neighbours` (blocked, never an [B, M] matrix) and the softmax runs over those k alone.
    A bank of more than 2 × ``block`` rows is averaged tile by tile (:func:`softmax_average_blocked`), with the same
    result and never an [B, M] matrix.
    """
    xf = x_noisy.reshape(x_noisy.shape[0], -1)
    bf = bank.reshape(bank.shape[0], -1)
    if top_k and top_k < bf.shape[0]:
        sq, index = nearest_neighbours(xf, bf, top_k)
        w = jax.nn.softmax(-sq / (2.0 * sigma[:, None] ** 2), axis=1)
        return jnp.einsum("bk,bkd->bd", w, bf[index]).reshape(x_noisy.shape)
    if bf.shape[0] > 2 * block:
        return softmax_average_blocked(xf, bf, 1.0 / (2.0 * sigma ** 2), block).reshape(x_noisy.shape)
    sq = jnp.sum(xf ** 2, 1, keepdims=True) - 2.0 * xf @ bf.T + jnp.sum(bf ** 2, 1)[None]
    logits = -jnp.maximum(sq, 0.0) / (2.0 * sigma[:, None] ** 2)
    w = jax.nn.softmax(logits, axis=1)
    return (w @ bf).reshape(x_noisy.shape)


def softmax_average_blocked(queries, bank, inverse_two_var, block: int = 1024):
    """Σ_j softmax_j(−‖q − b_j‖² · c) b_j for each query q [B, D] over ``bank`` [M, D] (c = ``inverse_two_var`` [B],
    1/(2σ²)), computed over tiles of ``block`` bank rows in a ``lax.scan`` with a running maximum, normaliser and
    weighted sum (the online softmax of Milakov & Gimelshein 2018): the [B, M] logits are never stored. For B = 512,
    M = 100,000, D = 2 (the dataset pool of docs/science.md (l)) it took 85 ms a call against the dense form's 268 ms
    on this 2-core CPU, measured beside two training runs (``python launch/knn_speed.py --nodense --full_average``).
    Banks past 2 tiles take this path: the dataset pool, DMD's empirical fake score over its 4096-sample pool."""
    m, d = bank.shape
    block = int(min(block, m))
    tiles = -(-m // block)
    padded = jnp.pad(bank, ((0, tiles * block - m), (0, 0))).reshape(tiles, block, d)
    valid = (jnp.arange(tiles * block) < m).reshape(tiles, block)
    q2 = jnp.sum(queries ** 2, 1, keepdims=True)
    scale = inverse_two_var[:, None]

    def add_tile(carry, inputs):
        top, total, weighted = carry
        tile, ok = inputs
        sq = jnp.maximum(q2 - 2.0 * queries @ tile.T + jnp.sum(tile ** 2, 1)[None], 0.0)
        logits = jnp.where(ok[None], -sq * scale, -jnp.inf)   # padded rows weigh nothing
        new_top = jnp.maximum(top, jnp.max(logits, 1))
        shrink = jnp.exp(top - new_top)
        p = jnp.exp(logits - new_top[:, None])
        return (new_top, total * shrink + p.sum(1), weighted * shrink[:, None] + p @ tile), None

    b, dtype = queries.shape[0], jnp.result_type(queries, bank, inverse_two_var)
    start = (jnp.full((b,), -jnp.inf, dtype), jnp.zeros((b,), dtype), jnp.zeros((b, d), dtype))
    (_, total, weighted), _ = jax.lax.scan(add_tile, start, (padded, valid))
    return weighted / total[:, None]


def smallest_k(values, k: int):
    """(the k smallest entries of each row, ascending, and their columns; ties → the lowest column, as ``top_k``).

    k passes of min-and-mask, each built from plain ``min`` reductions: O(k·n) per row. On XLA-CPU this is much
    faster for small k than ``lax.top_k`` (a sort) and than ``argmin`` (a variadic reduction), both of which were
    measured 5–10× slower than ``min`` on the same [512, 100000] array (docs/science.md (f)).
    """
    columns = jnp.arange(values.shape[1])
    found, where = [], []
    for _ in range(k):
        smallest = jnp.min(values, axis=1, keepdims=True)
        j = jnp.min(jnp.where(values == smallest, columns[None], values.shape[1]), axis=1)
        found.append(smallest[:, 0])
        where.append(j)
        values = jnp.where(columns[None] == j[:, None], jnp.inf, values)
    return jnp.stack(found, 1), jnp.stack(where, 1).astype(jnp.int32)


def nearest_neighbours(queries, bank, k: int, block: int = 4096, group: int = 64):
    """(squared distances [B, k] ascending, indices [B, k]) of the k rows of ``bank`` [M, D] nearest to each query.

    Exact k-NN in two levels, never an [B, M] matrix or a sort over it:

    1. the bank is cut into groups of ``group`` consecutive rows (the last padded with rows at infinite distance); a
       ``lax.scan`` over tiles of ``block`` rows computes each [B, block] distance tile as ‖q‖² − 2 q·b + ‖b‖² and
       keeps only each group's minimum, one ``min`` pass;
    2. the k groups with the smallest minima are picked (:func:`smallest_k` over M/group columns). They hold the k
       nearest rows: a group holding one of them, at distance d, has its minimum ≤ d, and every group whose minimum
       is smaller holds a distinct row nearer than d, of which there are fewer than k;
    3. the k·group candidate rows are gathered, their distances recomputed as ‖q − b‖², and the k smallest kept.

    Cost: one distance pass and one ``min`` pass over [B, M], then k passes over [B, M/group] and [B, k·group], against
    k passes over [B, M] for a running k smallest (docs/science.md (f); ``python launch/knn_speed.py``).
    """
    m, d = bank.shape
    group = int(max(1, min(group, m)))
    num_groups = -(-m // group)
    block = int(max(group, min(block, num_groups * group)) // group * group)
    num_tiles = -(-num_groups * group // block)
    rows = num_tiles * block
    padded = jnp.pad(bank, ((0, rows - m), (0, 0)))
    valid = jnp.arange(rows) < m
    q2 = jnp.sum(queries ** 2, 1, keepdims=True)

    def group_minima(_, inputs):
        tile, ok = inputs
        sq = q2 - 2.0 * queries @ tile.T + jnp.sum(tile ** 2, 1)[None]
        sq = jnp.where(ok[None], sq, jnp.inf)
        return None, jnp.min(sq.reshape(sq.shape[0], block // group, group), axis=2)

    _, minima = jax.lax.scan(group_minima, None, (padded.reshape(num_tiles, block, d), valid.reshape(num_tiles, block)))
    minima = jnp.moveaxis(minima, 0, 1).reshape(queries.shape[0], -1)[:, :num_groups]
    _, chosen = smallest_k(minima, min(k, num_groups))
    candidates = (chosen[:, :, None] * group + jnp.arange(group)[None, None]).reshape(queries.shape[0], -1)
    sq = jnp.sum((queries[:, None, :] - padded[candidates]) ** 2, axis=2)
    sq = jnp.where(valid[candidates], sq, jnp.inf)
    best_sq, pos = smallest_k(sq, k)
    return best_sq, jnp.take_along_axis(candidates, pos, 1)


def posterior_ode_target(x_hi, sigma_hi, sigma_lo, bank, top_k: int = 0, substeps: int = 1, rho: float = 7.0):
    """x̂_lo from ``substeps`` Euler steps σ_hi → σ_lo of the PF-ODE whose denoiser is the pool estimate E[x₀ | x_σ]
    of :func:`posterior_mean_estimate` (seed eq. 16, 22–25: dx/dσ = (x − x̄(x, σ))/σ), re-evaluated at every sub-step.

    One sub-step is seed eq. 24, the step that is exact while x̄ stays fixed (:func:`constant_denoiser_step`); more
    sub-steps follow x̄ as it changes along the path (the notebook's §1.5 question "what if we do more?"). The
    intermediate levels are a per-example Karras spacing between the two ends, as :func:`teacher_target_point`. For the
    single-sample estimate x̄ ≡ x₀ the ODE's solution is x₀ + σz, so every sub-step count gives the same point.
    """
    a, b = sigma_hi ** (1.0 / rho), sigma_lo ** (1.0 / rho)
    x = x_hi
    for j in range(int(substeps)):
        s_from = (a + j / substeps * (b - a)) ** rho if j else sigma_hi
        s_to = (a + (j + 1) / substeps * (b - a)) ** rho if j + 1 < substeps else sigma_lo
        x = constant_denoiser_step(x, s_from, s_to, posterior_mean_estimate(x, s_from, bank, top_k))
    return x


def constant_denoiser_step(x_hi, sigma_hi, sigma_lo, x0_estimate):
    """Exact PF-ODE step for a denoiser constant along the path: x̂ = x̄ + (σ_lo/σ_hi)(x_hi − x̄) (seed eq. 19, 24)."""
    r = bcast(sigma_lo / sigma_hi, x_hi)
    return x0_estimate + r * (x_hi - x0_estimate)
