"""Networks (issue 2 item 7): shapes, closed-form behaviour at init, dropout, null label, make_net; named inner
features, discriminator heads and the model-field validation (issue 8).

Compile time dominates on this CPU, so most tests share one tiny conditional U-Net (8×8×1, 8 channels,
attention at 4×4) and two compiled functions; the other resolutions are checked with ``jax.eval_shape``
(tracing only). The module runs with ``jax_threefry_partitionable=False``: with the default (True),
XLA-CPU compile time of random draws with small ≥3-D shapes such as conv kernels (3,3,8,16) explodes
(measured on a loaded 2-core box: 18–22 s for that one draw vs 1.1 s; 92 s vs 12 s to compile this
U-Net's init).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from consistency.core.errors import ConfigError
from consistency.config import base_config
from consistency.nets import MLP, UNet, make_net, param_count, validate_model_config
from consistency.nets import heads as heads_lib
from consistency.nets.embeddings import fourier_features, fourier_frequencies, positional_features
from consistency.nets.unet import (AttentionBlock, ResBlock, downsample_mean, fir_downsample, fir_filter_2d,
                                   fir_upsample, upsample_nearest)

NUM_CLASSES = 3
IMAGE_SHAPE = (8, 8, 1)
BATCH = 2


@pytest.fixture(scope="module", autouse=True)
def _fast_rng_compile():
    with jax.threefry_partitionable(False):
        yield


def perturb(params, scale=0.3, seed=0):
    """Add N(0, scale²) noise to every leaf (numpy, so no RNG compile) to leave the zero-init point."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: np.asarray(p) + scale * rng.standard_normal(p.shape).astype(np.float32), params)


def max_abs_diff(a, b, axis=None):
    return np.max(np.abs(np.asarray(a) - np.asarray(b)), axis=axis)


def tiny_unet(dropout=0.5):
    return UNet(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=dropout,
                num_classes=NUM_CLASSES)


@pytest.fixture(scope="module")
def unet_case():
    """The tiny conditional U-Net, its init params and two compiled functions shared by the U-Net tests."""
    net = tiny_unet()
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((BATCH,) + IMAGE_SHAPE), jnp.float32)
    c_noise = jnp.asarray([0.25 * math.log(0.5), 0.25 * math.log(20.0)], jnp.float32)  # ¼ ln σ
    params = jax.jit(net.init)({"params": jax.random.PRNGKey(0)}, x, c_noise)["params"]

    @jax.jit
    def eval_outputs(params):
        """train=False outputs for labels None, null, 0, 1 (one compile for all of them)."""
        full = lambda v: jnp.full((BATCH,), v, jnp.int32)
        labels = {"none": None, "null": full(NUM_CLASSES), "zero": full(0), "one": full(1)}
        return {k: net.apply({"params": params}, x, c_noise, v, train=False) for k, v in labels.items()}

    @jax.jit
    def train_loss_and_grad(params, key):
        """Dropout active: (mean (F − x)², F) and d loss / d params."""
        def loss(p):
            out = net.apply({"params": p}, x, c_noise, jnp.asarray([1, NUM_CLASSES]), train=True,
                            rngs={"dropout": key})
            return jnp.mean((out - x) ** 2), out
        return jax.value_and_grad(loss, has_aux=True)(params)

    return dict(net=net, x=x, c_noise=c_noise, params=params, eval_outputs=eval_outputs,
                train_loss_and_grad=train_loss_and_grad)


# ------------------------------------------------------------------------------------------------
# Embeddings

def test_fourier_features_closed_form():
    c = jnp.asarray([0.25, -1.0, 3.0])
    freqs = np.asarray([0.5, 2.0], np.float32)
    got = np.asarray(fourier_features(c, freqs))
    want = np.array([[math.sin(2 * math.pi * ci * f) for f in freqs] + [math.cos(2 * math.pi * ci * f) for f in freqs]
                     for ci in [0.25, -1.0, 3.0]])
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Fixed Gaussian frequencies N(0, scale²): sample std matches the scale (n = 20000, se ≈ 0.5%).
    b = fourier_frequencies(20_000, 16.0)
    assert np.std(b) == pytest.approx(16.0, rel=0.03) and abs(np.mean(b)) < 0.5
    np.testing.assert_array_equal(b, fourier_frequencies(20_000, 16.0))  # a constant, not a draw per call


