"""Multi-process runs on this machine (issue 14): two ``python -m consistency.main`` processes joined by
``jax.distributed`` on 127.0.0.1 (gloo CPU collectives, docs/platform.md §4b), each with simulated CPU devices, against one
process holding the same number of devices and the same global batch.

What must hold: each host loads its own rows of the global batch (consistency/data/pipeline.py), the losses and the final
parameters equal the single-process run's, a run stopped at a checkpoint resumes to the same parameters, only process 0
writes logs and sample grids, every process takes part in Orbax checkpointing, and processes that disagree get a one-line
error instead of a hang. Every subprocess runs under ``timeout -s KILL`` (JAX catches SIGTERM, docs/platform.md §4b).

Tolerance: the single- and two-process runs reduce the same 4 per-device gradients, but the two-process all-reduce goes
through gloo in another order, so they agree to float32 rounding amplified by Adam (docs/platform.md §4a measured 1.2e-7
after one Adam step): losses to rtol 1e-5, parameters to atol 1e-5 after 6 steps.
"""
from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from consistency.core import checkpoint

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)           # the device count comes from --cpu_devices
    return env


def _command(args, **flags):
    return (["timeout", "-s", "KILL", str(TIMEOUT_S), sys.executable, "-m", "consistency.main", *args]
            + [f"--{k}={v}" for k, v in flags.items()])


