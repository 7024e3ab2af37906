"""EDM's networks in Flax, parameter for parameter: ``SongUNet`` (DDPM++ / NCSN++) and ``DhariwalUNet`` (ADM).

A port of NVlabs/edm ``training/networks.py`` (Karras et al. 2022): the same layers, the same order of operations
and the same parameter shapes, so a state dict of an EDM network pickle (``edm-cifar10-32x32-*-vp.pkl`` = DDPM++,
``*-ve.pkl`` = NCSN++, ``edm-imagenet-64x64-cond-adm.pkl`` = ADM) loads with :func:`params_from_state_dict` and gives
the same outputs to float32 precision (tests/test_edm_networks.py checks this against reference outputs of NVlabs'
code). Layout is NHWC (torch: NCHW; conv kernels HWIO against torch's OIHW).

The configurations are the ones NVlabs/edm ``train.py`` sets for ``--arch`` (``ARCHS``):

* ``ddpmpp``: SongUNet, positional noise embedding (endpoint=True), noise features = C, standard encoder and
  decoder, box resampling filter [1, 1];
* ``ncsnpp``: SongUNet, Fourier noise embedding (scale 16, a fixed buffer ``map_noise.freqs``), noise features = 2C,
  residual encoder (the input pyramid ``aux_residual``), standard decoder, FIR resampling filter [1, 3, 3, 1];
* ``adm``: DhariwalUNet, positional embedding (endpoint=False), scale-shift (adaptive) GroupNorm, attention heads of
  64 channels.

Like every net of ``consistency.nets`` the modules compute F(c_in·x, c_noise, labels): preconditioning (EDM, VP, VE;
EDM ``EDMPrecond``/``VPPrecond``/``VEPrecond``) is ``consistency.diffusion.preconditioning``'s job. EDM's release
files ``edm-*-{vp,ve}.pkl`` all use EDM preconditioning (``edm_scalings``); only ``baseline-*`` use VP / VE.

Labels: EDM conditions on a float class vector through a linear layer (``map_label``); integer labels k are its one-hot
rows and the null label ``num_classes`` (or ``labels=None``) is the zero vector — what EDM feeds for "no label" and
what its label dropout produces — so classifier-free guidance needs no extra parameter. A float [B, num_classes]
array is used as the class vector as is. ``augment_labels`` [B, augment_dim] feed EDM's augmentation conditioning
(``map_augment``; None = off, as at sampling time).

Named inner features for the discriminator heads (``consistency/nets/heads.py``), as for ``UNet``: ``'enc_R'`` the last
encoder activation at resolution R, ``'bottleneck'`` the output of the middle blocks (EDM's decoder blocks
``RxR_in0``, ``RxR_in1`` at the coarsest resolution).

Differences from the torch module, none of which changes an output: the Fourier buffer ``freqs`` is a parameter here
(Flax has no buffers) behind ``stop_gradient`` (zero gradient: Adam never moves it; AdamW's decoupled weight decay
would shrink it); fixed resampling filters are constants, not stored; ``label_dropout`` is the training loop's
``training.label_dropout`` (labels → null) rather than a module field.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from consistency.nets.embeddings import batch_noise, fourier_frequencies, guidance_embedding, target_level_embedding

ARCHS = {   # NVlabs/edm train.py, --arch
    "ddpmpp": dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                   decoder_type="standard", channel_mult_noise=1, resample_filter=(1, 1)),
    "ncsnpp": dict(model_type="SongUNet", embedding_type="fourier", encoder_type="residual",
                   decoder_type="standard", channel_mult_noise=2, resample_filter=(1, 3, 3, 1)),
    "adm": dict(model_type="DhariwalUNet"),
}

# Constructor defaults of NVlabs/edm training/networks.py, used for fields an EDM pickle's kwargs leave out.
SONG_DEFAULTS = dict(label_dim=0, augment_dim=0, model_channels=128, channel_mult=(1, 2, 2, 2), channel_mult_emb=4,
                     num_blocks=4, attn_resolutions=(16,), dropout=0.10, label_dropout=0.0,
                     embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
                     decoder_type="standard", resample_filter=(1, 1))
DHARIWAL_DEFAULTS = dict(label_dim=0, augment_dim=0, model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_emb=4,
                         num_blocks=3, attn_resolutions=(32, 16, 8), dropout=0.10, label_dropout=0.0)
FOURIER_SCALE = 16.0   # EDM FourierEmbedding(scale=16)


# ----------------------------------------------------------------------------------------------
# Initialisers (EDM ``weight_init``; Flax kernels are [..., in, out], so fan_in/fan_out are the same numbers)

def _init(mode: str, gain: float = 1.0) -> Callable:
    """``weight_init(mode) * gain`` of EDM as a Flax kernel initialiser: variance scaling with scale gain²
    (xavier_uniform: U(±gain·√(6/(fan_in+fan_out))); kaiming_uniform: U(±gain·√(3/fan_in));
    kaiming_normal: N(0, gain²/fan_in))."""
    if gain == 0.0:
        return nn.initializers.zeros
    fan, distribution = {"xavier_uniform": ("fan_avg", "uniform"), "kaiming_uniform": ("fan_in", "uniform"),
                         "kaiming_normal": ("fan_in", "normal")}[mode]
    return nn.initializers.variance_scaling(gain**2, fan, distribution)


def _bias_init(gain: float, fan_in: int) -> Callable:
    """EDM's ``kaiming_uniform`` bias (ADM: gain √(1/3)): U(±gain·√(3/fan_in)); zeros when gain is 0."""
    if gain == 0.0:
        return nn.initializers.zeros
    limit = gain * math.sqrt(3.0 / max(fan_in, 1))     # (fan_in 0: a kernel-0 layer, which has no bias)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -limit, limit)


