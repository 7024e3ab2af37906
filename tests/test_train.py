"""The training system on a tiny test-only method (tests/dummy_method.py): optimizers against the textbook
recurrences, images, the registry, the loop's workdir, resume (bitwise), the NaN guard, 8-device sharding."""
from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import dummy_method  # noqa: E402  (registers dummy, dummy_sgd, dummy_nan and the fake:* datasets)

from consistency import api, methods  # noqa: E402
from consistency.core import checkpoint  # noqa: E402
from consistency.run import pictures, train  # noqa: E402
from consistency.methods.components import optim  # noqa: E402
from consistency.core.errors import ConfigError
from consistency.config import base_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


# ----------------------------------------------------------------------------------------------------------
# Optimizers: optax chains against the recurrences of Kingma & Ba 2015, Liu et al. 2020, Loshchilov & Hutter 2019
# ----------------------------------------------------------------------------------------------------------

def _reference_lr(k, lr, warmup, total, schedule):
    if k < warmup:
        return lr * k / warmup
    if schedule == "constant":
        return lr
    return lr * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (total - warmup)))


def _reference_run(name, grads, p0, lr, warmup, total, schedule, clip, b1, b2, eps, wd):
    """Textbook updates with clipping g ← g·min(1, c/‖g‖) applied first, for every optimizer."""
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    rho_inf = 2 / (1 - b2) - 1
    trajectory = []
    for k, g in enumerate(grads):
        t = k + 1
        if clip > 0:
            g = g * min(1.0, clip / np.linalg.norm(g))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        a = _reference_lr(k, lr, warmup, total, schedule)
        if name == "radam":
            rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
            if rho > 5.0:  # optax's threshold; below it RAdam is momentum SGD
                r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                step = r * m_hat / (np.sqrt(v_hat) + eps)
            else:
                step = m_hat
        else:
            step = m_hat / (np.sqrt(v_hat) + eps)
        if name == "adamw":
            step = step + wd * p
        p = p - a * step
        trajectory.append(p.copy())
    return trajectory


@pytest.mark.parametrize("name", ["adam", "radam", "adamw"])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_optimizer_matches_recurrences_with_warmup_and_clipping(name, schedule):
    # docs/methods.md §18 item 8: warm-up and clipping must wrap every optimizer (jcm's RAdam path dropped them).
    o = base_config().optim
    o.update(dict(name=name, lr=0.1, warmup_steps=3, grad_clip=1.0, b1=0.8, b2=0.9, eps=1e-8, schedule=schedule,
                  weight_decay=0.05 if name == "adamw" else 0.0))
    total = 10
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=3) * s for s in (3.0, 0.2, 5.0, 0.5, 2.0, 0.1, 4.0, 0.3, 1.0, 2.5)]
    p0 = np.array([0.5, -1.0, 2.0])
    expected = _reference_run(name, grads, p0, 0.1, 3, total, schedule, 1.0, 0.8, 0.9, 1e-8, o.weight_decay)
    tx = optim.make_optimizer(o, total)
    with jax.enable_x64(True):
        p = jnp.asarray(p0, jnp.float64)
        state = tx.init(p)
        for g, want in zip(grads, expected):
            updates, state = tx.update(jnp.asarray(g), state, p)
            p = p + updates
            np.testing.assert_allclose(np.asarray(p), want, rtol=1e-6, atol=1e-9)  # optax keeps f32 hyperparameters
    # the test has teeth: without clipping the trajectory is different
    unclipped = _reference_run(name, grads, p0, 0.1, 3, total, schedule, 0.0, 0.8, 0.9, 1e-8, o.weight_decay)
    assert np.max(np.abs(unclipped[-1] - expected[-1])) > 1e-3


def test_learning_rate_schedule_values():
    o = base_config().optim
    o.update(dict(lr=2.0, warmup_steps=4, schedule="cosine"))
    lr = optim.learning_rate_schedule(o, num_steps=12)
    for k in range(13):
        assert float(lr(k)) == pytest.approx(_reference_lr(k, 2.0, 4, 12, "cosine"), abs=1e-6)
    assert float(lr(12)) == pytest.approx(0.0, abs=1e-6)


