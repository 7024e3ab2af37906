"""EDM's networks (consistency/nets/edm_networks.py) against NVlabs/edm's own outputs.

The fixtures tests/fixtures/edm_{ddpmpp,ncsnpp,adm,block_heads}.npz hold only numbers written by NVlabs/edm's
``training/networks.py`` and ``generate.py`` (commit 008a4e5316c8e3bfe61a62f874bddba254295afb, torch 2.13.0 CPU): each
network built as EDMPrecond with train.py's --arch settings at a reduced size (the full networks would be 56M–296M
parameters), every parameter set to random non-zero values and rounded to float16 (stored exactly in half the bytes;
all computation float32), its state dict (``sd/<torch name>``), fixed inputs and reference outputs D(x; σ) at
σ = 0.002, 0.5, 5, 80 (``io/``):

* ddpmpp: 16×16×3, model_channels 8, channel_mult (1, 2, 2), 2 blocks, attention at 8, label_dim 10, augment_dim 9
  (112,299 parameters); also its 35-NFE ``edm_sampler`` output and VPPrecond / VEPrecond outputs on the same weights;
* ncsnpp: the same, unconditional (113,931 parameters + 8 Fourier frequencies);
* adm: 8×8×3, model_channels 64 (one 64-channel attention head: EDM fixes 64 channels per head), channel_mult
  (1, 1), 1 block, attention at 8 and 4, channel_mult_emb 1, label_dim 10, augment_dim 9 (1,135,875 parameters);
* block_heads: one ADM-style UNetBlock 12 → 16 channels with 4 attention heads of 4 channels (head ordering).

Tolerance: |ours − NVlabs| ≤ 2e-5·max(1, max|D|) (measured: ≤ 1.2e-6 on the O(1) EDM-preconditioned outputs, ≤ 1e-4
on the VP/VE outputs of size ~330, i.e. 3e-7 relative).
"""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from consistency.core.errors import ConfigError
from consistency.config import base_config
from consistency.diffusion import preconditioning, solvers
from consistency.nets import edm_networks, make_net, validate_model_config
from consistency.nets.wrappers import MixedPrecisionNet

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
ATOL = 2e-5


def load_fixture(name):
    z = np.load(os.path.join(FIXTURES, f"edm_{name}.npz"))
    kwargs = json.loads(str(z["kwargs"]))
    state_dict = {k[len("sd/"):]: z[k].astype(np.float32) for k in z.files if k.startswith("sd/")}
    io = {k[len("io/"):]: z[k] for k in z.files if k.startswith("io/")}
    return kwargs, state_dict, io


def stacked_denoiser_outputs(net, params, cases):
    """D(x; σ) for every case (x, σ, scalings, int labels or None, augment labels or None) in ONE jitted net call:
    the cases are stacked on the batch axis (labels None → the null label, augment None → zeros, which EDM's
    bias-free map_augment maps to 0)."""
    label_dim = net.num_classes
    xs, sigmas, scalings, labels, augments = [], [], [], [], []
    for x, sigma, scalings_fn, lab, aug in cases:
        xs.append(x)
        sigmas.append(sigma)
        scalings.append(scalings_fn(jnp.asarray(sigma)))
        labels.append(np.full(len(x), label_dim, np.int32) if lab is None else lab)
        augments.append(np.zeros((len(x), net.augment_dim), np.float32) if aug is None else aug)
    x, sigma = jnp.asarray(np.concatenate(xs)), jnp.asarray(np.concatenate(sigmas))
    scal = tuple(jnp.concatenate([s[i] for s in scalings]) for i in range(4))
    lab = jnp.asarray(np.concatenate(labels)) if label_dim else None
    aug = jnp.asarray(np.concatenate(augments)) if net.augment_dim else None

    @jax.jit
    def run(params, x, sigma, scal, lab, aug):
        def f(x_in, c_noise):
            return net.apply({"params": params}, x_in, c_noise, lab, augment_labels=aug)
        return preconditioning.precondition(f, x, sigma, scal)

    out = np.asarray(run(params, x, sigma, scal, lab, aug))
    return np.split(out, np.cumsum([len(v) for v in xs])[:-1])


