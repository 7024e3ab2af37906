"""Train-step overhead benchmark (issue 3): time of the method's full jitted train step ÷ time of one forward+backward
pass of the bare network on the same batch, measured in the same process.

    python launch/benchmark_step.py --config=configs/digits_edm.py [--config.training.batch_size=128] [--repeats=50]

The ratio isolates what the method and the loop add (noise draws, preconditioning, loss, optimizer, EMA) over the
network's unavoidable cost. Prints one JSON line: step_ms, bare_fwd_bwd_ms, ratio, steps_per_sec, and the bare
network's forward (bare_fwd_ms) and forward-mode JVP in x and c_noise (bare_jvp_ms). For sCD (method 'scm',
scm.mode='distill') it also prints passes_ms = fwd+bwd + JVP + teacher forward — the passes an sCD step cannot avoid —
and ratio_to_passes = step_ms / passes_ms (issue 12); for sCT the teacher forward is left out.

    python launch/benchmark_step.py --config=configs/digits_scd.py --repeats=20
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
    params = params.get("net", params)   # sCM trains {'net', 'weighting'} as one set
    labels = common.batch_labels(config, batch)
    c_noise = jnp.zeros((batch["x"].shape[0],))

    @jax.jit
    def bare(p, x):
        def loss(p):
            out = net.apply({"params": p}, x, c_noise, labels, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
            return jnp.mean(out ** 2)
        return jax.grad(loss)(p)

    @jax.jit
    def forward(p, x):
        return net.apply({"params": p}, x, c_noise, labels, train=True, rngs={"dropout": jax.random.PRNGKey(2)})

    @jax.jit
    def jvp(p, x):
        fn = lambda xx, cc: net.apply({"params": p}, xx, cc, labels, train=True,  # noqa: E731
                                      rngs={"dropout": jax.random.PRNGKey(2)})
        return jax.jvp(fn, (x, c_noise), (jnp.ones_like(x), jnp.ones_like(c_noise)))

    step_s = _time(run_step, _REPEATS.value)
    bare_s = _time(lambda: bare(params, batch["x"]), _REPEATS.value)
    fwd_s = _time(lambda: forward(params, batch["x"]), _REPEATS.value)
    jvp_s = _time(lambda: jvp(params, batch["x"]), _REPEATS.value)
    result = {"config": config.method, "data": config.data.name, "batch": config.training.batch_size,
              "backend": jax.default_backend(), "devices": jax.device_count(),
              "step_ms": round(1e3 * step_s, 3), "bare_fwd_bwd_ms": round(1e3 * bare_s, 3),
              "bare_fwd_ms": round(1e3 * fwd_s, 3), "bare_jvp_ms": round(1e3 * jvp_s, 3),
              "ratio": round(step_s / bare_s, 3), "steps_per_sec": round(1.0 / step_s, 2)}
    if config.method == "scm":   # the passes an sCM step needs: fwd+bwd, one JVP, (sCD) one teacher forward
        passes = bare_s + jvp_s + (fwd_s if config.scm.mode == "distill" else 0.0)
        result.update(passes_ms=round(1e3 * passes, 3), ratio_to_passes=round(step_s / passes, 3))
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
