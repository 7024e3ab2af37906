"""README.md's "Adding a method" example runs as written: the method file and its config are taken from the README's
code blocks (by their first-line file names), trained through the CLI for a few steps, and evaluated."""
from __future__ import annotations

import pytest
import json
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_block(first_line: str) -> str:
    text = open(os.path.join(REPO, "README.md")).read()
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"README.md has no python block starting with {first_line!r}")


@pytest.mark.slow
def test_adding_a_method_example_trains_two_networks_from_the_cli(tmp_path):
    (tmp_path / "my_pair.py").write_text(readme_block("# my_pair.py"))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "my_pair.py").write_text(readme_block("# configs/my_pair.py"))
    workdir = tmp_path / "wd"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), REPO])}
    result = subprocess.run([sys.executable, "-m", "consistency.main", "--imports=my_pair",
                             "--config=configs/my_pair.py", "--config.training.num_steps=10",
                             "--config.training.log_every=5", "--config.eval.num_samples=200",
                             "--config.optim_student.lr=1e-4", f"--workdir={workdir}"],
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.load(open(workdir / "config.json"))
    assert saved["optim_student"]["lr"] == 1e-4 and saved["optim_student"]["b1"] == 0.0
    report = json.load(open(workdir / "eval" / "metrics_10.json"))
    assert report["nfes"] == [1, 2] and report["nfe_1"]["finite_fraction"] == 1.0
    assert report["train/student/loss"] > 0 and report["train/denoiser/loss"] > 0
