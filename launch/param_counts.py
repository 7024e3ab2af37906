"""Print parameter counts of the project's networks (shapes only, nothing is computed).

    python launch/param_counts.py

(a) the CIFAR-10 NCSN++ recipe (docs/methods.md §2: nf 128, ch (2,2,2), 4 blocks, attention at 16; the
papers report ≈56M), (b)–(c) the CPU U-Nets, (d) the default toy MLP.
"""
from __future__ import annotations

import collections

import jax
import jax.numpy as jnp

from consistency.nets import MLP, UNet, param_count

NETS = {
    "(a) UNet ch128 mult(2,2,2) 4 blocks attn16 @32x32x3 (CIFAR-10 NCSN++)":
        (UNet(channels=128, channel_mult=(2, 2, 2), num_res_blocks=4, attn_resolutions=(16,)), (32, 32, 3)),
    "(b) UNet ch32 mult(1,2) 1 block @8x8x1":
        (UNet(channels=32, channel_mult=(1, 2), num_res_blocks=1), (8, 8, 1)),
    "(c) UNet ch64 mult(1,2,2) 2 blocks @16x16x1":
        (UNet(channels=64, channel_mult=(1, 2, 2), num_res_blocks=2), (16, 16, 1)),
    "(d) MLP default (hidden 256, depth 4, embed 128) d=2":
        (MLP(), (2,)),
}


def abstract_params(net, data_shape):
    x = jax.ShapeDtypeStruct((1,) + tuple(data_shape), jnp.float32)
    c = jax.ShapeDtypeStruct((1,), jnp.float32)
    return jax.eval_shape(lambda k, x, c: net.init({"params": k}, x, c), jax.random.PRNGKey(0), x, c)["params"]


def breakdown(params) -> dict[str, int]:
    """Counts per kind of top-level module (ResBlock_3 → ResBlock)."""
    totals = collections.Counter()
    for name, sub in params.items():
        totals[name.split("_")[0] if name[-1].isdigit() else name] += param_count(sub)
    return dict(totals)


def main():
    for title, (net, shape) in NETS.items():
        params = abstract_params(net, shape)
        parts = ", ".join(f"{k} {v:,}" for k, v in breakdown(params).items())
        print(f"{title}: {param_count(params):,}  [{parts}]")


if __name__ == "__main__":
    main()
