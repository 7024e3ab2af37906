"""launch/science.py (issue 11 item 4, issue 31 item 6): the seed §2.1 point-mass prediction against its closed form,
(m)'s target errors against the 1-D Gaussian closed form, (j)'s data-free training set (a dataset serving the teacher's
own samples), the page writer keeping the prose, and one tiny question end to end (table rows, per-seed cache, plot)."""
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


def test_target_errors_match_the_gaussian_closed_form():
    """(m): data N(μ, s²), so the PF-ODE is linear in y = x − μ: x* = μ + r·y_hi with r = √((s² + σ_lo²)/(s² + σ_hi²)),
    and with a(σ) = σ/(s² + σ²), h = σ_lo − σ_hi the exact-D Euler and Heun steps are y·k_E, y·k_H with
    k_E = 1 + h·a(σ_hi), k_H = 1 + h/2·(a(σ_hi) + a(σ_lo)·k_E); Var y_hi = s² + σ_hi². The CT target's variance is
    (1 − σ_lo/σ_hi)²·Var[x₀ | x_hi] = (1 − σ_lo/σ_hi)²·s²σ_hi²/(s² + σ_hi²)."""
    import jax
    from consistency.objectives import consistency as cm_obj
    mean, s, n = 0.7, 0.3, 20000
    kx, kz = jax.random.split(jax.random.PRNGKey(0))
    x0, z = mean + s * jax.random.normal(kx, (n, 1)), jax.random.normal(kz, (n, 1))
    for lo, hi in ((0.5, 0.8), (2.0, 5.0)):
        got = cm_obj.target_errors(oracles.gaussian_denoiser(mean, s), x0, z, lo, hi)
        r, h, var = math.sqrt((s * s + lo * lo) / (s * s + hi * hi)), lo - hi, s * s + hi * hi
        a = lambda t: t / (s * s + t * t)  # noqa: E731
        k_e = 1 + h * a(hi)
        k_h = 1 + h / 2 * (a(hi) + a(lo) * k_e)
        expected = {"cd": var * (k_h - r) ** 2, "ct": s * s * (1 - r) ** 2 + (lo - r * hi) ** 2,
                    "ct_bias": var * (k_e - r) ** 2, "ct_variance": (1 - lo / hi) ** 2 * s * s * hi * hi / var}
        for key, value in expected.items():   # Monte Carlo over 20,000 draws: ~1 % relative error
            assert got[key] == pytest.approx(value, rel=0.05), (lo, hi, key)
        assert max(got["cd"], got["ct_bias"]) < got["ct_variance"] / 50   # both steps' bias ≪ CT's variance


def test_data_free_dataset_serves_the_teachers_samples():
    """(j): the teacher's own samples (its Heun sampler, 35 NFE, from σ_max·z) of the exact N(0.7, 0.3²) teacher have
    that mean and std, and :func:`consistency.data.with_examples` serves exactly them, with the toy's metadata."""
    from consistency.data import make_dataset, with_examples
    from consistency.methods.components import teachers
    config = teachers.config_for_teacher("", "mixture", "toy:gaussian1d", "test")
    config.data.toy_size = 2048
    _, samples, sigma_max = teachers.make_ode_pairs(config, 2048, num_steps=18, solver="heun", seed=3, chunk=2048)
    assert sigma_max == 80.0 and samples.shape == (2048, 1)
    assert abs(samples.mean() - 0.7) < 4 * 0.3 / 45 and abs(samples.std() - 0.3) < 0.02
    data = make_dataset(config.data, 256, seed=0)
    served = with_examples(data, samples)
    assert served.size == 2048 and served.mixture is data.mixture and served.kind == "toy"
    seen = np.concatenate([served.batch(k)["x"] for k in range(8)])       # one epoch: each sample exactly once
    np.testing.assert_array_equal(np.sort(seen[:, 0]), np.sort(samples[:, 0]))
    with pytest.raises(ValueError, match="with_examples"):
        with_examples(data, np.zeros((4, 2), np.float32))


@pytest.mark.parametrize("method, reads", [("sid", False), ("dmd2", True)])
def test_which_distillation_steps_read_the_training_points(method, reads):
    """(j): after init (whose MLP fit to the teacher uses the first batch as its pool), SiD's steps never read
    batch['x'] — moving every point by 3 gives bit-identical parameters — while DMD2's (GAN real branch) do."""
    import jax
    from consistency import methods, presets
    from consistency.config import optim_override
    from consistency.methods import base
    from consistency.run import train
    c = presets.toy_distillation(presets.new(method), method, fit_steps=5)
    c.model.update(dict(hidden=16, depth=1, embed_dim=8))
    c.training.update(dict(num_steps=4, batch_size=16))
    if method == "sid":
        c.optim_fake = optim_override(b1=0.0)
    else:
        c.discriminator.update(dict(name="mlp", features=("bottleneck",), channels=8, depth=1))
    dataset = train.build_dataset(c)
    m = methods.get_method(c, dataset)
    rng = jax.random.PRNGKey(0)
    stepper = train.Stepper(m, donate=False)
    start = base.init_state(m, jax.random.fold_in(rng, 1), dataset.batch(0))
    ends = []
    for shift in (0.0, 3.0):
        state = start
        for k in range(2):   # step 0: generator and fake side (DMD2's TTUR: the generator at steps ≡ 0 mod 5)
            batch = dict(dataset.batch(k))
            batch["x"] = batch["x"] + np.float32(shift)
            state, _ = stepper(state, batch, rng, step=k)
        ends.append(jax.tree.leaves(state.params))
    same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(*ends))
    assert same == (not reads)


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
