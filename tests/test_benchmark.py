"""launch/benchmark_step.py (issue 14 item 5): one JSON line whose figures are consistent with each other, XLA's FLOP
count checked against a closed form, and a profiler trace when asked. No timed assertion: the figures themselves are
recorded in docs/results.md."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

from consistency.tools import throughput as benchmark_step  # the script's helpers, without its flags


def test_peak_table_and_override():
    assert benchmark_step.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
    assert benchmark_step.peak_tflops("NVIDIA A100-SXM4-40GB", "float32") == 156.0
    assert benchmark_step.peak_tflops("TPU v4", "bfloat16") == 275.0
    assert benchmark_step.peak_tflops("cpu", "float32") is None
    assert benchmark_step.peak_tflops("cpu", "float32", override=1.5) == 1.5


def test_flop_count_of_a_matmul_is_2mnk():
    a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
    compiled = jax.jit(lambda x, y: x @ y).lower(a, b).compile()
    assert benchmark_step.step_flops(compiled) == pytest.approx(2 * 64 * 32 * 16, rel=0.01)
    assert benchmark_step.compiled_memory_bytes(compiled) >= 4 * (64 * 32 + 32 * 16 + 64 * 16)


@pytest.mark.slow
def test_report_on_the_toy(tmp_path):
    trace = tmp_path / "trace"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "launch/benchmark_step.py", "--config=configs/toy_edm.py", "--repeats=3",
                        "--config.training.batch_size=64", f"--profile={trace}", "--profile_steps=2",
                        "--peak_tflops=1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["batch"] == 64 and report["compile_s"] > 0
    assert report["images_per_sec"] == pytest.approx(64 / (report["step_ms"] / 1e3), rel=0.01)
    assert report["ratio"] == pytest.approx(report["step_ms"] / report["bare_fwd_bwd_ms"], rel=0.01)
    assert report["step_gflop"] > 0 and report["compiled_memory_mb"] > 0
    assert report["mfu"] == pytest.approx(report["achieved_tflops"] / (1.0 * report["devices"]), rel=0.02)
    assert any(name.endswith((".xplane.pb", ".trace.json.gz")) for _, _, files in os.walk(trace) for name in files)


@pytest.mark.slow   # a subprocess with two step compilations
def test_data_report_by_source_and_workers(tmp_path):
    """launch/benchmark_data.py: one JSON line per (source, pipeline, workers) with the pipeline's images/s, and the
    train step's images/s of the same image shape (toy-sized: a 2-image folder source, 2 batches, 1 timed step)."""
    import numpy as np
    import PIL.Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        PIL.Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "launch/benchmark_data.py", f"--sources=digits,folder:{folder}",
                        "--resolution=8", "--workers=0,2", "--batch_size=4", "--batches=2", "--step_batch_size=4",
                        "--step_repeats=1", "--step_config=configs/digits_edm.py", "--step_config.model.channels=8",
                        "--step_config.model.channel_mult=(1,)"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    rates = {(d["source"], d["workers"]): d for d in lines if "workers" in d}
    assert set(rates) == {("digits", 0), ("digits", 2), (f"folder:{folder}", 0), (f"folder:{folder}", 2)}
    assert all(d["images_per_sec"] > 0 and d["batch"] == 4 for d in rates.values())
    assert rates[(f"folder:{folder}", 0)]["example_shape"] == [8, 8, 3]
    steps = [d for d in lines if "train_step" in d]
    assert [d["source"] for d in steps] == ["digits", f"folder:{folder}"]
    assert all(d["step_images_per_sec"] == pytest.approx(4 / (d["step_ms"] / 1e3), rel=0.02) for d in steps)
