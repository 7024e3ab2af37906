"""Confidence intervals: bootstrap over samples (one trained model) and the t-interval over training seeds."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from consistency.metrics.set_distances import (as_points, projected_norm_constant, random_unit_directions,
                                           wasserstein_pp_sorted)

Array = np.ndarray


# --------------------------------------------------------------------------------------------------
# Confidence intervals: bootstrap over samples, t-interval over training seeds
# --------------------------------------------------------------------------------------------------


def bootstrap_interval(statistic: Callable[[Array, Array], float], a: Array, b: Array, num_resamples: int = 200,
                       seed: int = 0, level: float = 0.95, lower_bound: float | None = None) -> tuple[float, float]:
    """Basic bootstrap interval (Davison & Hinkley 1997, §5.2) of the population value of ``statistic(a, b)``.

    Each of ``num_resamples`` replicates θ* draws the rows of ``a`` and of ``b`` independently with replacement
    (each set keeps its size) and evaluates the statistic; with the estimate θ̂ = statistic(a, b) and q_α the α
    quantile of the replicates, the interval is [2θ̂ − q_{(1+level)/2}, 2θ̂ − q_{(1−level)/2}]
    (:func:`basic_interval`). It describes the variation due to the finite sample sizes alone (one trained model,
    one reference set); its width shrinks like 1/√n.

    Why not the percentile interval [q_{(1−level)/2}, q_{(1+level)/2}]: a plug-in distance such as FD or sliced W1
    is biased upwards at finite n (estimated covariances / empirical measures add spurious distance), and a
    resample, which repeats points, is biased upwards once more, so the percentile interval sits about one bias
    above θ̂ and by two above the population value. The basic interval is centred on θ̂ − b̂ with the bootstrap
    bias estimate b̂ = mean θ* − θ̂ (Efron & Tibshirani 1993, §10), i.e. it corrects the first-order bias. It is an
    interval for the *population* value, so at small n it can lie entirely below the plug-in θ̂.
    ``lower_bound``: a value the population statistic cannot go below (0 for a distance); both ends are clipped
    to it.
    """
    values = bootstrap_replicates(statistic, a, b, num_resamples, seed)
    return basic_interval(statistic(np.asarray(a), np.asarray(b)), values, level, lower_bound)


def bootstrap_replicates(statistic: Callable[[Array, Array], float], a: Array, b: Array, num_resamples: int = 200,
                         seed: int = 0) -> Array:
    """The replicates θ* of :func:`bootstrap_interval`: ``statistic`` of ``num_resamples`` pairs of resamples (rows
    of ``a`` and of ``b`` drawn independently with replacement, each set keeping its size)."""
    a, b = np.asarray(a), np.asarray(b)
    rng = np.random.default_rng(seed)
    return np.asarray([statistic(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))])
                       for _ in range(num_resamples)], np.float64)


def basic_interval(estimate: float, values, level: float = 0.95,
                   lower_bound: float | None = None) -> tuple[float, float]:
    """[2θ̂ − q_{(1+level)/2}, 2θ̂ − q_{(1−level)/2}] of bootstrap replicates ``values`` around ``estimate`` θ̂
    (Davison & Hinkley 1997, §5.2, "basic bootstrap"), clipped below at ``lower_bound`` when one is given."""
    lo, hi = _percentiles(values, level)
    lo, hi = 2.0 * estimate - hi, 2.0 * estimate - lo
    if lower_bound is not None:
        lo, hi = max(lo, lower_bound), max(hi, lower_bound)
    return float(lo), float(hi)


def _percentiles(values, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(np.asarray(values, np.float64), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_mmd2_interval(kernel_fn: Callable[[Array, Array], Array], a: Array, b: Array,
                            num_resamples: int = 200, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (Efron & Tibshirani 1993, §13.3) of the unbiased MMD²
    (``set_distances.mmd2_unbiased``) with kernel ``kernel_fn``.

    Unlike FD and sliced W1 (:func:`bootstrap_interval`, basic intervals), the percentile form fits here: the
    statistic is an unbiased U-statistic, and each replicate (below) is unbiased too, so the replicates are
    centred on the estimate and the estimate on the population value; no bias correction is needed.

    Resampling with replacement puts copies of one point in a set, and the pair (x, x) then enters the
    "i ≠ j" sums with k(x, x), which biases the U-statistic upwards (by ≈ 2(k(x,x) − k(x,x'))/n). Each
    replicate therefore sums only over pairs of *distinct original* points. With the resampling counts w
    (w_i copies of point i, Σ w = n) that sum is wᵀKw − Σ w_i² K_ii over (Σ w)² − Σ w_i² pairs, and the cross
    term is w_aᵀ K_ab w_b / (n m): the kernel matrices are computed once and all replicates are three matrix
    products.
    """
    a, b = as_points(a), as_points(b)
    kaa, kbb, kab = kernel_fn(a, a), kernel_fn(b, b), kernel_fn(a, b)
    rng = np.random.default_rng(seed)
    wa = rng.multinomial(len(a), np.full(len(a), 1.0 / len(a)), size=num_resamples).astype(np.float64)
    wb = rng.multinomial(len(b), np.full(len(b), 1.0 / len(b)), size=num_resamples).astype(np.float64)
    values = (_mmd2_distinct(kaa, wa) + _mmd2_distinct(kbb, wb)
              - 2.0 * np.einsum("ri,ij,rj->r", wa, kab, wb) / (len(a) * len(b)))
    return _percentiles(values, level)


