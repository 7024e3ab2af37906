"""Per-example distances d(a, b) → shape [B] (docs/methods.md §1.3).

Every distance reduces over all non-batch axes and returns one value per example, so weights λ(σ) apply per example.
"""
from __future__ import annotations

import math

import jax.numpy as jnp


def _flat(a):
    return a.reshape(a.shape[0], -1)


def l2(a, b):
    """Mean squared error per example (jcm `l2`)."""
    return jnp.mean(_flat((a - b) ** 2), axis=1)


def l1(a, b):
    """Mean absolute error per example (jcm `l1`)."""
    return jnp.mean(_flat(jnp.abs(a - b)), axis=1)


def pseudo_huber_constant(dim: int) -> float:
    """c = 0.00054·√d (iCT §3.3): CIFAR-10 (d = 3072) → 0.02993."""
    return 0.00054 * math.sqrt(dim)


def pseudo_huber(a, b, c: float | None = None):
    """√(‖a − b‖₂² + c²) − c over the whole per-example vector (seed eq. 43; iCT §3.3; docs/methods.md §17 item 6).

    ``c=None`` uses 0.00054·√d. ``c=0`` gives the un-squared ℓ2 norm ‖a − b‖₂ (ECT's default metric).
    """
    diff = _flat(a - b)
    if c is None:
        c = pseudo_huber_constant(diff.shape[1])
    sq = jnp.sum(diff ** 2, axis=1)
    if c == 0:
        # ‖·‖₂ with a finite gradient at 0.
        return jnp.sqrt(sq + 1e-20)
    # Same value as √(sq + c²) − c, written without the cancellation that loses float32 precision for small errors.
    return sq / (jnp.sqrt(sq + c * c) + c)


DISTANCES = {"l2": l2, "l1": l1, "pseudo_huber": pseudo_huber}


def get_distance(name: str, c: float | None = None):
    """Look up a distance by config name; 'pseudo_huber' takes the constant ``c`` (None → 0.00054·√d)."""
    if name == "pseudo_huber":
        return lambda a, b: pseudo_huber(a, b, c)
    if name not in DISTANCES:
        raise ValueError(f"unknown distance {name!r}; choose one of {', '.join(sorted(DISTANCES))} or 'lpips'")
    return DISTANCES[name]
