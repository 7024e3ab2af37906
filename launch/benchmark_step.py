"""Train-step overhead benchmark (issue 3): time of the method's full jitted train step ÷ time of one forward+backward
pass of the bare network on the same batch, measured in the same process.

    python launch/benchmark_step.py --config=configs/digits_edm.py [--config.training.batch_size=128] [--repeats=50]

The ratio isolates what the method and the loop add (noise draws, preconditioning, loss, optimizer, EMA) over the
network's unavoidable cost. Prints one JSON line: step_ms, bare_fwd_bwd_ms, ratio, steps_per_sec.
"""
from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/digits_edm.py", "Config file.")
_REPEATS = flags.DEFINE_integer("repeats", 50, "Timed repetitions after two warm-up calls.")


def _time(fn, repeats):
    out = fn()
    jax.block_until_ready(out)
    out = fn()
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
        jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def main(_):
    if jax.default_backend() == "cpu":
        jax.config.update("jax_threefry_partitionable", False)
    from consistency.data import make_dataset
    from consistency.methods import base, common, get_method
    config = _CONFIG.value
    ds = make_dataset(config.data, config.training.batch_size, config.seed)
    method = get_method(config, ds)
    batch = jax.tree.map(jnp.asarray, ds.batch(0))
    state = base.init_state(method, jax.random.PRNGKey(0), batch)
    step = jax.jit(base.full_step(method))
    rng = jax.random.PRNGKey(1)
    holder = {"state": state}

    def run_step():
        holder["state"], metrics = step(holder["state"], batch, rng)
        return metrics

    net = common.build_net(config, ds.example_shape)
    params = state.params[method.sample_params]
    labels = common.batch_labels(config, batch)
    c_noise = jnp.zeros((batch["x"].shape[0],))

    @jax.jit
    def bare(p, x):
        def loss(p):
            out = net.apply({"params": p}, x, c_noise, labels, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
            return jnp.mean(out ** 2)
        return jax.grad(loss)(p)

    step_s = _time(run_step, _REPEATS.value)
    bare_s = _time(lambda: bare(params, batch["x"]), _REPEATS.value)
    print(json.dumps({"config": config.method, "data": config.data.name, "batch": config.training.batch_size,
                      "backend": jax.default_backend(), "devices": jax.device_count(),
                      "step_ms": round(1e3 * step_s, 3), "bare_fwd_bwd_ms": round(1e3 * bare_s, 3),
                      "ratio": round(step_s / bare_s, 3), "steps_per_sec": round(1.0 / step_s, 2)}))


if __name__ == "__main__":
    app.run(main)