def test_optimizer_config_errors_and_overrides():
    c = base_config()
    c.optim.weight_decay = 0.1  # adam would silently ignore it
    with pytest.raises(ConfigError, match="config.optim.weight_decay"):
        optim.make_optimizer(c.optim, 10)
    c.optim.weight_decay = 0.0
    c.optim.schedule = "linear"
    with pytest.raises(ConfigError, match="config.optim.schedule"):
        optim.make_optimizer(c.optim, 10)
    c.optim.schedule = "constant"
    c.optim_fake = ml_collections.ConfigDict({"lr": 0.25, "name": "radam"})
    merged = optim.optim_config_for(c, "fake")
    assert (merged.lr, merged.name, merged.b1) == (0.25, "radam", c.optim.b1)
    assert optim.optim_config_for(c, "generator").lr == c.optim.lr
    c.optim_fake = ml_collections.ConfigDict({"learning_rate": 0.25})
    with pytest.raises(ConfigError, match="config.optim_fake.learning_rate"):
        optim.make_optimizer_for(c, "fake")


# ----------------------------------------------------------------------------------------------------------
# Registry and validation
# ----------------------------------------------------------------------------------------------------------

def test_registry_and_validation_errors(tmp_path):
    c = dummy_method.tiny_config()
    ds = dummy_method.FakeDataset("toy", 8, 0)
    assert methods.get_method(c, ds).name == "dummy"
    c.method = "no_such_method"
    with pytest.raises(ConfigError, match="config.method.*no_such_method"):
        methods.get_method(c, ds)
    with pytest.raises(ConfigError, match="config.method"):
        train.validate_run_config(c)
    c = dummy_method.tiny_config(batch_size=12)
    with pytest.raises(ConfigError, match=r"config.training.batch_size: 12 .* 8 devices"):
        train.validate_run_config(c, num_devices=8)
    train.validate_run_config(dummy_method.tiny_config(batch_size=16), num_devices=8)
    c = dummy_method.tiny_config()
    c.teacher.workdir = str(tmp_path / "no_teacher")
    with pytest.raises(ConfigError, match="config.teacher.workdir"):
        train.validate_run_config(c)
    c = dummy_method.tiny_config(log_every=0)
    with pytest.raises(ConfigError, match="config.training.log_every"):
        train.validate_run_config(c)


# ----------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------

def test_image_grid_places_and_scales_pixels(tmp_path):
    values = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    x = np.broadcast_to(values[:, None, None, None], (5, 2, 3, 1)).copy()
    grid = pictures.image_grid(x, padding=1)
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 1, 1) and grid.dtype == np.uint8  # ⌈√5⌉ = 3 columns, 2 rows
    for i, v in enumerate(values):
        r, q = divmod(i, 3)
        cell = grid[1 + 3 * r: 3 + 3 * r, 1 + 4 * q: 4 + 4 * q, 0]
        assert np.all(cell == np.clip(np.rint((v + 1) * 127.5), 0, 255))
    assert np.all(grid[0] == 255) and np.all(grid[:, 0] == 255)      # padding
    assert np.all(grid[4:, 9:] == 255)                                # the empty sixth cell
    path = pictures.save_png(str(tmp_path / "g.png"), pictures.upscale(grid, 3))
    back = np.asarray(Image.open(path))
    assert back.shape == (21, 39) and np.array_equal(back, np.repeat(np.repeat(grid[..., 0], 3, 0), 3, 1))


def test_scatter_and_histogram_png(tmp_path):
    rng = np.random.default_rng(0)
    img = pictures.scatter_png(rng.normal(size=(100, 2)), str(tmp_path / "s.png"), reference=rng.normal(size=(50, 2)))
    assert img.dtype == np.uint8 and img.shape == (400, 400, 3)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s.png").convert("RGB")), img)
    hist = pictures.scatter_png(rng.normal(size=(100, 1)), str(tmp_path / "h.png"))
    assert hist.shape == (400, 400, 3) and hist.std() > 0
    with pytest.raises(ValueError):
        pictures.scatter_image(np.zeros((4, 3)))


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------