def run_processes(args, num_processes: int, cpu_devices: int, per_process=None):
    """Start ``num_processes`` CLI processes of one run (``per_process[i]``: extra args of process i); return
    [(returncode, stdout + stderr)] in process order."""
    port = _free_port()
    procs = []
    for pid in range(num_processes):
        extra = list((per_process or {}).get(pid, []))
        cluster = {} if num_processes == 1 else dict(coordinator_address=f"127.0.0.1:{port}",
                                                     num_processes=num_processes, process_id=pid)
        procs.append(subprocess.Popen(_command(list(args) + extra, cpu_devices=cpu_devices, **cluster), cwd=REPO,
                                      env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return [(p.wait(), p.stdout.read()) for p in procs]


def _ok(results):
    for pid, (rc, out) in enumerate(results):
        assert rc == 0, f"process {pid} exited {rc}:\n{out[-3000:]}"


def _losses(workdir):
    import tensorflow as tf
    losses = {}
    for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "loss":
                    losses[event.step] = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") \
                        else value.simple_value
    return losses


def _params(workdir, step):
    got, sets = checkpoint.read_parameter_sets(workdir, step)
    assert got == step
    import jax
    return {name: jax.tree.leaves(tree) for group in ("params", "ema") for name, tree in sets[group].items()}


def _assert_same_run(single, multi, step):
    ls, lm = _losses(single), _losses(multi)
    assert sorted(ls) == sorted(lm) == list(range(1, step + 1)), (sorted(ls), sorted(lm))
    np.testing.assert_allclose([lm[k] for k in sorted(lm)], [ls[k] for k in sorted(ls)], rtol=1e-5)
    ps, pm = _params(single, step), _params(multi, step)
    assert ps.keys() == pm.keys()
    for name in ps:
        for a, b in zip(ps[name], pm[name]):
            np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
    return ls


def _toy_args(workdir, num_steps):
    return ["--config=configs/toy_edm.py", f"--workdir={workdir}", f"--config.training.num_steps={num_steps}",
            "--config.training.batch_size=64", "--config.training.log_every=1", "--config.training.ckpt_every=3",
            "--config.training.sample_every=3", "--config.eval.num_samples=256", "--config.sampling.num_samples=64"]


@pytest.mark.slow
def test_two_processes_train_resume_and_match_one_process(tmp_path):
    """Toy EDM: 2 processes × 2 devices, stopped at step 3 and resumed to 6, equal one process × 4 devices run
    straight to 6 (losses at every step, params and EMA at the end); only process 0 writes events and grids."""
    single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
    _ok(run_processes(_toy_args(single, 6), num_processes=1, cpu_devices=4))
    first = run_processes(_toy_args(multi, 3), num_processes=2, cpu_devices=2)
    _ok(first)
    assert checkpoint.latest_step(multi) == 3
    second = run_processes(_toy_args(multi, 6), num_processes=2, cpu_devices=2)
    _ok(second)
    assert "resum" in second[0][1].lower(), second[0][1][-2000:]      # it restored step 3, not a fresh start
    _assert_same_run(single, multi, 6)
    # Only process 0 writes: one events file per launch, the grids and the final metrics.
    assert len(glob.glob(os.path.join(multi, "events.out.tfevents.*"))) == 2
    assert os.path.exists(os.path.join(multi, "samples", "step_6.png"))
    assert os.path.exists(os.path.join(multi, "eval", "metrics_6.json"))
    assert "trained edm to step 6" in second[0][1] and "trained edm" not in second[1][1]


@pytest.mark.slow
def test_two_processes_match_one_process_on_a_tiny_unet(tmp_path):
    """Digits EDM with a tiny U-Net, 2 steps: 2 processes × 1 device equal 1 process × 2 devices."""
    args = ["--config=configs/digits_edm.py", "--config.training.num_steps=2", "--config.training.batch_size=16",
            "--config.training.log_every=1", "--config.training.ckpt_every=2", "--config.training.sample_every=2",
            "--config.model.channels=8", "--config.model.channel_mult=(1,)", "--config.eval.num_samples=16",
            "--config.sampling.num_samples=4", "--config.sampling.num_steps=2", "--config.eval.nfes=(3,)"]
    single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
    _ok(run_processes(args + [f"--workdir={single}"], num_processes=1, cpu_devices=2))
    _ok(run_processes(args + [f"--workdir={multi}"], num_processes=2, cpu_devices=1))
    _assert_same_run(single, multi, 2)


def test_processes_that_disagree_get_one_line_errors(tmp_path):
    """Process 1 with another learning rate: both stop with status 2 and one line; process 1 names the field."""
    results = run_processes(_toy_args(str(tmp_path / "w"), 2), num_processes=2, cpu_devices=1,
                            per_process={1: ["--config.optim.lr=0.5"]})
    (rc0, out0), (rc1, out1) = results
    assert rc0 == rc1 == 2, (rc0, out0[-1500:], rc1, out1[-1500:])
    line1 = [l for l in out1.splitlines() if l.startswith("error:")]
    line0 = [l for l in out0.splitlines() if l.startswith("error:")]
    assert len(line1) == 1 and "config.optim.lr" in line1[0] and "same --config" in line1[0], out1[-1500:]
    assert len(line0) == 1 and "process(es) [1]" in line0[0], out0[-1500:]


def test_a_batch_that_does_not_split_over_hosts_and_devices_is_one_line(tmp_path):
    """Global batch 6 over 2 hosts × 2 devices: status 2 and the batch-size line in every process."""
    args = _toy_args(str(tmp_path / "w"), 2) + ["--config.training.batch_size=6"]
    for rc, out in run_processes(args, num_processes=2, cpu_devices=2):
        errors = [l for l in out.splitlines() if l.startswith("error:")]
        assert rc == 2 and len(errors) == 1 and "config.training.batch_size" in errors[0], out[-1500:]


@pytest.mark.parametrize("flags, field", [
    (["--coordinator_address=127.0.0.1:1"], "--num_processes"),
    (["--coordinator_address=nohost", "--num_processes=2", "--process_id=0"], "--coordinator_address"),
    (["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=2"], "--process_id"),
])
def test_cluster_flags_are_checked_in_one_line(tmp_path, flags, field):
    out = subprocess.run(_command(_toy_args(str(tmp_path / "w"), 1) + flags), cwd=REPO, env=_env(),
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().startswith(f"error: {field}:"), out.stderr[-800:]
