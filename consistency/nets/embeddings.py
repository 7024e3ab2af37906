"""Noise-level (and class-label) embeddings shared by the MLP and the U-Net.

A network receives the *preconditioned* noise input ``c_noise`` (shape [B], e.g. ¼·ln σ for EDM/NCSN++;
docs/methods.md §1.1 table) and turns it into features in two stages:

1. fixed sinusoidal features of ``c_noise``: Gaussian random Fourier features (NCSN++) or the
   Transformer/DDPM positional embedding (DDPM++); no trainable parameters;
2. an optional learned class embedding added to those features, then a 2-layer SiLU MLP.

The positional embedding was designed for integer timesteps in [0, 1000); it resolves small inputs
such as ¼·ln σ ∈ [−1.6, 1.1] poorly, which is why the papers scale c_noise by 1000 or 250 for it
(docs/methods.md §1.1). Choosing c_noise is the caller's job.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

EMBEDDINGS = ("fourier", "positional")

# DDPM (Ho et al. 2020) / NCSN++ default initialiser: variance scaling, fan_avg, uniform.
default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")


def fourier_frequencies(num_frequencies: int, scale: float, seed: int = 0) -> np.ndarray:
    """Fixed Gaussian random frequencies b_k ~ N(0, scale²) (NCSN++, Song et al. 2021, App. H;
    random Fourier features, Tancik et al. 2020).

    Drawn with numpy from a fixed seed, so they are compile-time constants, the same in every
    instance and never part of ``params`` (no optimizer or weight decay can move them).
    """
    return (np.random.default_rng(seed).standard_normal(num_frequencies) * scale).astype(np.float32)


def fourier_features(c_noise: jax.Array, frequencies: np.ndarray) -> jax.Array:
    """[sin(2π c b_k), cos(2π c b_k)]_k, shape [B, 2K] (NCSN++ GaussianFourierProjection)."""
    angles = 2.0 * math.pi * c_noise[:, None].astype(jnp.float32) * jnp.asarray(frequencies)[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def positional_features(c_noise: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding of DDPM (Ho et al. 2020; Vaswani et al. 2017 §3.5), shape [B, dim].

    ω_k = max_period^(−k/(K−1)), k = 0..K−1, K = dim/2;  features [sin(c ω_k), cos(c ω_k)].
    """
    if dim % 2 or dim < 4:
        raise ValueError(f"positional embedding needs an even dim >= 4, got {dim}")
    half = dim // 2
    omegas = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float64) / (half - 1)).astype(np.float32)
    angles = c_noise[:, None].astype(jnp.float32) * jnp.asarray(omegas)[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def noise_features(c_noise: jax.Array, embedding: str, dim: int, fourier_scale: float) -> jax.Array:
    """``dim`` fixed features of c_noise: 'fourier' (dim/2 random frequencies) or 'positional'."""
    if embedding == "fourier":
        if dim % 2:
            raise ValueError(f"Fourier embedding needs an even dim, got {dim}")
        return fourier_features(c_noise, fourier_frequencies(dim // 2, fourier_scale))
    if embedding == "positional":
        return positional_features(c_noise, dim)
    raise ValueError(f"unknown embedding {embedding!r}; choose one of {EMBEDDINGS}")


def batch_noise(c_noise: jax.Array, batch_size: int) -> jax.Array:
    """c_noise as float32 [B]; a scalar or [1] input is broadcast to the batch."""
    c_noise = jnp.asarray(c_noise, jnp.float32)
    if c_noise.ndim > 1 or c_noise.size not in (1, batch_size):
        raise ValueError(f"c_noise must have shape [{batch_size}] (or be a scalar), got {c_noise.shape}")
    return jnp.broadcast_to(jnp.reshape(c_noise, (-1,)), (batch_size,))


def labels_or_null(labels: jax.Array | None, batch_size: int, num_classes: int) -> jax.Array:
    """Class labels, with ``None`` meaning "all null": the null label for CFG is ``num_classes``."""
    if labels is None:
        return jnp.full((batch_size,), num_classes, dtype=jnp.int32)
    return jnp.asarray(labels, dtype=jnp.int32)


class ConditionEmbedding(nn.Module):
    """c_noise [B] (+ labels [B]) → embedding [B, out_dim].

    features = noise_features(c_noise) (+ Embed(num_classes + 1)(label), EDM's DDPM++ adds the label
    before the MLP), then Dense(out_dim) → SiLU → Dense(out_dim) (NCSN++/DDPM++ "temb" MLP).
    Blocks that consume the embedding apply SiLU to it first.
    """

    embedding: str = "fourier"
    feature_dim: int = 128
    out_dim: int = 512
    fourier_scale: float = 16.0
    num_classes: int = 0
    zero_output: bool = False    # zero-initialised last layer: the embedding starts as 0 (an added condition that
                                 # leaves a network copied from a teacher unchanged at initialisation)

    @nn.compact
    def __call__(self, c_noise: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        c_noise = jnp.reshape(jnp.asarray(c_noise, jnp.float32), (-1,))  # [B]; see batch_noise
        features = noise_features(c_noise, self.embedding, self.feature_dim, self.fourier_scale)
        if self.num_classes > 0:
            # num_classes + 1 rows: row num_classes is the learned null label (classifier-free guidance).
            labels = labels_or_null(labels, c_noise.shape[0], self.num_classes)
            features = features + nn.Embed(self.num_classes + 1, self.feature_dim, name="label_embed")(labels)
        h = nn.Dense(self.out_dim, kernel_init=default_kernel_init, name="dense_0")(features)
        last_init = nn.initializers.zeros if self.zero_output else default_kernel_init
        return nn.Dense(self.out_dim, kernel_init=last_init, name="dense_1")(nn.silu(h))


def target_level_embedding(module: nn.Module, c_noise_target, batch_size: int, feature_dim: int, out_dim: int):
    """The embedding of a second noise level (CTM's s of G(x_t, t, s): docs/methods.md §13.1), added to the level
    embedding: ``0`` when ``c_noise_target`` is None. Its own sinusoidal features and MLP ('target_embed'), last
    layer zero-initialised, so a network whose other weights come from a one-level teacher starts as that teacher."""
    if c_noise_target is None:
        return 0.0
    return ConditionEmbedding(embedding=module.embedding, feature_dim=feature_dim, out_dim=out_dim,
                              fourier_scale=module.fourier_scale, zero_output=True,
                              name="target_embed")(batch_noise(c_noise_target, batch_size))


def guidance_embedding(module: nn.Module, guidance, batch_size: int, feature_dim: int, out_dim: int):
    """The embedding of a guidance scale w (PaGoDA's G(z, c, w) and D(x, c, w), seed eq. 56–58), added to the level
    embedding: ``0`` when ``guidance`` is None. Sinusoidal features of w − 1 (smooth over the few units w spans), its
    own MLP ('guidance_embed'), last layer zero-initialised, so a network copied from an unguided teacher starts as
    that teacher at every w."""
    if guidance is None:
        return 0.0
    return ConditionEmbedding(embedding="positional", feature_dim=feature_dim, out_dim=out_dim, zero_output=True,
                              name="guidance_embed")(batch_noise(jnp.asarray(guidance, jnp.float32) - 1.0, batch_size))


class AdaptiveWeight(nn.Module):
    """w_φ(t) [B]: sCM's adaptive loss weighting (Lu & Song 2024 §4.2; EDM2's uncertainty weighting, Karras et al.
    2024): fixed Fourier features of t → Dense(width) → SiLU → Dense(1). The last layer starts at zero, so w = 0
    (weight e⁰ = 1) until the loss moves it."""

    width: int = 128
    num_frequencies: int = 64
    fourier_scale: float = 1.0

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        h = fourier_features(jnp.asarray(t, jnp.float32), fourier_frequencies(self.num_frequencies,
                                                                               self.fourier_scale, seed=1))
        h = nn.silu(nn.Dense(self.width, kernel_init=default_kernel_init, name="dense_0")(h))
        return nn.Dense(1, kernel_init=nn.initializers.zeros, name="dense_out")(h)[:, 0]
