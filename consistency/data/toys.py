"""Low-dimensional toy distributions with known structure (config.data.name = 'toy:<name>').

Every toy is scaled so that its per-coordinate standard deviation is about 0.5–1, comparable to the
default σ_data = 0.5 (EDM, Karras 2022).  :data:`TOY_STD` lists the exact value for each toy, defined as
``sqrt(trace(Cov[x]) / d)`` (the RMS per-coordinate std); it is computed in closed form from the
definitions below, never estimated from samples.

Toys (d = dimension):

================  ===  ===========================================================================
name              d    definition
================  ===  ===========================================================================
8gaussians        2    8 equal-weight isotropic Gaussians, means on the unit circle at angles k·π/4,
                       std 0.1.  Mixture.
25gaussians       2    25 equal-weight isotropic Gaussians on the grid {−1, −0.5, 0, 0.5, 1}², std 0.05.
                       Mixture.
gaussian1d        1    N(0.7, 0.3²): the single-Gaussian oracle of docs/methods.md §15 O2 / O7.  Mixture (K = 1).
mog1d             1    ½ N(−0.5, 0.1²) + ½ N(0.5, 0.1²): two-Gaussian 1-D toy (docs/methods.md §15 O3; MCM
                       Fig. 1 uses a two-Gaussian 1-D toy).  Mixture.
swissroll         2    t ~ U[1.5π, 4.5π], x = (t cos t, t sin t) / 10 − m + N(0, 0.05² I), with m the exact
                       mean of (t cos t, t sin t) / 10, so that the mean is 0.
checkerboard      2    uniform on the 8 cells (i, j) of a 4 × 4 grid of 0.5-wide cells covering [−1, 1]²
                       with i + j even (cell i spans [−1 + 0.5 i, −0.5 + 0.5 i]).
moons             2    two half circles of radius 1 (outer: (cos t, sin t); inner: (1 − cos t, ½ − sin t)),
                       t ~ U[0, π], each half with probability ½, plus N(0, 0.05² I), shifted by
                       −(0.5, 0.25) so that the mean is 0.
================  ===  ===========================================================================

Labels: for mixtures the label is the mixture component (num_classes = K), for moons the half (2 classes);
swissroll and checkerboard have no labels (num_classes = 0, labels are all 0).

Mixtures expose their exact parameters through :func:`toy_mixture` as ``(weights [K], means [K, d],
stds [K])`` with isotropic components, so the closed-form mixture denoiser (docs/methods.md §15 O3) can serve as
an exact teacher.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

Mixture = tuple  # (weights [K], means [K, d], stds [K]) as float64 numpy arrays


def _circle_mixture(num_modes: int = 8, radius: float = 1.0, std: float = 0.1) -> Mixture:
    angles = 2.0 * np.pi * np.arange(num_modes) / num_modes
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.full(num_modes, 1.0 / num_modes), means, np.full(num_modes, std)


def _grid_mixture(side: int = 5, spacing: float = 0.5, std: float = 0.05) -> Mixture:
    ticks = spacing * (np.arange(side) - (side - 1) / 2)          # {-1, -0.5, 0, 0.5, 1}
    means = np.stack(np.meshgrid(ticks, ticks, indexing="ij"), axis=-1).reshape(-1, 2)
    return np.full(side * side, 1.0 / (side * side)), means, np.full(side * side, std)


_MIXTURES = {
    "8gaussians": _circle_mixture(),
    "25gaussians": _grid_mixture(),
    "gaussian1d": (np.array([1.0]), np.array([[0.7]]), np.array([0.3])),       # docs/methods.md §15 O7
    "mog1d": (np.array([0.5, 0.5]), np.array([[-0.5], [0.5]]), np.array([0.1, 0.1])),
}

SWISSROLL_T = (1.5 * np.pi, 4.5 * np.pi)   # angle range (the scikit-learn make_swiss_roll range)
SWISSROLL_SCALE = 10.0
SWISSROLL_NOISE = 0.05
CHECKERBOARD_CELL = 0.5
MOONS_NOISE = 0.05
MOONS_SHIFT = np.array([0.5, 0.25])        # the mean of the unshifted two moons (derived below)

TOY_NAMES = ("8gaussians", "25gaussians", "swissroll", "checkerboard", "moons", "gaussian1d", "mog1d")
_DIMS = {"gaussian1d": 1, "mog1d": 1}
_NUM_CLASSES = {"moons": 2, "swissroll": 0, "checkerboard": 0}


def toy_name(name: str) -> str:
    """'toy:8gaussians' or '8gaussians' → '8gaussians'; unknown names raise ValueError (one line)."""
    short = name[4:] if name.startswith("toy:") else name
    if short not in TOY_NAMES:
        raise ValueError(f"unknown toy {name!r}; choose toy:<name> with name one of {', '.join(TOY_NAMES)}")
    return short


def toy_mixture(name: str) -> Optional[Mixture]:
    """Exact (weights [K], means [K, d], stds [K]) of a mixture toy (copies), or None for non-mixtures."""
    params = _MIXTURES.get(toy_name(name))
    return None if params is None else tuple(np.array(p, dtype=np.float64) for p in params)


def toy_dim(name: str) -> int:
    return _DIMS.get(toy_name(name), 2)


def toy_num_classes(name: str) -> int:
    """K for mixtures (label = component), 2 for moons, 0 (no labels) otherwise."""
    short = toy_name(name)
    return len(_MIXTURES[short][0]) if short in _MIXTURES else _NUM_CLASSES[short]


# ----------------------------------------------------------------------------------------------------------
# Exact per-coordinate variances ([derived] from the definitions in the module docstring).

def _mixture_variance(weights, means, stds) -> np.ndarray:
    """Per-coordinate variance of Σ π_k N(μ_k, s_k² I): Σ π_k (s_k² + μ_k²) − (Σ π_k μ_k)²."""
    mean = weights @ means
    return weights @ (stds[:, None] ** 2 + means ** 2) - mean ** 2


def _swissroll_moments():
    """Exact (mean [2], var [2]) of the swiss roll before centring, t ~ U[a, b], from the antiderivatives
    ∫ t cos t = t sin t + cos t,  ∫ t sin t = sin t − t cos t,
    ∫ t² cos² t = t³/6 + (t²/4 − 1/8) sin 2t + (t/4) cos 2t,
    ∫ t² sin² t = t³/6 − (t²/4 − 1/8) sin 2t − (t/4) cos 2t   [derived]."""
    a, b = SWISSROLL_T

    def average(antiderivative):
        return (antiderivative(b) - antiderivative(a)) / (b - a)

    m_x = average(lambda t: t * np.sin(t) + np.cos(t))
    m_y = average(lambda t: np.sin(t) - t * np.cos(t))
    s_x = average(lambda t: t ** 3 / 6 + (t ** 2 / 4 - 1 / 8) * np.sin(2 * t) + t / 4 * np.cos(2 * t))
    s_y = average(lambda t: t ** 3 / 6 - (t ** 2 / 4 - 1 / 8) * np.sin(2 * t) - t / 4 * np.cos(2 * t))
    mean = np.array([m_x, m_y]) / SWISSROLL_SCALE
    var = np.array([s_x - m_x ** 2, s_y - m_y ** 2]) / SWISSROLL_SCALE ** 2 + SWISSROLL_NOISE ** 2
    return mean, var


def _moons_variance() -> np.ndarray:
    """[derived] x: halves have means 0 and 1, within-half Var[cos t] = ½ → ½ + ¼.
    y: halves have means 2/π and ½ − 2/π, within-half Var[sin t] = ½ − 4/π²
    → ½ − 4/π² + (2/π − ¼)² (between-half variance of two equal-weight means)."""
    var_x = 0.5 + 0.25
    var_y = 0.5 - 4 / math.pi ** 2 + (2 / math.pi - 0.25) ** 2
    return np.array([var_x, var_y]) + MOONS_NOISE ** 2


def _exact_variance(short: str) -> np.ndarray:
    if short in _MIXTURES:
        return _mixture_variance(*_MIXTURES[short])
    if short == "swissroll":
        return _swissroll_moments()[1]
    if short == "checkerboard":
        return np.full(2, 1.0 / 3.0)   # each marginal is U[-1, 1] (every row/column holds 2 of 4 cells)
    if short == "moons":
        return _moons_variance()
    raise AssertionError(short)


TOY_STD = {short: float(np.sqrt(np.mean(_exact_variance(short)))) for short in TOY_NAMES}


# ----------------------------------------------------------------------------------------------------------
# Samplers: sample_toy(name, n, rng) -> (x float32 [n, d], labels int32 [n]).

def sample_mixture(params: Mixture, n: int, rng: np.random.Generator):
    weights, means, stds = params
    labels = rng.choice(len(weights), size=n, p=weights)
    x = means[labels] + stds[labels, None] * rng.standard_normal((n, means.shape[1]))
    return x, labels


def _sample_swissroll(n: int, rng: np.random.Generator):
    t = rng.uniform(*SWISSROLL_T, size=n)
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / SWISSROLL_SCALE - _swissroll_moments()[0]
    return x + SWISSROLL_NOISE * rng.standard_normal((n, 2)), np.zeros(n, np.int64)


def checkerboard_cells() -> np.ndarray:
    """Lower-left corners [8, 2] of the occupied cells (i + j even on the 4 × 4 grid over [−1, 1]²)."""
    ij = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])
    return -1.0 + CHECKERBOARD_CELL * ij


def _sample_checkerboard(n: int, rng: np.random.Generator):
    corners = checkerboard_cells()
    cell = rng.integers(len(corners), size=n)
    x = corners[cell] + CHECKERBOARD_CELL * rng.uniform(size=(n, 2))
    return x, np.zeros(n, np.int64)


def _sample_moons(n: int, rng: np.random.Generator):
    half = rng.integers(2, size=n)
    t = rng.uniform(0.0, np.pi, size=n)
    outer = np.stack([np.cos(t), np.sin(t)], axis=1)
    inner = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.where(half[:, None] == 0, outer, inner) + MOONS_NOISE * rng.standard_normal((n, 2))
    return x - MOONS_SHIFT, half


def sample_toy(name: str, n: int, rng: np.random.Generator):
    """Draw n points: (x float32 [n, d], labels int32 [n])."""
    short = toy_name(name)
    if short in _MIXTURES:
        x, labels = sample_mixture(_MIXTURES[short], n, rng)
    else:
        x, labels = {"swissroll": _sample_swissroll, "checkerboard": _sample_checkerboard,
                     "moons": _sample_moons}[short](n, rng)
    return x.astype(np.float32), labels.astype(np.int32)
