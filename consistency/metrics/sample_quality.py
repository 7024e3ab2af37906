"""Sample-quality metrics, each read against its noise floor (issue 5, item 1).

Everything here is numpy / scipy on host arrays; the feature networks live in ``consistency/metrics/features.py``.

Image metrics work on *features* ``(N, D)`` from any ``feature_fn(images) -> (N, D)``:

* :func:`frechet_distance` on :func:`gaussian_stats` (Heusel et al. 2017). With the in-project digits
  classifier this is "FD on an in-project digits classifier", never FID (docs/platform.md §3); with a
  user-supplied Inception-v3 SavedModel (``features.inception_features_fn``) it is the usual FID.
* :func:`kernel_inception_distance`: unbiased MMD² with the cubic polynomial kernel (Bińkowski et al. 2018).
* :func:`precision_recall`: k-NN manifold precision and recall (Kynkäänniemi et al. 2019).

Exact metrics for 1-D / 2-D points (toy data): :func:`sliced_wasserstein` (built on the exact 1-D
:func:`wasserstein_1d`), :func:`mmd_rbf`, :func:`energy_distance`, and for Gaussian mixtures
:func:`mode_coverage` and :func:`mixture_log_likelihood`.

Noise floor: :func:`noise_floor` evaluates a metric between two disjoint real draws of the same size.
:func:`evaluate_images` and :func:`evaluate_points` return every metric ``m`` together with ``m_floor``
computed exactly the same way with the samples replaced by real data, and :func:`format_with_floor`
prints them as ``m value (floor f)``.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import scipy.linalg
from scipy import special
from scipy.spatial import distance

Array = np.ndarray
RealSource = Any  # an array (N, ...) of real examples, or a sampler ``(n, seed) -> array``


# --------------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------------


def gaussian_stats(features: Array) -> tuple[Array, Array]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (ddof = 1, as in the TTUR FID code) of ``(N, D)``."""
    f = np.asarray(features, np.float64).reshape(len(features), -1)
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1: Array, cov1: Array, mu2: Array, cov2: Array, eps: float = 1e-6) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mu1, cov1) and N(mu2, cov2).

    d² = ‖μ1 − μ2‖² + tr(C1 + C2 − 2 (C1 C2)^{1/2})     # FID, Heusel et al. 2017; Dowson & Landau 1982

    ``cov`` may be a full matrix ``(D, D)`` or, for diagonal Gaussians, a vector of variances ``(D,)``
    (or a scalar); when both are diagonal the closed form Σ_i (√c1_i − √c2_i)² is used. For full
    matrices the square root is ``scipy.linalg.sqrtm``; when it is not finite or the product is
    (numerically) singular, ε·I is added to both covariances and it is recomputed, and the real part is
    taken (the imaginary part is round-off for PSD inputs; a warning is issued when it is not small).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    c1, c2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    mean_term = float(np.sum((mu1 - mu2) ** 2))
    if c1.ndim < 2 and c2.ndim < 2:  # diagonal: tr((C1C2)^{1/2}) = Σ √(c1 c2)
        v1 = np.broadcast_to(c1, mu1.shape)
        v2 = np.broadcast_to(c2, mu2.shape)
        return mean_term + float(np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2))
    c1 = c1 if c1.ndim == 2 else np.diag(np.broadcast_to(c1, mu1.shape))
    c2 = c2 if c2.ndim == 2 else np.diag(np.broadcast_to(c2, mu2.shape))
    root = _sqrtm_product(c1, c2, eps)
    return mean_term + float(np.trace(c1) + np.trace(c2) - 2.0 * np.trace(root))