def _mmd2_distinct(k: Array, w: Array) -> Array:
    """Mean of K over the pairs of distinct original points of each resample (rows of counts ``w``)."""
    pairs = np.einsum("ri,ij,rj->r", w, k, w) - (w * w) @ np.diagonal(k)
    return pairs / (w.sum(1) ** 2 - (w * w).sum(1))


def bootstrap_sliced_wasserstein_interval(a: Array, b: Array, num_projections: int = 256, seed: int = 0,
                                          num_resamples: int = 200, level: float = 0.95) -> tuple[float, float]:
    """:func:`bootstrap_interval` of ``set_distances.sliced_wasserstein`` (p = 1, unit scale, the same directions) without
    re-sorting: each projection is sorted once, and a resample with counts w is the sorted sequence with the
    value of rank r repeated w(point of rank r) times. Its replicates equal the generic bootstrap's one by one.

    The interval is the basic one (:func:`basic_interval`) for the population sliced W1 at these directions,
    clipped below at 0: empirical W1 is biased upwards at finite n (two samples of one distribution are at
    W1 ∝ 1/√n > 0), so the interval can lie below the plug-in estimate (see :func:`bootstrap_interval`)."""
    estimate, values = sliced_wasserstein_replicates(a, b, num_projections, seed, num_resamples)
    return basic_interval(estimate, values, level, lower_bound=0.0)


def sliced_wasserstein_replicates(a: Array, b: Array, num_projections: int = 256, seed: int = 0,
                                  num_resamples: int = 200) -> tuple[float, Array]:
    """(estimate, replicates) of :func:`bootstrap_sliced_wasserstein_interval`: ``set_distances.sliced_wasserstein`` (p = 1,
    unit scale) of ``a``, ``b`` and of ``num_resamples`` resamples of both (rows drawn with replacement)."""
    x, y = as_points(a), as_points(b)
    dirs = random_unit_directions(x.shape[1], num_projections, seed)
    px, py = dirs @ x.T, dirs @ y.T
    ox, oy = np.argsort(px, axis=1), np.argsort(py, axis=1)
    sx, sy = np.take_along_axis(px, ox, 1), np.take_along_axis(py, oy, 1)
    rng = np.random.default_rng(seed)
    scale = projected_norm_constant(x.shape[1], 1.0)
    values = []
    for _ in range(num_resamples):
        rx = _resampled_sorted(sx, ox, rng.multinomial(len(x), np.full(len(x), 1.0 / len(x))))
        ry = _resampled_sorted(sy, oy, rng.multinomial(len(y), np.full(len(y), 1.0 / len(y))))
        values.append(float(np.mean(wasserstein_pp_sorted(rx, ry, 1.0))) / scale)
    estimate = float(np.mean(wasserstein_pp_sorted(sx, sy, 1.0))) / scale
    return estimate, np.asarray(values)


def _resampled_sorted(sorted_values: Array, order: Array, counts: Array) -> Array:
    k, n = sorted_values.shape
    per_rank = counts[order]                                          # copies of the point at each rank
    index = np.repeat(np.tile(np.arange(n), k), per_rank.ravel()).reshape(k, n)
    return np.take_along_axis(sorted_values, index, 1)


def seed_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean of per-seed values, mean ± t_{(1+level)/2, S−1}·s/√S.

    Each training seed draws its own samples, so the spread s of the per-seed values contains both the training
    variation and the sampling variation of the metric: this one interval covers both (no separate bootstrap
    term is added). With a single seed there is no spread and (mean, NaN, NaN) is returned.
    """
    from scipy import stats
    v = np.asarray(values, np.float64)
    mean = float(np.mean(v))
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf((1 + level) / 2, len(v) - 1) * np.std(v, ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half