@pytest.mark.parametrize("name", ["ddpmpp", "ncsnpp", "adm"])
def test_edm_network_matches_nvlabs(name):
    kwargs, state_dict, io = load_fixture(name)
    assert edm_networks.edm_arch(kwargs) == name
    params = edm_networks.params_from_state_dict(kwargs, state_dict)
    net = edm_networks.module_from_edm_kwargs(kwargs)
    x, sigma = io["x"], io["sigma"]
    np.testing.assert_array_equal(sigma, np.array([0.002, 0.5, 5.0, 80.0], np.float32))
    cases = {"D_edm_nolabel": (x, sigma, preconditioning.edm_scalings, None, None),
             "D_edm_augment": (x, sigma, preconditioning.edm_scalings, None, io["augment_labels"])}
    if "labels" in io:
        cases["D_edm_label"] = (x, sigma, preconditioning.edm_scalings, io["labels"], None)
    for key, fn in (("D_vp_nolabel", preconditioning.vp_eps_scalings), ("D_ve_nolabel", preconditioning.ve_scalings)):
        if key in io:
            cases[key] = (x, sigma, fn, None, None)
    outs = stacked_denoiser_outputs(net, params, list(cases.values()))
    for key, out in zip(cases, outs):
        reference = io[key]
        tolerance = ATOL * max(1.0, float(np.abs(reference).max()))
        np.testing.assert_allclose(out, reference, rtol=0, atol=tolerance, err_msg=f"{name} {key}")
    assert ("D_edm_label" not in cases) or np.abs(io["D_edm_label"] - io["D_edm_nolabel"]).max() > 1e-3  # labels act


def test_multihead_attention_block_matches_nvlabs():
    """An ADM-style UNetBlock (scale-shift norm, channel change, 4 heads of 4 channels) at 4×4."""
    z = np.load(os.path.join(FIXTURES, "edm_block_heads.npz"))
    kw = json.loads(str(z["kwargs"]))
    block = edm_networks.UNetBlock(kw["out_channels"], attention=True, num_heads=kw["num_heads"],
                                   skip_scale=kw["skip_scale"], eps=kw["eps"], adaptive_scale=True, init_family="adm")
    x, emb = z["io/x"], z["io/emb"]
    template = traverse_util.flatten_dict(jax.eval_shape(block.init, jax.random.PRNGKey(0), x, emb)["params"])
    state_dict = {k[len("sd/"):]: z[k].astype(np.float32) for k in z.files if k.startswith("sd/")}
    params = traverse_util.unflatten_dict(edm_networks.map_state_dict(state_dict, template))
    np.testing.assert_allclose(block.apply({"params": params}, x, emb), z["io/y"], rtol=0, atol=ATOL)


def test_heun_35_nfe_sample_equals_edm_sampler():
    """The project's Heun solver on EDM's σ grid (18 points + 0, 35 NFE) through the ported DDPM++ and EDM
    preconditioning equals NVlabs' ``edm_sampler`` (generate.py, S_churn = 0) from the same latents and labels.
    (EDM keeps the sampler state in float64, the project in float32: tolerance 1e-4 on outputs of size ~3.)"""
    kwargs, state_dict, io = load_fixture("ddpmpp")
    params = edm_networks.params_from_state_dict(kwargs, state_dict)
    net = edm_networks.module_from_edm_kwargs(kwargs)

    def denoiser(x, sigma, labels):
        f = lambda x_in, c_noise: net.apply({"params": params}, x_in, c_noise, labels)
        return preconditioning.precondition(f, x, sigma, preconditioning.edm_scalings)

    sigmas = solvers.edm_sampling_sigmas(18, 0.002, 80.0, 7.0)
    latents = jnp.asarray(io["sampler_latents"])
    sample = jax.jit(lambda z, y: solvers.solve(denoiser, z * sigmas[0], sigmas, "heun", cond=y))(
        latents, jnp.asarray(io["sampler_labels"]))
    reference = io["sampler_out"]
    assert np.abs(reference).max() > 1.0
    np.testing.assert_allclose(np.asarray(sample), reference, rtol=0, atol=1e-4)


