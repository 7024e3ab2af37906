"""A U-Net of the NCSN++ / DDPM++ family (Song et al. 2021, score_sde) for NHWC images.

Layout, following NCSN++ with BigGAN residual blocks (score_sde ``ncsnpp.py``, ``resblock_type='biggan'``):

    e   = ConditionEmbedding(c_noise, label)                          [B, 4C]
    h   = conv3x3(x) → C channels;  skips = [h]
    for each level l (resolution R / 2^l, width C·mult[l]):
        num_res_blocks × (ResBlock → Attention if the resolution is listed) — each output pushed to skips
        if not the last level: ResBlock(down) — pushed to skips
    middle: ResBlock → Attention → ResBlock
    for each level l, coarsest first:
        (num_res_blocks + 1) × ResBlock(concat(h, skips.pop()))
        Attention if the resolution is listed
        if not the first level: ResBlock(up)
    F   = conv3x3(SiLU(GroupNorm(h))) → x's channels, zero-initialised

Left out on purpose, compared with NCSN++ CIFAR-10: the ``progressive_input='residual'`` input pyramid
(two extra downsampling convs, ≈0.6M parameters at 128 channels) and the ``output_skip`` pyramid.
The ``fir`` resampling of NCSN++ is available as ``resample='fir'``; ``'nearest'`` is the box filter
(nearest-neighbour up, 2×2 mean down; score_sde ``naive_{up,down}sample_2d``).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from consistency.nets.embeddings import (ConditionEmbedding, batch_noise, default_kernel_init,
                                         guidance_embedding, target_level_embedding)

RESAMPLE_METHODS = ("nearest", "fir")
FIR_KERNEL = (1.0, 3.0, 3.0, 1.0)  # NCSN++ fir_kernel (StyleGAN2 upfirdn2d)
SKIP_SCALE = 1.0 / math.sqrt(2.0)  # NCSN++ skip_rescale: (x + h) / √2

zeros_init = nn.initializers.zeros


def group_count(channels: int, max_groups: int = 32) -> int:
    """GroupNorm groups: min(C/4, max_groups) as in NCSN++, lowered to a divisor of C."""
    groups = max(1, min(max_groups, channels // 4))
    while channels % groups:
        groups -= 1
    return groups


def conv3x3(features: int, name: str | None = None, zero_init: bool = False) -> nn.Conv:
    return nn.Conv(features, (3, 3), padding="SAME", name=name,
                   kernel_init=zeros_init if zero_init else default_kernel_init)


# ----------------------------------------------------------------------------------------------
# Resampling by 2 (no parameters)

def upsample_nearest(x: jax.Array) -> jax.Array:
    """Nearest-neighbour ×2 upsampling of NHWC x."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def downsample_mean(x: jax.Array) -> jax.Array:
    """2×2 average pooling of NHWC x (the adjoint of nearest upsampling, up to a factor 4)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def fir_filter_2d(kernel_1d=FIR_KERNEL) -> np.ndarray:
    """Separable 2-D FIR filter k kᵀ normalised to sum 1 (StyleGAN2 / NCSN++ ``_setup_kernel``)."""
    k = np.asarray(kernel_1d, np.float32)
    k2 = np.outer(k, k)
    return k2 / k2.sum()


def _depthwise(x: jax.Array, filt: np.ndarray, stride: int, lhs_dilation: int, pad: tuple[int, int]) -> jax.Array:
    channels = x.shape[-1]
    rhs = jnp.tile(jnp.asarray(filt, x.dtype)[:, :, None, None], (1, 1, 1, channels))  # HWIO, I = 1
    return jax.lax.conv_general_dilated(
        x, rhs, window_strides=(stride, stride), padding=(pad, pad), lhs_dilation=(lhs_dilation, lhs_dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)


def fir_downsample(x: jax.Array, kernel_1d=FIR_KERNEL) -> jax.Array:
    """Blur with the FIR filter (zero padding), keep every second pixel: upfirdn2d(down=2),
    pad = ((K−2+1)//2, (K−2)//2) (StyleGAN2 / NCSN++ ``downsample_2d``)."""
    taps = len(kernel_1d)
    p = taps - 2
    return _depthwise(x, fir_filter_2d(kernel_1d), stride=2, lhs_dilation=1, pad=((p + 1) // 2, p // 2))


def fir_upsample(x: jax.Array, kernel_1d=FIR_KERNEL) -> jax.Array:
    """Insert zeros between pixels and blur with 4× the FIR filter: upfirdn2d(up=2),
    pad = ((K−2+1)//2 + 1, (K−2)//2) on the zero-stuffed image (StyleGAN2 / NCSN++ ``upsample_2d``).
    Filter symmetric, so correlation = convolution."""
    taps = len(kernel_1d)
    p = taps - 2
    # lhs_dilation gives 2H−1 samples; the trailing stuffed zero of upfirdn2d adds one to the right pad.
    return _depthwise(x, 4.0 * fir_filter_2d(kernel_1d), stride=1, lhs_dilation=2,
                      pad=((p + 1) // 2 + 1, p // 2 + 1))


def resample(x: jax.Array, direction: str, method: str) -> jax.Array:
    """×2 ('up') or ÷2 ('down') resampling of NHWC x with 'nearest' (box) or 'fir' filters."""
    if method not in RESAMPLE_METHODS:
        raise ValueError(f"unknown resample method {method!r}; choose one of {RESAMPLE_METHODS}")
    if direction == "up":
        return upsample_nearest(x) if method == "nearest" else fir_upsample(x)
    if direction == "down":
        return downsample_mean(x) if method == "nearest" else fir_downsample(x)
    raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")


# ----------------------------------------------------------------------------------------------
# Blocks

class ResBlock(nn.Module):
    """BigGAN-style residual block of NCSN++ (score_sde ``ResnetBlockBigGANpp``, skip_rescale=True):

        h = conv3x3(resample(SiLU(GN(x)))) + Dense(SiLU(e))
        h = conv3x3_zero(Dropout(SiLU(GN(h))))
        out = (skip(resample(x)) + h) / √2,   skip = conv1x1 if channels change or resampling, else identity.
    """

    out_channels: int
    dropout: float = 0.0
    max_groups: int = 32
    direction: str | None = None  # None | 'up' | 'down'
    resample_method: str = "nearest"

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, train: bool = False) -> jax.Array:
        in_channels = x.shape[-1]
        h = nn.silu(nn.GroupNorm(group_count(in_channels, self.max_groups), epsilon=1e-6, name="norm_0")(x))
        if self.direction is not None:
            h = resample(h, self.direction, self.resample_method)
            x = resample(x, self.direction, self.resample_method)
        h = conv3x3(self.out_channels, name="conv_0")(h)
        h = h + nn.Dense(self.out_channels, kernel_init=default_kernel_init, name="embed_proj")(nn.silu(emb))[:, None, None, :]
        h = nn.silu(nn.GroupNorm(group_count(self.out_channels, self.max_groups), epsilon=1e-6, name="norm_1")(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = conv3x3(self.out_channels, name="conv_1", zero_init=True)(h)  # NCSN++ init_scale=0
        if in_channels != self.out_channels or self.direction is not None:
            x = nn.Conv(self.out_channels, (1, 1), kernel_init=default_kernel_init, name="skip")(x)
        return (x + h) * SKIP_SCALE


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H·W positions (DDPM ``AttnBlock`` / NCSN++ ``AttnBlockpp``):

        q, k, v = NIN(GN(x));  a = softmax(q kᵀ / √C);  out = (x + NIN_zero(a v)) / √2.
    """

    max_groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, height, width, channels = x.shape
        h = nn.GroupNorm(group_count(channels, self.max_groups), epsilon=1e-6, name="norm")(x)
        h = h.reshape(b, height * width, channels)
        q, k, v = (nn.Dense(channels, kernel_init=default_kernel_init, name=n)(h) for n in ("query", "key", "value"))
        logits = jnp.einsum("bic,bjc->bij", q, k) / math.sqrt(channels)
        attended = jnp.einsum("bij,bjc->bic", jax.nn.softmax(logits, axis=-1), v)
        out = nn.Dense(channels, kernel_init=zeros_init, name="out")(attended)  # NCSN++ init_scale=0
        return (x + out.reshape(b, height, width, channels)) * SKIP_SCALE


# ----------------------------------------------------------------------------------------------
# The network

def level_resolutions(resolution: int, num_levels: int) -> tuple[int, ...]:
    """Spatial size at each level: R, R/2, …; raises if a size to be halved is odd."""
    sizes = [resolution]
    for _ in range(num_levels - 1):
        if sizes[-1] % 2:
            raise ValueError(f"resolution {resolution} cannot be halved {num_levels - 1} times "
                             f"(size {sizes[-1]} is odd); use fewer channel_mult entries")
        sizes.append(sizes[-1] // 2)
    return tuple(sizes)


def encoder_feature_name(resolution: int) -> str:
    """Name of the U-Net's last encoder activation at ``resolution``: 'enc_8' for 8×8."""
    return f"enc_{int(resolution)}"


class UNet(nn.Module):
    """F_θ(x, c_noise, label) for NHWC images; the output has x's shape.

    ``channels`` is the base width C (NCSN++ ``nf``); level l has C·channel_mult[l] channels.
    The noise embedding is 2C Fourier features (``channels`` random frequencies of scale
    ``fourier_scale``) or C positional features, then a 2-layer MLP of width 4C (NCSN++).
    ``num_groups`` caps the GroupNorm groups (min(C/4, num_groups), NCSN++ uses 32).
    ``mid_attention`` keeps the middle self-attention of NCSN++/DDPM.
    Labels: see :class:`consistency.nets.mlp.MLP` (null label = ``num_classes``; None = all null).

    Named inner features (for discriminator heads, consistency/nets/heads.py), NHWC, keyed by resolution R:

    * ``'enc_R'`` for every level resolution R (``'enc_32'``, ``'enc_16'``, ``'enc_8'`` on CIFAR-10): the last
      encoder activation at that resolution — the output of the level's last ResBlock (+ Attention), just before
      its downsampling block; C·channel_mult[l] channels. ``'enc_<coarsest>'`` is the encoder output, the tensor
      DMD2's EDM code calls the bottleneck (``DhariwalUNet(return_bottleneck=True)``, tianweiy/DMD2).
    * ``'bottleneck'``: the middle block's output (ResBlock → Attention → ResBlock), the decoder's input;
      coarsest resolution, C·channel_mult[-1] channels.

    ``return_features=True`` returns ``(F, features)``; ``encoder_only=True`` returns only ``features`` and skips
    the decoder and output layers, the larger part of the network (apply only: init with the full pass so the
    decoder's params exist). Dropout keys fold in by module name, so train-mode features of the two passes agree.
    Neither flag changes the parameter tree or F. Shapes: :meth:`feature_shapes`.
    """

    channels: int = 32
    channel_mult: tuple = (1, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple = ()
    dropout: float = 0.0
    embedding: str = "fourier"
    fourier_scale: float = 16.0
    num_classes: int = 0
    num_groups: int = 32
    resample: str = "nearest"
    mid_attention: bool = True
    remat: bool = False          # recompute each ResBlock's activations in the backward pass (jax.checkpoint)

    @nn.compact
    def __call__(self, x: jax.Array, c_noise: jax.Array, labels: jax.Array | None = None, train: bool = False,
                 return_features: bool = False, encoder_only: bool = False, c_noise_target: jax.Array | None = None,
                 guidance: jax.Array | None = None):
        if x.ndim != 4 or x.shape[1] != x.shape[2]:
            raise ValueError(f"UNet expects square NHWC images, got shape {x.shape}")
        mults = tuple(self.channel_mult)
        level_resolutions(x.shape[1], len(mults))  # validate before building anything
        feature_dim = 2 * self.channels if self.embedding == "fourier" else self.channels
        emb = ConditionEmbedding(embedding=self.embedding, feature_dim=feature_dim, out_dim=4 * self.channels,
                                 fourier_scale=self.fourier_scale, num_classes=self.num_classes,
                                 name="embed")(batch_noise(c_noise, x.shape[0]), labels)
        emb = emb + target_level_embedding(self, c_noise_target, x.shape[0], feature_dim, 4 * self.channels)
        emb = emb + guidance_embedding(self, guidance, x.shape[0], feature_dim, 4 * self.channels)

        # nn.remat (jax.checkpoint) trades a second forward pass of each block for not storing its activations; the
        # block keeps its auto name (ResBlock_i), so the parameter tree and checkpoints are the same either way.
        block = nn.remat(ResBlock, static_argnums=(3,)) if self.remat else ResBlock
        block_count = [0]

        def res_block(h, out_channels, direction=None):
            name = f"ResBlock_{block_count[0]}"
            block_count[0] += 1
            return block(out_channels, dropout=self.dropout, max_groups=self.num_groups, direction=direction,
                         resample_method=self.resample, name=name)(h, emb, train)

        def attention(h):
            return AttentionBlock(max_groups=self.num_groups)(h)

        features = {}
        h = conv3x3(self.channels, name="conv_in")(x)
        skips = [h]
        for level, mult in enumerate(mults):  # encoder
            for _ in range(self.num_res_blocks):
                h = res_block(h, self.channels * mult)
                if h.shape[1] in self.attn_resolutions:
                    h = attention(h)
                skips.append(h)
            features[encoder_feature_name(h.shape[1])] = h
            if level != len(mults) - 1:
                h = res_block(h, self.channels * mult, "down")
                skips.append(h)

        h = res_block(h, h.shape[-1])  # middle
        if self.mid_attention:
            h = attention(h)
        h = res_block(h, h.shape[-1])
        features["bottleneck"] = h
        if encoder_only:  # the modules below are never called, so their (auto-numbered) names are unaffected
            return features

        for level, mult in reversed(list(enumerate(mults))):  # decoder
            for _ in range(self.num_res_blocks + 1):
                h = res_block(jnp.concatenate([h, skips.pop()], axis=-1), self.channels * mult)
            if h.shape[1] in self.attn_resolutions:
                h = attention(h)
            if level != 0:
                h = res_block(h, self.channels * mult, "up")
        assert not skips, "every encoder activation is consumed once by the decoder"

        h = nn.silu(nn.GroupNorm(group_count(h.shape[-1], self.num_groups), epsilon=1e-6, name="norm_out")(h))
        out = conv3x3(x.shape[-1], name="conv_out", zero_init=True)(h)
        return (out, features) if return_features else out

    def feature_shapes(self, data_shape: tuple) -> dict[str, tuple[int, ...]]:
        """Per-example shapes (H, W, C) of the named features for images of ``data_shape`` (H, W, C)."""
        mults = tuple(self.channel_mult)
        sizes = level_resolutions(int(data_shape[0]), len(mults))
        shapes = {encoder_feature_name(r): (r, r, self.channels * m) for r, m in zip(sizes, mults)}
        shapes["bottleneck"] = (sizes[-1], sizes[-1], self.channels * mults[-1])
        return shapes