def test_positional_features_closed_form():
    c = jnp.asarray([0.0, 1.5, 700.0])
    got = np.asarray(positional_features(c, 4))  # ω = (1, 1e-4)
    want = np.array([[math.sin(v), math.sin(v * 1e-4), math.cos(v), math.cos(v * 1e-4)] for v in [0.0, 1.5, 700.0]])
    np.testing.assert_allclose(got, want, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Resampling

def _reference_upfirdn(x2d, up, down):
    """upfirdn2d on one channel with scipy: zero-stuff, pad, convolve, subsample."""
    k = fir_filter_2d() * (up * up)
    if up == 2:
        z = np.zeros((2 * x2d.shape[0], 2 * x2d.shape[1]))
        z[::2, ::2] = x2d
        z = np.pad(z, ((2, 1), (2, 1)))
    else:
        z = np.pad(x2d, ((1, 1), (1, 1)))
    y = signal.convolve2d(z, k, mode="valid")
    return y[::down, ::down]


def test_resampling_against_scipy_and_identities():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    down, up = np.asarray(fir_downsample(jnp.asarray(x))), np.asarray(fir_upsample(jnp.asarray(x)))
    assert down.shape == (2, 4, 4, 3) and up.shape == (2, 16, 16, 3)
    for b in range(2):
        for ch in range(3):
            np.testing.assert_allclose(down[b, :, :, ch], _reference_upfirdn(x[b, :, :, ch], 1, 2), atol=1e-5)
            np.testing.assert_allclose(up[b, :, :, ch], _reference_upfirdn(x[b, :, :, ch], 2, 1), atol=1e-5)
    # FIR filters preserve constants away from the zero-padded border.
    ones = jnp.ones((1, 8, 8, 1))
    np.testing.assert_allclose(np.asarray(fir_downsample(ones))[0, 1:-1, 1:-1, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fir_upsample(ones))[0, 2:-2, 2:-2, 0], 1.0, atol=1e-6)
    # Box filter: 2×2 mean of a nearest-neighbour upsampling is the identity.
    np.testing.assert_array_equal(np.asarray(downsample_mean(upsample_nearest(jnp.asarray(x)))), x)


# ------------------------------------------------------------------------------------------------
# Blocks

def test_resblock_skip_scaling_at_init():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 4, 4, 8)), jnp.float32)
    emb = jnp.asarray(rng.standard_normal((2, 16)), jnp.float32)

    def init_and_apply(block, key):
        params = block.init(key, x, emb)
        return params["params"], block.apply(params, x, emb)

    # conv_1 is zero-initialised, so the residual branch vanishes: out = x / √2 (NCSN++ skip_rescale).
    _, out = jax.jit(lambda k: init_and_apply(ResBlock(8), k))(jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(out), np.asarray(x) / math.sqrt(2), atol=1e-6)
    # More channels: the skip is a 1×1 conv, out = (x W + b) / √2.
    params, out = jax.jit(lambda k: init_and_apply(ResBlock(16), k))(jax.random.PRNGKey(1))
    skip = params["skip"]
    want = (np.asarray(x) @ np.asarray(skip["kernel"])[0, 0] + np.asarray(skip["bias"])) / math.sqrt(2)
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)