def test_state_dict_mapping_checks_every_tensor():
    kwargs, state_dict, _ = load_fixture("ncsnpp")
    params = edm_networks.params_from_state_dict(kwargs, state_dict)
    back = edm_networks.state_dict_from_params(params)
    filters = {k for k in state_dict if k.endswith("resample_filter")}
    assert filters and set(back) == set(state_dict) - filters
    for key, value in back.items():
        np.testing.assert_array_equal(value, state_dict[key])
    # Without the preconditioner's 'model.' prefix too.
    bare = {k[len("model."):]: v for k, v in state_dict.items()}
    flat = traverse_util.flatten_dict(edm_networks.params_from_state_dict(kwargs, bare))
    assert all(np.array_equal(v, traverse_util.flatten_dict(params)[k]) for k, v in flat.items())

    first_conv = "model.enc.16x16_conv.weight"
    with pytest.raises(ValueError, match="unknown tensor 'model.enc.16x16_extra.weight'"):
        edm_networks.params_from_state_dict(kwargs, {**state_dict, "model.enc.16x16_extra.weight": np.zeros(3)})
    with pytest.raises(ValueError, match=f"missing tensor '{first_conv}'"):
        edm_networks.params_from_state_dict(kwargs, {k: v for k, v in state_dict.items() if k != first_conv})
    with pytest.raises(ValueError, match=f"'{first_conv}' has shape"):
        edm_networks.params_from_state_dict(kwargs, {**state_dict, first_conv: state_dict[first_conv][:, :2]})
    some_filter = sorted(filters)[0]
    with pytest.raises(ValueError, match="not the configured resampling filter"):
        edm_networks.params_from_state_dict(kwargs, {**state_dict, some_filter: state_dict[some_filter] * 2})
    with pytest.raises(ValueError, match="neither train.py's DDPM"):
        edm_networks.edm_arch({**kwargs, "encoder_type": "skip"})
    assert edm_networks.edm_model_fields(kwargs) == dict(
        name="ncsnpp", channels=8, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(8,), dropout=0.13,
        num_classes=0, augment_dim=9, channel_mult_emb=4)


def test_class_vectors_null_label_and_none_are_edm_zero_labels():
    one_hot = np.asarray(edm_networks.class_vectors(jnp.array([2, 3]), 3, 2))
    np.testing.assert_array_equal(one_hot, [[0, 0, 1], [0, 0, 0]])      # label 3 = num_classes: null
    np.testing.assert_array_equal(edm_networks.class_vectors(None, 3, 2), np.zeros((2, 3)))


def tiny_model(name, **overrides):
    m = base_config().model
    m.name = name
    m.channels, m.channel_mult, m.num_res_blocks, m.attn_resolutions = 8, (1, 2), 1, (4,)
    m.num_classes = 3
    m.update(overrides)
    return m


