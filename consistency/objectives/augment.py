"""Differentiable augmentation of a discriminator's inputs (DiffAugment, Zhao et al. 2020, arXiv 2006.10738).

Projected GAN and StyleGAN-T — the discriminators ADD builds on (docs/methods.md §11) — augment real *and* generated images
the same way before the frozen feature network, so that the generator cannot win by producing adversarial patterns
of the fixed features. Every transform is differentiable in x (gradients reach the generator) and drawn per example
from a key, independently for each call (real and fake batches get their own draws).

Policies (DiffAugment's, in its order): 'color' — brightness + U(−0.5, 0.5), saturation × U(0, 2), contrast
× U(0.5, 1.5); 'translation' — integer shifts up to ⌊ratio·size + ½⌋ pixels (ratio 1/8) with zero fill; 'cutout'
— one zeroed square of side ⌊ratio·size + ½⌋ (ratio 1/2) at a random centre. Images are NHWC in [−1, 1].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125  # DiffAugment rand_translation(ratio=0.125)
CUTOUT_RATIO = 0.5         # DiffAugment rand_cutout(ratio=0.5)


def parse_policy(policy: str) -> tuple[str, ...]:
    """'translation,cutout' → ('translation', 'cutout'); '' → (); ValueError for an unknown name."""
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}; choose from {POLICIES}")
    return names


def color(rng, x):
    """Brightness, saturation, contrast, each a per-example scalar (DiffAugment ``rand_brightness`` etc.)."""
    kb, ks, kc = jax.random.split(rng, 3)
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    x = x + (jax.random.uniform(kb, shape) - 0.5)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    x = (x - mean) * (jax.random.uniform(ks, shape) * 2.0) + mean
    mean = jnp.mean(x, axis=tuple(range(1, x.ndim)), keepdims=True)
    return (x - mean) * (jax.random.uniform(kc, shape) + 0.5) + mean


def translation(rng, x, ratio: float = TRANSLATION_RATIO):
    """Shift each image by integers (dy, dx) ∈ [−r, r]², r = ⌊ratio·size + ½⌋, filling with zeros."""
    height, width = x.shape[1:3]
    ry, rx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    if ry == 0 and rx == 0:
        return x
    shifts = jax.random.randint(rng, (x.shape[0], 2), jnp.array([-ry, -rx]), jnp.array([ry + 1, rx + 1]))
    padded = jnp.pad(x, ((0, 0), (ry, ry), (rx, rx), (0, 0)))

    def shift_one(image, shift):
        return jax.lax.dynamic_slice(image, (ry - shift[0], rx - shift[1], 0), (height, width, x.shape[3]))
    return jax.vmap(shift_one)(padded, shifts)


def cutout(rng, x, ratio: float = CUTOUT_RATIO):
    """Zero one square of side ⌊ratio·size + ½⌋ per image, its centre uniform over the image (may be clipped)."""
    height, width = x.shape[1:3]
    sy, sx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    ky, kx = jax.random.split(rng)
    cy = jax.random.randint(ky, (x.shape[0], 1, 1), 0, height + (1 - sy % 2))
    cx = jax.random.randint(kx, (x.shape[0], 1, 1), 0, width + (1 - sx % 2))
    rows = jnp.arange(height)[None, :, None]
    cols = jnp.arange(width)[None, None, :]
    inside = ((rows >= cy - sy // 2) & (rows < cy - sy // 2 + sy) & (cols >= cx - sx // 2) & (cols < cx - sx // 2 + sx))
    return x * (1.0 - inside[..., None].astype(x.dtype))


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(rng, x, policy: tuple[str, ...]):
    """Apply ``policy`` (names from :data:`POLICIES`, in DiffAugment's order) to a batch of images; () → x."""
    for name, key in zip(policy, jax.random.split(rng, max(len(policy), 1))):
        x = TRANSFORMS[name](key, x)
    return x
