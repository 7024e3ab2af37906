"""launch/science.py (issue 11 item 4): the seed §2.1 point-mass prediction against its closed form, the page writer
keeping the prose, and one tiny question end to end (table rows, per-seed cache, plot)."""
from __future__ import annotations

import pytest
import json
import math
import os
import subprocess
import sys

import numpy as np

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
from consistency.diffusion import oracles  # the script's pure parts; importing the script would define its flags
from consistency.run import reports  # the script's pure parts; importing the script would define its flags


def test_point_mass_prediction_without_ema_matches_the_closed_form_and_ema_slows_it():
    from consistency.diffusion import schedules
    grid = np.sort(np.asarray(schedules.karras_sigmas(18, 0.002, 80.0, 7.0), np.float64))
    lo, hi = grid[:-1], grid[1:]
    a, b = 0.002 * (hi - lo) / hi ** 2, 1 - 0.002 / hi
    # θ⁻ = θ: θ_k − ε = (1 − lr·E[2a(a+b)])^k (θ₀ − ε), so the step count has a closed form
    rate = 1e-3 * np.mean(2 * a * (a + b))
    expected = math.ceil(math.log(0.01) / math.log(1 - rate))
    assert abs(oracles.point_mass_prediction(0.0) - expected) <= 1
    steps = [oracles.point_mass_prediction(mu) for mu in (0.0, 0.9, 0.99)]
    assert steps[0] < steps[1] < steps[2]


def test_replace_block_keeps_the_prose():
    page = "# Q\n\nanswer a\n\n<!-- science:a -->\nold\n<!-- /science:a -->\n\nmore prose\n"
    new = reports.replace_block(page, "a", "new table")
    assert "answer a" in new and "more prose" in new and "new table" in new and "old" not in new
    added = reports.replace_block(new, "b", "table b")
    assert added.count("<!-- science:b -->") == 1 and added.endswith("<!-- /science:b -->\n")


@pytest.mark.slow
def test_one_question_end_to_end(tmp_path):
    out = tmp_path / "science.md"
    out.write_text("# Science\n\nprose stays\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "launch/science.py", "--question=d", "--seeds=2", "--steps=30",
                        "--num_samples=200", "--max_settings=2", f"--out={out}"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    page = out.read_text()
    assert "prose stays" in page and "| max_gap = 1 | 30 |" in page and "| max_gap = 2 | 30 |" in page
    cache = json.loads((tmp_path / "science" / "runs.json").read_text())
    assert sorted((v["overrides"][0][1], v["seed"]) for v in cache.values()) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(0 < v["nfe_1"]["swd"] < 10 and v["steps"] == 30 for v in cache.values())
    assert (tmp_path / "science" / "d.png").exists()


def test_merge_json_keeps_the_keys_another_writer_added(tmp_path):
    path = str(tmp_path / "science" / "runs.json")
    first = {"a": {"swd": 1.0}}
    reports.merge_json(path, first)               # process 1 writes its cache …
    reports.merge_json(path, {"b": {"swd": 2.0}})  # … process 2, which loaded the file before, writes its own
    reports.merge_json(path, dict(first, c=3))    # process 1 again, from its stale in-memory copy
    assert json.loads(open(path).read()) == {"a": {"swd": 1.0}, "b": {"swd": 2.0}, "c": 3}


@pytest.mark.slow
def test_only_names_a_setting_of_the_question_or_exits_2(tmp_path):
    """`--only` trains one setting of one question; an unknown label is one line naming the flag and the labels."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    base = [sys.executable, "launch/science.py", f"--out={tmp_path / 'science.md'}", "--steps=2", "--seeds=1"]
    r = subprocess.run(base + ["--question=l", "--only=batch, K = 9"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "--only: 'batch, K = 9' is not a setting of question l" in r.stderr, r.stderr[-2000:]
    r = subprocess.run(base + ["--question=o", "--only=T = 1"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "--only: name one question with a settings table" in r.stderr, r.stderr[-2000:]
