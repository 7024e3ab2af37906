"""Throughput report of one config's train step (issues 3, 12, 14), measured side by side in one process.

    python launch/benchmark_step.py --config=configs/digits_edm.py [--config.training.batch_size=128] [--repeats=50]
    python launch/benchmark_step.py --config=configs/cifar_ct.py:cpu --peak_tflops=989 --profile=/tmp/trace

The step is the training loop's own (``consistency.run.train.make_train_step``: the mesh over every device, the state
donated, FSDP / gradient accumulation / bf16 as configured), compiled ahead of time so that compilation is timed on
its own. Prints one JSON line:

- ``step_ms``, ``steps_per_sec``, ``images_per_sec`` (global batch ÷ step time);
- ``compile_s``: lowering + XLA compilation of the step;
- ``bare_fwd_bwd_ms``, ``bare_fwd_ms``, ``bare_jvp_ms``: one forward+backward, one forward, and one forward-mode JVP
  (in x and c_noise) of the bare network on the same batch; ``ratio`` = step_ms / bare_fwd_bwd_ms isolates what the
  method and the loop add (noise draws, preconditioning, teacher passes, loss, optimizer, EMA) over the network's
  unavoidable cost. For sCM (method 'scm') also ``passes_ms`` = fwd+bwd + JVP (+ teacher forward for sCD) — the
  passes an sCM step cannot avoid — and ``ratio_to_passes`` = step_ms / passes_ms;
- ``step_gflop``: XLA's cost analysis of the compiled step (floating-point operations per step, all devices);
  ``achieved_tflops`` = step_gflop / step time; ``mfu`` = achieved ÷ the devices' peak (``--peak_tflops`` per
  device, else the table below for the device kind and ``training.compute_dtype``; null when neither applies, e.g.
  on CPU). XLA counts the operations of the program it compiled, so recomputation (``model.remat``) counts;
- ``peak_memory_mb``: the device's peak bytes in use after the timed steps (``memory_stats``, GPU/TPU), and
  ``compiled_memory_mb``: XLA's buffer assignment for the step (arguments + outputs + temporaries − aliased, per
  device; available on every backend, CPU included);
- with ``--profile=DIR``: a ``jax.profiler`` trace of ``--profile_steps`` steps in DIR (open with TensorBoard's
  profile plugin or Perfetto).

Methods with a teacher read it from ``config.teacher.workdir`` (train it first, e.g. ``configs/digits_edm.py:quick``
for the digits configs); an oracle teacher (``--config.teacher.oracle=...``) changes what the step computes.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from consistency.tools.throughput import (compiled_memory_bytes, compiled_train_step, peak_device_bytes,  # noqa: F401
                                          peak_tflops, step_flops, timed)

_CONFIG = config_flags.DEFINE_config_file("config", "configs/digits_edm.py", "Config file.")
_REPEATS = flags.DEFINE_integer("repeats", 50, "Timed repetitions after two warm-up calls.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Peak dense TFLOP/s of one device for the MFU (0: the built-in table).")
_PROFILE = flags.DEFINE_string("profile", "", "Write a jax.profiler trace of --profile_steps steps to this directory.")
_PROFILE_STEPS = flags.DEFINE_integer("profile_steps", 5, "Steps in the --profile trace.")

def _mb(n):
    return None if n is None else round(n / 2 ** 20, 1)


def main(_):
    if jax.default_backend() == "cpu":
        jax.config.update("jax_threefry_partitionable", False)
    from consistency.nets import wrappers
    from consistency.methods.components import common
    config = _CONFIG.value
    t = config.training
    built = compiled_train_step(config)
    ds, method, state, batch, root_key = (built[k] for k in ("dataset", "method", "state", "batch", "root_key"))
    compiled, compile_s = built["compiled"], built["compile_s"]
    holder = {"state": state}

    def run_step():
        holder["state"], metrics = compiled(holder["state"], batch, root_key)
        return metrics

    step_s = timed(run_step, _REPEATS.value)
    peak_bytes = peak_device_bytes()
    if _PROFILE.value:
        with jax.profiler.trace(_PROFILE.value):
            for _ in range(_PROFILE_STEPS.value):
                jax.block_until_ready(run_step())

    net = common.build_net(config, ds.example_shape)
    params = holder["state"].params[method.sample_params]
    params = params.get("net", params)   # sCM trains {'net', 'weighting'} as one set
    x = jnp.asarray(ds.batch(0)["x"])
    labels = common.batch_labels(config, {k: jnp.asarray(v) for k, v in ds.batch(0).items()})
    c_noise = jnp.zeros((x.shape[0],))
    apply = lambda p, xx, cc: net.apply({"params": p}, xx, cc, labels, train=True,  # noqa: E731
                                        rngs={"dropout": jax.random.PRNGKey(2)})
    bare = jax.jit(jax.grad(lambda p, xx: jnp.mean(apply(p, xx, c_noise) ** 2)))
    forward = jax.jit(lambda p, xx: apply(p, xx, c_noise))
    jvp = jax.jit(lambda p, xx: jax.jvp(lambda a, b: apply(p, a, b), (xx, c_noise),
                                        (jnp.ones_like(xx), jnp.ones_like(c_noise))))
    bare_s = timed(lambda: bare(params, x), _REPEATS.value)
    fwd_s = timed(lambda: forward(params, x), _REPEATS.value)
    jvp_s = timed(lambda: jvp(params, x), _REPEATS.value)

    flops = step_flops(compiled)
    dtype = "bfloat16" if wrappers.compute_dtype_of(config) == jnp.bfloat16 else "float32"
    device = jax.devices()[0]
    peak = peak_tflops(device.device_kind, dtype, _PEAK.value)
    achieved = None if flops is None else flops / step_s / 1e12
    result = {"config": config.method, "data": config.data.name, "batch": int(t.batch_size),
              "backend": jax.default_backend(), "device_kind": device.device_kind, "devices": jax.device_count(),
              "compute_dtype": dtype, "step_ms": round(1e3 * step_s, 3), "steps_per_sec": round(1.0 / step_s, 3),
              "images_per_sec": round(int(t.batch_size) / step_s, 1), "compile_s": round(compile_s, 2),
              "bare_fwd_bwd_ms": round(1e3 * bare_s, 3), "bare_fwd_ms": round(1e3 * fwd_s, 3),
              "bare_jvp_ms": round(1e3 * jvp_s, 3), "ratio": round(step_s / bare_s, 3),
              "step_gflop": None if flops is None else round(flops / 1e9, 3),
              "achieved_tflops": None if achieved is None else round(achieved, 4),
              "peak_tflops_per_device": peak,
              "mfu": None if achieved is None or peak is None else round(achieved / (peak * jax.device_count()), 4),
              "peak_memory_mb": _mb(peak_bytes), "compiled_memory_mb": _mb(compiled_memory_bytes(compiled))}
    if config.method == "scm":   # the passes an sCM step needs: fwd+bwd, one JVP, (sCD) one teacher forward
        passes = bare_s + jvp_s + (fwd_s if config.scm.mode == "distill" else 0.0)
        result.update(passes_ms=round(1e3 * passes, 3), ratio_to_passes=round(step_s / passes, 3))
    if _PROFILE.value:
        result["profile"] = _PROFILE.value
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
