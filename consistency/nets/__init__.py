"""Flax networks F_θ(x, c_noise, labels=None, train=False) -> same shape as x.

Every net takes the *preconditioned* inputs (c_in·x and c_noise, EDM Table 1); the caller applies
c_skip / c_out (consistency/diffusion). ``labels == num_classes`` (or ``labels=None``) is the null
label for classifier-free guidance. Dropout uses the flax rng collection 'dropout', only when train.

    net = make_net(config.model, data_shape=(8, 8, 1))
    params = net.init({'params': key}, x, c_noise)['params']
    F = net.apply({'params': params}, x, c_noise, labels, train=True, rngs={'dropout': key})

Inner features for discriminators (names and shapes: ``net.feature_shapes(data_shape)``; heads in ``heads.py``):

    F, features = net.apply({'params': params}, x, c_noise, labels, return_features=True)
    features = net.apply({'params': params}, x, c_noise, labels, encoder_only=True)   # U-Net: no decoder pass
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from consistency.core.errors import ConfigError
from consistency.nets.edm_networks import ARCHS as EDM_ARCHS
from consistency.nets.edm_networks import DhariwalUNet, SongUNet
from consistency.nets.embeddings import (EMBEDDINGS, ConditionEmbedding, fourier_features, fourier_frequencies,
                                         noise_features, positional_features)
from consistency.nets.heads import (DiffusionGANHead, MLPHead, MultiScaleHead, default_head_config, make_head,
                                    validate_head_config)
from consistency.nets.mlp import MLP
from consistency.nets.unet import RESAMPLE_METHODS, AttentionBlock, ResBlock, UNet, level_resolutions

__all__ = ["MLP", "UNet", "SongUNet", "DhariwalUNet", "ResBlock", "AttentionBlock", "ConditionEmbedding", "make_net", "validate_model_config",
           "param_count", "fourier_features", "fourier_frequencies", "positional_features", "noise_features",
           "DiffusionGANHead", "MultiScaleHead", "MLPHead", "make_head", "validate_head_config", "default_head_config"]


def param_count(params: Any) -> int:
    """Total number of scalars in a parameter pytree."""
    return int(sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(params)))


NET_NAMES = ("unet", "mlp", "ddpmpp", "ncsnpp", "adm")   # the last three: EDM's networks (edm_networks.py)


def _model_error(field: str, message: str) -> ConfigError:
    return ConfigError(f"config.model.{field}: {message}")


def _read(model_config, field: str):
    """``model_config.<field>``; a missing field is a ConfigError, since the schema (base_config) defines them all."""
    try:
        return model_config[field]
    except (KeyError, TypeError, AttributeError):
        pass
    if hasattr(model_config, field):
        return getattr(model_config, field)
    raise _model_error(field, "missing; build the config from consistency.config.base_config(), which defines "
                              "every model field with its default")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_int(model_config, field: str, minimum: int, hint: str = "") -> int:
    value = _read(model_config, field)
    if not _is_int(value) or value < minimum:
        raise _model_error(field, f"must be an integer >= {minimum}, got {value!r}" + (f"; {hint}" if hint else ""))
    return int(value)


def _check_int_tuple(model_config, field: str, minimum: int, allow_empty: bool, hint: str) -> tuple[int, ...]:
    value = _read(model_config, field)
    if not isinstance(value, (tuple, list)) or not all(_is_int(v) and v >= minimum for v in value) \
            or (not value and not allow_empty):
        raise _model_error(field, f"must be a {'' if allow_empty else 'non-empty '}tuple of integers >= {minimum}, "
                                  f"got {value!r}; {hint}")
    return tuple(int(v) for v in value)


def _check_common_fields(m) -> None:
    name = _read(m, "name")
    if name not in NET_NAMES:
        raise _model_error("name", f"must be one of {', '.join(repr(n) for n in NET_NAMES)}, got {name!r}")
    embedding = _read(m, "embedding")
    if embedding not in EMBEDDINGS:
        raise _model_error("embedding", f"must be one of {EMBEDDINGS}, got {embedding!r}")
    dropout = _read(m, "dropout")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise _model_error("dropout", f"must be in [0, 1), got {dropout!r}")
    _check_int(m, "num_classes", 0, "0 for an unconditional net")
    scale = _read(m, "fourier_scale")
    if embedding == "fourier" and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                                   or not 0.0 < scale < math.inf):
        raise _model_error("fourier_scale", f"must be a finite number > 0, got {scale!r} "
                                            "(NCSN++: 16, iCT: 0.02)")


def _check_unet_fields(m) -> None:
    channels = _check_int(m, "channels", 1, "the U-Net base width (CIFAR-10 papers: 128)")
    _check_int_tuple(m, "channel_mult", 1, allow_empty=False, hint="one width multiplier per resolution, e.g. (1, 2)")
    _check_int(m, "num_res_blocks", 1)
    _check_int_tuple(m, "attn_resolutions", 1, allow_empty=True, hint="image sizes that get attention, e.g. (16,)")
    resample = _read(m, "resample")
    if resample not in RESAMPLE_METHODS:
        raise _model_error("resample", f"must be one of {RESAMPLE_METHODS}, got {resample!r}")
    _check_int(m, "num_groups", 1, "the GroupNorm group cap (NCSN++: 32)")
    if not isinstance(_read(m, "mid_attention"), (bool, np.bool_)):
        raise _model_error("mid_attention", f"must be True or False, got {_read(m, 'mid_attention')!r}")
    if _read(m, "embedding") == "positional" and (channels % 2 or channels < 4):
        raise _model_error("channels", f"the positional embedding has `channels` features, which must be even "
                                       f"and >= 4, got {channels}")


def _check_edm_fields(m) -> None:
    """EDM's DDPM++ / NCSN++ / ADM: the U-Net fields that apply (embedding, resampling and GroupNorm are fixed by
    the architecture, NVlabs/edm train.py) plus ``augment_dim`` and ``channel_mult_emb``."""
    _check_int(m, "channels", 4, "EDM model_channels (DDPM++/NCSN++ CIFAR-10: 128, ADM ImageNet-64: 192)")
    _check_int_tuple(m, "channel_mult", 1, allow_empty=False, hint="EDM channel_mult, e.g. (2, 2, 2)")
    _check_int(m, "num_res_blocks", 1, "EDM num_blocks (DDPM++/NCSN++: 4, ADM: 3)")
    _check_int_tuple(m, "attn_resolutions", 1, allow_empty=True, hint="EDM attn_resolutions, e.g. (16,)")
    _check_int(m, "augment_dim", 0, "EDM's augmentation-label size: 9 with --augment, else 0")
    _check_int(m, "channel_mult_emb", 1, "EDM's embedding width multiplier (4)")
    channels = int(_read(m, "channels"))
    widths = [channels] + [channels * int(v) for v in _read(m, "channel_mult")]
    if _read(m, "name") != "adm" and channels % 2:
        raise _model_error("channels", f"must be even (the noise embedding has `channels` features), got {channels}")
    bad = [w for w in widths if w // min(32, w // 4) * min(32, w // 4) != w]
    if bad:
        raise _model_error("channels", f"width {bad[0]} is not divisible into EDM's min(32, C/4) GroupNorm groups; "
                                       "use a multiple of 4 (and of 128 above 128)")


def _check_mlp_fields(m) -> None:
    _check_int(m, "hidden", 1, "the MLP width")
    _check_int(m, "depth", 1, "the number of residual layers (0 would leave no hidden layer to learn with)")
    embed_dim = _check_int(m, "embed_dim", 2, "the number of sinusoidal noise features")
    smallest = 4 if _read(m, "embedding") == "positional" else 2
    if embed_dim % 2 or embed_dim < smallest:
        raise _model_error("embed_dim", f"must be even and >= {smallest} for the {_read(m, 'embedding')} "
                                        f"embedding, got {embed_dim}")


def _check_data_shape(m, data_shape: tuple) -> None:
    if _read(m, "name") == "mlp":
        if len(data_shape) != 1:
            raise _model_error("name", f"'mlp' needs vector data (d,), got data shape {data_shape}; use 'unet' for "
                                       "images")
        return
    if len(data_shape) != 3 or data_shape[0] != data_shape[1]:
        raise _model_error("name", f"{_read(m, 'name')!r} needs square images (H, W, C), got data shape "
                                   f"{data_shape}; use 'mlp' for vector data")
    try:
        sizes = level_resolutions(data_shape[0], len(_read(m, "channel_mult")))
    except ValueError as e:
        raise _model_error("channel_mult", str(e)) from None
    attn = tuple(int(r) for r in _read(m, "attn_resolutions"))
    if not set(attn) <= set(sizes):
        raise _model_error("attn_resolutions", f"{attn} not all among the U-Net resolutions {sizes}; pick from them")


def validate_model_config(model_config, data_shape: tuple | None = None) -> None:
    """Raise ConfigError, one line ``config.model.<field>: <problem>; <fix>``, for any value ``make_net`` cannot
    use. Checks the common fields and those of the chosen net; with ``data_shape`` (per example, e.g. (32, 32, 3)
    or (2,)) also that the net fits the data. Builds nothing, so it can run before any compile."""
    _check_common_fields(model_config)
    if _read(model_config, "name") == "unet":
        _check_unet_fields(model_config)
    elif _read(model_config, "name") in EDM_ARCHS:
        _check_edm_fields(model_config)
    else:
        _check_mlp_fields(model_config)
    if data_shape is not None:
        _check_data_shape(model_config, tuple(int(s) for s in data_shape))


def _make_unet(m) -> UNet:
    return UNet(channels=int(m.channels), channel_mult=tuple(int(v) for v in m.channel_mult),
                num_res_blocks=int(m.num_res_blocks), attn_resolutions=tuple(int(r) for r in m.attn_resolutions),
                dropout=float(m.dropout), embedding=m.embedding, fourier_scale=float(m.fourier_scale),
                num_classes=int(m.num_classes), num_groups=int(m.num_groups), resample=m.resample,
                mid_attention=bool(m.mid_attention), remat=bool(m.get("remat", False)))


def _make_mlp(m) -> MLP:
    return MLP(hidden=int(m.hidden), depth=int(m.depth), num_classes=int(m.num_classes), embedding=m.embedding,
               fourier_scale=float(m.fourier_scale), embed_dim=int(m.embed_dim), dropout=float(m.dropout))


def _make_edm(m) -> nn.Module:
    """EDM's network ``m.name`` ('ddpmpp' | 'ncsnpp' | 'adm') with the configuration NVlabs/edm train.py gives it."""
    common = dict(channels=int(m.channels), channel_mult=tuple(int(v) for v in m.channel_mult),
                  num_res_blocks=int(m.num_res_blocks), attn_resolutions=tuple(int(r) for r in m.attn_resolutions),
                  dropout=float(m.dropout), num_classes=int(m.num_classes), augment_dim=int(m.get("augment_dim", 0)),
                  channel_mult_emb=int(m.get("channel_mult_emb", 4)), remat=bool(m.get("remat", False)))
    if m.name == "adm":
        return DhariwalUNet(**common)
    arch = {k: v for k, v in EDM_ARCHS[m.name].items() if k != "model_type"}
    return SongUNet(**common, **arch, fourier_scale=float(m.fourier_scale))


def make_net(model_config, data_shape: tuple) -> nn.Module:
    """Build the network named by ``config.model.name`` ('unet' | 'mlp' | EDM's 'ddpmpp' | 'ncsnpp' | 'adm') for
    per-example ``data_shape``.

    Every field comes from the config schema (``consistency.config.base_config``); a bad or missing value is a
    ConfigError naming the field (:func:`validate_model_config`).
    """
    validate_model_config(model_config, data_shape)
    if model_config.name in EDM_ARCHS:
        return _make_edm(model_config)
    return _make_unet(model_config) if model_config.name == "unet" else _make_mlp(model_config)
