"""Flax networks F_θ(x, c_noise, labels=None, train=False) -> same shape as x.

Every net takes the *preconditioned* inputs (c_in·x and c_noise, EDM Table 1); the caller applies
c_skip / c_out (consistency/diffusion). ``labels == num_classes`` (or ``labels=None``) is the null
label for classifier-free guidance. Dropout uses the flax rng collection 'dropout', only when train.

    net = make_net(config.model, data_shape=(8, 8, 1))
    params = net.init({'params': key}, x, c_noise)['params']
    F = net.apply({'params': params}, x, c_noise, labels, train=True, rngs={'dropout': key})
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from consistency.config import ConfigError
from consistency.nets.embeddings import (EMBEDDINGS, ConditionEmbedding, fourier_features, fourier_frequencies,
                                         noise_features, positional_features)
from consistency.nets.mlp import MLP
from consistency.nets.unet import RESAMPLE_METHODS, AttentionBlock, ResBlock, UNet, level_resolutions

__all__ = ["MLP", "UNet", "ResBlock", "AttentionBlock", "ConditionEmbedding", "make_net", "param_count",
           "fourier_features", "fourier_frequencies", "positional_features", "noise_features"]


def param_count(params: Any) -> int:
    """Total number of scalars in a parameter pytree."""
    return int(sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(params)))


def _field(model_config, name: str, default):
    """A model field, or ``default`` for optional fields not in the config schema."""
    return model_config.get(name, default) if hasattr(model_config, "get") else getattr(model_config, name, default)


def _check_common(model_config) -> None:
    if model_config.embedding not in EMBEDDINGS:
        raise ConfigError(f"config.model.embedding: must be one of {EMBEDDINGS}, got {model_config.embedding!r}")
    if not 0.0 <= model_config.dropout < 1.0:
        raise ConfigError(f"config.model.dropout: must be in [0, 1), got {model_config.dropout}")
    if model_config.num_classes < 0:
        raise ConfigError(f"config.model.num_classes: must be >= 0, got {model_config.num_classes}")


def _make_unet(m, data_shape: tuple) -> UNet:
    if len(data_shape) != 3 or data_shape[0] != data_shape[1]:
        raise ConfigError(f"config.model.name: 'unet' needs square images (H, W, C), got data shape {data_shape}; "
                          "use 'mlp' for vector data")
    mults = tuple(int(v) for v in m.channel_mult)
    if not mults or m.channels <= 0 or m.num_res_blocks < 1:
        raise ConfigError(f"config.model: need channels > 0, num_res_blocks >= 1 and a non-empty channel_mult, "
                          f"got {m.channels}, {m.num_res_blocks}, {mults}")
    try:
        sizes = level_resolutions(int(data_shape[0]), len(mults))
    except ValueError as e:
        raise ConfigError(f"config.model.channel_mult: {e}") from None
    attn = tuple(int(r) for r in m.attn_resolutions)
    if not set(attn) <= set(sizes):
        raise ConfigError(f"config.model.attn_resolutions: {attn} not all among the U-Net resolutions {sizes}")
    resample = _field(m, "resample", "nearest")
    if resample not in RESAMPLE_METHODS:
        raise ConfigError(f"config.model.resample: must be one of {RESAMPLE_METHODS}, got {resample!r}")
    return UNet(channels=int(m.channels), channel_mult=mults, num_res_blocks=int(m.num_res_blocks),
                attn_resolutions=attn, dropout=float(m.dropout), embedding=m.embedding,
                fourier_scale=float(m.fourier_scale), num_classes=int(m.num_classes),
                num_groups=int(_field(m, "num_groups", 32)), resample=resample,
                mid_attention=bool(_field(m, "mid_attention", True)))


def _make_mlp(m, data_shape: tuple) -> MLP:
    if len(data_shape) != 1:
        raise ConfigError(f"config.model.name: 'mlp' needs vector data (d,), got data shape {data_shape}; "
                          "use 'unet' for images")
    if m.hidden <= 0 or m.depth < 0:
        raise ConfigError(f"config.model: need hidden > 0 and depth >= 0, got {m.hidden} and {m.depth}")
    return MLP(hidden=int(m.hidden), depth=int(m.depth), num_classes=int(m.num_classes), embedding=m.embedding,
               fourier_scale=float(m.fourier_scale), embed_dim=int(_field(m, "embed_dim", 128)),
               dropout=float(m.dropout))


def make_net(model_config, data_shape: tuple) -> nn.Module:
    """Build the network named by ``config.model.name`` ('unet' | 'mlp') for per-example ``data_shape``.

    Raises ConfigError (one line naming the field) for shapes or fields that cannot work.
    Optional fields outside the base schema: ``num_groups`` (32), ``resample`` ('nearest'),
    ``mid_attention`` (True) for the U-Net; ``embed_dim`` (128) for the MLP.
    """
    data_shape = tuple(int(s) for s in data_shape)
    _check_common(model_config)
    if model_config.name == "unet":
        return _make_unet(model_config, data_shape)
    if model_config.name == "mlp":
        return _make_mlp(model_config, data_shape)
    raise ConfigError(f"config.model.name: must be 'unet' or 'mlp', got {model_config.name!r}")
