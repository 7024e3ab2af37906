"""PaGoDA objectives (Kim et al. 2024, arXiv 2405.14822; seed eq. 55–58; docs/methods.md §9, §17 item 12).

* Reconstruction L_rec = E_x d(G_θ(E(x)), x) with E the teacher inversion (``consistency/tools/inversion.py``) and d one of
  the project's distances (PaGoDA: LPIPS / frozen-CNN features, here the in-project classifier features; nb (55)
  writes ‖·‖).
* Adversarial: hinge with a projected discriminator on frozen features (``consistency/methods/components/discriminator.py``), D on real x
  vs G(σ_max ε) and the generator term −D(G(σ_max ε)) (official code; nb (55)'s "1 − log D" is the erratum of
  docs/methods.md §17 item 12 — the code uses the hinge).
* Adaptive GAN weight λ_adv = clip(‖∇_{W_last} L_rec‖ / ‖∇_{W_last} L_GAN‖, 0.01, 10)·discriminator_weight (VQGAN
  form, docs/methods.md §9), the gradients taken with respect to the generator's last layer only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from consistency.objectives import ctm as ctm_objective

ADAPTIVE_MIN, ADAPTIVE_MAX = 0.01, 10.0       # PaGoDA's clip of the adaptive weight (docs/methods.md §9)


def reconstruction_loss(x_reconstructed, x, distance):
    """d(G_θ(E(x)), x) per example (nb (55)); ``distance(a, b) -> [B]``."""
    return distance(x_reconstructed, jax.lax.stop_gradient(x))


def adaptive_adversarial_weight(grad_reconstruction, grad_adversarial, discriminator_weight: float):
    """λ_adv = clip(‖∇_last L_rec‖ / ‖∇_last L_GAN‖, 0.01, 10)·discriminator_weight, under sg (docs/methods.md §9)."""
    ratio = ctm_objective.adaptive_weight(grad_reconstruction, grad_adversarial, max_weight=ADAPTIVE_MAX,
                                          min_weight=ADAPTIVE_MIN)
    return jax.lax.stop_gradient(ratio * discriminator_weight)


def replace_at(tree: dict, path: tuple, leaf):
    """``tree`` with the subtree at ``path`` (a tuple of dict keys) replaced by ``leaf``."""
    if not path:
        return leaf
    return {**tree, path[0]: replace_at(tree[path[0]], path[1:], leaf)}


def get_at(tree: dict, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


def last_layer_grad(params: dict, path: tuple, loss_fn):
    """∇ of ``loss_fn(params)`` with respect to the subtree at ``path`` only (the generator's last layer)."""
    return jax.grad(lambda leaf: loss_fn(replace_at(params, path, leaf)))(get_at(params, path))


def latent_variance_mismatch(data_std, sigma_max):
    """(encoded latent variance s² + σ_max², sampling variance σ_max²) per coordinate (docs/methods.md §15 O8)."""
    return data_std ** 2 + sigma_max ** 2, jnp.asarray(sigma_max) ** 2