def _scalar_events(workdir):
    import tensorflow as tf
    out = {}
    for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = value
    return out


def test_loop_workdir_logging_sampling_and_inference(tmp_path):
    """An image run: files, averaged logs that match a replay of the contract (step key, data order), the
    sample and eval modes, and consistency.api.load."""
    import tensorflow as tf
    wd = str(tmp_path / "run")
    c = dummy_method.tiny_config(data="fake:image", num_steps=4, log_every=2, ckpt_every=2, sample_every=2)
    c.model.num_classes = 2  # class-conditional: samples are drawn with balanced labels
    final = train.train_and_evaluate(c, wd)

    assert int(final.step) == 4
    assert train.load_config(wd).to_dict() == c.to_dict()
    assert checkpoint.available_steps(wd) == [2, 4]
    for k in (2, 4):
        png = np.asarray(Image.open(os.path.join(wd, "samples", f"step_{k}.png")))
        assert png.shape == (252, 252)  # 16 images of 4×4 with 1-px padding: 21 px, upscaled ×12
    metrics = json.load(open(os.path.join(wd, "eval", "metrics_4.json")))
    assert metrics["step"] == 4 and metrics["samples/finite_fraction"] == 1.0

    # replay steps 3 and 4 from checkpoint 2 by hand: step key fold_in(PRNGKey(seed), step), batch ds.batch(step)
    run2 = train.restore_run(c, wd, step=2)
    ds, method = run2.dataset, run2.method
    state, losses = run2.state, []
    state, step_metrics = train.run_steps(method, state, ds, jax.random.PRNGKey(c.seed), 2)
    losses = [float(m["loss"]) for m in step_metrics]
    for replayed, trained in zip(jax.tree.leaves(state.params), jax.tree.leaves(final.params)):
        np.testing.assert_allclose(replayed, trained, rtol=1e-5, atol=1e-6)
    events = _scalar_events(wd)
    logged = float(tf.make_ndarray(events["loss"][4].tensor))
    assert logged == pytest.approx(np.mean(losses), rel=1e-5)
    assert {2, 4} <= set(events["samples"]) and 4 in events["eval/samples/sliced_wasserstein"]

    # --mode=sample and the inference API
    path = train.sample(c, wd)
    saved = np.load(path)
    assert saved["samples"].shape == (16, 4, 4, 1) and np.array_equal(saved["labels"], np.arange(16) % 2)
    assert os.path.exists(os.path.join(wd, "samples", "sample_4.png"))
    loaded = api.load(wd)
    assert loaded.step == 4 and loaded.config.method == "dummy"
    assert _leaves_equal(loaded.params, final.ema["online"])
    key = jax.random.PRNGKey(3)
    direct = method.sample(final, key, 5, nfe=method.sampling_nfe, options=method.options)
    np.testing.assert_allclose(loaded.sample(key, 5), direct, rtol=1e-5, atol=1e-6)
    with_labels = loaded.sample(key, 5, labels=np.arange(5) % 2)  # labels are traced, not hashed
    np.testing.assert_allclose(with_labels, direct, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match=r"^sampling option 'solver': method 'dummy' samples with no options"):
        loaded.sample(key, 5, solver="euler")
    assert train.evaluate(c, wd, step=2)["step"] == 2 and os.path.exists(os.path.join(wd, "eval", "metrics_2.json"))
    with pytest.raises(FileNotFoundError):
        api.load(wd, step=3)


