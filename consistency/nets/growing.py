"""Progressive-growing blocks of a PaGoDA generator (PaGoDA §3.3; docs/methods.md §9 pipeline step 4).

A stage-s generator is the stage-1 network (the teacher's architecture at the teacher's resolution R) followed by
s − 1 :class:`GrowBlock` s, each doubling the resolution:

    y_1 = D_θ(E(x), σ_max)                                   (stage 1, R × R)
    (y_{k+1}, h_{k+1}) = GrowBlock_k(y_k, h_k)               (2^k R × 2^k R)
    GrowBlock: u = up2(y) bilinear;  h' = ResBlocks(conv3x3([u, up2(h)]));  y' = u + conv3x3_zero(SiLU(GN(h')))

The output convolution of a new block starts at zero, so a grown generator initialised from the previous stage's
weights reproduces exactly the bilinear upsampling of that stage's output before any training step (the tested form
of "earlier layers initialised from the previous stage"); the new block then learns the residual detail. PaGoDA's
official code grows the ADM decoder itself; this image-space residual form keeps the stage-1 network (the copy of
the teacher) unchanged, which is what lets each stage warm-start from the last (``training.init_from``).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from consistency.nets.unet import conv3x3, group_count


def upsample_bilinear(x: jax.Array) -> jax.Array:
    """×2 bilinear (half-pixel) upsampling of NHWC x."""
    b, h, w, c = x.shape
    return jax.image.resize(x, (b, 2 * h, 2 * w, c), method="bilinear")


class GrowBlock(nn.Module):
    """One ×2 growth stage (module doc): (y [B, H, W, C], h [B, H, W, F] or None) → (y' [B, 2H, 2W, C], h')."""

    channels: int = 32
    num_res_blocks: int = 1
    max_groups: int = 32

    @nn.compact
    def __call__(self, y: jax.Array, h: jax.Array | None = None):
        u = upsample_bilinear(y)
        inputs = u if h is None else jnp.concatenate([u, upsample_bilinear(h)], axis=-1)
        h = conv3x3(self.channels, name="conv_in")(inputs)
        for i in range(self.num_res_blocks):
            r = nn.silu(nn.GroupNorm(group_count(self.channels, self.max_groups), name=f"norm_{i}_0")(h))
            r = conv3x3(self.channels, name=f"conv_{i}_0")(r)
            r = nn.silu(nn.GroupNorm(group_count(self.channels, self.max_groups), name=f"norm_{i}_1")(r))
            h = h + conv3x3(self.channels, name=f"conv_{i}_1")(r)
        out = nn.silu(nn.GroupNorm(group_count(self.channels, self.max_groups), name="norm_out")(h))
        return u + conv3x3(y.shape[-1], name="conv_out", zero_init=True)(out), h


def block_name(k: int) -> str:
    """Params key of the k-th growth block (k = 1 … stage − 1)."""
    return f"grow_{k}"