# ----------------------------------------------------------------------------------------------
# Layers

def resample_filter_2d(taps) -> np.ndarray:
    """EDM Conv2d's ``resample_filter`` buffer without its two leading axes: f fᵀ / (Σf)², float32."""
    f = np.asarray(taps, np.float32)
    return (np.outer(f, f) / np.square(f.sum())).astype(np.float32)


def _depthwise(x: jax.Array, filt: np.ndarray, stride: int, lhs_dilation: int, pad: int) -> jax.Array:
    channels = x.shape[-1]
    rhs = jnp.tile(jnp.asarray(filt, x.dtype)[:, :, None, None], (1, 1, 1, channels))   # HWIO, I = 1
    return jax.lax.conv_general_dilated(x, rhs, (stride, stride), ((pad, pad), (pad, pad)),
                                        lhs_dilation=(lhs_dilation, lhs_dilation),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)


def _is_box(filt: np.ndarray, padding: int) -> bool:
    """The [1, 1] filter of DDPM++ and ADM (a 2×2 box) without padding: resampling is a reshape, no convolution."""
    return filt.shape == (2, 2) and padding == 0 and bool(np.all(filt == filt[0, 0]))


def filter_downsample(x: jax.Array, filt: np.ndarray, padding: int) -> jax.Array:
    """torch ``conv2d(x, f, groups=C, stride=2, padding=padding)`` in NHWC. The box filter is the 2×2 block sum
    times f (= ¼): the same products as the depthwise convolution, which XLA-CPU runs several times slower
    (docs/throughput.md, "EDM's DDPM++ on this CPU")."""
    if _is_box(filt, padding):
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).sum(axis=(2, 4)) * jnp.asarray(filt[0, 0], x.dtype)
    return _depthwise(x, filt, stride=2, lhs_dilation=1, pad=padding)


def filter_upsample(x: jax.Array, filt: np.ndarray, padding: int) -> jax.Array:
    """torch ``conv_transpose2d(x, 4f, groups=C, stride=2, padding=padding)`` in NHWC: a stride-1 correlation of the
    zero-stuffed input with the flipped filter, padded by k − 1 − padding. The box filter (4f = 1) is a nearest-
    neighbour repeat."""
    if _is_box(filt, padding):
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        scale = 4.0 * float(filt[0, 0])
        return x if scale == 1.0 else x * jnp.asarray(scale, x.dtype)
    k = filt.shape[0]
    return _depthwise(x, 4.0 * filt[::-1, ::-1], stride=1, lhs_dilation=2, pad=k - 1 - padding)


class Conv2d(nn.Module):
    """EDM ``Conv2d``: optional ×2 up/down resampling by a fixed filter, then a k×k convolution (k = 0: none), bias.
    Params: ``conv/kernel`` [k, k, in, out] (torch ``weight`` [out, in, k, k]) and ``bias`` [out]."""

    features: int
    kernel: int
    use_bias: bool = True
    up: bool = False
    down: bool = False
    resample_filter: tuple = (1, 1)
    fused_resample: bool = False
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        filt = resample_filter_2d(self.resample_filter) if (self.up or self.down) else None
        w_pad = self.kernel // 2
        f_pad = (filt.shape[0] - 1) // 2 if filt is not None else 0

        def conv(h, pad):
            return nn.Conv(self.features, (self.kernel, self.kernel), padding=((pad, pad), (pad, pad)),
                           use_bias=False, kernel_init=self.kernel_init, name="conv")(h)

        if self.fused_resample and self.up and self.kernel:
            x = conv(filter_upsample(x, filt, max(f_pad - w_pad, 0)), max(w_pad - f_pad, 0))
        elif self.fused_resample and self.down and self.kernel:
            x = filter_downsample(conv(x, w_pad + f_pad), filt, 0)
        else:
            if self.up:
                x = filter_upsample(x, filt, f_pad)
            if self.down:
                x = filter_downsample(x, filt, f_pad)
            if self.kernel:
                x = conv(x, w_pad)
        if self.kernel and self.use_bias:
            x = x + self.param("bias", self.bias_init, (self.features,)).astype(x.dtype)
        return x