def test_resume_is_bitwise_identical(tmp_path, monkeypatch):
    """2N steps straight vs N, a kill right after the checkpoint, and a restart: same params, opt state, EMA."""
    n = 20
    c = dummy_method.tiny_config(num_steps=2 * n, log_every=5, ckpt_every=n, sample_every=0)
    c.optim.update(dict(warmup_steps=5, schedule="cosine", grad_clip=0.5))  # step-dependent optimizer state
    straight = train.train_and_evaluate(c, str(tmp_path / "straight"))

    class Killed(Exception):
        pass

    original_save = checkpoint.save

    def save_then_die(manager, step, state, meta):
        original_save(manager, step, state, meta)
        if step == n:
            manager.wait_until_finished()
            raise Killed

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        train.train_and_evaluate(c, str(tmp_path / "resumed"))
    monkeypatch.setattr(checkpoint, "save", original_save)
    assert checkpoint.available_steps(str(tmp_path / "resumed")) == [n]
    resumed = train.train_and_evaluate(c, str(tmp_path / "resumed"))

    assert int(resumed.step) == int(straight.step) == 2 * n
    for field in ("params", "opt_state", "ema"):
        assert _leaves_equal(getattr(straight, field), getattr(resumed, field)), field
    # ... and the second half did move the params away from the checkpoint the restart began from
    assert not _leaves_equal(api.load(str(tmp_path / "resumed"), step=n).state.params, resumed.params)


def test_nan_guard_names_step_metric_and_method(tmp_path):
    wd = str(tmp_path / "nan")
    c = dummy_method.tiny_config(method="dummy_nan", num_steps=8, ckpt_every=1, sample_every=0)
    step = dummy_method.NAN_FROM_STEP + 1  # the update computed from state.step = 3 is the 4th step
    with pytest.raises(train.NonFiniteMetricError, match=rf"'loss' = nan at step {step} .*'dummy_nan'"):
        train.train_and_evaluate(c, wd)
    assert checkpoint.available_steps(wd) == [step - 2, step - 1]  # keep 2; the bad step was not saved


_SHARDED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import jax
    jax.config.update("jax_threefry_partitionable", {partitionable!r})  # as in the parent (tests/conftest.py)
    sys.path.insert(0, {tests!r})
    import dummy_method
    from consistency.run import train
    from consistency.core.errors import ConfigError
    assert jax.device_count() == 8, jax.devices()
    try:
        train.train_and_evaluate(dummy_method.tiny_config(batch_size=12), {wd!r} + "_bad")
        print("NO ERROR")
    except ConfigError as e:
        print("CONFIG_ERROR", e)
    state = train.train_and_evaluate(dummy_method.tiny_config(**{kw!r}), {wd!r})
    np.savez({wd!r} + ".npz", *[np.asarray(x) for x in jax.tree.leaves(state.params)])
""")


@pytest.mark.slow
def test_eight_devices_match_one_device(tmp_path):
    """docs/platform.md §4a: a few SGD steps sharded over 8 host devices give the 1-device loss and params."""
    kw = dict(method="dummy_sgd", batch_size=16, num_steps=3, log_every=1, ckpt_every=0, sample_every=0)
    wd8 = str(tmp_path / "eight")
    script = tmp_path / "sharded.py"
    script.write_text(_SHARDED_SCRIPT.format(tests=os.path.dirname(__file__), wd=wd8, kw=kw,
                                             partitionable=bool(jax.config.jax_threefry_partitionable)))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(["timeout", "-s", "KILL", "240", sys.executable, str(script)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CONFIG_ERROR config.training.batch_size: 12" in proc.stdout

    kw.pop("method")
    one = train.train_and_evaluate(dummy_method.tiny_config(method="dummy_sgd", **kw), str(tmp_path / "one"))
    eight = np.load(wd8 + ".npz")
    for i, leaf in enumerate(jax.tree.leaves(one.params)):
        np.testing.assert_allclose(eight[f"arr_{i}"], np.asarray(leaf), atol=1e-5)
    loss1 = json.load(open(tmp_path / "one" / "eval" / "metrics_3.json"))["train/loss"]
    loss8 = json.load(open(wd8 + "/eval/metrics_3.json"))["train/loss"]
    assert loss8 == pytest.approx(loss1, abs=1e-5)
