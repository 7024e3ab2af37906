"""Sample quality read against its noise floor (issue 5, item 1): one call scores a set of samples.

:func:`evaluate_images` (features from any ``feature_fn(images) -> (N, D)``; the feature networks live in
``features.py``) and :func:`evaluate_points` (1-D / 2-D toy points) return every metric ``m`` together with
``m_floor``, the same computation with the samples replaced by real data of the same size (:func:`noise_floor`),
optional bootstrap intervals, and the sizes that were scored; :func:`format_with_floor` prints them as
``m value [CI] (floor f)``. The metrics themselves are in ``set_distances.py`` (FD, KID, MMD, energy, Wasserstein,
precision / recall) and ``mixtures.py`` (exact scores on a Gaussian mixture); the intervals in ``intervals.py``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from consistency.metrics.set_distances import (as_points, cubic_polynomial_kernel, energy_distance, frechet_distance,
                                           gaussian_stats, kernel_inception_distance, median_bandwidths, mmd_rbf,
                                           precision_recall, rbf_kernel_sum, sliced_wasserstein,
                                           standardize_jointly)
from consistency.metrics.intervals import (bootstrap_interval, bootstrap_mmd2_interval,
                                           bootstrap_sliced_wasserstein_interval)
from consistency.metrics.mixtures import (GaussianMixture, mixture_log_likelihood, mode_coverage,
                                          sample_gaussian_mixture)

Array = np.ndarray
RealSource = Any  # an array (N, ...) of real examples, or a sampler ``(n, seed) -> array``


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
    fake = as_points(samples)
    ref_a, ref_b = (as_points(r) for r in reference_draws(reference, len(fake), seed))
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
