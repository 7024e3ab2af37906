"""Discriminator heads on the named inner features of the networks (``net.apply(..., return_features=True)``).

Every head maps ``features`` (a dict name → [B, ...] array, see :class:`~consistency.nets.unet.UNet` and
:class:`~consistency.nets.mlp.MLP`) and optional ``labels`` [B] to logits of shape [B, P]:

* :class:`DiffusionGANHead` — DMD2's classifier on the fake-score U-Net bottleneck, P = 1 (docs/methods.md §10.2);
* :class:`MultiScaleHead` — one small conv head per feature map (Projected GAN / StyleGAN-XL, the discriminator of
  CTM and PaGoDA, docs/methods.md §9, §13.1); its patch logits are *concatenated* (P = all patches of all features),
  as in Projected GAN's ``MultiScaleD`` (sony/ctm ``pg_modules/discriminator.py``), or averaged to P = 1 with
  ``reduce='mean'``;
* :class:`MLPHead` — vector features (toy data), P = 1.

A GAN loss applies its per-logit form (softplus for DMD2, hinge for PaGoDA / CTM) to every entry and averages, which
is what Projected GAN does with its patch logits and DMD2 with its one logit per example.

Class conditioning (``num_classes > 0``) is the projection discriminator (Miyato & Koyama 2018) in the form of
StyleGAN-XL / CTM ``SingleDiscCond``: the head's last layer outputs ``cmap_dim`` channels φ and the logit is
⟨E[y], φ⟩ / √cmap_dim with a learned class embedding E of num_classes + 1 rows (row num_classes is the null label;
``labels=None`` means all null, as in the generator nets). PaGoDA's CFG (seed eq. 56–58) also conditions D on the
guidance scale w: ``guidance`` [B] adds a zero-initialised embedding of w to E[y]. PaGoDA's and CTM's projected StyleGAN-XL-style
discriminator (docs/methods.md §9, §13.1) has this conditional form as an option (sony/ctm ``MultiScaleD(cond=1)`` →
``SingleDiscCond``), for class-conditional ImageNet; DMD2's head has none — the label reaches it through the
fake-score U-Net that computed the bottleneck (tianweiy/DMD2 ``edm_guidance.py``, ``compute_cls_logits``).

Heads hold only 'params': Projected GAN's BatchNorm is replaced by GroupNorm and its spectral norm left out, so a
head is a pure function of (params, features, labels) like the other networks here, with no mutable collections.

    shapes = net.feature_shapes(data_shape)                  # per example, no batch axis
    head = make_head(config.discriminator, shapes)           # (the config block's name is the caller's choice)
    _, feats = net.apply({'params': p}, x, c_noise, labels, return_features=True)
    head_params = head.init(key, feats, labels)['params']
    logits = head.apply({'params': head_params}, feats, labels)            # [B, P]
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from consistency.core.errors import ConfigError
from consistency.nets.embeddings import ConditionEmbedding, batch_noise, default_kernel_init, labels_or_null
from consistency.nets.unet import group_count

GUIDANCE_FEATURES = 32   # sinusoidal features of w − 1 in a guidance-conditioned projection

HEADS = ("dmd2", "multiscale", "mlp")
REDUCTIONS = ("concat", "mean")
LEAKY_SLOPE = 0.2  # Projected GAN DownBlock / DCGAN LeakyReLU slope
TORCH_GROUPNORM_EPS = 1e-5  # DMD2's nn.GroupNorm default


def logit_channels(num_classes: int, cmap_dim: int) -> int:
    """Channels of a head's last layer: 1 logit, or the projection dimension for a class-conditional head."""
    return cmap_dim if num_classes > 0 else 1


