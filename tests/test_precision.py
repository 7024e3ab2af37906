"""Precision and memory options (issue 14 item 4): bfloat16 compute with float32 master weights, gradient accumulation,
and rematerialised U-Net blocks, each against the plain float32 step it must reproduce."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consistency import config as config_lib
from consistency.nets import wrappers
from consistency import presets
from consistency.core.errors import ConfigError
from consistency.data import make_dataset
from consistency.methods import base, edm
from consistency.nets.unet import UNet


def _tiny_digits_edm(**training):
    c = presets.digits(presets.new("edm"), "edm")
    c.model.channels, c.model.channel_mult = 8, (1, 2)
    c.training.batch_size = 16
    c.training.update(training)
    return c


def _one_step(c, micro_batches=1):
    ds = make_dataset(c.data, c.training.batch_size, c.seed)
    method = edm.make(c, ds)
    state = base.init_state(method, jax.random.PRNGKey(0), ds.batch(0))
    new, metrics = jax.jit(lambda s, b, k: base.train_step(method, s, b, k, method.trained_names, micro_batches))(
        state, ds.batch(0), jax.random.PRNGKey(1))
    return method, state, new, metrics


def _max_abs(a, b):
    return max(float(jnp.max(jnp.abs(jnp.asarray(u, jnp.float32) - jnp.asarray(v, jnp.float32))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _equations(jaxpr, primitive):
    """Every equation of ``primitive`` in ``jaxpr`` and the jaxprs nested in it (pjit, remat, custom_vjp …)."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            yield eqn
        for value in eqn.params.values():
            inner = value if hasattr(value, "eqns") else getattr(value, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                yield from _equations(inner, primitive)


@pytest.mark.slow
def test_bfloat16_step_agrees_with_float32_and_keeps_float32_master_weights():
    """Tiny digits U-Net, one EDM step. bf16 compute: the loss within 2% of float32's and the Adam update within 2e-4
    of float32's (the first Adam step moves each weight by ≈ lr·sign(g) = 1e-3, so this says the signs and sizes of the
    gradients agree); parameters, EMA and optimizer state stay float32; the network's convolutions run in bf16."""
    _, init32, new32, m32 = _one_step(_tiny_digits_edm(compute_dtype="float32"))
    method, init16, new16, m16 = _one_step(_tiny_digits_edm(compute_dtype="bfloat16"))
    assert _max_abs(init32.params, init16.params) == 0.0          # same float32 init
    assert abs(float(m16["loss"]) / float(m32["loss"]) - 1) < 0.02, (float(m16["loss"]), float(m32["loss"]))
    step32 = jax.tree.map(jnp.subtract, new32.params, init32.params)
    step16 = jax.tree.map(jnp.subtract, new16.params, init16.params)
    assert _max_abs(step16, step32) < 2e-4
    for tree in (new16.params, new16.ema, new16.opt_state):
        floats = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]
        assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)
    # The compute itself is bfloat16: every convolution of the network's forward pass takes bf16 operands.
    net = wrappers.build_net(_tiny_digits_edm(compute_dtype="bfloat16"), (8, 8, 1))
    assert isinstance(net, wrappers.MixedPrecisionNet)
    jaxpr = jax.make_jaxpr(lambda p, x: net.apply({"params": p}, x, jnp.zeros((2,))))(
        init16.params["online"], jnp.zeros((2, 8, 8, 1)))
    convs = list(_equations(jaxpr.jaxpr, "conv_general_dilated"))
    assert len(convs) > 10 and all(v.aval.dtype == jnp.bfloat16 for e in convs for v in e.invars)
    assert jaxpr.out_avals[0].dtype == jnp.float32


@pytest.mark.slow
def test_gradient_accumulation_equals_the_full_batch_step():
    """EDM's loss is a mean of per-example terms with per-example noise keys, so 4 micro-batches of 4 give the
    full-batch gradient of 16 (float32 summation order only)."""
    c = _tiny_digits_edm()
    _, _, full, m_full = _one_step(c, micro_batches=1)
    _, _, accumulated, m_acc = _one_step(c, micro_batches=4)
    np.testing.assert_allclose(float(m_acc["loss"]), float(m_full["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(m_acc["grad_norm"]), float(m_full["grad_norm"]), rtol=1e-4)
    assert _max_abs(accumulated.params, full.params) < 1e-6


def test_micro_batches_keep_each_devices_rows():
    batch = {"x": jnp.arange(8)}
    np.testing.assert_array_equal(base.split_micro_batches(batch, 2)["x"], [[0, 2, 4, 6], [1, 3, 5, 7]])


@pytest.mark.slow
def test_remat_unet_has_the_same_parameters_and_gradients():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
    c_noise = jnp.array([0.1, -0.3])
    plain, remat = UNet(channels=8, channel_mult=(1, 2)), UNet(channels=8, channel_mult=(1, 2), remat=True)
    params = jax.jit(plain.init)(jax.random.PRNGKey(1), x, c_noise)["params"]   # jit: one compile, not one per op
    assert jax.tree.structure(params) == jax.tree.structure(jax.eval_shape(remat.init, jax.random.PRNGKey(1), x,
                                                                                     c_noise)["params"])
    # Perturb every weight (the output conv is zero-initialised, which would make most gradients zero).
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    params = jax.tree.unflatten(tree, [v + 0.1 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys)])

    def grads(module):
        return jax.jit(jax.grad(lambda p: jnp.sum(module.apply({"params": p}, x, c_noise, train=True) ** 2)))(params)
    g_plain, g_remat = grads(plain), grads(remat)
    assert max(float(jnp.max(jnp.abs(v))) for v in jax.tree.leaves(g_plain)) > 1e-3
    assert _max_abs(g_plain, g_remat) < 1e-5


@pytest.mark.parametrize("field, value, words", [
    ("compute_dtype", "float16", "training.compute_dtype"),
    ("grad_accumulation", 0, "training.grad_accumulation"),
    ("grad_accumulation", 3, "not divisible into 3 micro-batches"),
])
def test_precision_fields_are_validated_in_one_line(field, value, words):
    c = _tiny_digits_edm()
    c.training[field] = value
    with pytest.raises(ConfigError, match=words) as info:
        config_lib.validate(c)
    assert "\n" not in str(info.value)
