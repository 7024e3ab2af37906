"""A configured network as a function of the maths: a denoiser D(x, σ) or a consistency function f(x, σ).

Below ``methods/`` (methods and teacher loading both use it). A *network apply* has the signature
``apply(params, x, sigma, labels=None, train=False, dropout_rng=None, guidance=None)`` and returns x0_hat; binding
``params`` gives the DESIGN.md contract ``D(x, sigma, cond)``.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from consistency.diffusion import preconditioning

NetworkApply = Callable[..., jax.Array]


def is_conditional(config) -> bool:
    return int(config.model.num_classes) > 0


def build_net(config, example_shape):
    """The flax module of ``config.model`` for per-example ``example_shape``."""
    from consistency.nets import make_net
    return make_net(config.model, tuple(example_shape))


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
    """D_φ(x, σ) = c_skip x + c_out F(c_in x, c_noise) with EDM Table 1 scalings (METHODS.md §1.1)."""
    return _preconditioned_apply(net, functools.partial(preconditioning.edm_scalings, sigma_data=sigma_data))


def consistency_function(net, sigma_min: float, sigma_data: float) -> NetworkApply:
    """f_θ(x, σ) with the CM boundary scalings, so f_θ(x, σ_min) = x exactly (seed eq. 8; METHODS.md §1.1)."""
    return _preconditioned_apply(net, functools.partial(preconditioning.consistency_scalings, sigma_min=sigma_min,
                                                        sigma_data=sigma_data))


def init_params(net, rng, example_x, conditional: bool):
    """Initialise network params on one example batch (shapes only matter)."""
    x = jnp.asarray(example_x[:1])
    labels = jnp.zeros((1,), jnp.int32) if conditional else None
    p_rng, d_rng = jax.random.split(rng)
    return net.init({"params": p_rng, "dropout": d_rng}, x, jnp.zeros((1,), x.dtype), labels, train=False)["params"]