class ClassProjection(nn.Module):
    """φ [B, ..., K] → logits [B, ...].

    Unconditional (K = 1): the logit is φ. Conditional: ⟨E[y], φ⟩ / √K, a learned embedding E of num_classes + 1
    rows (projection discriminator, Miyato & Koyama 2018; the 1/√K scale of StyleGAN-XL / CTM ``SingleDiscCond``).
    """

    num_classes: int = 0

    @nn.compact
    def __call__(self, phi: jax.Array, labels: jax.Array | None = None,
                 guidance: jax.Array | None = None) -> jax.Array:
        if self.num_classes == 0:
            if guidance is not None:
                raise ValueError("a guidance-conditioned head projects on (class, w): set num_classes > 0")
            return phi[..., 0]
        batch_size, dim = phi.shape[0], phi.shape[-1]
        class_ids = labels_or_null(labels, batch_size, self.num_classes)
        class_map = nn.Embed(self.num_classes + 1, dim, name="class_embed")(class_ids)
        if guidance is not None:      # D(x, c, w) of PaGoDA's CFG (seed eq. 56–58): the projection E[c] + e(w)
            class_map = class_map + ConditionEmbedding(
                embedding="positional", feature_dim=GUIDANCE_FEATURES, out_dim=dim, zero_output=True,
                name="guidance_embed")(batch_noise(jnp.asarray(guidance, jnp.float32) - 1.0, batch_size))
        class_map = class_map.reshape((batch_size,) + (1,) * (phi.ndim - 2) + (dim,))
        return jnp.sum(phi * class_map, axis=-1) / math.sqrt(dim)


def _check_image_feature(name: str, h: jax.Array, min_size: int = 1) -> None:
    if h.ndim != 4 or min(h.shape[1:3]) < min_size:
        raise ValueError(f"feature {name!r} must be NHWC with H, W >= {min_size}, got shape {h.shape}")


class DiffusionGANHead(nn.Module):
    """DMD2's diffusion-GAN classifier on the fake-score U-Net bottleneck, one logit per example [B, 1]
    (docs/methods.md §10.2; tianweiy/DMD2 ``main/edm/edm_guidance.py``, ``cls_pred_branch``):

        conv4×4 stride 2 pad 1 → GroupNorm → SiLU → conv k×k stride k → GroupNorm → SiLU → conv1×1 → logit

    DMD2 reads an 8×8 map (768 channels): 8×8 → 4×4 → k = 4 → 1×1. Here k is the size left after the first conv, so
    the same layers reduce any bottleneck (2×2 and up) to one logit. Width: the feature's channels (DMD2 keeps 768
    throughout) unless ``channels > 0``. Noising the inputs first (σ from the training grid, the "diffusion GAN") is
    the caller's job. DMD2's code taps the encoder output (``'enc_<coarsest>'``, before the middle blocks); the
    default ``'bottleneck'`` adds the middle block — choose with ``feature_name``.
    """

    feature_name: str = "bottleneck"
    channels: int = 0
    num_groups: int = 32  # DMD2: GroupNorm(32, 768)
    num_classes: int = 0
    cmap_dim: int = 64

    @nn.compact
    def __call__(self, features: dict, labels: jax.Array | None = None,
                 guidance: jax.Array | None = None) -> jax.Array:
        h = features[self.feature_name]
        _check_image_feature(self.feature_name, h, min_size=2)
        width = self.channels or h.shape[-1]

        def norm_silu(h, name):
            return nn.silu(nn.GroupNorm(group_count(width, self.num_groups), epsilon=TORCH_GROUPNORM_EPS, name=name)(h))

        h = nn.Conv(width, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), kernel_init=default_kernel_init,
                    name="conv_down")(h)  # DMD2: 8×8 → 4×4
        h = norm_silu(h, "norm_0")
        window = tuple(h.shape[1:3])
        h = nn.Conv(width, window, strides=window, padding="VALID", kernel_init=default_kernel_init,
                    name="conv_pool")(h)  # DMD2: 4×4 → 1×1 (kernel 4, stride 4)
        h = norm_silu(h, "norm_1")
        phi = nn.Conv(logit_channels(self.num_classes, self.cmap_dim), (1, 1), kernel_init=default_kernel_init,
                      name="conv_logit")(h)  # [B, 1, 1, K]
        return ClassProjection(self.num_classes, name="projection")(phi, labels, guidance).reshape(h.shape[0], 1)