def group_norm(channels: int, eps: float, name: str) -> nn.GroupNorm:
    """EDM ``GroupNorm``: min(32, C // 4) groups; two-pass variance like torch's ``group_norm``."""
    return nn.GroupNorm(num_groups=min(32, channels // 4), epsilon=eps, use_fast_variance=False, name=name)


class UNetBlock(nn.Module):
    """EDM ``UNetBlock``: GN → SiLU → conv0 (with resampling), noise embedding added (or scale-shift for ADM),
    GN → SiLU → dropout → conv1, skip (1×1 / resampling) and ``skip_scale``; then optional multi-head self-attention.
    """

    out_channels: int
    up: bool = False
    down: bool = False
    attention: bool = False
    num_heads: int | None = None
    channels_per_head: int = 64
    dropout: float = 0.0
    skip_scale: float = 1.0
    eps: float = 1e-5
    resample_filter: tuple = (1, 1)
    resample_proj: bool = False
    adaptive_scale: bool = True
    init_family: str = "song"     # 'song' (xavier_uniform; zero layers 1e-5) | 'adm' (kaiming_uniform·√⅓; zeros)

    def _inits(self):
        if self.init_family == "song":
            return (dict(kernel_init=_init("xavier_uniform")),
                    dict(kernel_init=_init("xavier_uniform", 1e-5)),
                    dict(kernel_init=_init("xavier_uniform", math.sqrt(0.2))))
        return (dict(kernel_init=_init("kaiming_uniform", math.sqrt(1 / 3))),
                dict(kernel_init=nn.initializers.zeros), None)

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, train: bool = False) -> jax.Array:
        in_channels = x.shape[-1]
        out = self.out_channels
        heads = 0 if not self.attention else (self.num_heads if self.num_heads is not None
                                               else out // self.channels_per_head)
        init, init_zero, init_attn = self._inits()
        adm = self.init_family == "adm"

        def bias(fan_in, zero=False):
            return dict(bias_init=_bias_init(0.0 if zero else math.sqrt(1 / 3), fan_in)) if adm else {}

        orig = x
        x = nn.silu(group_norm(in_channels, self.eps, "norm0")(x))
        x = Conv2d(out, 3, up=self.up, down=self.down, resample_filter=self.resample_filter,
                   **init, **bias(in_channels * 9), name="conv0")(x)
        params = nn.Dense(out * (2 if self.adaptive_scale else 1), name="affine", **init,
                          **bias(emb.shape[-1]))(emb)[:, None, None, :].astype(x.dtype)
        if self.adaptive_scale:
            scale, shift = jnp.split(params, 2, axis=-1)
            x = nn.silu(shift + group_norm(out, self.eps, "norm1")(x) * (scale + 1))
        else:
            x = nn.silu(group_norm(out, self.eps, "norm1")(x + params))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = Conv2d(out, 3, **init_zero, **bias(out * 9, zero=True), name="conv1")(x)
        if out != in_channels or self.up or self.down:
            kernel = 1 if self.resample_proj or out != in_channels else 0
            orig = Conv2d(out, kernel, up=self.up, down=self.down, resample_filter=self.resample_filter,
                          **init, **bias(in_channels * kernel * kernel), name="skip")(orig)
        x = (x + orig) * self.skip_scale

        if heads:
            batch, height, width, _ = x.shape
            qkv = Conv2d(out * 3, 1, **(init_attn or init), **bias(out), name="qkv")(group_norm(out, self.eps,
                                                                                                  "norm2")(x))
            # torch: qkv [N, 3C, H, W].reshape(N·heads, C/heads, 3, HW): channel = (head·C/heads + c)·3 + {q,k,v}.
            qkv = qkv.reshape(batch, height * width, heads, out // heads, 3)
            q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]
            k = k / np.sqrt(out // heads)
            logits = jnp.einsum("bqhc,bkhc->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
            w = jax.nn.softmax(logits, axis=-1).astype(q.dtype)     # EDM AttentionOp: float32 softmax
            a = jnp.einsum("bhqk,bkhc->bqhc", w, v).reshape(batch, height, width, out)
            x = (Conv2d(out, 1, **init_zero, **bias(out, zero=True), name="proj")(a) + x) * self.skip_scale
        return x


def positional_embedding(c_noise: jax.Array, num_channels: int, endpoint: bool,
                         max_positions: int = 10_000) -> jax.Array:
    """EDM ``PositionalEmbedding``: [cos(c ω_k), sin(c ω_k)], ω_k = (1/max_positions)^(k / (K − endpoint)), K = C/2."""
    half = num_channels // 2
    freqs = np.arange(half, dtype=np.float32) / np.float32(half - (1 if endpoint else 0))
    freqs = np.power(np.float32(1.0 / max_positions), freqs).astype(np.float32)
    angles = c_noise[:, None] * jnp.asarray(freqs)[None, :]
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=1)


def _augment_input(augment_labels, augment_dim: int) -> jax.Array:
    return (jnp.zeros((1, augment_dim), jnp.float32) if augment_labels is None
            else jnp.asarray(augment_labels, jnp.float32))


def class_vectors(labels, label_dim: int, batch_size: int) -> jax.Array:
    """EDM's float class vector [B, label_dim]: one-hot of integer labels (the null label ``label_dim`` → 0),
    zeros for None (EDM ``class_labels=None``), a float [B, label_dim] array as is."""
    if labels is None:
        return jnp.zeros((batch_size, label_dim), jnp.float32)
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.floating):
        return jnp.broadcast_to(labels.reshape(-1, label_dim), (batch_size, label_dim)).astype(jnp.float32)
    return jax.nn.one_hot(labels, label_dim, dtype=jnp.float32)     # out-of-range (null) rows are all zero


# ----------------------------------------------------------------------------------------------
# Layouts: the ordered module dictionaries ``enc`` / ``dec`` of the torch constructors, as data

def song_layout(img_resolution: int, in_channels: int, out_channels: int, model_channels: int, channel_mult,
                num_blocks: int, attn_resolutions, encoder_type: str, decoder_type: str):
    """(enc, dec): lists of (name, spec) in EDM SongUNet's module order; spec['kind'] is 'conv', 'block',
    'aux_down', 'aux_skip', 'aux_residual', 'aux_up', 'aux_norm' or 'aux_conv'; spec['cin'], spec['cout'], 'res'."""
    enc, dec = [], []
    cout = caux = in_channels
    for level, mult in enumerate(channel_mult):
        res = img_resolution >> level
        if level == 0:
            cin, cout = cout, model_channels
            enc.append((f"{res}x{res}_conv", dict(kind="conv", cin=cin, cout=cout, res=res)))
        else:
            enc.append((f"{res}x{res}_down", dict(kind="block", cin=cout, cout=cout, res=res, down=True)))
            if encoder_type == "skip":
                enc.append((f"{res}x{res}_aux_down", dict(kind="aux_down", cin=caux, cout=caux, res=res)))
                enc.append((f"{res}x{res}_aux_skip", dict(kind="aux_skip", cin=caux, cout=cout, res=res)))
            if encoder_type == "residual":
                enc.append((f"{res}x{res}_aux_residual", dict(kind="aux_residual", cin=caux, cout=cout, res=res)))
                caux = cout
        for idx in range(num_blocks):
            cin, cout = cout, model_channels * mult
            enc.append((f"{res}x{res}_block{idx}", dict(kind="block", cin=cin, cout=cout, res=res,
                                                        attention=res in attn_resolutions)))
    skips = [spec["cout"] for name, spec in enc if "aux" not in name]
    last = len(channel_mult) - 1
    for level, mult in reversed(list(enumerate(channel_mult))):
        res = img_resolution >> level
        if level == last:
            dec.append((f"{res}x{res}_in0", dict(kind="block", cin=cout, cout=cout, res=res, attention=True)))
            dec.append((f"{res}x{res}_in1", dict(kind="block", cin=cout, cout=cout, res=res)))
        else:
            dec.append((f"{res}x{res}_up", dict(kind="block", cin=cout, cout=cout, res=res, up=True)))
        for idx in range(num_blocks + 1):
            cin, cout = cout + skips.pop(), model_channels * mult
            dec.append((f"{res}x{res}_block{idx}", dict(kind="block", cin=cin, cout=cout, res=res,
                                                        attention=idx == num_blocks and res in attn_resolutions)))
        if decoder_type == "skip" or level == 0:
            if decoder_type == "skip" and level < last:
                dec.append((f"{res}x{res}_aux_up", dict(kind="aux_up", cin=out_channels, cout=out_channels, res=res)))
            dec.append((f"{res}x{res}_aux_norm", dict(kind="aux_norm", cin=cout, cout=cout, res=res)))
            dec.append((f"{res}x{res}_aux_conv", dict(kind="aux_conv", cin=cout, cout=out_channels, res=res)))
    return enc, dec


def dhariwal_layout(img_resolution: int, in_channels: int, model_channels: int, channel_mult, num_blocks: int,
                    attn_resolutions):
    """(enc, dec) of EDM DhariwalUNet in module order (see :func:`song_layout`); 'out_norm'/'out_conv' follow."""
    enc, dec = [], []
    cout = in_channels
    for level, mult in enumerate(channel_mult):
        res = img_resolution >> level
        if level == 0:
            cin, cout = cout, model_channels * mult
            enc.append((f"{res}x{res}_conv", dict(kind="conv", cin=cin, cout=cout, res=res)))
        else:
            enc.append((f"{res}x{res}_down", dict(kind="block", cin=cout, cout=cout, res=res, down=True)))
        for idx in range(num_blocks):
            cin, cout = cout, model_channels * mult
            enc.append((f"{res}x{res}_block{idx}", dict(kind="block", cin=cin, cout=cout, res=res,
                                                        attention=res in attn_resolutions)))
    skips = [spec["cout"] for _, spec in enc]
    for level, mult in reversed(list(enumerate(channel_mult))):
        res = img_resolution >> level
        if level == len(channel_mult) - 1:
            dec.append((f"{res}x{res}_in0", dict(kind="block", cin=cout, cout=cout, res=res, attention=True)))
            dec.append((f"{res}x{res}_in1", dict(kind="block", cin=cout, cout=cout, res=res)))
        else:
            dec.append((f"{res}x{res}_up", dict(kind="block", cin=cout, cout=cout, res=res, up=True)))
        for idx in range(num_blocks + 1):
            cin, cout = cout + skips.pop(), model_channels * mult
            dec.append((f"{res}x{res}_block{idx}", dict(kind="block", cin=cin, cout=cout, res=res,
                                                        attention=res in attn_resolutions)))
    return enc, dec


def _check_resolutions(resolution: int, levels: int) -> None:
    if resolution % (1 << (levels - 1)):
        raise ValueError(f"resolution {resolution} cannot be halved {levels - 1} times; use fewer channel_mult "
                         "entries")


def _feature_shapes(enc, dec) -> dict[str, tuple[int, int, int]]:
    shapes = {}
    for name, spec in enc:
        if spec["kind"] in ("block", "conv"):
            shapes[f"enc_{spec['res']}"] = (spec["res"], spec["res"], spec["cout"])
    middle = [spec for name, spec in dec if name.endswith("_in1")][0]
    shapes["bottleneck"] = (middle["res"], middle["res"], middle["cout"])
    return shapes


class _EDMUNetBase(nn.Module):
    """Fields shared by the two EDM U-Nets (names of the project's model config where they exist)."""

    channels: int = 128                  # EDM model_channels
    channel_mult: tuple = (2, 2, 2)
    num_res_blocks: int = 4              # EDM num_blocks
    attn_resolutions: tuple = (16,)
    dropout: float = 0.0
    num_classes: int = 0                 # EDM label_dim
    augment_dim: int = 0
    channel_mult_emb: int = 4
    remat: bool = False                  # recompute each UNetBlock in the backward pass (jax.checkpoint)

    def _block(self, name: str, spec: dict, **kwargs):
        cls = nn.remat(UNetBlock, static_argnums=(3,)) if self.remat else UNetBlock
        return cls(spec["cout"], up=spec.get("up", False), down=spec.get("down", False),
                   attention=spec.get("attention", False), dropout=self.dropout, name=name, **kwargs)

    def _extra_embedding(self, emb, c_noise_target, guidance, noise_channels):
        """CTM's target level and PaGoDA's guidance embeddings (zero-initialised, 0 when absent)."""
        batch, width = emb.shape
        return (emb + target_level_embedding(self, c_noise_target, batch, noise_channels, width)
                + guidance_embedding(self, guidance, batch, noise_channels, width))


class SongUNet(_EDMUNetBase):
    """EDM ``SongUNet`` (DDPM++ / NCSN++ of Song et al. 2021 as reimplemented in NVlabs/edm), NHWC."""

    embedding_type: str = "positional"
    channel_mult_noise: int = 1
    encoder_type: str = "standard"
    decoder_type: str = "standard"
    resample_filter: tuple = (1, 1)
    fourier_scale: float = FOURIER_SCALE

    @property
    def embedding(self) -> str:          # read by target_level_embedding
        return self.embedding_type

    def layout(self, data_shape):
        return song_layout(int(data_shape[0]), int(data_shape[-1]), int(data_shape[-1]), self.channels,
                           tuple(self.channel_mult), self.num_res_blocks, tuple(self.attn_resolutions),
                           self.encoder_type, self.decoder_type)

    def feature_shapes(self, data_shape: tuple) -> dict[str, tuple[int, ...]]:
        return _feature_shapes(*self.layout(data_shape))

    @nn.compact
    def __call__(self, x: jax.Array, c_noise: jax.Array, labels=None, train: bool = False,
                 return_features: bool = False, encoder_only: bool = False, c_noise_target=None, guidance=None,
                 augment_labels=None):
        if x.ndim != 4 or x.shape[1] != x.shape[2]:
            raise ValueError(f"SongUNet expects square NHWC images, got shape {x.shape}")
        _check_resolutions(x.shape[1], len(self.channel_mult))
        batch = x.shape[0]
        noise_channels = self.channels * self.channel_mult_noise
        emb_channels = self.channels * self.channel_mult_emb
        xavier = _init("xavier_uniform")
        block_kwargs = dict(num_heads=1, skip_scale=np.sqrt(0.5), eps=1e-6, resample_filter=tuple(self.resample_filter),
                            resample_proj=True, adaptive_scale=False, init_family="song")

        # Mapping.
        c_noise = batch_noise(c_noise, batch)
        if self.embedding_type == "positional":
            emb = positional_embedding(c_noise, noise_channels, endpoint=True)
        else:
            freqs = self.param("map_noise_freqs", lambda *_: jnp.asarray(
                fourier_frequencies(noise_channels // 2, self.fourier_scale)))
            freqs = jax.lax.stop_gradient(freqs)        # a torch buffer: never trained
            angles = c_noise[:, None] * (np.float32(2 * np.pi) * freqs)[None, :]
            emb = jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=1)
        emb = emb.reshape(batch, 2, -1)[:, ::-1].reshape(batch, -1)          # swap sin/cos (EDM SongUNet)
        if self.num_classes:
            y = class_vectors(labels, self.num_classes, batch)
            emb = emb + nn.Dense(noise_channels, kernel_init=xavier, name="map_label")(
                y * np.float32(np.sqrt(self.num_classes)))
        if self.augment_dim:     # created always (a release file has it), used only with augment_labels
            aug = nn.Dense(noise_channels, use_bias=False, kernel_init=xavier, name="map_augment")(
                _augment_input(augment_labels, self.augment_dim))
            if augment_labels is not None:
                emb = emb + aug
        emb = nn.silu(nn.Dense(emb_channels, kernel_init=xavier, name="map_layer0")(emb))
        emb = nn.Dense(emb_channels, kernel_init=xavier, name="map_layer1")(emb)
        emb = nn.silu(self._extra_embedding(emb, c_noise_target, guidance, noise_channels))

        enc, dec = self.layout(x.shape[1:])
        out_channels = x.shape[-1]
        filt = tuple(self.resample_filter)

        # Encoder.
        features, skips, aux = {}, [], x
        for name, spec in enc:
            kind = spec["kind"]
            if kind == "aux_down":
                aux = Conv2d(spec["cout"], 0, down=True, resample_filter=filt, name=f"enc_{name}")(aux)
            elif kind == "aux_skip":
                x = skips[-1] = x + Conv2d(spec["cout"], 1, kernel_init=xavier, name=f"enc_{name}")(aux)
            elif kind == "aux_residual":
                x = skips[-1] = aux = (x + Conv2d(spec["cout"], 3, down=True, resample_filter=filt,
                                                  fused_resample=True, kernel_init=xavier,
                                                  name=f"enc_{name}")(aux)) / np.sqrt(2)
            elif kind == "conv":
                x = Conv2d(spec["cout"], 3, kernel_init=xavier, name=f"enc_{name}")(x)
                skips.append(x)
            else:
                x = self._block(f"enc_{name}", spec, **block_kwargs)(x, emb, train)
                skips.append(x)
            features[f"enc_{spec['res']}"] = x

        # Decoder.
        aux = tmp = None
        for name, spec in dec:
            kind = spec["kind"]
            if kind == "aux_up":
                aux = Conv2d(out_channels, 0, up=True, resample_filter=filt, name=f"dec_{name}")(aux)
            elif kind == "aux_norm":
                tmp = group_norm(spec["cin"], 1e-6, f"dec_{name}")(x)
            elif kind == "aux_conv":
                tmp = Conv2d(out_channels, 3, kernel_init=_init("xavier_uniform", 1e-5), name=f"dec_{name}")(
                    nn.silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                if x.shape[-1] != spec["cin"]:
                    x = jnp.concatenate([x, skips.pop()], axis=-1)
                x = self._block(f"dec_{name}", spec, **block_kwargs)(x, emb, train)
                if name.endswith("_in1"):
                    features["bottleneck"] = x
                    if encoder_only:
                        return features
        return (aux, features) if return_features else aux


class DhariwalUNet(_EDMUNetBase):
    """EDM ``DhariwalUNet`` (ADM of Dhariwal & Nichol 2021 as reimplemented in NVlabs/edm), NHWC."""

    channels: int = 192
    channel_mult: tuple = (1, 2, 3, 4)
    num_res_blocks: int = 3
    attn_resolutions: tuple = (32, 16, 8)
    embedding: str = "positional"         # read by target_level_embedding / guidance_embedding
    fourier_scale: float = FOURIER_SCALE

    def layout(self, data_shape):
        return dhariwal_layout(int(data_shape[0]), int(data_shape[-1]), self.channels, tuple(self.channel_mult),
                               self.num_res_blocks, tuple(self.attn_resolutions))

    def feature_shapes(self, data_shape: tuple) -> dict[str, tuple[int, ...]]:
        return _feature_shapes(*self.layout(data_shape))

    @nn.compact
    def __call__(self, x: jax.Array, c_noise: jax.Array, labels=None, train: bool = False,
                 return_features: bool = False, encoder_only: bool = False, c_noise_target=None, guidance=None,
                 augment_labels=None):
        if x.ndim != 4 or x.shape[1] != x.shape[2]:
            raise ValueError(f"DhariwalUNet expects square NHWC images, got shape {x.shape}")
        _check_resolutions(x.shape[1], len(self.channel_mult))
        batch, out_channels = x.shape[0], x.shape[-1]
        emb_channels = self.channels * self.channel_mult_emb
        gain = math.sqrt(1 / 3)
        init = _init("kaiming_uniform", gain)
        block_kwargs = dict(channels_per_head=64, init_family="adm")

        # Mapping.
        emb = positional_embedding(batch_noise(c_noise, batch), self.channels, endpoint=False)
        if self.augment_dim:
            aug = nn.Dense(self.channels, use_bias=False, kernel_init=nn.initializers.zeros, name="map_augment")(
                _augment_input(augment_labels, self.augment_dim))
            if augment_labels is not None:
                emb = emb + aug
        emb = nn.silu(nn.Dense(emb_channels, kernel_init=init, bias_init=_bias_init(gain, self.channels),
                               name="map_layer0")(emb))
        emb = nn.Dense(emb_channels, kernel_init=init, bias_init=_bias_init(gain, emb_channels),
                       name="map_layer1")(emb)
        if self.num_classes:
            emb = emb + nn.Dense(emb_channels, use_bias=False, name="map_label",
                                 kernel_init=_init("kaiming_normal", math.sqrt(self.num_classes)))(
                class_vectors(labels, self.num_classes, batch))
        emb = nn.silu(self._extra_embedding(emb, c_noise_target, guidance, self.channels))

        enc, dec = self.layout(x.shape[1:])
        features, skips = {}, []
        for name, spec in enc:
            if spec["kind"] == "conv":
                x = Conv2d(spec["cout"], 3, kernel_init=init, bias_init=_bias_init(gain, spec["cin"] * 9),
                           name=f"enc_{name}")(x)
            else:
                x = self._block(f"enc_{name}", spec, **block_kwargs)(x, emb, train)
            skips.append(x)
            features[f"enc_{spec['res']}"] = x
        for name, spec in dec:
            if x.shape[-1] != spec["cin"]:
                x = jnp.concatenate([x, skips.pop()], axis=-1)
            x = self._block(f"dec_{name}", spec, **block_kwargs)(x, emb, train)
            if name.endswith("_in1"):
                features["bottleneck"] = x
                if encoder_only:
                    return features
        x = Conv2d(out_channels, 3, kernel_init=nn.initializers.zeros, name="out_conv")(
            nn.silu(group_norm(x.shape[-1], 1e-5, "out_norm")(x)))
        return (x, features) if return_features else x



# ----------------------------------------------------------------------------------------------
# From EDM's constructor kwargs and state dict (torch names, NCHW / OIHW) to this module and its params

PRECOND_KWARGS = ("img_resolution", "img_channels", "in_channels", "out_channels", "use_fp16", "sigma_min",
                  "sigma_max", "sigma_data", "beta_d", "beta_min", "M", "epsilon_t", "C_1", "C_2", "model_type",
                  "label_dim", "augment_dim")


def _full_kwargs(edm_kwargs: Mapping[str, Any]) -> tuple[str, dict]:
    """(model_type, the network's constructor kwargs with EDM's defaults filled in)."""
    model_type = edm_kwargs.get("model_type", "DhariwalUNet")     # EDMPrecond's default
    if model_type not in ("SongUNet", "DhariwalUNet"):
        raise ValueError(f"EDM model_type {model_type!r} is not supported; only 'SongUNet' (DDPM++/NCSN++) and "
                         "'DhariwalUNet' (ADM)")
    defaults = SONG_DEFAULTS if model_type == "SongUNet" else DHARIWAL_DEFAULTS
    unknown = sorted(set(edm_kwargs) - set(defaults) - set(PRECOND_KWARGS))
    if unknown:
        raise ValueError(f"EDM {model_type} kwarg {unknown[0]!r} is not one this port knows; known: "
                         f"{sorted(defaults)}")
    kwargs = dict(defaults)
    kwargs.update({k: v for k, v in edm_kwargs.items() if k in defaults})
    for key in ("channel_mult", "attn_resolutions", "resample_filter"):
        if key in kwargs:
            kwargs[key] = tuple(int(v) for v in kwargs[key])
    return model_type, kwargs


def edm_arch(edm_kwargs: Mapping[str, Any]) -> str:
    """'ddpmpp' | 'ncsnpp' | 'adm': the ``config.model.name`` of an EDM network's kwargs (NVlabs/edm train.py
    ``--arch``); ValueError for a SongUNet that is neither of train.py's two configurations."""
    model_type, kwargs = _full_kwargs(edm_kwargs)
    if model_type == "DhariwalUNet":
        return "adm"
    for name in ("ddpmpp", "ncsnpp"):
        if all(kwargs[k] == (tuple(v) if isinstance(v, tuple) else v) for k, v in ARCHS[name].items()
               if k != "model_type"):
            return name
    described = {k: kwargs[k] for k in ARCHS["ddpmpp"] if k != "model_type"}
    raise ValueError(f"EDM SongUNet with {described} is neither train.py's DDPM++ nor its NCSN++ configuration")


def edm_model_fields(edm_kwargs: Mapping[str, Any]) -> dict:
    """``config.model`` fields (name, channels, …) of the network an EDM pickle's init kwargs describe."""
    name = edm_arch(edm_kwargs)
    _, kwargs = _full_kwargs(edm_kwargs)
    return dict(name=name, channels=int(kwargs["model_channels"]), channel_mult=kwargs["channel_mult"],
                num_res_blocks=int(kwargs["num_blocks"]), attn_resolutions=kwargs["attn_resolutions"],
                dropout=float(kwargs["dropout"]), num_classes=int(edm_kwargs.get("label_dim", 0)),
                augment_dim=int(edm_kwargs.get("augment_dim", 0)), channel_mult_emb=int(kwargs["channel_mult_emb"]))


def module_from_edm_kwargs(edm_kwargs: Mapping[str, Any], remat: bool = False) -> nn.Module:
    """The Flax module of an EDM network's (or preconditioner's) init kwargs, any SongUNet configuration."""
    model_type, kwargs = _full_kwargs(edm_kwargs)
    common = dict(channels=int(kwargs["model_channels"]), channel_mult=kwargs["channel_mult"],
                  num_res_blocks=int(kwargs["num_blocks"]), attn_resolutions=kwargs["attn_resolutions"],
                  dropout=float(kwargs["dropout"]), num_classes=int(kwargs["label_dim"]),
                  augment_dim=int(kwargs["augment_dim"]), channel_mult_emb=int(kwargs["channel_mult_emb"]),
                  remat=remat)
    if model_type == "DhariwalUNet":
        return DhariwalUNet(**common)
    return SongUNet(**common, embedding_type=kwargs["embedding_type"],
                    channel_mult_noise=int(kwargs["channel_mult_noise"]), encoder_type=kwargs["encoder_type"],
                    decoder_type=kwargs["decoder_type"], resample_filter=kwargs["resample_filter"])


def param_shapes(module: nn.Module, data_shape: tuple) -> dict:
    """The params tree of ``module`` for per-example ``data_shape`` (H, W, C), as ShapeDtypeStructs (no compute)."""
    x = jnp.zeros((1, *data_shape), jnp.float32)
    labels = jnp.zeros((1,), jnp.int32) if module.num_classes else None
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}
    return jax.eval_shape(lambda: module.init(rngs, x, jnp.zeros((1,), jnp.float32), labels))["params"]


def _flax_path(key: str, ndim: int) -> tuple[tuple[str, ...] | None, Callable | None]:
    """(Flax param path, torch→Flax array transform) of a torch state-dict key; (None, None) for a resampling-filter
    buffer; raises KeyError for a name this port does not have."""
    parts = key.split(".")
    if parts[0] == "model":            # a preconditioner's state dict: the network is its `model`
        parts = parts[1:]
    if len(parts) >= 2 and parts[0] in ("enc", "dec"):
        parts = [f"{parts[0]}_{parts[1]}"] + parts[2:]
    module, leaf = tuple(parts[:-1]), parts[-1]
    if module == ("map_noise",) and leaf == "freqs" and ndim == 1:
        return ("map_noise_freqs",), lambda a: a
    if leaf == "resample_filter" and ndim == 4:
        return None, None
    if leaf == "weight" and ndim == 4 and module:
        return module + ("conv", "kernel"), lambda a: np.transpose(a, (2, 3, 1, 0))   # OIHW → HWIO
    if leaf == "weight" and ndim == 2 and module:
        return module + ("kernel",), lambda a: np.transpose(a)                        # [out, in] → [in, out]
    if leaf == "weight" and ndim == 1 and module:
        return module + ("scale",), lambda a: a                                       # GroupNorm
    if leaf == "bias" and ndim == 1 and module:
        return module + ("bias",), lambda a: a
    raise KeyError(key)


def torch_key(path: tuple[str, ...]) -> str:
    """The state-dict key (without the preconditioner's ``model.`` prefix) of a Flax param path."""
    parts = list(path)
    if parts == ["map_noise_freqs"]:
        return "map_noise.freqs"
    if parts[0].startswith(("enc_", "dec_")):
        parts = parts[0].split("_", 1) + parts[1:]
    leaf = parts[-1]
    if leaf == "kernel" and len(parts) >= 2 and parts[-2] == "conv":
        parts = parts[:-2] + ["weight"]
    elif leaf in ("kernel", "scale"):
        parts = parts[:-1] + ["weight"]
    return ".".join(parts)


def params_from_state_dict(edm_kwargs: Mapping[str, Any], state_dict: Mapping[str, Any]) -> dict:
    """Flax params of :func:`module_from_edm_kwargs` (``edm_kwargs``) from an EDM network's or preconditioner's
    state dict (name → numpy array, torch layout). Every tensor is used exactly once: a name this port does not
    have, a shape that differs, a parameter the state dict lacks, or a resampling-filter buffer other than the
    configured one is a ValueError naming the first such key. Returns a nested dict of float32 numpy arrays."""
    from flax import traverse_util
    module = module_from_edm_kwargs(edm_kwargs)
    resolution = int(edm_kwargs["img_resolution"])
    channels = int(edm_kwargs.get("img_channels", edm_kwargs.get("in_channels", 3)))
    template = traverse_util.flatten_dict(param_shapes(module, (resolution, resolution, channels)))
    flat = map_state_dict(state_dict, template, getattr(module, "resample_filter", (1, 1)), type(module).__name__)
    return traverse_util.unflatten_dict(flat)


def map_state_dict(state_dict: Mapping[str, Any], template: Mapping[tuple, Any], resample_taps=(1, 1),
                   what: str = "network") -> dict[tuple, np.ndarray]:
    """The checked core of :func:`params_from_state_dict`: torch tensors → {Flax path: float32 array} for the
    flattened param ``template`` (path → anything with ``.shape``)."""
    expected_filter = resample_filter_2d(resample_taps)[None, None]
    flat = {}
    for key in state_dict:
        value = np.asarray(state_dict[key])
        try:
            path, transform = _flax_path(key, value.ndim)
        except KeyError:
            path, transform = (), None
        if path is None:      # a fixed resampling filter: not a parameter, but it must be the configured one
            if value.shape != expected_filter.shape or not np.array_equal(value, expected_filter):
                raise ValueError(f"EDM state dict: {key!r} is not the configured resampling filter "
                                 f"{tuple(resample_taps)}")
            continue
        if path not in template:
            raise ValueError(f"EDM state dict: unknown tensor {key!r} {tuple(value.shape)} for this {what} "
                             "configuration")
        if path in flat:
            raise ValueError(f"EDM state dict: tensor {key!r} given twice (with and without the 'model.' prefix?)")
        array = transform(value).astype(np.float32)
        if array.shape != tuple(template[path].shape):
            raise ValueError(f"EDM state dict: {key!r} has shape {tuple(value.shape)}, the configured {what} needs "
                             f"{_torch_shape(path, template[path].shape)}")
        flat[path] = np.ascontiguousarray(array)
    missing = [path for path in template if path not in flat]
    if missing:
        prefix = "model." if any(str(k).startswith("model.") for k in state_dict) else ""
        raise ValueError(f"EDM state dict: missing tensor {prefix + torch_key(missing[0])!r} "
                         f"{_torch_shape(missing[0], template[missing[0]].shape)} ({len(missing)} missing in all)")
    return flat


def _torch_shape(path: tuple[str, ...], shape) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if path[-1] == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if path[-1] == "kernel" and len(shape) == 2:
        return shape[::-1]
    return shape


def state_dict_from_params(params: Mapping[str, Any], prefix: str = "model.") -> dict[str, np.ndarray]:
    """The inverse of :func:`params_from_state_dict` for the parameters (torch names and layouts, ``prefix`` added;
    the fixed resampling-filter buffers are not parameters and are left out)."""
    from flax import traverse_util
    out = {}
    for path, value in traverse_util.flatten_dict(dict(params)).items():
        value = np.asarray(value)
        if path[-1] == "kernel" and value.ndim == 4:
            value = np.transpose(value, (3, 2, 0, 1))
        elif path[-1] == "kernel" and value.ndim == 2:
            value = value.T
        out[prefix + torch_key(path)] = np.ascontiguousarray(value)
    return out