@pytest.mark.parametrize("name", ["ddpmpp", "adm"])
def test_config_names_build_the_edm_networks_with_their_features(name):
    net = make_net(tiny_model(name), (8, 8, 3))
    assert type(net).__name__ == ("DhariwalUNet" if name == "adm" else "SongUNet")
    x = jnp.zeros((2, 8, 8, 3))
    shapes = jax.eval_shape(lambda: net.init_with_output({"params": jax.random.PRNGKey(0)}, x, jnp.zeros(2),
                                                         jnp.array([0, 3]), return_features=True)[0])
    out, feats = shapes
    assert out.shape == x.shape
    assert {k: v.shape[1:] for k, v in feats.items()} == net.feature_shapes((8, 8, 3))
    assert set(feats) == {"enc_8", "enc_4", "bottleneck"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ncsnpp"])
def test_edm_network_features_remat_and_dropout(name):
    """``config.model.name`` selects the port; named features have the advertised shapes; remat changes neither
    the params tree nor F; dropout is active only in train mode; encoder_only stops at the bottleneck."""
    m = tiny_model(name, dropout=0.2)
    net, remat_net = make_net(m, (8, 8, 3)), make_net(tiny_model(name, dropout=0.2, remat=True), (8, 8, 3))
    assert type(net).__name__ == ("DhariwalUNet" if name == "adm" else "SongUNet") and remat_net.remat
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    c_noise, labels = jnp.array([0.1, -0.3]), jnp.array([0, 3])

    @jax.jit
    def everything(x):                                    # one compile for the whole test
        params = net.init({"params": jax.random.PRNGKey(0)}, x, c_noise, labels)["params"]
        params = jax.tree.map(lambda p: p + 0.05, params)   # EDM (near-)zero-initialises conv1/proj/out: wake them
        out, feats = net.apply({"params": params}, x, c_noise, labels, return_features=True)
        enc = net.apply({"params": params}, x, c_noise, labels, encoder_only=True)
        remat_out = remat_net.apply({"params": params}, x, c_noise, labels)
        train_feats = net.apply({"params": params}, x, c_noise, labels, train=True, encoder_only=True,
                                rngs={"dropout": jax.random.PRNGKey(3)})
        bf16_out = MixedPrecisionNet(net, jnp.bfloat16).apply({"params": params}, x, c_noise, labels)
        return out, feats, enc, remat_out, train_feats, bf16_out

    out, feats, enc, remat_out, train_feats, bf16_out = everything(x)
    assert out.shape == x.shape
    assert {k: v.shape[1:] for k, v in feats.items()} == net.feature_shapes((8, 8, 3))
    assert set(feats) == {"enc_8", "enc_4", "bottleneck"}
    np.testing.assert_allclose(enc["bottleneck"], feats["bottleneck"], atol=1e-6)
    np.testing.assert_allclose(remat_out, out, rtol=1e-5, atol=1e-6 * float(np.abs(out).max()))
    assert np.abs(train_feats["bottleneck"] - feats["bottleneck"]).max() > 1e-2 * np.abs(feats["bottleneck"]).max()
    # training.compute_dtype='bfloat16': the convolutions and dense layers run in bf16 (8-bit mantissa), output float32.
    assert bf16_out.dtype == jnp.float32
    relative = np.abs(bf16_out - out).max() / np.abs(out).max()
    assert 1e-5 < relative < 5e-2, relative


def test_edm_model_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="config.model.name: must be one of 'unet', 'mlp', 'ddpmpp'"):
        validate_model_config(tiny_model("ddpm"))
    with pytest.raises(ConfigError, match="config.model.augment_dim"):
        validate_model_config(tiny_model("adm", augment_dim=-1))
    with pytest.raises(ConfigError, match="config.model.channels"):
        validate_model_config(tiny_model("ncsnpp", channels=7))
    with pytest.raises(ConfigError, match="config.model.attn_resolutions"):
        validate_model_config(tiny_model("ddpmpp", attn_resolutions=(5,)), (8, 8, 3))
    assert isinstance(tiny_model("adm"), ml_collections.ConfigDict)


@pytest.mark.parametrize("taps", [(1, 1), (2, 2)])
def test_box_resampling_equals_the_depthwise_convolution(taps):
    """DDPM++/ADM's [1, 1] filter resamples by reshape (down: 2×2 block sum × ¼) and repeat (up) instead of a
    depthwise convolution; both are torch's grouped conv2d / conv_transpose2d with EDM's filter, so they must agree."""
    filt = edm_networks.resample_filter_2d(taps)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 5))
    down = edm_networks.filter_downsample(x, filt, 0)
    up = edm_networks.filter_upsample(x, filt, 0)
    ref_down = edm_networks._depthwise(x, filt, stride=2, lhs_dilation=1, pad=0)
    ref_up = edm_networks._depthwise(x, 4.0 * filt[::-1, ::-1], stride=1, lhs_dilation=2, pad=1)
    assert down.shape == (2, 4, 4, 5) and up.shape == (2, 16, 16, 5)
    np.testing.assert_allclose(down, ref_down, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(up, ref_up)          # each output is one input times 4f = 1: exact
    np.testing.assert_allclose(down, x.reshape(2, 4, 2, 4, 2, 5).mean(axis=(2, 4)), rtol=1e-6, atol=1e-6)