def _sqrtm_product(c1: Array, c2: Array, eps: float) -> Array:
    """(C1 C2)^{1/2} by scipy's Schur method, with the ε·I fallback of the TTUR / pytorch-fid code."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
        try:
            root = scipy.linalg.sqrtm(c1 @ c2)
            ok = bool(np.all(np.isfinite(root)))
        except (scipy.linalg.LinAlgWarning, np.linalg.LinAlgError, ValueError):
            ok = False
    if not ok:
        offset = eps * np.eye(len(c1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            root = scipy.linalg.sqrtm((c1 + offset) @ (c2 + offset))
    if np.iscomplexobj(root):
        imag = np.max(np.abs(np.diagonal(root).imag))
        if imag > 1e-3 * max(1.0, np.max(np.abs(np.diagonal(root).real))):
            warnings.warn(f"frechet_distance: sqrtm has an imaginary component {imag:.3g}; taking the real part")
        root = root.real
    return root


# --------------------------------------------------------------------------------------------------
# MMD family: KID, RBF MMD, energy distance
# --------------------------------------------------------------------------------------------------


def mmd2_unbiased(kxx: Array, kyy: Array, kxy: Array) -> float:
    """Unbiased MMD² from kernel matrices (Gretton et al. 2012, JMLR, Lemma 6):

    1/(m(m−1)) Σ_{i≠j} k(x_i,x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i,y_j) − 2/(mn) Σ_{i,j} k(x_i,y_j).
    """
    m, n = len(kxx), len(kyy)
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD needs at least 2 points per set, got {m} and {n}")
    sxx = (np.sum(kxx) - np.trace(kxx)) / (m * (m - 1))
    syy = (np.sum(kyy) - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * np.mean(kxy))


def cubic_polynomial_kernel(x: Array, y: Array) -> Array:
    """k(x, y) = (x·y / d + 1)³, the KID kernel (Bińkowski et al. 2018, "Demystifying MMD GANs")."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def standardize_jointly(a: Array, b: Array) -> tuple[Array, Array]:
    """Per-dimension z-score of both sets with the mean and std of their union (zero std → 1).

    KID normalisation (docs/platform.md §3): raw classifier features have an arbitrary scale, which makes the
    cubic kernel's x·y/d term, and so KID, hard to read. After this map x·y/d is of order 1 and KID no
    longer depends on a per-feature affine rescaling of the feature network. The map is fitted on the
    union, not on the real set alone, because it must treat the two sets alike for the estimator to stay
    unbiased. Measured mean KID of two 200-point draws of N(0.5, I) in 32-d (400 repeats, ± standard
    error): fitted on the real set only +0.0008 ± 0.0004, jointly +0.0003 ± 0.0004, raw +0.0003 ± 0.0007;
    for N(0, I), fitted on the real set only: +0.0016 ± 0.0004 (raw +0.0003 ± 0.0004).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    union = np.concatenate([a, b], axis=0)
    mean, std = union.mean(axis=0), union.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (a - mean) / std, (b - mean) / std


def kernel_inception_distance(real_features: Array, fake_features: Array, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0,
                              normalize: bool = True) -> tuple[float, float]:
    """KID: mean and std over random subsets of the unbiased MMD² with the cubic kernel.

    Bińkowski et al. 2018 (KID definition and their reference code): each of ``num_subsets`` draws takes
    ``m = min(subset_size, N_real, N_fake)`` rows of each set without replacement and evaluates
    :func:`mmd2_unbiased` with :func:`cubic_polynomial_kernel`. The estimate is unbiased, so it is ≈ 0
    (and can be negative) when both sets come from one distribution. ``normalize`` first applies
    :func:`standardize_jointly` to the two full sets (set False for the raw KID of the papers, e.g. on
    Inception pool3 features). Returns ``(mean, std)`` over subsets. When ``subset_size`` covers both sets
    every subset would be the full set: the MMD² of the full sets (sizes may differ) is computed once and the std is NaN (one value has no spread; the
    sampling uncertainty of that value is :func:`bootstrap_mmd2_interval`'s job, see :func:`evaluate_images`).
    """
    real = np.asarray(real_features, np.float64).reshape(len(real_features), -1)
    fake = np.asarray(fake_features, np.float64).reshape(len(fake_features), -1)
    if normalize:
        real, fake = standardize_jointly(real, fake)
    if subset_size >= max(len(real), len(fake)):
        return _kid_full(real, fake), float("nan")
    m = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        values.append(_kid_full(x, y))
    return float(np.mean(values)), float(np.std(values))


def _kid_full(x: Array, y: Array) -> float:
    return mmd2_unbiased(cubic_polynomial_kernel(x, x), cubic_polynomial_kernel(y, y), cubic_polynomial_kernel(x, y))


def _flat(a: Array) -> Array:
    a = np.asarray(a, np.float64)
    return a.reshape(len(a), -1) if a.ndim != 1 else a[:, None]


def rbf_kernel_sum(x: Array, y: Array, bandwidths: Sequence[float]) -> Array:
    """Σ_h exp(−‖x − y‖² / (2 h²)) over the bandwidths h (a multi-scale Gaussian kernel)."""
    sq = distance.cdist(x, y, "sqeuclidean")
    return sum(np.exp(-sq / (2.0 * h * h)) for h in bandwidths)


def median_bandwidths(reference: Array, factors: Sequence[float] = (0.5, 1.0, 2.0),
                      max_points: int = 1000) -> tuple[float, ...]:
    """Bandwidths = factors × the median pairwise distance of ``reference`` (median heuristic, Gretton et al. 2012)."""
    r = _flat(reference)[:max_points]
    med = float(np.median(distance.pdist(r)))
    return tuple(f * (med if med > 0 else 1.0) for f in factors)


def mmd_rbf(a: Array, b: Array, bandwidths: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0)) -> float:
    """Unbiased MMD² between point sets ``a (m, d)`` and ``b (n, d)`` with :func:`rbf_kernel_sum`.

    Gretton et al. 2012, Lemma 6. Identical distributions give ≈ 0 (it can be negative). The bandwidths
    are in data units; :func:`evaluate_points` sets them from the real data with
    :func:`median_bandwidths` and uses the same ones for the floor.
    """
    x, y = _flat(a), _flat(b)
    return mmd2_unbiased(rbf_kernel_sum(x, x, bandwidths), rbf_kernel_sum(y, y, bandwidths),
                         rbf_kernel_sum(x, y, bandwidths))


def energy_distance(a: Array, b: Array) -> float:
    """Squared energy distance 2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ (Székely & Rizzo 2013).

    V-statistic (all pairs, the diagonal included), so it is ≥ 0 and 0 only for identical sets; in 1-D
    it equals ``scipy.stats.energy_distance(a, b) ** 2`` (scipy returns the square root).
    """
    x, y = _flat(a), _flat(b)
    return float(2.0 * distance.cdist(x, y).mean() - distance.cdist(x, x).mean()
                 - distance.cdist(y, y).mean())


# --------------------------------------------------------------------------------------------------
# Wasserstein: exact 1-D, sliced
# --------------------------------------------------------------------------------------------------


def _wasserstein_pp_sorted(xs: Array, ys: Array, p: float) -> Array:
    """W_p^p between empirical measures whose samples are sorted along the last axis (rows: batch).

    W_p^p = ∫_0^1 |F⁻¹(t) − G⁻¹(t)|^p dt (Villani 2003, Thm 2.18). For n = m this is the mean of
    |x_(i) − y_(i)|^p; otherwise the two step quantile functions are integrated exactly over the merged
    breakpoints {i/n} ∪ {j/m}, in integer units of 1/(nm) so no breakpoint is lost to round-off.
    """
    n, m = xs.shape[-1], ys.shape[-1]
    if n == m:
        return np.mean(np.abs(xs - ys) ** p, axis=-1)
    right = np.union1d(np.arange(1, n + 1) * m, np.arange(1, m + 1) * n)  # breakpoints × nm
    left = np.concatenate([[0], right[:-1]])
    ix = (left + right) // (2 * m)  # quantile index of x on each interval: floor(t n)
    iy = (left + right) // (2 * n)
    widths = (right - left) / (n * m)
    return np.sum(widths * np.abs(xs[..., ix] - ys[..., iy]) ** p, axis=-1)


def wasserstein_1d(a: Array, b: Array, p: float = 1.0) -> float:
    """Exact p-Wasserstein distance between two 1-D empirical distributions (any sizes)."""
    xs, ys = np.sort(np.ravel(a).astype(np.float64)), np.sort(np.ravel(b).astype(np.float64))
    return float(_wasserstein_pp_sorted(xs, ys, p) ** (1.0 / p))


def random_unit_directions(dim: int, num: int, seed: int = 0) -> Array:
    """``num`` directions uniform on the unit sphere S^{dim−1} (normalised Gaussians), float64 ``(num, dim)``."""
    g = np.random.default_rng(seed).standard_normal((num, dim))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def projected_norm_constant(dim: int, p: float = 1.0) -> float:
    """(E|u₁|^p)^{1/p} for u uniform on S^{dim−1}: E|u₁|^p = Γ(d/2) Γ((p+1)/2) / (√π Γ((d+p)/2)).

    (u₁² ~ Beta(1/2, (d−1)/2).) p = 1: 2/π in 2-D, 1 in 1-D; p = 2: 1/√d.
    """
    log_moment = (special.gammaln(dim / 2) + special.gammaln((p + 1) / 2) - 0.5 * math.log(math.pi)
                  - special.gammaln((dim + p) / 2))
    return float(math.exp(log_moment / p))


def sliced_wasserstein(a: Array, b: Array, num_projections: int = 256, seed: int = 0, p: float = 1.0,
                       unit_scale: bool = True) -> float:
    """Sliced p-Wasserstein distance (default p = 1, i.e. SW1) between point sets / images.

    SW_p = (E_u W_p^p(u#a, u#b))^{1/p} over u uniform on the sphere (Bonneel et al. 2015), estimated with
    ``num_projections`` directions from :func:`random_unit_directions(d, K, seed)` and the exact 1-D
    W_p of each projection (sorted samples; exact quantile integration for unequal sizes). Inputs
    ``(N, ...)`` are flattened to ``(N, d)``.

    ``unit_scale`` divides by :func:`projected_norm_constant` (d, p), so that for two point masses (and
    for any distribution against its translate by v) the *expected* value is exactly the Euclidean
    distance ‖v‖, like the true W_p; with ``unit_scale=False`` it is the textbook SW_p, e.g.
    (2/π)‖v‖ for p = 1 in 2-D. In 1-D both equal the exact W_p.
    """
    x, y = _flat(a), _flat(b)
    dirs = random_unit_directions(x.shape[1], num_projections, seed)
    xs, ys = np.sort(dirs @ x.T, axis=1), np.sort(dirs @ y.T, axis=1)
    sw = float(np.mean(_wasserstein_pp_sorted(xs, ys, p)) ** (1.0 / p))
    return sw / projected_norm_constant(x.shape[1], p) if unit_scale else sw


# --------------------------------------------------------------------------------------------------
# k-NN precision / recall
# --------------------------------------------------------------------------------------------------


def kth_neighbour_radii(features: Array, k: int = 3) -> Array:
    """Distance of each point to its k-th nearest neighbour within the same set (the point itself excluded)."""
    d = distance.cdist(features, features)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def precision_recall(real_features: Array, fake_features: Array, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eqs. 1–2).

    The manifold of a set is the union of balls around its points with radius = distance to the k-th
    nearest neighbour. Precision: fraction of fake points inside the real manifold; recall: fraction of
    real points inside the fake manifold. O(N²) memory.
    """
    real, fake = _flat(real_features), _flat(fake_features)
    cross = distance.cdist(fake, real)  # (n_fake, n_real)
    precision = np.mean(np.any(cross <= kth_neighbour_radii(real, k)[None, :], axis=1))
    recall = np.mean(np.any(cross.T <= kth_neighbour_radii(fake, k)[None, :], axis=1))
    return float(precision), float(recall)


# --------------------------------------------------------------------------------------------------
# Isotropic Gaussian mixtures
# --------------------------------------------------------------------------------------------------


class GaussianMixture(NamedTuple):
    """Σ_k w_k N(μ_k, s_k² I): weights (K,), means (K, d), stds scalar or (K,)."""

    weights: Array
    means: Array
    stds: Array


def _mixture_arrays(weights, means, stds) -> tuple[Array, Array, Array]:
    means = np.asarray(means, np.float64)
    means = means[:, None] if means.ndim == 1 else means
    k = len(means)
    w = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, np.float64)
    s = np.broadcast_to(np.asarray(stds, np.float64), (k,))
    return w / w.sum(), means, s


def sample_gaussian_mixture(mixture: GaussianMixture, n: int, seed: int = 0) -> Array:
    """``n`` i.i.d. draws ``(n, d)`` from an isotropic Gaussian mixture."""
    w, means, s = _mixture_arrays(*mixture)
    rng = np.random.default_rng(seed)
    comp = rng.choice(len(w), size=n, p=w)
    return means[comp] + s[comp, None] * rng.standard_normal((n, means.shape[1]))


def mixture_log_likelihood(samples: Array, weights: Array | None, means: Array, stds: Array) -> float:
    """Mean log density of the samples under Σ_k w_k N(μ_k, s_k² I) (log-sum-exp over components).

    log p(x) = logsumexp_k [log w_k − (d/2) log(2π s_k²) − ‖x − μ_k‖² / (2 s_k²)];
    ``weights=None`` → uniform.
    """
    w, means, s = _mixture_arrays(weights, means, stds)
    x = _flat(samples)
    d = means.shape[1]
    sq = distance.cdist(x, means, "sqeuclidean")  # (N, K)
    log_comp = np.log(w) - 0.5 * d * np.log(2 * np.pi * s ** 2) - sq / (2 * s ** 2)
    return float(np.mean(special.logsumexp(log_comp, axis=1)))


def mode_coverage(samples: Array, means: Array, stds: Array, weights: Array | None = None,
                  num_std: float = 3.0, min_share: float = 0.25) -> dict:
    """Mode coverage and sample quality of a generator on an isotropic Gaussian mixture.

    Each sample is assigned to its nearest mode in units of that mode's std; it is *high quality* when it
    lies within ``num_std`` stds of that mode (‖x − μ_k‖ ≤ 3 s_k; a true draw passes with probability
    P(χ_d ≤ 3): 0.9973 in 1-D, 0.9889 in 2-D). A mode is *covered* when it receives at least
    ``min_share`` × the high-quality samples the true mixture would send it (w_k · N).

    Returns ``{'mode_coverage': fraction of modes covered, 'high_quality': fraction of high-quality
    samples, 'mode_counts': high-quality samples per mode (K,)}``.
    """
    w, means, s = _mixture_arrays(weights, means, stds)
    x = _flat(samples)
    scaled = distance.cdist(x, means) / s[None, :]
    nearest = np.argmin(scaled, axis=1)
    good = scaled[np.arange(len(x)), nearest] <= num_std
    counts = np.bincount(nearest[good], minlength=len(means))
    covered = counts >= min_share * w * len(x)
    return {"mode_coverage": float(np.mean(covered)), "high_quality": float(np.mean(good)),
            "mode_counts": counts}


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
    """Percentile bootstrap interval (Efron & Tibshirani 1993, §13.3) of the unbiased MMD² (:func:`mmd2_unbiased`)
    with kernel ``kernel_fn``.

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
    a, b = _flat(a), _flat(b)
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
    """:func:`bootstrap_interval` of :func:`sliced_wasserstein` (p = 1, unit scale, the same directions) without
    re-sorting: each projection is sorted once, and a resample with counts w is the sorted sequence with the
    value of rank r repeated w(point of rank r) times. Its replicates equal the generic bootstrap's one by one.

    The interval is the basic one (:func:`basic_interval`) for the population sliced W1 at these directions,
    clipped below at 0: empirical W1 is biased upwards at finite n (two samples of one distribution are at
    W1 ∝ 1/√n > 0), so the interval can lie below the plug-in estimate (see :func:`bootstrap_interval`)."""
    estimate, values = sliced_wasserstein_replicates(a, b, num_projections, seed, num_resamples)
    return basic_interval(estimate, values, level, lower_bound=0.0)


def sliced_wasserstein_replicates(a: Array, b: Array, num_projections: int = 256, seed: int = 0,
                                  num_resamples: int = 200) -> tuple[float, Array]:
    """(estimate, replicates) of :func:`bootstrap_sliced_wasserstein_interval`: :func:`sliced_wasserstein` (p = 1,
    unit scale) of ``a``, ``b`` and of ``num_resamples`` resamples of both (rows drawn with replacement)."""
    x, y = _flat(a), _flat(b)
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
        values.append(float(np.mean(_wasserstein_pp_sorted(rx, ry, 1.0))) / scale)
    estimate = float(np.mean(_wasserstein_pp_sorted(sx, sy, 1.0))) / scale
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


# --------------------------------------------------------------------------------------------------
# Noise floor and reports
# --------------------------------------------------------------------------------------------------


def two_real_draws(real: RealSource, n: int, seed: int = 0) -> tuple[Array, Array]:
    """Two independent real draws of size ``n``.

    ``real`` is either an array ``(N, ...)`` (then two *disjoint* subsets from one seeded permutation;
    needs N ≥ 2n) or a sampler ``(n, seed) -> array`` (called with ``seed`` and ``seed + 1``).
    """
    if callable(real):
        return np.asarray(real(n, seed)), np.asarray(real(n, seed + 1))
    real = np.asarray(real)
    if 2 * n > len(real):
        raise ValueError(f"noise floor needs 2 x {n} real examples, got {len(real)}: lower n or pass a sampler")
    perm = np.random.default_rng(seed).permutation(len(real))
    return real[perm[:n]], real[perm[n:2 * n]]


def noise_floor(metric_fn: Callable[[Array, Array], Any], real: RealSource, n: int, seed: int = 0) -> Any:
    """The metric between two independent real draws of size ``n``: the best a perfect sampler can score.

    Use it with the same ``n`` as the samples being judged (most metrics are biased in n), and read the
    result as ``metric (floor)``; see :func:`two_real_draws` for what ``real`` may be.
    """
    a, b = two_real_draws(real, n, seed)
    return metric_fn(a, b)


def reference_draws(real: RealSource, n: int, seed: int = 0, max_reference: int = 4096) -> tuple[Array, Array]:
    """(A, B): the reference A that samples are scored against and the real stand-in B for the floor.

    With a sampler ``(n, seed) -> array`` both have size ``n`` (the number of samples scored). With an array of
    N real examples (one seeded permutation, disjoint): B takes min(n, N // 2) rows, A the others up to
    max(n, ``max_reference``) of them — the largest reference the data allow, capped so that the O(|A|²) kernel
    metrics stay in memory for large toy pools. The floor metric(A, B) is then at the samples' size whenever N ≥ 2n;
    below that B is smaller than the sample set (the sizes are reported as ``num_reference`` / ``num_floor``).
    """
    if callable(real):
        return np.asarray(real(n, seed)), np.asarray(real(n, seed + 1))
    real = np.asarray(real)
    m = min(n, len(real) // 2)
    if m < 2:
        raise ValueError(f"the noise floor needs at least 4 real examples, got {len(real)}")
    perm = np.random.default_rng(seed).permutation(len(real))
    return real[perm[m:m + max(n, max_reference)]], real[perm[:m]]


def sizes_line(metrics: dict, prefix: str = "") -> str:
    """``scored N samples against R reference points (floor: R vs F real)`` from an evaluation's size entries."""
    return (f"scored {metrics[prefix + 'num_samples']} samples against {metrics[prefix + 'num_reference']} reference "
            f"points (floor: {metrics[prefix + 'num_reference']} vs {metrics[prefix + 'num_floor']} real)")


def _batched(feature_fn: Callable[[Array], Array], images: Array) -> Array:
    return np.asarray(feature_fn(images), np.float64).reshape(len(images), -1)


IMAGE_SCORING = "samples clipped to [-1, 1]"   # evaluate_images' convention, stored with cached scores


def images_to_float(images: Array) -> Array:
    """uint8 images (0..255) → float32 in [-1, 1] (x / 127.5 − 1); float images are returned as float32."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 127.5 - 1.0
    return images.astype(np.float32)


def evaluate_images(samples: Array, reference: RealSource, feature_fn: Callable[[Array], Array], *,
                    seed: int = 0, kid_subsets: int = 50, kid_subset_size: int = 100_000, pr_k: int = 3,
                    pixel_projections: int = 256, bootstrap: int = 0, prefix: str = "") -> dict:
    """FD, KID, precision/recall (on features) and pixel SW1 of image ``samples`` against real data.

    Images are NHWC, float in [-1, 1] or uint8 (see :func:`images_to_float`); float samples are clipped to [-1, 1]
    first, as the papers' FIDs see them (EDM's ``generate.py`` saves ``(x·127.5 + 128).clip(0, 255)`` as uint8 PNGs,
    which the FID tools read), so a sample outside the data range costs what it costs there (:data:`IMAGE_SCORING`;
    a sample with a non-finite value is refused with a ValueError). Every sample is scored. The real
    ``reference`` (an array or a sampler) gives A and B (:func:`reference_draws`); every metric is metric(A,
    samples) and its floor metric(A, B), the same computation with the samples replaced by real data. KID is the
    unbiased MMD² of the full sets (subsets only when ``kid_subset_size`` is smaller than a set). With
    ``bootstrap`` > 0, ``fd_ci`` and ``kid_ci`` hold 95 % bootstrap intervals over both samples with that many
    replicates: for FD the basic interval of the population value, clipped at 0 (:func:`bootstrap_interval`;
    at small n it can lie below ``fd``, which is biased upwards), for KID the percentile interval
    (:func:`bootstrap_mmd2_interval`; unbiased, so centred on ``kid``). Keys (``prefix``
    prepended, e.g. 'inception_' for FID): fd, kid, precision, recall, pixel_swd, each with ``_floor``, and the
    sizes num_samples (scored), num_reference (|A|), num_floor (|B|).
    """
    samples = np.asarray(samples)
    ref_a, ref_b = (images_to_float(r) for r in reference_draws(reference, len(samples), seed))
    fake = images_to_float(samples)
    broken = int(np.sum(~np.isfinite(fake.reshape(len(fake), -1)).all(axis=1)))
    if broken:   # ±inf and NaN are not clipped into range: a diverged sampler is not scored as a saturated one
        raise ValueError(f"evaluate_images: {broken} of {len(fake)} samples hold non-finite values; they cannot be "
                         "scored (the sampler diverged)")
    fake = np.clip(fake, -1.0, 1.0)
    fa, fb, fs = (_batched(feature_fn, x) for x in (ref_a, ref_b, fake))
    stats_a = gaussian_stats(fa)
    out = {"num_samples": len(fake), "num_reference": len(ref_a), "num_floor": len(ref_b)}
    for suffix, other, other_f in (("", fake, fs), ("_floor", ref_b, fb)):
        out["fd" + suffix] = frechet_distance(*gaussian_stats(other_f), *stats_a)
        out["kid" + suffix] = kernel_inception_distance(fa, other_f, kid_subsets, kid_subset_size, seed)[0]
        out["precision" + suffix], out["recall" + suffix] = precision_recall(fa, other_f, pr_k)
        out["pixel_swd" + suffix] = sliced_wasserstein(ref_a, other, pixel_projections, seed)
    if bootstrap:
        out["fd_ci"] = bootstrap_interval(lambda x, y: frechet_distance(*gaussian_stats(y), *gaussian_stats(x)),
                                          fa, fs, bootstrap, seed, lower_bound=0.0)
        za, zs = standardize_jointly(fa, fs)
        out["kid_ci"] = bootstrap_mmd2_interval(cubic_polynomial_kernel, za, zs, bootstrap, seed)
    return {prefix + k: v for k, v in out.items()}


def evaluate_points(samples: Array, reference: RealSource | None = None,
                    mixture: GaussianMixture | dict | None = None, *, seed: int = 0,
                    num_projections: int = 256, bandwidths: Sequence[float] | None = None,
                    bootstrap: int = 0) -> dict:
    """SW1, RBF MMD², energy distance (and for a known mixture: log-likelihood, mode coverage,
    high-quality fraction) of 1-D / 2-D ``samples`` against real data, each with its ``_floor``.

    ``reference``: real points (an array: see :func:`reference_draws` for the sizes) or a sampler
    ``(n, seed) -> (n, d)``; when None it is drawn from ``mixture`` (a :class:`GaussianMixture`, a dict of its
    fields, or a ``(weights, means, stds)`` tuple). Every sample is scored. Distances are metric(A, samples) and
    floors metric(A, B) for two independent real draws A, B. The mixture scores (higher is better) are those of
    the samples and, as ``_floor``, of B: the score of real data. MMD bandwidths default to
    :func:`median_bandwidths` of A and are shared by value and floor. With ``bootstrap`` > 0, ``swd_ci`` and
    ``mmd_ci`` hold 95 % bootstrap intervals over both samples: basic for SW1 (the population value, clipped at 0;
    may lie below ``swd``, :func:`bootstrap_sliced_wasserstein_interval`), percentile for the unbiased MMD²
    (:func:`bootstrap_mmd2_interval`). Sizes: num_samples, num_reference,
    num_floor.
    """
    if isinstance(mixture, dict):
        mixture = GaussianMixture(**mixture)
    elif mixture is not None and not isinstance(mixture, GaussianMixture):
        mixture = GaussianMixture(*mixture)
    if reference is None:
        if mixture is None:
            raise ValueError("evaluate_points needs real reference points or a mixture to draw them from")
        reference = lambda n, s: sample_gaussian_mixture(mixture, n, s)  # noqa: E731
    fake = _flat(samples)
    ref_a, ref_b = (_flat(r) for r in reference_draws(reference, len(fake), seed))
    bw = tuple(bandwidths) if bandwidths is not None else median_bandwidths(ref_a)
    out = {"num_samples": len(fake), "num_reference": len(ref_a), "num_floor": len(ref_b)}
    for suffix, other in (("", fake), ("_floor", ref_b)):
        out["swd" + suffix] = sliced_wasserstein(ref_a, other, num_projections, seed)
        out["mmd" + suffix] = mmd_rbf(ref_a, other, bw)
        out["energy" + suffix] = energy_distance(ref_a, other)
        if mixture is not None:
            out["log_likelihood" + suffix] = mixture_log_likelihood(other, *mixture)
            cov = mode_coverage(other, mixture.means, mixture.stds, mixture.weights)
            out["mode_coverage" + suffix] = cov["mode_coverage"]
            out["high_quality" + suffix] = cov["high_quality"]
    if bootstrap:
        out["swd_ci"] = bootstrap_sliced_wasserstein_interval(ref_a, fake, num_projections, seed, bootstrap)
        out["mmd_ci"] = bootstrap_mmd2_interval(lambda x, y: rbf_kernel_sum(x, y, bw), ref_a, fake, bootstrap, seed)
    return out


def format_with_floor(metrics: dict, digits: int = 4) -> str:
    """One line per metric: ``name value [CI] (floor f)`` (CI when a ``_ci`` entry exists), then the sample sizes."""
    lines = []
    for key, value in metrics.items():
        if key.endswith("_floor") or not isinstance(value, (int, float)) or key.startswith("num_"):
            continue
        floor, ci = metrics.get(key + "_floor"), metrics.get(key + "_ci")
        text = f"{key} {value:.{digits}g}"
        if ci is not None:
            text += f" [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]"
        lines.append(text if floor is None else f"{text} (floor {floor:.{digits}g})")
    if "num_samples" in metrics and "num_reference" in metrics:
        lines.append(sizes_line(metrics))
    return "\n".join(lines)
