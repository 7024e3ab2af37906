"""``python -m consistency.main`` in a subprocess: config files with variants, command-line overrides reaching the
run, the sample mode from a workdir alone, and one-line validation errors with exit status 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

# A config file that knows nothing about the test method except its name; --imports=dummy_method registers it.
CONFIG_FILE = textwrap.dedent("""
    from consistency.config import base_config

    def get_config(variant=None):
        c = base_config()
        c.method = "dummy"
        c.data.name = "fake:image" if variant == "image" else "fake:toy"
        c.training.update(dict(num_steps=50, batch_size=8, log_every=1, ckpt_every=25, keep_checkpoints=2,
                               sample_every=25, ema_decay=0.9))
        c.sampling.num_samples = 9
        c.eval.num_samples = 9
        return c
""")


def _cli(*args, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([REPO, TESTS, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(["timeout", "-s", "KILL", str(timeout), sys.executable, "-m", "consistency.main", *args],
                          cwd=REPO, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("configs") / "dummy_cfg.py"
    path.write_text(CONFIG_FILE)
    return str(path)


@pytest.mark.slow   # two CLI subprocesses (≈ 20 s)
def test_overrides_reach_the_run_and_sample_mode(config_path, tmp_path):
    wd = str(tmp_path / "run")
    proc = _cli(f"--config={config_path}:image", f"--workdir={wd}", "--imports=dummy_method",
                "--config.training.num_steps=3", "--config.training.ckpt_every=1", "--config.optim.lr=0.005",
                "--config.seed=7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.load(open(os.path.join(wd, "config.json")))
    assert saved["data"]["name"] == "fake:image"                       # the variant
    assert saved["training"]["num_steps"] == 3 and saved["optim"]["lr"] == 0.005 and saved["seed"] == 7
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["2", "3"]   # every step, keep 2
    assert os.path.exists(os.path.join(wd, "samples", "step_3.png"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(wd))
    assert json.load(open(os.path.join(wd, "eval", "metrics_3.json")))["step"] == 3

    # --mode=sample with no --config: the run's own config.json, the latest checkpoint
    proc = _cli(f"--workdir={wd}", "--mode=sample", "--imports=dummy_method")
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = np.load(os.path.join(wd, "samples", "sample_3.npz"))
    assert samples["samples"].shape == (9, 4, 4, 1) and np.all(samples["labels"] == -1)
    npz = os.path.join(wd, "samples", "sample_3.npz")
    assert proc.stdout.splitlines() == [f"wrote 9 samples to {npz} and {npz[:-4]}.png"]
    proc = _cli(f"--workdir={wd}", "--mode=eval", "--step=2", "--imports=dummy_method")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.load(open(os.path.join(wd, "eval", "metrics_2.json")))["step"] == 2
    metrics_3 = os.path.join(wd, "eval", "metrics_3.json")
    written = os.path.getmtime(metrics_3)
    proc = _cli(f"--workdir={wd}", "--mode=eval", "--imports=dummy_method")   # the latest step, evaluated in training
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"dummy at step 3, 9 samples per NFE: {metrics_3}")
    assert lines[1].split() == ["metric", "NFE", "1", "NFE", "2"] and lines[2].startswith("finite_fraction")
    recomputed = os.path.getmtime(metrics_3) > written
    assert recomputed != ("re-used" in lines[0]), lines[0]   # it recomputes, or says it did not and how to


@pytest.mark.slow
def test_divergence_is_one_error_line_and_exit_2(config_path, tmp_path):
    proc = _cli(f"--config={config_path}", f"--workdir={tmp_path / 'nan'}", "--imports=dummy_method",
                "--config.method=dummy_nan", "--config.training.ckpt_every=1", timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]
    assert errors[0].startswith("error: training diverged: metric 'loss'") and "optim.lr" in errors[0]
    assert all(len(line) <= 500 for line in proc.stderr.splitlines())   # no Orbax dumps in the default log


def test_sample_mode_without_checkpoint_is_a_clear_error(tmp_path):
    proc = _cli(f"--workdir={tmp_path / 'empty'}", "--mode=sample", timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: --config: not given and ")


def test_a_missing_imports_module_is_one_line_and_exit_2(config_path, tmp_path):
    proc = _cli(f"--config={config_path}", f"--workdir={tmp_path / 'w'}", "--imports=no_such_method_module",
                timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert proc.stderr == "error: --imports: no module named 'no_such_method_module'; put it on PYTHONPATH\n"
    assert not os.path.exists(tmp_path / "w")


# The EDM teacher end to end through the shipped config files, shrunk on the command line: a 2-D toy, and
# class-conditional sklearn digits (offline real data) with CFG sampling, which exercises the labels path.
TINY_RUN = ["--config.training.num_steps=2", "--config.training.batch_size=8", "--config.training.log_every=1",
            "--config.training.ckpt_every=2", "--config.training.sample_every=0", "--config.sampling.num_samples=4",
            "--config.sampling.num_steps=2", "--config.eval.num_samples=4", "--config.eval.nfes=(3,)"]
EDM_RUNS = {
    "toy": ["--config=configs/toy_edm.py", "--config.model.hidden=16", "--config.model.depth=2"],
    "digits": ["--config=configs/digits_edm.py", "--config.model.channels=8", "--config.model.channel_mult=(1,)",
               "--config.model.num_classes=10", "--config.data.conditional=True",
               "--config.training.label_dropout=0.2", "--config.sampling.cfg_scale=2.0"],
}


@pytest.mark.slow
@pytest.mark.parametrize("variant, picture_shape", [("toy", (400, 400, 3)), ("digits", (247, 247))])
def test_edm_end_to_end(tmp_path, variant, picture_shape):
    wd = str(tmp_path / variant)
    proc = _cli(*EDM_RUNS[variant], *TINY_RUN, f"--workdir={wd}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.load(open(os.path.join(wd, "config.json")))
    assert saved["training"]["num_steps"] == 2 and saved["sampling"]["num_steps"] == 2
    assert os.listdir(os.path.join(wd, "checkpoints")) == ["2"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(wd))
    from PIL import Image
    # digits: 4 images of 8×8 in a 2×2 grid with 1-px padding = 19 px, upscaled ×(256 // 19) = ×13
    assert np.asarray(Image.open(os.path.join(wd, "samples", "step_2.png"))).shape == picture_shape
    metrics = json.load(open(os.path.join(wd, "eval", "metrics_2.json")))
    assert metrics["step"] == 2 and metrics["samples/finite_fraction"] == 1.0 and np.isfinite(metrics["train/loss"])


def _readme_block(heading: str) -> str:
    """The first fenced code block after ``heading`` in README.md."""
    text = open(os.path.join(REPO, "README.md")).read()
    after = text[text.index(heading):]
    body = after[after.index("```"):].split("\n", 1)[1]   # past the opening fence and its language tag
    return body[:body.index("```")]


@pytest.mark.slow
def test_readme_inference_snippet_runs_on_the_quick_start_workdir(tmp_path, monkeypatch):
    """The quick start (shrunk on the command line) into the README's own workdir, then the README's inference
    snippet verbatim, from the same directory."""
    quick_start = [line for line in _readme_block("## Install and first run").splitlines()
                   if line.startswith("python -m consistency.main")]
    assert quick_start == ["python -m consistency.main --config=configs/digits_edm.py:quick --workdir=workdirs/quick"]
    workdir = tmp_path / "workdirs" / "quick"
    proc = _cli("--config=configs/digits_edm.py:quick", f"--workdir={workdir}", "--config.model.channels=8",
                "--config.model.channel_mult=(1,)", *TINY_RUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"trained edm to step 2 in {workdir}\n")
    snippet = _readme_block("## Inference API")
    assert 'consistency.load("workdirs/quick")' in snippet
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 — the documented example itself
    x = np.asarray(namespace["x"])
    assert x.shape == (16, 8, 8, 1) and np.all(np.isfinite(x))