class PatchHead(nn.Module):
    """One feature map [B, H, W, C] → patch logits [B, P]: Projected GAN's ``SingleDisc`` (Sauer et al. 2021;
    sony/ctm ``pg_modules/discriminator.py`` with a fixed width ``ndf``):

        while max(H, W) > end_size:  conv4×4 stride 2 pad 1 → GroupNorm → LeakyReLU(0.2)     (``DownBlock``)
        conv min(4, H)×min(4, W), valid, no bias → logit channels                              (CTM: 8×8 → 5×5 patches)

    GroupNorm stands in for the BatchNorm of ``DownBlock``, spectral norm is left out (module docstring).
    """

    channels: int = 0  # 0 → the input's channels
    end_size: int = 8  # CTM ``end_sz``
    num_groups: int = 32
    num_classes: int = 0
    cmap_dim: int = 64

    @nn.compact
    def __call__(self, h: jax.Array, labels: jax.Array | None = None,
                 guidance: jax.Array | None = None) -> jax.Array:
        width = self.channels or h.shape[-1]
        block = 0
        while max(h.shape[1:3]) > self.end_size:
            h = nn.Conv(width, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), kernel_init=default_kernel_init,
                        name=f"down_{block}")(h)
            h = nn.GroupNorm(group_count(width, self.num_groups), epsilon=TORCH_GROUPNORM_EPS, name=f"norm_{block}")(h)
            h = nn.leaky_relu(h, LEAKY_SLOPE)
            block += 1
        window = (min(4, h.shape[1]), min(4, h.shape[2]))
        phi = nn.Conv(logit_channels(self.num_classes, self.cmap_dim), window, padding="VALID", use_bias=False,
                      kernel_init=default_kernel_init, name="conv_logit")(h)
        return ClassProjection(self.num_classes, name="projection")(phi, labels, guidance).reshape(h.shape[0], -1)


class MultiScaleHead(nn.Module):
    """A :class:`PatchHead` per named feature map (Projected GAN ``MultiScaleD``; the StyleGAN-XL-style projected
    discriminator of CTM and PaGoDA, docs/methods.md §9, §13.1). ``reduce='concat'``: all patch logits side by side,
    [B, Σ P_f] (Projected GAN, CTM); ``'mean'``: each feature's mean patch logit, averaged over features, [B, 1].
    Sub-heads are named ``head_<feature>``.
    """

    feature_names: tuple = ("bottleneck",)
    channels: int = 0
    end_size: int = 8
    num_groups: int = 32
    num_classes: int = 0
    cmap_dim: int = 64
    reduce: str = "concat"

    @nn.compact
    def __call__(self, features: dict, labels: jax.Array | None = None,
                 guidance: jax.Array | None = None) -> jax.Array:
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {self.reduce!r}")
        per_feature = []
        for name in self.feature_names:
            _check_image_feature(name, features[name])
            per_feature.append(PatchHead(self.channels, self.end_size, self.num_groups, self.num_classes,
                                         self.cmap_dim, name=f"head_{name}")(features[name], labels, guidance))
        if self.reduce == "mean":
            return jnp.mean(jnp.stack([logits.mean(axis=1) for logits in per_feature], axis=1), axis=1, keepdims=True)
        return jnp.concatenate(per_feature, axis=1)


class MLPHead(nn.Module):
    """Vector features [B, D] (toy data) → one logit per example [B, 1]: the named features concatenated, then
    ``depth`` × (Dense(width) → LeakyReLU(0.2)) and a linear logit (an MLP discriminator, Goodfellow et al. 2014;
    LeakyReLU 0.2 as in DCGAN, Radford et al. 2016), projection-conditional when ``num_classes > 0``.
    """

    feature_names: tuple = ("bottleneck",)
    width: int = 0  # 0 → the concatenated features' width
    depth: int = 2
    num_classes: int = 0
    cmap_dim: int = 64

    @nn.compact
    def __call__(self, features: dict, labels: jax.Array | None = None,
                 guidance: jax.Array | None = None) -> jax.Array:
        for name in self.feature_names:
            if features[name].ndim != 2:
                raise ValueError(f"feature {name!r} must be [B, D], got shape {features[name].shape}")
        h = jnp.concatenate([features[name] for name in self.feature_names], axis=-1)
        width = self.width or h.shape[-1]
        for i in range(self.depth):
            h = nn.leaky_relu(nn.Dense(width, kernel_init=default_kernel_init, name=f"dense_{i}")(h), LEAKY_SLOPE)
        phi = nn.Dense(logit_channels(self.num_classes, self.cmap_dim), kernel_init=default_kernel_init,
                       name="dense_logit")(h)
        return ClassProjection(self.num_classes, name="projection")(phi, labels, guidance).reshape(h.shape[0], 1)


# ----------------------------------------------------------------------------------------------
# Config

