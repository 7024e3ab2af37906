"""Measurement helpers of ``launch/benchmark_step.py`` (issue 14 item 5): timing, XLA's FLOP count and memory, the
devices' peak FLOP/s. Pure functions, importable without the script's command-line flags."""
from __future__ import annotations

import time

import jax


# Peak dense TFLOP/s per device from the vendors' data sheets (bfloat16; float32 matmuls on NVIDIA run as TF32 by
# default in XLA, so the TF32 figure). H100 SXM: 989 bf16 / 494 tf32; A100: 312 / 156; TPU v4: 275; v5e: 197;
# v5p: 459; v6e (Trillium): 918 (bf16; TPUs run float32 matmuls in bf16 passes at default precision).
PEAK_TFLOPS = {
    "H100": {"bfloat16": 989.0, "float32": 494.0},
    "H200": {"bfloat16": 989.0, "float32": 494.0},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
    "TPU v4": {"bfloat16": 275.0, "float32": 275.0},
    "TPU v5 lite": {"bfloat16": 197.0, "float32": 197.0},
    "TPU v5e": {"bfloat16": 197.0, "float32": 197.0},
    "TPU v5p": {"bfloat16": 459.0, "float32": 459.0},
    "TPU v6 lite": {"bfloat16": 918.0, "float32": 918.0},
}


def peak_tflops(device_kind: str, dtype: str, override: float = 0.0) -> float | None:
    """Peak TFLOP/s of one device: ``override`` when > 0, else the table entry whose name ``device_kind`` contains."""
    if override > 0:
        return float(override)
    for name, peaks in PEAK_TFLOPS.items():
        if name.lower() in device_kind.lower():
            return peaks.get(dtype, peaks["float32"])
    return None


def timed(fn, repeats: int) -> float:
    """Seconds per call of ``fn`` (blocked on), after two warm-up calls."""
    for _ in range(2):
        jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn())
    return (time.perf_counter() - start) / repeats


def pipeline_images_per_sec(dataset, batches: int, first_step: int = 1) -> float:
    """Images per second the input pipeline alone serves on this host: ``dataset.batch(step)`` for ``batches``
    consecutive steps from ``first_step`` (after one untimed batch at ``first_step − 1`` that starts its read threads),
    as the training loop asks for them; no device work."""
    dataset.batch(first_step - 1)
    start = time.perf_counter()
    for step in range(first_step, first_step + batches):
        dataset.batch(step)
    return batches * dataset.local_batch_size / (time.perf_counter() - start)


def compiled_train_step(config) -> dict:
    """The training loop's own step (``consistency.run.train.make_train_step``) for ``config``, compiled ahead of time on
    its first batch: {'dataset', 'method', 'placement', 'state', 'batch', 'root_key', 'compiled', 'compile_s'}."""
    import functools

    from consistency.run import placement as placing, restore, train
    from consistency.methods import base, get_method

    t = config.training
    train.validate_run_config(config)
    ds = train.build_dataset(config)
    method = get_method(config, ds)
    placement = placing.make_placement(fsdp=int(t.get("fsdp", 1)))
    init_key, root_key = jax.random.PRNGKey(0), jax.device_put(jax.random.PRNGKey(1), placement.replicated)
    state_sharding = placement.state_shardings(restore.state_shapes(method, ds, init_key))
    batch = placing.global_batch(ds.batch(0), placement.batch)
    state = jax.jit(functools.partial(base.init_state, method), out_shardings=state_sharding)(init_key, batch)
    start = time.perf_counter()
    step = train.make_train_step(method, placement, None, int(t.get("grad_accumulation", 1)), state_sharding)
    compiled = step.lower(state, batch, root_key).compile()
    return dict(dataset=ds, method=method, placement=placement, state=state, batch=batch, root_key=root_key,
                compiled=compiled, compile_s=time.perf_counter() - start)


def step_flops(compiled) -> float | None:
    """Floating-point operations of one call of a compiled program (XLA's cost analysis), or None."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):   # older jax: one dict per program
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def compiled_memory_bytes(compiled) -> int | None:
    """XLA's buffer assignment of a compiled program per device (arguments + outputs + temporaries − aliased)."""
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
               - stats.alias_size_in_bytes)


def peak_device_bytes() -> int | None:
    """The largest ``peak_bytes_in_use`` over local devices (None where the backend keeps no statistics: CPU)."""
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) if peaks else None
