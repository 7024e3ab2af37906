"""A configured network as a function of the maths: a denoiser D(x, σ) or a consistency function f(x, σ).

Below ``methods/`` (methods and teacher loading both use it). A *network apply* has the signature
``apply(params, x, sigma, labels=None, train=False, dropout_rng=None, guidance=None)`` and returns x0_hat; binding
``params`` gives the contract of docs/architecture.md ("A denoiser is a function") ``D(x, sigma, cond)``.
"""
from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from consistency.diffusion import preconditioning

NetworkApply = Callable[..., jax.Array]


def is_conditional(config) -> bool:
    return int(config.model.num_classes) > 0


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _cast_floats(tree, dtype):
    """Every floating leaf of ``tree`` as ``dtype``; integer leaves (labels) and None are left alone."""
    return jax.tree.map(lambda v: v.astype(dtype) if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating) else v, tree)


LOW_PRECISION_LAYERS = ("Dense", "Conv", "ConvTranspose", "DenseGeneral", "Einsum")   # flax.linen layer classes


def _low_precision_layers(dtype):
    """A ``flax.linen.intercept_methods`` interceptor: each matmul/convolution layer (``LOW_PRECISION_LAYERS``) is
    called with its floating inputs in ``dtype`` and, inside it, its kernel and bias in ``dtype`` (flax promotes a
    layer's operands to their common dtype, so both must be cast); its output is returned in float32. Everything else —
    normalisation statistics, residual sums, embeddings, softmax — stays float32."""
    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (context.method_name != "__call__" or type(module).__name__ not in LOW_PRECISION_LAYERS
                or module.is_initializing() or getattr(module, "dtype", None) == dtype):   # (the clone below)
            return next_fun(*args, **kwargs)
        # The same layer with flax's own compute dtype set, applied to this layer's (traced, float32) variables cast
        # to ``dtype``: gradients flow back through the casts to the float32 parameters.
        low = module.clone(parent=None, dtype=dtype)
        out = low.apply(_cast_floats(dict(module.variables), dtype), *_cast_floats(args, dtype), **kwargs)
        return _cast_floats(out, jnp.float32)
    return interceptor


class MixedPrecisionNet:
    """A flax module whose matmuls and convolutions run in ``compute_dtype``, with float32 master weights
    (docs/methods.md §18 item 6).

    ``apply`` runs the module under :func:`_low_precision_layers`: every Dense/Conv computes in bfloat16 on
    bfloat16-cast inputs and weights and returns float32, so the FLOPs are bfloat16 while the parameters the optimizer
    sees, their gradients (the cast's transpose returns float32 cotangents), the optimizer state and the EMA stay
    float32, and so does everything outside those layers: GroupNorm statistics, residual sums, the noise embedding,
    σ grids, preconditioning c_skip/c_out, losses and 1/Δσ weights. ``init`` and every other attribute are the wrapped
    module's, so parameters are created in float32. ``full_precision`` is the unwrapped module (sCM's JVP tangent is
    taken through it, in float32 as the sCM paper requires).
    """

    def __init__(self, module, compute_dtype):
        self.full_precision = module
        self.compute_dtype = compute_dtype

    def apply(self, *args, **kwargs):
        with nn.intercept_methods(_low_precision_layers(self.compute_dtype)):
            return self.full_precision.apply(*args, **kwargs)

    def __getattr__(self, name):          # init, feature_shapes, fields of the module …
        return getattr(self.full_precision, name)


def full_precision(net):
    """The float32 module behind a :class:`MixedPrecisionNet` (``net`` itself otherwise)."""
    return getattr(net, "full_precision", net)


def compute_dtype_of(config):
    """``config.training.compute_dtype`` as a jnp dtype (absent in configs saved before it existed → float32)."""
    name = str(config.training.get("compute_dtype", "float32"))
    if name not in COMPUTE_DTYPES:
        from consistency.core.errors import ConfigError
        raise ConfigError(f"config.training.compute_dtype: {name!r} is not one of {', '.join(COMPUTE_DTYPES)}; "
                          "use 'float32' or 'bfloat16' (float32 parameters either way)")
    return COMPUTE_DTYPES[name]


def build_net(config, example_shape):
    """The flax module of ``config.model`` for per-example ``example_shape``, run in ``training.compute_dtype``."""
    from consistency.nets import make_net
    net = make_net(config.model, tuple(example_shape))
    dtype = compute_dtype_of(config)
    return net if dtype == jnp.float32 else MixedPrecisionNet(net, dtype)


def _preconditioned_apply(net, scalings_fn) -> NetworkApply:
    def apply(params, x, sigma, labels=None, train=False, dropout_rng=None, guidance=None):
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
        rngs = {"dropout": dropout_rng} if (train and dropout_rng is not None) else {}
        extra = {} if guidance is None else {"guidance": guidance}   # PaGoDA's w-conditioned G (nets' guidance input)

        def net_apply(x_in, c_noise):
            return net.apply({"params": params}, x_in, c_noise, labels, train=train, rngs=rngs, **extra)

        return preconditioning.precondition(net_apply, x, sigma, scalings_fn(sigma))
    return apply


def edm_denoiser(net, sigma_data: float) -> NetworkApply:
    """D_φ(x, σ) = c_skip x + c_out F(c_in x, c_noise) with EDM Table 1 scalings (docs/methods.md §1.1)."""
    return _preconditioned_apply(net, functools.partial(preconditioning.edm_scalings, sigma_data=sigma_data))


def consistency_function(net, sigma_min: float, sigma_data: float) -> NetworkApply:
    """f_θ(x, σ) with the CM boundary scalings, so f_θ(x, σ_min) = x exactly (seed eq. 8; docs/methods.md §1.1)."""
    return _preconditioned_apply(net, functools.partial(preconditioning.consistency_scalings, sigma_min=sigma_min,
                                                        sigma_data=sigma_data))


def init_params(net, rng, example_x, conditional: bool):
    """Initialise network params on one example batch (shapes only matter)."""
    x = jnp.asarray(example_x[:1])
    labels = jnp.zeros((1,), jnp.int32) if conditional else None
    p_rng, d_rng = jax.random.split(rng)
    return net.init({"params": p_rng, "dropout": d_rng}, x, jnp.zeros((1,), x.dtype), labels, train=False)["params"]