def default_head_config() -> ml_collections.ConfigDict:
    """Every field :func:`make_head` reads, with its default (a block for the caller's config schema)."""
    h = ml_collections.ConfigDict()
    h.name = "dmd2"          # 'dmd2' (DMD2 bottleneck classifier) | 'multiscale' (Projected GAN, PaGoDA) | 'mlp'
    h.features = ()          # feature names; () → dmd2/mlp: ('bottleneck',), multiscale: every image feature
    h.channels = 0           # head width; 0 → the input feature's width (DMD2 keeps 768 throughout)
    h.num_groups = 32        # GroupNorm groups cap, min(C/4, num_groups) (DMD2: 32)
    h.end_size = 8           # multiscale: downsample each map to <= end_size, then a 4×4 logit conv (CTM: 8)
    h.depth = 2              # mlp: hidden layers
    h.num_classes = 0        # > 0: projection-conditional on labels (PaGoDA / CTM on ImageNet); DMD2: 0
    h.cmap_dim = 64          # projection dimension of a conditional head (StyleGAN-XL / CTM: 64)
    h.reduce = "concat"      # multiscale: 'concat' patch logits (Projected GAN, CTM) | 'mean' (one per example)
    return h


def _head_error(prefix: str, field: str, message: str) -> ConfigError:
    return ConfigError(f"config.{prefix}.{field}: {message}")


def head_feature_names(head_config, feature_shapes: dict) -> tuple[str, ...]:
    """The features a head reads: ``head_config.features``, or the head's default when empty."""
    names = tuple(head_config.features)
    if names:
        return names
    if head_config.name == "multiscale":
        return tuple(name for name, shape in feature_shapes.items() if len(shape) == 3)
    return ("bottleneck",)


def validate_head_config(head_config, feature_shapes: dict, prefix: str = "discriminator") -> None:
    """Raise ConfigError (one line, ``config.<prefix>.<field>: ...``) for a head that cannot work on
    ``feature_shapes`` (name → per-example shape, e.g. ``net.feature_shapes(data_shape)``)."""
    if head_config.name not in HEADS:
        raise _head_error(prefix, "name", f"must be one of {HEADS}, got {head_config.name!r}")
    for field, minimum in (("channels", 0), ("num_groups", 1), ("end_size", 1), ("depth", 0), ("num_classes", 0),
                           ("cmap_dim", 1)):
        value = head_config[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _head_error(prefix, field, f"must be an integer >= {minimum}, got {value!r}")
    if head_config.reduce not in REDUCTIONS:
        raise _head_error(prefix, "reduce", f"must be one of {REDUCTIONS}, got {head_config.reduce!r}")
    names = head_feature_names(head_config, feature_shapes)
    if not names:
        raise _head_error(prefix, "features", f"no image features among {sorted(feature_shapes)}; name some")
    missing = [name for name in names if name not in feature_shapes]
    if missing:
        raise _head_error(prefix, "features", f"{missing} not produced by the network; choose from "
                                              f"{sorted(feature_shapes)}")
    rank = 1 if head_config.name == "mlp" else 3
    for name in names:
        shape = tuple(feature_shapes[name])
        if len(shape) != rank:
            kind = "vector features (d,)" if rank == 1 else "image features (H, W, C)"
            raise _head_error(prefix, "features", f"head {head_config.name!r} needs {kind}; {name!r} has shape {shape}")
    if head_config.name == "dmd2":
        if len(names) != 1:
            raise _head_error(prefix, "features", f"the dmd2 head reads one feature map, got {names}")
        if min(feature_shapes[names[0]][:2]) < 2:
            raise _head_error(prefix, "features", f"the dmd2 head needs a map of at least 2×2, "
                                                  f"{names[0]!r} is {feature_shapes[names[0]]}")


def make_head(head_config, feature_shapes: dict, prefix: str = "discriminator") -> nn.Module:
    """Build the head named by ``head_config.name`` (fields: :func:`default_head_config`) for features of
    ``feature_shapes``. ConfigError (one line naming ``config.<prefix>.<field>``) for a head that cannot work."""
    validate_head_config(head_config, feature_shapes, prefix)
    names = head_feature_names(head_config, feature_shapes)
    common = dict(num_classes=int(head_config.num_classes), cmap_dim=int(head_config.cmap_dim))
    if head_config.name == "dmd2":
        return DiffusionGANHead(feature_name=names[0], channels=int(head_config.channels),
                                num_groups=int(head_config.num_groups), **common)
    if head_config.name == "multiscale":
        return MultiScaleHead(feature_names=names, channels=int(head_config.channels),
                              end_size=int(head_config.end_size), num_groups=int(head_config.num_groups),
                              reduce=head_config.reduce, **common)
    return MLPHead(feature_names=names, width=int(head_config.channels), depth=int(head_config.depth), **common)