def test_attention_identity_at_init_and_permutation_equivariance():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 4, 4, 8)), jnp.float32)
    block = AttentionBlock()
    params = jax.jit(block.init)(jax.random.PRNGKey(0), x)
    apply = jax.jit(block.apply)
    np.testing.assert_allclose(np.asarray(apply(params, x)), np.asarray(x) / math.sqrt(2), atol=1e-6)
    # Self-attention without positional information commutes with any permutation of the pixels.
    params = perturb(params)
    perm = rng.permutation(16)
    permute = lambda a: a.reshape(2, 16, 8)[:, perm].reshape(2, 4, 4, 8)
    out = apply(params, x)
    assert max_abs_diff(out, np.asarray(x) / math.sqrt(2)) > 1e-2  # the attention branch is active
    np.testing.assert_allclose(np.asarray(apply(params, permute(x))), np.asarray(permute(out)), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# U-Net

def _count_modules(params, prefix):
    return sum(1 for name in params if name.startswith(prefix))


@pytest.mark.parametrize("shape,mult,attn,classes,resample,embedding", [
    ((16, 16, 1), (1, 2, 2), (8,), 0, "nearest", "positional"),
    ((28, 28, 1), (1, 2, 2), (14,), 10, "nearest", "fourier"),
    ((32, 32, 3), (1, 2, 2), (16,), 10, "fir", "fourier"),
])
def test_unet_output_shape_and_structure(shape, mult, attn, classes, resample, embedding):
    blocks = 2
    net = UNet(channels=8, channel_mult=mult, num_res_blocks=blocks, attn_resolutions=attn, num_classes=classes,
               resample=resample, embedding=embedding, dropout=0.1)
    x = jax.ShapeDtypeStruct((3,) + shape, jnp.float32)
    c = jax.ShapeDtypeStruct((3,), jnp.float32)
    labels = jax.ShapeDtypeStruct((3,), jnp.int32) if classes else None
    variables = jax.eval_shape(lambda k, x, c, l: net.init({"params": k}, x, c, l), jax.random.PRNGKey(0), x, c, labels)
    out = jax.eval_shape(lambda v, x, c, l: net.apply(v, x, c, l), variables, x, c, labels)
    assert out.shape == x.shape and out.dtype == jnp.float32
    params = variables["params"]
    levels = len(mult)
    # Encoder: blocks per level + (levels−1) downsampling blocks; middle 2; decoder (blocks+1) per level + ups.
    assert _count_modules(params, "ResBlock_") == levels * blocks + (levels - 1) + 2 + levels * (blocks + 1) + (levels - 1)
    # Attention: blocks per listed level in the encoder, once per listed level in the decoder, once in the middle.
    assert _count_modules(params, "AttentionBlock_") == len(attn) * (blocks + 1) + 1
    assert ("label_embed" in params["embed"]) == (classes > 0)
    if classes:
        assert params["embed"]["label_embed"]["embedding"].shape == (classes + 1, 16)  # null row included
    # Fixed sinusoidal features (2C Fourier or C positional) feed a 2-layer MLP of width 4C (NCSN++).
    assert params["embed"]["dense_0"]["kernel"].shape == (16 if embedding == "fourier" else 8, 32)


def test_unet_zero_output_at_init(unet_case):
    out = unet_case["eval_outputs"](unet_case["params"])
    for value in out.values():
        assert value.shape == unet_case["x"].shape
        np.testing.assert_array_equal(np.asarray(value), 0.0)  # the last conv is zero-initialised


def test_unet_dropout_keys_and_eval_mode(unet_case):
    params, train = perturb(unet_case["params"]), unet_case["train_loss_and_grad"]
    (_, a), _ = train(params, jax.random.PRNGKey(1))
    (_, b), _ = train(params, jax.random.PRNGKey(1))
    (_, c), _ = train(params, jax.random.PRNGKey(2))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.min(max_abs_diff(a, c, axis=(1, 2, 3))) > 1e-3
    e1, e2 = unet_case["eval_outputs"](params), unet_case["eval_outputs"](params)
    np.testing.assert_array_equal(np.asarray(e1["zero"]), np.asarray(e2["zero"]))
    # train=True with labels (1, null) differs from train=False with the same labels.
    evaluated = np.stack([np.asarray(e1["one"])[0], np.asarray(e1["null"])[1]])
    assert max_abs_diff(evaluated, a) > 1e-3


def test_unet_null_label_and_label_effect(unet_case):
    out = unet_case["eval_outputs"](perturb(unet_case["params"]))
    np.testing.assert_allclose(np.asarray(out["none"]), np.asarray(out["null"]), atol=1e-6)
    for a, b in [("zero", "one"), ("zero", "null"), ("one", "null")]:
        assert np.min(max_abs_diff(out[a], out[b], axis=(1, 2, 3))) > 1e-3, (a, b)  # every example


def test_unet_forward_and_grad_finite(unet_case):
    params = perturb(unet_case["params"], scale=0.1)
    (value, out), grads = unet_case["train_loss_and_grad"](params, jax.random.PRNGKey(5))
    out = np.asarray(out)
    assert np.isfinite(float(value)) and np.all(np.isfinite(out))
    np.testing.assert_allclose(float(value), np.mean((out - np.asarray(unet_case["x"])) ** 2), rtol=1e-5)
    grads = jax.tree.map(np.asarray, grads)
    leaves = jax.tree.leaves(grads)
    assert len(leaves) == len(jax.tree.leaves(params))
    assert all(np.all(np.isfinite(g)) for g in leaves)
    for top in ("embed", "conv_in", "ResBlock_0", "AttentionBlock_0", "conv_out"):
        assert max(np.max(np.abs(g)) for g in jax.tree.leaves(grads[top])) > 0, top


# ------------------------------------------------------------------------------------------------
# MLP

def mlp_param_count(d, hidden, depth, embed_dim, num_classes):
    """Closed form for the MLP layout documented in consistency/nets/mlp.py."""
    dense = lambda n_in, n_out: n_in * n_out + n_out
    count = dense(embed_dim, hidden) + dense(hidden, hidden)  # embedding MLP
    count += (num_classes + 1) * embed_dim if num_classes else 0
    return count + dense(d, hidden) + depth * dense(hidden, hidden) + dense(hidden, d)


@pytest.mark.parametrize("d,classes", [(1, 0), (2, 4)])
def test_mlp_shape_labels_dropout_and_count(d, classes):
    net = MLP(hidden=32, depth=3, num_classes=classes, embed_dim=16, dropout=0.3)
    no_dropout = MLP(hidden=32, depth=3, num_classes=classes, embed_dim=16, dropout=0.0)
    rng = np.random.default_rng(d)
    x = jnp.asarray(rng.standard_normal((5, d)), jnp.float32)
    c = jnp.asarray(rng.standard_normal(5), jnp.float32)
    params = jax.jit(net.init)({"params": jax.random.PRNGKey(0)}, x, c)["params"]
    assert param_count(params) == mlp_param_count(d, 32, 3, 16, classes)
    null, zero = jnp.full((5,), classes, jnp.int32), jnp.zeros((5,), jnp.int32)

    @jax.jit
    def outputs(p, key):
        apply = lambda c, labels, **kw: net.apply({"params": p}, x, c, labels, **kw)
        return {"null": apply(c, null), "none": apply(c, None), "zero": apply(c, zero), "other_c": apply(c + 1.0, null),
                "train": apply(c, null, train=True, rngs={"dropout": key}),
                "no_dropout": no_dropout.apply({"params": p}, x, c, null)}

    out, again, other_key = outputs(params, jax.random.PRNGKey(1)), outputs(params, jax.random.PRNGKey(1)), \
        outputs(params, jax.random.PRNGKey(2))
    assert out["null"].shape == x.shape
    np.testing.assert_array_equal(np.asarray(out["train"]), np.asarray(again["train"]))  # same dropout key
    assert max_abs_diff(other_key["train"], out["train"]) > 1e-4            # different key
    assert max_abs_diff(out["train"], out["null"]) > 1e-4                  # dropout is active
    np.testing.assert_allclose(np.asarray(out["null"]), np.asarray(out["no_dropout"]), atol=1e-6)  # train=False
    assert max_abs_diff(out["other_c"], out["null"]) > 1e-4  # the noise level conditions F
    np.testing.assert_allclose(np.asarray(out["none"]), np.asarray(out["null"]), atol=1e-6)
    if classes:
        assert np.min(max_abs_diff(out["zero"], out["null"], axis=1)) > 1e-4
    else:  # unconditional nets ignore labels
        np.testing.assert_array_equal(np.asarray(out["zero"]), np.asarray(out["null"]))


def test_mlp_gradient_matches_finite_differences():
    net = MLP(hidden=16, depth=2, embed_dim=8, embedding="positional")
    x = jnp.asarray([[0.3, -1.2], [2.0, 0.5]], jnp.float32)
    c = jnp.asarray([-0.5, 0.7], jnp.float32)
    params = jax.jit(net.init)({"params": jax.random.PRNGKey(0)}, x, c)["params"]
    loss = jax.jit(lambda p: jnp.sum(net.apply({"params": p}, x, c) ** 2))
    grads = jax.jit(jax.grad(loss))(params)
    direction = perturb(jax.tree.map(np.zeros_like, params), scale=1.0, seed=4)
    analytic = sum(float(np.vdot(g, v)) for g, v in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    step = 1e-3
    shifted = lambda s: jax.tree.map(lambda p, v: np.asarray(p) + s * v, params, direction)
    numeric = (float(loss(shifted(step))) - float(loss(shifted(-step)))) / (2 * step)
    assert np.isfinite(analytic) and analytic == pytest.approx(numeric, rel=2e-2)


# ------------------------------------------------------------------------------------------------
# make_net / param_count

def test_make_net_from_config():
    cfg = base_config()
    m = cfg.model
    m.channels, m.channel_mult, m.num_res_blocks, m.attn_resolutions = 16, (1, 2, 2), 2, (7,)
    m.num_classes, m.dropout, m.embedding, m.fourier_scale = 10, 0.1, "positional", 0.02
    net = make_net(m, (28, 28, 1))
    assert isinstance(net, UNet)
    assert (net.channels, net.channel_mult, net.num_res_blocks, net.attn_resolutions) == (16, (1, 2, 2), 2, (7,))
    assert (net.num_classes, net.dropout, net.embedding, net.fourier_scale) == (10, 0.1, "positional", 0.02)
    m.name, m.hidden, m.depth = "mlp", 64, 2
    mlp = make_net(m, (2,))
    assert isinstance(mlp, MLP) and (mlp.hidden, mlp.depth, mlp.num_classes) == (64, 2, 10)


@pytest.mark.parametrize("field,value,shape,match", [
    ("channel_mult", (1, 2, 2, 2), (28, 28, 1), "channel_mult"),    # 28 → 14 → 7 → odd
    ("attn_resolutions", (16,), (8, 8, 1), "attn_resolutions"),      # 8×8 net has levels 8, 4
    ("embedding", "learned", (8, 8, 1), "embedding"),
    ("name", "unet", (2,), "name"),
    ("name", "mlp", (8, 8, 1), "name"),
])
def test_make_net_rejects_bad_configs(field, value, shape, match):
    cfg = base_config()
    setattr(cfg.model, field, value)
    with pytest.raises(ConfigError, match=f"config.model.{match}"):
        make_net(cfg.model, shape)


def test_param_count_counts_scalars():
    assert param_count({"a": jnp.zeros((3, 4)), "b": {"c": jnp.zeros((5,)), "d": jnp.zeros(())}}) == 18


# ------------------------------------------------------------------------------------------------
# Named inner features (issue 8): names, shapes, values; outputs and params unchanged

def numpy_params(like, seed, scale=0.3):
    """Params of ``like``'s tree filled from numpy (no RNG compile; independent of jax's PRNG)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: (scale * rng.standard_normal(np.shape(p))).astype(np.float32), like)


def test_unet_outputs_match_the_recorded_pre_feature_numbers(unet_case):
    """F of the tiny U-Net at fixed numpy params, recorded with the code before return_features existed
    (commit b9343a0): adding the features must not change a single output."""
    out = unet_case["eval_outputs"](numpy_params(unet_case["params"], seed=7))
    recorded = {  # label: (sum F, sum |F|, F[0, 0, :3, 0], F[1, 7, 5:, 0])
        "zero": (-21.571449279785156, 29.599563598632812, [-0.3441479504108429, -0.5121058821678162, -0.6091208457946777],
                 [-0.24768564105033875, 0.11172635108232498, 0.1259513795375824]),
        "one": (-19.57752227783203, 27.7333984375, [-0.39633169770240784, -0.5884233117103577, -0.6740615963935852],
                [-0.2177794873714447, 0.11741354316473007, 0.13735038042068481]),
    }
    for label, (total, total_abs, first_row, last_row) in recorded.items():
        value = np.asarray(out[label])
        assert float(value.sum()) == pytest.approx(total, abs=1e-4)
        assert float(np.abs(value).sum()) == pytest.approx(total_abs, abs=1e-4)
        np.testing.assert_allclose(value[0, 0, :3, 0], first_row, atol=1e-5)
        np.testing.assert_allclose(value[1, 7, 5:, 0], last_row, atol=1e-5)


def test_unet_features_names_shapes_and_values(unet_case):
    net, x, c_noise = unet_case["net"], unet_case["x"], unet_case["c_noise"]
    params = perturb(unet_case["params"], seed=3)
    labels = jnp.full((BATCH,), 1, jnp.int32)

    @jax.jit
    def run(params):
        variables = {"params": params}
        (out, features), state = net.apply(variables, x, c_noise, labels, return_features=True,
                                           capture_intermediates=True, mutable=["intermediates"])
        encoder_features = net.apply(variables, x, c_noise, labels, encoder_only=True)
        return out, features, encoder_features, state["intermediates"]

    out, features, encoder_features, inner = run(params)
    # return_features=False (compiled separately, in the fixture) gives bit-identical F.
    np.testing.assert_array_equal(np.asarray(unet_case["eval_outputs"](params)["one"]), np.asarray(out))
    # Names and shapes: the last encoder activation per resolution and the middle block's output.
    assert set(features) == {"enc_8", "enc_4", "bottleneck"}
    assert {k: v.shape[1:] for k, v in features.items()} == net.feature_shapes(IMAGE_SHAPE)
    assert net.feature_shapes(IMAGE_SHAPE) == {"enc_8": (8, 8, 8), "enc_4": (4, 4, 16), "bottleneck": (4, 4, 16)}
    # Values against the modules' own outputs. Call order of the tiny net (1 block per level, attention at 4×4):
    # ResBlock_0 (8×8) | ResBlock_1 (down) → ResBlock_2 → AttentionBlock_0 (4×4) | middle ResBlock_3 → Attention_1 →
    # ResBlock_4.
    captured = lambda name: np.asarray(inner[name]["__call__"][0])
    np.testing.assert_array_equal(np.asarray(features["enc_8"]), captured("ResBlock_0"))
    np.testing.assert_array_equal(np.asarray(features["enc_4"]), captured("AttentionBlock_0"))
    np.testing.assert_array_equal(np.asarray(features["bottleneck"]), captured("ResBlock_4"))
    assert max_abs_diff(features["bottleneck"], features["enc_4"]) > 1e-3  # the middle block does something
    # The encoder-only pass computes the same features and never runs the decoder.
    assert set(encoder_features) == set(features)
    for name in features:
        np.testing.assert_allclose(np.asarray(encoder_features[name]), np.asarray(features[name]), atol=1e-6)


def test_feature_flags_leave_the_param_tree_unchanged():
    net = tiny_unet()
    x = jax.ShapeDtypeStruct((BATCH,) + IMAGE_SHAPE, jnp.float32)
    c = jax.ShapeDtypeStruct((BATCH,), jnp.float32)
    init = lambda **kw: jax.eval_shape(lambda k, x, c: net.init({"params": k}, x, c, **kw), jax.random.PRNGKey(0), x, c)
    plain, with_features = init(), init(return_features=True)
    assert jax.tree.structure(plain) == jax.tree.structure(with_features)
    assert jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == b.shape, plain, with_features)) == \
        [True] * len(jax.tree.leaves(plain))


def test_mlp_features_values_and_recorded_outputs():
    net = MLP(hidden=16, depth=2, embed_dim=8, num_classes=4)
    x = jnp.asarray([[0.3, -1.2], [2.0, 0.5], [-0.7, 0.1]], jnp.float32)
    c = jnp.asarray([-0.5, 0.1, 0.9], jnp.float32)
    labels = jnp.asarray([0, 1, 4])
    shapes = jax.eval_shape(lambda k: net.init({"params": k}, x, c), jax.random.PRNGKey(0))["params"]
    params = numpy_params(shapes, seed=8)

    @jax.jit
    def run(params):
        plain = net.apply({"params": params}, x, c, labels)
        (out, features), state = net.apply({"params": params}, x, c, labels, return_features=True,
                                           capture_intermediates=True, mutable=["intermediates"])
        return plain, out, features, state["intermediates"], net.apply({"params": params}, x, c, labels,
                                                                        encoder_only=True)

    plain, out, features, inner, encoder_features = run(params)
    recorded = [[-1.867916464805603, -0.32519474625587463], [-0.9878671169281006, -0.011740796267986298],
                [0.20502489805221558, 0.09132430702447891]]  # pre-feature code (commit b9343a0), same params
    np.testing.assert_allclose(np.asarray(plain), recorded, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(out))
    assert set(features) == {"input_proj", "hidden_0", "hidden_1", "bottleneck"}
    assert {k: v.shape[1:] for k, v in features.items()} == net.feature_shapes((2,))
    dense = lambda name: np.asarray(inner[name]["__call__"][0])
    # The residual stream by hand: h_i = h_{i-1} + dense_i(SiLU(h_{i-1} + e)) (no dropout at eval).
    np.testing.assert_allclose(np.asarray(features["input_proj"]), dense("dense_in"), atol=1e-6)
    np.testing.assert_allclose(np.asarray(features["hidden_0"]), dense("dense_in") + dense("dense_0"), atol=1e-5)
    np.testing.assert_allclose(np.asarray(features["hidden_1"]), np.asarray(features["hidden_0"]) + dense("dense_1"),
                               atol=1e-5)
    np.testing.assert_array_equal(np.asarray(features["bottleneck"]), np.asarray(features["hidden_1"]))
    b = np.asarray(features["bottleneck"], np.float64)
    silu = b / (1.0 + np.exp(-b))
    head = params["dense_out"]
    np.testing.assert_allclose(silu @ head["kernel"] + head["bias"], np.asarray(out), atol=1e-5)
    for name in features:
        np.testing.assert_allclose(np.asarray(encoder_features[name]), np.asarray(features[name]), atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Discriminator heads (consistency/nets/heads.py)

def _random_features(shapes, batch=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    return {name: jnp.asarray(rng.standard_normal((batch,) + tuple(shape)), jnp.float32)
            for name, shape in shapes.items()}


def _group_norm_silu(h, params, groups, eps=heads_lib.TORCH_GROUPNORM_EPS):
    b, height, width, channels = h.shape
    g = h.reshape(b, height, width, groups, channels // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    normed = ((g - mean) / np.sqrt(var + eps)).reshape(h.shape) * params["scale"] + params["bias"]
    return normed / (1.0 + np.exp(-normed))


def _conv(h, params, stride, padding):
    out = jax.lax.conv_general_dilated(jnp.asarray(h, jnp.float32), jnp.asarray(params["kernel"]), (stride, stride),
                                       padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                       precision=jax.lax.Precision.HIGHEST)
    return np.asarray(out) + np.asarray(params["bias"])


def test_dmd2_head_is_the_papers_layer_stack():
    """On DMD2's 8×8 map: conv4×4/2 → GN → SiLU → conv4×4/4 → GN → SiLU → conv1×1, checked layer by layer."""
    shapes = {"bottleneck": (8, 8, 32)}
    features = _random_features(shapes, batch=3)
    head = heads_lib.make_head(heads_lib.default_head_config(), shapes)
    assert isinstance(head, heads_lib.DiffusionGANHead) and head.feature_name == "bottleneck"
    params = numpy_params(jax.eval_shape(head.init, jax.random.PRNGKey(0), features)["params"], seed=1, scale=0.2)
    assert {k: v["kernel"].shape for k, v in params.items() if "kernel" in v} == {
        "conv_down": (4, 4, 32, 32), "conv_pool": (4, 4, 32, 32), "conv_logit": (1, 1, 32, 1)}
    logits = np.asarray(head.apply({"params": params}, features))
    h = _conv(features["bottleneck"], params["conv_down"], 2, ((1, 1), (1, 1)))
    assert h.shape == (3, 4, 4, 32)
    h = _group_norm_silu(h, params["norm_0"], groups=8)  # min(32/4, 32) groups
    h = _group_norm_silu(_conv(h, params["conv_pool"], 4, "VALID"), params["norm_1"], groups=8)
    want = _conv(h, params["conv_logit"], 1, "VALID").reshape(3, 1)
    assert logits.shape == (3, 1)
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)


def _logits_and_feature_grads(head, features, labels, seed=2):
    params = numpy_params(jax.eval_shape(head.init, jax.random.PRNGKey(0), features, labels)["params"], seed=seed,
                          scale=0.2)
    apply = jax.jit(lambda f, l: head.apply({"params": params}, f, l))
    grads = jax.jit(jax.grad(lambda f, l: jnp.sum(head.apply({"params": params}, f, l))))(features, labels)
    return apply, grads


@pytest.mark.parametrize("name,shapes,extra,num_logits", [
    ("dmd2", {"enc_8": (8, 8, 8), "bottleneck": (4, 4, 16)}, {}, 1),
    ("multiscale", {"enc_8": (8, 8, 8), "bottleneck": (4, 4, 16)}, {"channels": 8, "end_size": 4}, 2),
    ("multiscale", {"enc_8": (8, 8, 8), "bottleneck": (4, 4, 16)}, {"channels": 8}, 25 + 1),
    ("multiscale", {"enc_8": (8, 8, 8), "bottleneck": (4, 4, 16)}, {"channels": 8, "reduce": "mean"}, 1),
    ("mlp", {"hidden_0": (16,), "bottleneck": (16,)}, {"channels": 32}, 1),
])
@pytest.mark.parametrize("num_classes", [0, 3])
def test_heads_logits_gradients_and_labels(name, shapes, extra, num_logits, num_classes):
    config = heads_lib.default_head_config()
    config.name, config.num_classes, config.cmap_dim = name, num_classes, 8
    config.update(extra)
    head = heads_lib.make_head(config, shapes)
    features = _random_features(shapes, seed=4)
    labels = jnp.asarray([0, 2], jnp.int32)
    apply, grads = _logits_and_feature_grads(head, features, labels)
    logits = np.asarray(apply(features, labels))
    assert logits.shape == (BATCH, num_logits) and np.all(np.isfinite(logits))
    used = heads_lib.head_feature_names(config, shapes)
    for feature in shapes:  # differentiable w.r.t. the features it reads, blind to the others
        g = np.asarray(grads[feature])
        assert np.all(np.isfinite(g))
        assert (np.max(np.abs(g)) > 0) == (feature in used), feature
    if num_classes:  # projection: the label moves every example's logits; None is the null label
        other = np.asarray(apply(features, jnp.asarray([1, 1], jnp.int32)))
        assert np.min(max_abs_diff(logits, other, axis=1)) > 1e-4
        np.testing.assert_allclose(np.asarray(apply(features, None)),
                                   np.asarray(apply(features, jnp.full((BATCH,), num_classes, jnp.int32))), atol=1e-6)
    else:  # unconditional heads ignore labels
        np.testing.assert_array_equal(logits, np.asarray(apply(features, jnp.asarray([1, 1], jnp.int32))))


def test_multiscale_mean_is_the_average_of_per_feature_patch_means():
    shapes = {"enc_8": (8, 8, 8), "bottleneck": (4, 4, 16)}
    features = _random_features(shapes, seed=5)
    concat = heads_lib.MultiScaleHead(feature_names=("enc_8", "bottleneck"), channels=8)
    mean = heads_lib.MultiScaleHead(feature_names=("enc_8", "bottleneck"), channels=8, reduce="mean")
    params = numpy_params(jax.eval_shape(concat.init, jax.random.PRNGKey(0), features)["params"], seed=6)
    assert set(params) == {"head_enc_8", "head_bottleneck"}
    patches = np.asarray(concat.apply({"params": params}, features))  # [B, 25 + 1]
    want = 0.5 * (patches[:, :25].mean(axis=1) + patches[:, 25])
    np.testing.assert_allclose(np.asarray(mean.apply({"params": params}, features))[:, 0], want, rtol=1e-5, atol=1e-6)


def test_head_on_unet_features_end_to_end(unet_case):
    """make_head on net.feature_shapes; the logit's gradient reaches the U-Net's encoder params."""
    net, x, c_noise = unet_case["net"], unet_case["x"], unet_case["c_noise"]
    net_params = perturb(unet_case["params"], seed=9)
    head = heads_lib.make_head(heads_lib.default_head_config(), net.feature_shapes(IMAGE_SHAPE))
    features = jax.eval_shape(lambda p: net.apply({"params": p}, x, c_noise, encoder_only=True), net_params)
    head_params = numpy_params(jax.eval_shape(head.init, jax.random.PRNGKey(0), features)["params"], seed=1)

    @jax.jit
    def logit_sum_and_grad(net_params):
        def logit_sum(p):
            return jnp.sum(head.apply({"params": head_params}, net.apply({"params": p}, x, c_noise, encoder_only=True)))
        return jax.value_and_grad(logit_sum)(net_params)

    value, grads = logit_sum_and_grad(net_params)
    assert np.isfinite(float(value))
    assert max(np.max(np.abs(g)) for g in jax.tree.leaves(grads["conv_in"])) > 0
    assert max(np.max(np.abs(g)) for g in jax.tree.leaves(grads["conv_out"])) == 0  # decoder not run


@pytest.mark.parametrize("field,value,match", [
    ("name", "patchgan", "name"),
    ("features", ("enc_2",), "features"),
    ("features", ("enc_8", "bottleneck"), "features"),   # dmd2 reads one map
    ("channels", -1, "channels"),
    ("cmap_dim", 0, "cmap_dim"),
    ("reduce", "max", "reduce"),
])
def test_make_head_rejects_bad_configs(field, value, match):
    config = heads_lib.default_head_config()
    config[field] = value
    with pytest.raises(ConfigError, match=f"^config.discriminator.{match}: ") as err:
        heads_lib.make_head(config, {"enc_8": (8, 8, 8), "bottleneck": (4, 4, 16)})
    assert "\n" not in str(err.value)
    mlp = heads_lib.default_head_config()
    mlp.name = "mlp"
    with pytest.raises(ConfigError, match="^config.discriminator.features: .*vector features"):
        heads_lib.make_head(mlp, {"bottleneck": (4, 4, 16)})


# ------------------------------------------------------------------------------------------------
# Model fields in the config schema

def test_schema_defines_every_field_make_net_reads():
    m = base_config().model
    assert (m.resample, m.num_groups, m.mid_attention, m.embed_dim) == ("nearest", 32, True, 128)
    m.resample, m.num_groups, m.mid_attention = "fir", 8, False
    net = make_net(m, (8, 8, 1))
    assert (net.resample, net.num_groups, net.mid_attention) == ("fir", 8, False)
    m.name, m.embed_dim = "mlp", 16
    assert make_net(m, (2,)).embed_dim == 16
    del m["embed_dim"]  # an old config without the field: a one-line error, not a silent default
    with pytest.raises(ConfigError, match="^config.model.embed_dim: missing"):
        make_net(m, (2,))


@pytest.mark.parametrize("field,value,shape", [
    ("name", "vit", None), ("embedding", "learned", None), ("dropout", 1.0, None), ("num_classes", -1, None),
    ("fourier_scale", 0.0, None), ("channels", 0, None), ("channel_mult", (), None), ("channel_mult", (1, 0), None),
    ("num_res_blocks", 0, None), ("attn_resolutions", (0,), None), ("resample", "bilinear", None),
    ("num_groups", 0, None), ("channel_mult", (1, 2, 2, 2), (28, 28, 1)), ("attn_resolutions", (16,), (8, 8, 1)),
    ("name", "unet", (2,)),
])
def test_validate_model_config_names_the_field_in_one_line(field, value, shape):
    cfg = base_config()
    cfg.model[field] = value
    with pytest.raises(ConfigError, match=f"^config.model.{field}: ") as err:
        validate_model_config(cfg.model, shape)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("field,value", [("hidden", 0), ("depth", -1), ("embed_dim", 7)])
def test_validate_model_config_checks_the_mlp_fields(field, value):
    cfg = base_config()
    cfg.model.name = "mlp"
    validate_model_config(cfg.model, (2,))
    cfg.model[field] = value
    with pytest.raises(ConfigError, match=f"^config.model.{field}: "):
        validate_model_config(cfg.model, (2,))


def _parse_config_flag(monkeypatch, *args):
    """``--config=...`` plus overrides through ml_collections' config flag (it reads overrides from sys.argv)."""
    from absl import flags
    from ml_collections import config_flags
    argv = ["prog", *args]
    monkeypatch.setattr("sys.argv", argv)
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=flag_values)
    flag_values(argv)
    return flag_values.config


def test_cifar_recipes_use_fir_and_the_flag_overrides_resample(monkeypatch):
    import os
    configs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    from consistency.nets import make_net
    for name, arch in (("edm", "ddpmpp"), ("cd", "ncsnpp"), ("ct", "ncsnpp"), ("ict", "ncsnpp"),
                       ("ecm", "ddpmpp")):   # EDM's nets fix their own filter
        config = _parse_config_flag(monkeypatch, f"--config={configs}/cifar_{name}.py")
        assert config.model.name == arch, name
        filt = (1, 3, 3, 1) if arch == "ncsnpp" else (1, 1)   # NCSN++ FIR (jcm configs; docs/methods.md §2); DDPM++ box
        assert tuple(make_net(config.model, (32, 32, 3)).resample_filter) == filt, name
    config = _parse_config_flag(monkeypatch, f"--config={configs}/digits_edm.py", "--config.model.resample=fir")
    assert config.model.resample == "fir"
    validate_model_config(config.model, (8, 8, 1))
    with pytest.raises(ConfigError, match="^config.model.resample: "):
        validate_model_config(_parse_config_flag(monkeypatch, f"--config={configs}/digits_edm.py",
                                                 "--config.model.resample=box").model)
