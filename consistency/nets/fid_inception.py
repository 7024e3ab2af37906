"""The FID Inception-v3 of pytorch-fid in Flax: the network papers report FID with.

Port of ``InceptionV3`` / ``fid_inception_v3`` in mseitzer/pytorch-fid ``src/pytorch_fid/inception.py`` (the
PyTorch port of the TF graph ``inception-2015-12-05``, weights ``pt_inception-2015-12-05-6726825d.pth``),
up to the 2048-d pool3 output (its block index 3), with torchvision's Inception-v3 layers
(``torchvision/models/inception.py``) where pytorch-fid keeps them. The graph's differences from torchvision's
Inception-v3, which pytorch-fid patches in, are kept:

* the 3×3 average pools inside the mixed blocks (FIDInceptionA, FIDInceptionC, FIDInceptionE_1) do not count the
  zero padding (``count_include_pad=False``, TF's 'SAME' average);
* the last block (FIDInceptionE_2, ``Mixed_7c``) pools its pool branch with a 3×3 *max* pool (stride 1, pad 1).

Layout is NHWC; every convolution is torchvision's ``BasicConv2d`` (conv without bias, BatchNorm ε = 1e-3 with
running statistics, ReLU). Submodules carry the state-dict names (``Mixed_6b/branch7x7_2/conv``…), so
:func:`variables_from_state_dict` maps a state dict by renaming only. ``width_divisor`` divides every channel
count (not the 3 input channels); 1 is the real network, larger values give the reduced networks of the tests.

The input transform (:func:`fid_resize_matrix`, :func:`preprocess`) is pytorch-fid's: images in [0, 1]
(``ToTensor``: uint8 / 255) are resized to 299×299 by ``F.interpolate(mode='bilinear', align_corners=False)``
(no antialiasing) and mapped to [-1, 1] by 2x − 1.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FID_RESOLUTION = 299
BN_EPSILON = 1e-3          # torchvision BasicConv2d: nn.BatchNorm2d(out_channels, eps=0.001)
POOL3_FEATURES = 2048


def _pad(padding: int | Sequence[int]) -> list[tuple[int, int]]:
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return [(ph, ph), (pw, pw)]


class BasicConv(nn.Module):
    """Conv (no bias) → BatchNorm (running statistics, ε = 1e-3) → ReLU; torch's symmetric zero padding."""

    features: int
    kernel: tuple[int, int] = (1, 1)
    strides: int = 1
    padding: int | tuple[int, int] = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, self.kernel, strides=self.strides, padding=_pad(self.padding), use_bias=False,
                    name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def _avg_pool_same(x: jax.Array) -> jax.Array:
    """3×3 stride-1 average that ignores the zero padding (pytorch-fid: count_include_pad=False)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=_pad(1), count_include_pad=False)


def _max_pool_valid(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class MixedA(nn.Module):
    """FIDInceptionA (Mixed_5b/5c/5d): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg (no pad count)→1×1."""

    pool_features: int
    div: int = 1

    @nn.compact
    def __call__(self, x):
        c = lambda n: n // self.div  # noqa: E731
        b1 = BasicConv(c(64), name="branch1x1")(x)
        b5 = BasicConv(c(48), name="branch5x5_1")(x)
        b5 = BasicConv(c(64), (5, 5), padding=2, name="branch5x5_2")(b5)
        b3 = BasicConv(c(64), name="branch3x3dbl_1")(x)
        b3 = BasicConv(c(96), (3, 3), padding=1, name="branch3x3dbl_2")(b3)
        b3 = BasicConv(c(96), (3, 3), padding=1, name="branch3x3dbl_3")(b3)
        bp = BasicConv(c(self.pool_features), name="branch_pool")(_avg_pool_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class MixedB(nn.Module):
    """torchvision InceptionB (Mixed_6a): 3×3/2 | 1×1→3×3→3×3/2 | max 3×3/2."""

    div: int = 1

    @nn.compact
    def __call__(self, x):
        c = lambda n: n // self.div  # noqa: E731
        b3 = BasicConv(c(384), (3, 3), strides=2, name="branch3x3")(x)
        bd = BasicConv(c(64), name="branch3x3dbl_1")(x)
        bd = BasicConv(c(96), (3, 3), padding=1, name="branch3x3dbl_2")(bd)
        bd = BasicConv(c(96), (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_valid(x)], axis=-1)


class MixedC(nn.Module):
    """FIDInceptionC (Mixed_6b–6e): factorised 7×7 branches, avg (no pad count)→1×1."""

    channels_7x7: int
    div: int = 1

    @nn.compact
    def __call__(self, x):
        c = lambda n: n // self.div  # noqa: E731
        c7 = c(self.channels_7x7)
        b1 = BasicConv(c(192), name="branch1x1")(x)
        b7 = BasicConv(c7, name="branch7x7_1")(x)
        b7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(c(192), (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c7, name="branch7x7dbl_1")(x)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(c(192), (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(c(192), name="branch_pool")(_avg_pool_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class MixedD(nn.Module):
    """torchvision InceptionD (Mixed_7a): 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max 3×3/2."""

    div: int = 1

    @nn.compact
    def __call__(self, x):
        c = lambda n: n // self.div  # noqa: E731
        b3 = BasicConv(c(192), name="branch3x3_1")(x)
        b3 = BasicConv(c(320), (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = BasicConv(c(192), name="branch7x7x3_1")(x)
        b7 = BasicConv(c(192), (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(c(192), (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(c(192), (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_valid(x)], axis=-1)


class MixedE(nn.Module):
    """FIDInceptionE_1 (Mixed_7b, ``max_pool=False``: avg without pad count) and FIDInceptionE_2 (Mixed_7c,
    ``max_pool=True``: the 2015-12-05 graph's 3×3 stride-1 max pool) — expanded 1×3 / 3×1 branches."""

    max_pool: bool = False
    div: int = 1

    @nn.compact
    def __call__(self, x):
        c = lambda n: n // self.div  # noqa: E731
        b1 = BasicConv(c(320), name="branch1x1")(x)
        b3 = BasicConv(c(384), name="branch3x3_1")(x)
        b3 = jnp.concatenate([BasicConv(c(384), (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              BasicConv(c(384), (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = BasicConv(c(448), name="branch3x3dbl_1")(x)
        bd = BasicConv(c(384), (3, 3), padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([BasicConv(c(384), (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              BasicConv(c(384), (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        if self.max_pool:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=_pad(1))   # pads with −inf, as F.max_pool2d
        else:
            pooled = _avg_pool_same(x)
        bp = BasicConv(c(192), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """[N, H, W, 3] in [-1, 1] (already resized, see :func:`preprocess`) → [N, 2048 / width_divisor] pool3."""

    width_divisor: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = self.width_divisor
        c = lambda n: n // d  # noqa: E731
        x = BasicConv(c(32), (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(c(32), (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(c(64), (3, 3), padding=1, name="Conv2d_2b_3x3")(x)
        x = _max_pool_valid(x)
        x = BasicConv(c(80), name="Conv2d_3b_1x1")(x)
        x = BasicConv(c(192), (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_valid(x)
        x = MixedA(32, d, name="Mixed_5b")(x)
        x = MixedA(64, d, name="Mixed_5c")(x)
        x = MixedA(64, d, name="Mixed_5d")(x)
        x = MixedB(d, name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = MixedC(c7, d, name=name)(x)
        x = MixedD(d, name="Mixed_7a")(x)
        x = MixedE(False, d, name="Mixed_7b")(x)
        x = MixedE(True, d, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))   # AdaptiveAvgPool2d((1, 1)), squeezed


# --------------------------------------------------------------------------------------------------
# Input transform
# --------------------------------------------------------------------------------------------------


def fid_resize_matrix(source: int, target: int = FID_RESOLUTION) -> np.ndarray:
    """The ``(target, source)`` float32 matrix of 1-D ``F.interpolate(mode='bilinear', align_corners=False)``.

    PyTorch's CPU kernel (``aten/src/ATen/native/UpSample.h``, ``area_pixel_compute_source_index``): with
    scale = source / target, output i reads x = max(scale · (i + 0.5) − 0.5, 0), i0 = ⌊x⌋,
    i1 = min(i0 + 1, source − 1), weights (1 − λ, λ) with λ = x − i0, in float32. No antialiasing, also when
    shrinking. scale · (i + 0.5) − 0.5 is rounded once (a fused multiply-add, as the x86-64 torch 2.13 build
    computes it): these weights then equal F.interpolate's bit for bit, where two roundings would differ by
    up to 1.5e-5 at 320 pixels.
    """
    scale = np.float32(source) / np.float32(target)
    centres = np.arange(target, dtype=np.float64) + 0.5
    x = np.maximum((np.float64(scale) * centres - 0.5).astype(np.float32), np.float32(0.0))
    i0 = x.astype(np.int64)
    i1 = np.minimum(i0 + 1, source - 1)
    lam = (x - i0.astype(np.float32)).astype(np.float32)
    m = np.zeros((target, source), np.float32)
    rows = np.arange(target)
    np.add.at(m, (rows, i0), np.float32(1.0) - lam)
    np.add.at(m, (rows, i1), lam)
    return m


def preprocess(images: jax.Array, resolution: int = FID_RESOLUTION) -> jax.Array:
    """uint8 NHWC (gray or RGB) → [N, 299, 299, 3] float32 in [-1, 1], as pytorch-fid feeds its network:
    x / 255, gray repeated to 3 channels (PIL ``convert('RGB')``), bilinear resize, 2x − 1."""
    x = images.astype(jnp.float32) / 255.0
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    rows = jnp.asarray(fid_resize_matrix(x.shape[1], resolution))
    cols = jnp.asarray(fid_resize_matrix(x.shape[2], resolution))
    x = jnp.einsum("ph,nhwc->npwc", rows, x, precision=jax.lax.Precision.HIGHEST)
    x = jnp.einsum("qw,npwc->npqc", cols, x, precision=jax.lax.Precision.HIGHEST)
    return 2.0 * x - 1.0


# --------------------------------------------------------------------------------------------------
# State dict → Flax variables
# --------------------------------------------------------------------------------------------------

_IGNORED_SUFFIXES = (".num_batches_tracked",)
_IGNORED_PREFIXES = ("fc.",)   # the 1008-way logits: not part of the pool3 features


@functools.lru_cache(maxsize=4)
def variable_shapes(width_divisor: int = 1) -> dict[tuple[str, ...], tuple[int, ...]]:
    """``{(collection, module, …, leaf): shape}`` of :class:`FIDInceptionV3`'s variables (traced once)."""
    expected = jax.eval_shape(FIDInceptionV3(width_divisor).init, jax.random.PRNGKey(0),
                              jnp.zeros((1, FID_RESOLUTION, FID_RESOLUTION, 3)))
    return {(collection,) + tuple(k.key for k in path): tuple(leaf.shape)
            for collection, tree in expected.items()
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def variables_from_state_dict(state_dict: dict[str, np.ndarray], width_divisor: int = 1) -> dict[str, Any]:
    """pytorch-fid state dict (``Mixed_5b.branch1x1.conv.weight`` …) → ``{'params', 'batch_stats'}``.

    conv.weight [O, I, kh, kw] → conv.kernel [kh, kw, I, O]; bn.weight/bias → bn.scale/bias; bn.running_mean/var
    → batch_stats bn.mean/var. ``fc.*`` and ``num_batches_tracked`` are ignored. Raises ValueError (one line) on a
    missing or unexpected key (e.g. torchvision's own Inception with ``AuxLogits``) or a wrong shape.
    """
    flat_expected = variable_shapes(width_divisor)
    rename = {("conv", "weight"): ("params", "kernel"), ("bn", "weight"): ("params", "scale"),
              ("bn", "bias"): ("params", "bias"), ("bn", "running_mean"): ("batch_stats", "mean"),
              ("bn", "running_var"): ("batch_stats", "var")}
    variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
    seen = set()
    for name, value in state_dict.items():
        if name.endswith(_IGNORED_SUFFIXES) or name.startswith(_IGNORED_PREFIXES):
            continue
        parts = name.split(".")
        if len(parts) < 3 or tuple(parts[-2:]) not in rename:
            raise ValueError(f"unexpected key {name!r}: not a pytorch-fid FID Inception state dict")
        collection, leaf = rename[tuple(parts[-2:])]
        key = (collection, *parts[:-2], parts[-2], leaf)
        if key not in flat_expected:
            raise ValueError(f"unexpected key {name!r}: not a pytorch-fid FID Inception state dict "
                             f"(torchvision's Inception-v3 is not the FID network)")
        array = np.asarray(value, np.float32)
        if leaf == "kernel":
            array = array.transpose(2, 3, 1, 0)
        if array.shape != tuple(flat_expected[key]):
            raise ValueError(f"{name}: shape {tuple(np.shape(value))} does not fit the FID Inception "
                             f"(width_divisor={width_divisor})")
        node = variables[collection]
        for part in key[1:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = array
        seen.add(key)
    missing = sorted(set(flat_expected) - seen)
    if missing:
        torch_names = {v: k for k, v in rename.items()}
        collection, *modules, leaf = missing[0]
        example = ".".join(modules[:-1] + list(torch_names[(collection, leaf)]))
        raise ValueError(f"missing {len(missing)} tensors, e.g. {example!r}: not a complete pytorch-fid FID "
                         f"Inception state dict")
    return variables
