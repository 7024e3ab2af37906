"""Launchers and bucket workdirs (issue 14, item 2).

- ``launch/tpu_pod.sh`` and ``launch/slurm_gpu.sh`` parse (``bash -n``), print the commands they would run
  (``DRY_RUN=1``) and refuse bad input with one ``error:`` line naming the field.
- ``launch/slurm_gpu.sh`` really trains: a stand-in ``srun`` on PATH starts its ``--ntasks`` tasks on this machine
  with ``SLURM_PROCID`` set, so the very command the launcher builds runs as two ``jax.distributed`` processes.
- Everything the project writes into a workdir goes through :mod:`consistency.core.fileio`; with etils' gs:// backend
  redirected into a temporary folder (``epath.testing.mock_epath``), config.json, metrics JSON, PNGs, npz/npy files and
  inversion shards are written to and read back from ``gs://…`` paths, and bucket paths are never made "absolute".
"""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
TPU = os.path.join(REPO, "launch", "tpu_pod.sh")
SLURM = os.path.join(REPO, "launch", "slurm_gpu.sh")


def _bash(script, *args, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TPU_NAME", "ZONE"))}
    full_env.update(env)
    return subprocess.run(["bash", script, *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600)


def _error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("script", [TPU, SLURM])
def test_launchers_parse(script):
    assert subprocess.run(["bash", "-n", script], capture_output=True).returncode == 0


def test_tpu_dry_run_prints_create_copy_install_and_the_same_command_on_all_workers():
    r = _bash(TPU, "configs/cifar_ct.py", "gs://bucket/runs/ct", "--config.training.batch_size=512",
              DRY_RUN="1", TPU_NAME="cm-v4-32", ZONE="us-central2-b", ACCELERATOR_TYPE="v4-32",
              TFDS_DATA_DIR="gs://bucket/tfds", SPOT="1")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("+ ")]
    assert lines[0].startswith("+ gcloud compute tpus tpu-vm create cm-v4-32 --zone=us-central2-b")
    assert "--accelerator-type=v4-32" in lines[0] and "--spot" in lines[0]
    assert any(" scp " in line and "--worker=all" in line for line in lines)
    job = lines[-1].replace("\\", "")
    assert "--worker=all" in job and "python -m consistency.main --config=configs/cifar_ct.py" in job
    for part in ("--workdir=gs://bucket/runs/ct", "--config.distributed=True", "--config.data.data_dir=gs://bucket/tfds",
                 "--config.training.batch_size=512"):
        assert part in job, job


@pytest.mark.parametrize("env,args,field", [
    (dict(TPU_NAME="t", ZONE="z"), ["configs/cifar_ct.py", "/local/dir"], "WORKDIR"),
    (dict(ZONE="z"), ["configs/cifar_ct.py", "gs://b/r"], "TPU_NAME"),
    (dict(TPU_NAME="t"), ["configs/cifar_ct.py", "gs://b/r"], "ZONE"),
    (dict(TPU_NAME="t", ZONE="z"), ["configs/nope.py", "gs://b/r"], "CONFIG"),
])
def test_tpu_bad_input_is_one_error_line(env, args, field):
    r = _bash(TPU, *args, DRY_RUN="1", **env)
    errors = _error_lines(r)
    assert r.returncode == 2 and len(errors) == 1 and errors[0].startswith(f"error: {field}:"), r.stderr


def test_slurm_dry_run_one_process_per_gpu_and_per_node():
    r = _bash(SLURM, "configs/cifar_ct.py", "/shared/runs/ct", "--config.training.batch_size=512", DRY_RUN="1",
              SLURM_JOB_NODELIST="node1,node2", SLURM_JOB_NUM_NODES="2", SLURM_GPUS_ON_NODE="8")
    assert r.returncode == 0, r.stderr
    line = r.stdout.splitlines()[-1].replace("\\", "")
    for part in ("srun --nodes=2 --ntasks=16 --ntasks-per-node=8 --gpus-per-task=1",
                 "--coordinator_address=node1:12355", "--num_processes=16", "--process_id=$SLURM_PROCID",
                 "--workdir=/shared/runs/ct", "--config.training.batch_size=512"):
        assert part in line, line
    r = _bash(SLURM, "configs/cifar_ct.py", "gs://b/ct", DRY_RUN="1", PROCS="node", PORT="23456",
              SLURM_JOB_NODELIST="a,b,c", SLURM_JOB_NUM_NODES="3", SLURM_GPUS_ON_NODE="h100:4")
    line = r.stdout.splitlines()[-1]
    assert "--ntasks=3 --ntasks-per-node=1 --kill-on-bad-exit" in line and "a:23456" in line, line


@pytest.mark.parametrize("env,args,field", [
    (dict(SLURM_JOB_NODELIST="n"), ["configs/cifar_ct.py", "runs/ct"], "WORKDIR"),
    (dict(), ["configs/cifar_ct.py", "/shared/ct"], "SLURM_JOB_NODELIST"),
    (dict(SLURM_JOB_NODELIST="n", PROCS="socket"), ["configs/cifar_ct.py", "/shared/ct"], "PROCS"),
    (dict(SLURM_JOB_NODELIST="n"), ["configs/nope.py", "/shared/ct"], "CONFIG"),
])
def test_slurm_bad_input_is_one_error_line(env, args, field):
    r = _bash(SLURM, *args, DRY_RUN="1", **env)
    errors = _error_lines(r)
    assert r.returncode == 2 and len(errors) == 1 and errors[0].startswith(f"error: {field}:"), r.stderr


FAKE_SRUN = """#!/usr/bin/env python3
# A stand-in for srun on one machine: start --ntasks copies of the command with SLURM_PROCID set; wait for all.
import os, subprocess, sys
args = sys.argv[1:]
ntasks = next(int(a.split("=", 1)[1]) for a in args if a.startswith("--ntasks="))
command = args[next(i for i, a in enumerate(args) if not a.startswith("--")):]
procs = [subprocess.Popen(command, env=dict(os.environ, SLURM_PROCID=str(i))) for i in range(ntasks)]
sys.exit(max(p.wait() for p in procs))
"""


@pytest.mark.slow
def test_slurm_launcher_trains_two_processes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod((bin_dir / "srun").stat().st_mode | stat.S_IXUSR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path / "run"
    env = dict(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHON=sys.executable, PORT=str(port),
               SLURM_JOB_NODELIST="127.0.0.1", SLURM_JOB_NUM_NODES="1", SLURM_GPUS_ON_NODE="2",
               JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    r = _bash(SLURM, "configs/toy_edm.py", str(workdir), "--config.training.num_steps=3",
              "--config.training.batch_size=64", "--config.training.ckpt_every=3", "--config.training.sample_every=3",
              "--config.eval.num_samples=256", "--config.sampling.num_samples=64", **env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "2 processes on 1 node(s)" in r.stdout
    from consistency.core import checkpoint
    assert checkpoint.available_steps(str(workdir)) == [3]
    assert json.loads((workdir / "config.json").read_text())["method"] == "edm"
    assert r.stdout.count("trained edm to step 3") == 1   # process 0 alone reports (and writes) the run's files


# ----------------------------------------------------------------------------------------------------------
# Bucket workdirs through consistency.core.fileio
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """gs://bucket/… paths redirected into ``tmp_path/bucket`` for every etils.epath call; yields that folder.
    (etils picks its TensorFlow backend for gs:// whenever TensorFlow is installed, which mock_epath does not replace;
    without it, gs:// uses the mocked backend.)"""
    from etils import epath
    from etils.epath import gpath
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    root = tmp_path / "bucket"
    root.mkdir()
    local = lambda p: os.fspath(p).replace("gs://bucket", os.fspath(root))  # noqa: E731
    one = lambda fn, p, *a, **k: fn(local(p), *a, **k)  # noqa: E731
    two = lambda fn, p, q, *a, **k: fn(local(p), local(q), *a, **k)  # noqa: E731
    mocks = {name: one for name in ("open", "exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "remove",
                                    "rmtree", "stat", "walk")}
    mocks.update(rename=two, replace=two, copy=two)
    with epath.testing.mock_epath(**mocks):
        yield root


def test_bucket_paths_stay_as_given():
    from consistency.core import checkpoint, fileio
    assert fileio.absolute("gs://b/run") == "gs://b/run"
    assert checkpoint.checkpoint_dir("gs://b/run") == "gs://b/run/checkpoints"
    assert fileio.absolute("rel") == os.path.abspath("rel")


def test_workdir_files_round_trip_on_a_bucket(bucket):
    import ml_collections
    from consistency.core import fileio
    from consistency.run import pictures, workdir
    from consistency.config import base_config
    run = "gs://bucket/runs/a"
    config = base_config()
    workdir.write_config(config, run)                                   # config.json
    assert json.loads((bucket / "runs/a/config.json").read_text())["seed"] == config.seed
    assert workdir.read_saved_config(run)["seed"] == config.seed
    workdir.check_workdir(config, run)                                  # same config: accepted
    other = ml_collections.ConfigDict(config.to_dict())
    other.seed = config.seed + 1
    with pytest.raises(Exception, match="config.seed"):
        workdir.check_workdir(other, run)
    picture = (np.arange(64, dtype=np.uint8).reshape(8, 8))
    pictures.save_png(f"{run}/samples/grid.png", picture)                 # sample grids
    from PIL import Image
    assert np.array_equal(np.asarray(Image.open(bucket / "runs/a/samples/grid.png")), picture)
    fileio.write_json(f"{run}/eval/metrics_3.json", {"fd": 1.5})        # metrics
    assert fileio.read_json(f"{run}/eval/metrics_3.json") == {"fd": 1.5}
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    fileio.save_npz(f"{run}/samples/sample_3.npz", samples=x, labels=np.arange(5))
    with np.load(bucket / "runs/a/samples/sample_3.npz") as data:
        assert np.array_equal(data["samples"], x) and np.array_equal(data["labels"], np.arange(5))
    fileio.save_npy(f"{run}/x.npy", x)
    assert np.array_equal(fileio.load_npy(f"{run}/x.npy"), x)
    fileio.check_writable(run)
    assert sorted(os.listdir(bucket / "runs/a")) == ["config.json", "eval", "samples", "x.npy"]  # no probe, no tmp


def test_inversion_resumes_on_a_bucket(bucket):
    """Teacher inversion writes its shards and meta to a bucket; a second run keeps the finished shards."""
    from consistency.tools import inversion
    from consistency.diffusion import oracles
    images = np.random.default_rng(0).normal(0.7, 0.3, size=(10, 1)).astype(np.float32)
    gaussian = oracles.gaussian_denoiser(0.7, 0.3)
    denoiser = lambda x, sigma, cond=None: gaussian(x, sigma)  # noqa: E731
    out = "gs://bucket/inv"
    kwargs = dict(num_steps=8, sigma_min=0.002, sigma_max=80.0, shard_size=4)
    meta = inversion.invert_split(denoiser, images, np.zeros(10, np.int32), out, {"name": "g"}, **kwargs)
    assert meta["complete"] and sorted(os.listdir(bucket / "inv")) == [
        "meta.json", "plain_00000.npy", "plain_00001.npy", "plain_00002.npy"]
    first = os.stat(bucket / "inv" / "plain_00000.npy").st_mtime_ns
    os.remove(bucket / "inv" / "plain_00002.npy")                        # an interrupted run
    inversion.invert_split(denoiser, images, np.zeros(10, np.int32), out, {"name": "g"}, **kwargs)
    assert os.stat(bucket / "inv" / "plain_00000.npy").st_mtime_ns == first
    assert (bucket / "inv" / "plain_00002.npy").exists()
    got_meta, latents, mirrored = inversion.load_latents(out)
    assert latents.shape == (10, 1) and mirrored is None and got_meta["complete"]
    # the same latents as inverting in memory (the shards hold what invert() returns)
    direct = inversion.invert(gaussian, images, inversion.inversion_sigmas(8, 0.002, 80.0))
    assert np.allclose(latents, np.asarray(direct), rtol=1e-6, atol=1e-5)
