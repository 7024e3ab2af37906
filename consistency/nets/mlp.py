"""A residual SiLU MLP with a noise-level embedding, for 1-D / 2-D toy data (x of shape [B, d])."""
from __future__ import annotations

import flax.linen as nn
import jax

from consistency.nets.embeddings import (ConditionEmbedding, batch_noise, default_kernel_init,
                                         guidance_embedding, target_level_embedding)


class MLP(nn.Module):
    """F_θ(x, c_noise, label) for toy data; the output has x's shape [B, d].

    Layout (a pre-activation residual MLP; the embedding is injected in every layer):
        e = ConditionEmbedding(c_noise, label)                     [B, hidden]
          (+ target_embed(c_noise_target): CTM's second level s, zero at init)
          (+ guidance_embed(w): PaGoDA's guidance scale, zero at init)
        h = Dense(hidden)(x)
        depth ×:  h ← h + Dropout(Dense(hidden)(SiLU(h + e)))
        F = Dense(d)(SiLU(h))

    ``embed_dim`` is the number of fixed sinusoidal features of c_noise (Fourier: embed_dim/2
    frequencies of scale ``fourier_scale``). With ``num_classes > 0`` the label ``num_classes`` (or
    ``labels=None``) is the null label for classifier-free guidance; with ``num_classes == 0`` labels
    are ignored. Dropout draws from the 'dropout' rng collection and is active only when ``train``.

    Named inner features ([B, hidden] each; for heads in consistency/nets/heads.py): ``'input_proj'`` = Dense(x),
    ``'hidden_i'`` = h after residual layer i (params ``dense_i``), i = 0..depth−1, and ``'bottleneck'`` = the last
    of these, the state the output layer reads. ``return_features=True`` returns ``(F, features)``;
    ``encoder_only=True`` returns only ``features`` (no output layer). Neither changes the params or F.
    """

    hidden: int = 256
    depth: int = 4
    num_classes: int = 0
    embedding: str = "fourier"
    fourier_scale: float = 16.0
    embed_dim: int = 128
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, c_noise: jax.Array, labels: jax.Array | None = None, train: bool = False,
                 return_features: bool = False, encoder_only: bool = False, c_noise_target: jax.Array | None = None,
                 guidance: jax.Array | None = None):
        if x.ndim != 2:
            raise ValueError(f"MLP expects x of shape [B, d], got {x.shape}")
        batch_size, data_dim = x.shape
        e = ConditionEmbedding(embedding=self.embedding, feature_dim=self.embed_dim, out_dim=self.hidden,
                               fourier_scale=self.fourier_scale, num_classes=self.num_classes,
                               name="embed")(batch_noise(c_noise, batch_size), labels)
        e = e + target_level_embedding(self, c_noise_target, batch_size, self.embed_dim, self.hidden)
        e = e + guidance_embedding(self, guidance, batch_size, self.embed_dim, self.hidden)
        h = nn.Dense(self.hidden, kernel_init=default_kernel_init, name="dense_in")(x)
        features = {"input_proj": h}
        for i in range(self.depth):
            r = nn.Dense(self.hidden, kernel_init=default_kernel_init, name=f"dense_{i}")(nn.silu(h + e))
            h = h + nn.Dropout(self.dropout, deterministic=not train)(r)
            features[f"hidden_{i}"] = h
        features["bottleneck"] = h
        if encoder_only:
            return features
        out = nn.Dense(data_dim, kernel_init=default_kernel_init, name="dense_out")(nn.silu(h))
        return (out, features) if return_features else out

    def feature_shapes(self, data_shape: tuple) -> dict[str, tuple[int, ...]]:
        """Per-example shapes (hidden,) of the named features; ``data_shape`` is (d,)."""
        names = ["input_proj"] + [f"hidden_{i}" for i in range(self.depth)] + ["bottleneck"]
        return {name: (self.hidden,) for name in names}
