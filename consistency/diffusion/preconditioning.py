"""Preconditioning D or f = c_skip·x + c_out·F(c_in·x, c_noise), and the multistep boundary form.

Sources: EDM (Karras et al. 2022) Table 1; jcm `get_distiller_fn` for the consistency boundary; docs/methods.md §1.1;
seed eq. 8 (boundary condition) and eq. 51 (multistep boundary, docs/methods.md §8.2).

A *scalings* function maps σ (scalar or [B]) to the tuple (c_skip, c_out, c_in, c_noise), each of σ's shape.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from consistency.diffusion.processes import _as_float, broadcast_to_data, ve_sigma_to_vp_t

Scalings = tuple  # (c_skip, c_out, c_in, c_noise)


def edm_scalings(sigma, sigma_data: float = 0.5) -> Scalings:
    """EDM x-prediction preconditioning (EDM Table 1; docs/methods.md §1.1), c_noise = ¼ ln σ (jcm NCSN++).

    c_skip = σ_d²/(σ²+σ_d²), c_out = σσ_d/√(σ²+σ_d²), c_in = 1/√(σ²+σ_d²).
    """
    sigma = _as_float(sigma)
    total = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / total
    c_out = sigma * sigma_data * jax.lax.rsqrt(total)
    c_in = jax.lax.rsqrt(total)
    c_noise = 0.25 * jnp.log(sigma)
    return c_skip, c_out, c_in, c_noise


def consistency_scalings(sigma, sigma_min: float = 0.002, sigma_data: float = 0.5) -> Scalings:
    """Consistency-model boundary parameterization (docs/methods.md §1.1 "CM boundary"; jcm `get_distiller_fn`).

    c_skip = σ_d²/((σ−ε)²+σ_d²), c_out = σ_d(σ−ε)/√(σ²+σ_d²), c_in = 1/√(σ²+σ_d²), c_noise = ¼ ln σ.
    At σ = ε: c_skip = 1 and c_out = 0 exactly, so f(x, ε) = x (seed eq. 8).  Note the c_out denominator uses σ²,
    not (σ−ε)² (official code).
    """
    sigma = _as_float(sigma)
    shifted = sigma - sigma_min
    c_skip = sigma_data**2 / (shifted**2 + sigma_data**2)
    c_out = sigma_data * shifted * jax.lax.rsqrt(sigma**2 + sigma_data**2)
    c_in = jax.lax.rsqrt(sigma**2 + sigma_data**2)
    c_noise = 0.25 * jnp.log(sigma)
    return c_skip, c_out, c_in, c_noise


def vp_eps_scalings(sigma, num_train_steps: int = 1000) -> Scalings:
    """EDM-VP ε-prediction preconditioning (NVlabs EDM `VPPrecond`; docs/methods.md §1.1 "EDM-VP").

    c_skip = 1, c_out = −σ, c_in = 1/√(σ²+1), c_noise = (M−1)·t(σ) with t(σ) the linear-VPSDE time of VE level σ
    (β_min = 0.1, β_d = 19.9) and M = ``num_train_steps``.
    """
    sigma = _as_float(sigma)
    c_skip = jnp.ones_like(sigma)
    c_out = -sigma
    c_in = jax.lax.rsqrt(sigma**2 + 1.0)
    c_noise = (num_train_steps - 1) * ve_sigma_to_vp_t(sigma, "linear")
    return c_skip, c_out, c_in, c_noise


def ve_scalings(sigma) -> Scalings:
    """EDM-VE preconditioning (NVlabs EDM ``VEPrecond``, EDM Table 1 "VE"; docs/methods.md §1.1).

    c_skip = 1, c_out = σ, c_in = 1, c_noise = ln(σ/2).
    """
    sigma = _as_float(sigma)
    return jnp.ones_like(sigma), sigma, jnp.ones_like(sigma), jnp.log(0.5 * sigma)


# NVlabs/edm training/networks.py preconditioner class → scalings. The release files edm-*-{vp,ve,adm}.pkl are all
# EDMPrecond (vp/ve name the DDPM++/NCSN++ architecture); only baseline-* use VPPrecond / VEPrecond.
EDM_PRECONDITIONERS = {"EDMPrecond": edm_scalings, "VPPrecond": vp_eps_scalings, "VEPrecond": ve_scalings}


def precondition(net_apply: Callable, x: jax.Array, sigma, scalings, **net_kwargs) -> jax.Array:
    """c_skip·x + c_out·net_apply(c_in·x, c_noise, **net_kwargs) (EDM eq. 7; docs/methods.md §1.1).

    ``scalings`` is either a function σ ↦ (c_skip, c_out, c_in, c_noise) (e.g. ``edm_scalings`` or
    ``functools.partial(consistency_scalings, sigma_min=..., sigma_data=...)``) or that tuple already evaluated at
    ``sigma``.  ``net_apply(x_in, c_noise, **net_kwargs)`` receives c_noise of shape [B] and returns x's shape.
    """
    c_skip, c_out, c_in, c_noise = scalings(sigma) if callable(scalings) else scalings
    c_noise = jnp.broadcast_to(c_noise, x.shape[:1])
    net_out = net_apply(broadcast_to_data(c_in, x) * x, c_noise, **net_kwargs)
    return broadcast_to_data(c_skip, x) * x + broadcast_to_data(c_out, x) * net_out


def multistep_boundary(x: jax.Array, sigma, boundary, x0_hat: jax.Array) -> jax.Array:
    """Multistep (VE) consistency jump to a segment boundary b: (b/σ)·x + (1 − b/σ)·x̂ (seed eq. 51; docs/methods.md §8.2).

    This is VE-DDIM from σ to b with the student's x̂; it equals x exactly when b = σ (boundary condition).
    """
    ratio = broadcast_to_data(_as_float(boundary) / _as_float(sigma), x)
    return ratio * x + (1.0 - ratio) * x0_hat
