"""ECT / ECM objective (Geng et al. 2024, "Consistency models made easy"; `locuslab/ect`; docs/methods.md §7)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from consistency.diffusion import distances
from consistency.objectives.consistency import bcast


def ecm_loss(denoise_online, denoise_target, y, noise, t, r, huber_c: float = 0.0):
    """Per-example ECT loss d(D_θ(y + tε, t), sg D_θ(y + rε, r)) / (t − r) (ECT `ECMLoss`; docs/methods.md §7).

    Shared ε for both points; the target is the clean y wherever r = 0 (the stage-0 denoising limit) and is
    passed through nan_to_num. ``huber_c = 0`` gives the un-squared ‖·‖₂ (ECT's default), > 0 pseudo-Huber.
    """
    x_t = y + bcast(t, y) * noise
    x_r = y + bcast(r, y) * noise
    target = denoise_target(x_r, jnp.maximum(r, 1e-12))
    target = jnp.where(bcast(r > 0, y), target, y)
    target = jax.lax.stop_gradient(jnp.nan_to_num(target))
    return distances.pseudo_huber(denoise_online(x_t, t), target, huber_c) / (t - r)
