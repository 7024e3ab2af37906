"""The method contract through the real loop: a two-network method (tests/dummy_method.py ``dummy_pair``, shaped like
DMD2: fake score updated every step, generator every 5th) with a different optimizer per set, checked by value
against a hand-written reference loop — per-set update counters, per-set lr schedules counted in the set's own
updates, the generator's sampling EMA, metrics averaged only over the steps that produced them, one compilation per
distinct due tuple, bitwise resume."""
from __future__ import annotations

import glob
import json
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import dummy_method  # noqa: E402

from consistency.core import checkpoint  # noqa: E402
from consistency import methods  # noqa: E402
from consistency.run import train  # noqa: E402
from consistency.config import optim_override  # noqa: E402
from consistency.methods import base  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EVERY, LOG_EVERY = 20, 5, 10


def pair_config():
    c = dummy_method.tiny_config("dummy_pair", num_steps=STEPS, log_every=LOG_EVERY, ckpt_every=10, sample_every=0,
                                 ema_decay=0.8)
    c.optim.update(dict(name="adam", lr=0.05, b1=0.9, schedule="cosine"))  # the generator's optimizer
    c.optim_fake = optim_override(lr=0.1, b1=0.0, schedule="constant")  # SiD-style β₁ = 0 for the fake score
    c.eval.nfes = (1,)
    return c


def reference_run(c):
    """The same updates written out by hand: Adam from optax, the gating, the cosine lr and the EMA from formulas."""
    ds = dummy_method.FakeDataset("toy", c.training.batch_size, c.seed)
    _, init_key, _ = train.stream_keys(c.seed)
    method = methods.get_method(c, ds)
    s0 = base.init_state(method, init_key, ds.batch(0))
    f, g = np.asarray(s0.params["fake"], np.float64), np.asarray(s0.params["generator"], np.float64)
    gen_updates = STEPS // EVERY

    def generator_lr(count):  # cosine decay to 0 over the generator's own 4 updates (Loshchilov & Hutter 2017)
        return 0.05 * 0.5 * (1 + math.cos(math.pi * count / gen_updates))

    opt_f = optax.adam(0.1, b1=0.0, b2=0.999, eps=1e-8)
    opt_g = optax.adam(generator_lr, b1=0.9, b2=0.999, eps=1e-8)
    sf, sg = opt_f.init(f), opt_g.init(g)
    ema, log = g.copy(), {"fake/loss": {}, "generator/loss": {}, "generator/lr": {}}
    for k in range(STEPS):
        m = ds.batch(k)["x"].reshape(c.training.batch_size, -1).astype(np.float64).mean(0)
        log["fake/loss"][k] = float(np.sum((f - (g + m)) ** 2))
        u, sf = opt_f.update(2 * (f - (g + m)), sf, f)
        f = np.asarray(optax.apply_updates(f, u))
        if k % EVERY == EVERY - 1:
            count = k // EVERY
            log["generator/loss"][k] = float(np.sum((g - 0.5 * f) ** 2) + np.sum(g ** 2) / 10)
            log["generator/lr"][k] = generator_lr(count)
            u, sg = opt_g.update(2 * (g - 0.5 * f) + 0.2 * g, sg, g)
            g = np.asarray(optax.apply_updates(g, u))
            ema = 0.8 * ema + 0.2 * g
    return f, g, ema, log


def logged_means(log, name, upto):
    """Mean of the values a metric had at the steps in (upto − LOG_EVERY, upto] that produced it."""
    values = [v for k, v in log[name].items() if upto - LOG_EVERY <= k < upto]
    return float(np.mean(values))


def scalar_events(workdir):
    import tensorflow as tf
    out = {}
    for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                if array.ndim == 0 and array.dtype.kind == "f":  # scalars only (not images, not hparams)
                    out.setdefault(value.tag, {})[event.step] = float(array)
    return out


def test_two_network_method_with_5_to_1_updates_matches_a_hand_written_loop(tmp_path):
    c = pair_config()
    dummy_method.TRACES.clear()
    state = train.train_and_evaluate(c, str(tmp_path / "run"))
    f, g, ema, log = reference_run(c)

    assert {k: int(v) for k, v in state.updates.items()} == {"fake": STEPS, "generator": STEPS // EVERY}
    assert int(state.step) == STEPS
    np.testing.assert_allclose(state.params["fake"], f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.params["generator"], g, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.ema["generator"], ema, rtol=1e-5, atol=1e-6)
    assert set(state.ema) == {"generator"}  # only the sampled set keeps a sampling EMA
    # one compilation per distinct due tuple: ('fake',) and ('fake', 'generator')
    assert dummy_method.TRACES == {"fake": 2, "generator": 1}

    events = scalar_events(str(tmp_path / "run"))
    for name in ("fake/loss", "generator/loss", "generator/lr"):
        for upto in (10, 20):
            assert events[name][upto] == pytest.approx(logged_means(log, name, upto), rel=1e-5), (name, upto)
    # the generator's lr is its own schedule: 0.05 then cos-decayed per *generator* update, never mixed with zeros
    assert events["generator/lr"][10] == pytest.approx((0.05 + 0.05 * 0.5 * (1 + math.cos(math.pi / 4))) / 2)
    assert events["fake/lr"][10] == pytest.approx(0.1)


def test_two_network_resume_is_bitwise(tmp_path):
    c = pair_config()
    whole = train.train_and_evaluate(c, str(tmp_path / "whole"))
    resumed_dir = str(tmp_path / "resumed")
    train.train_and_evaluate(c, resumed_dir)
    shutil.rmtree(os.path.join(checkpoint.checkpoint_dir(resumed_dir), str(STEPS)))  # as if killed after step 10
    for path in glob.glob(os.path.join(resumed_dir, "eval", "*.json")):
        os.remove(path)
    assert checkpoint.available_steps(resumed_dir) == [10]
    resumed = train.train_and_evaluate(c, resumed_dir)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_optim_block_override_from_the_command_line(tmp_path):
    config_file = tmp_path / "pair_config.py"
    config_file.write_text("import dummy_method\nfrom consistency.config import optim_override\n\n\n"
                           "def get_config():\n    c = dummy_method.tiny_config('dummy_pair')\n"
                           "    c.optim_fake = optim_override()\n    c.eval.nfes = (1,)\n    return c\n")
    workdir = tmp_path / "cli"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), REPO])}
    result = subprocess.run([sys.executable, "-m", "consistency.main", "--imports=dummy_method",
                             f"--config={config_file}", "--config.optim_fake.b1=0.0",
                             "--config.training.num_steps=5", f"--workdir={workdir}"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.load(open(workdir / "config.json"))
    assert saved["optim_fake"]["b1"] == 0.0 and saved["optim_fake"]["lr"] is None  # None: inherits optim.lr


def test_updates_in_counts_the_steps_a_set_is_due():
    assert [base.updates_in(20, 5, p) for p in range(5)] == [4, 4, 4, 4, 4]
    assert base.updates_in(21, 5, 0) == 5 and base.updates_in(21, 5, 4) == 4 and base.updates_in(3, 5, 4) == 0
    for total in range(0, 30):
        for every in (1, 2, 5):
            for phase in range(every):
                assert base.updates_in(total, every, phase) == sum(k % every == phase for k in range(total))


def test_nfe_evaluation_uses_the_configured_sigma_list_for_its_own_length():
    from consistency.config import base_config
    from consistency.data import make_dataset
    c = base_config()
    c.method, c.data.name, c.model.name, c.teacher.oracle = "cd", "toy:gaussian1d", "mlp", "mixture"
    c.sampling.sigmas = (80.0, 0.585)  # the CM paper's ts = [0, 11, 17] on N = 18 (cifar_cd)
    method = methods.get_method(c, make_dataset(c.data, 8, 0))
    describe = method.describe_sampler
    assert describe(2, method.options) == {"sigmas": (80.0, 0.585)}  # not ECT's (80, 0.821)
    assert describe(1, method.options) == {"sigmas": (80.0,)}
    assert describe(3, method.options) == {"sigmas": (80.0, 0.821, 0.1)}  # no configured 3-step list: the default one
    assert method.default_nfes == (1, 2)
    c.method = "edm"
    assert methods.get_method(c, make_dataset(c.data, 8, 0)).default_nfes == (35,)


def test_sampling_options_are_typed_and_an_unknown_one_is_one_line():
    from consistency.config import base_config
    from consistency.data import make_dataset
    from consistency.core.errors import ConfigError
    from consistency.methods.components import common
    from consistency.methods import edm
    c = base_config()
    c.method, c.data.name, c.model.name, c.teacher.oracle = "cd", "toy:gaussian1d", "mlp", "mixture"
    method = methods.get_method(c, make_dataset(c.data, 8, 0))
    assert method.options == common.CMOptions() and method.sampling_nfe == 1
    assert base.sampling_options(method, sigmas=[80.0, 1]).sigmas == (80.0, 1.0)   # hashable: one compiled sampler
    with pytest.raises(ConfigError, match=r"^sampling option 'solver': method 'cd' samples with options sigmas "):
        base.sampling_options(method, solver="euler")
    c.method, c.sampling.solver, c.sampling.num_steps = "edm", "euler", 7
    method = methods.get_method(c, make_dataset(c.data, 8, 0))
    assert method.options == edm.EDMOptions(solver="euler", cfg_scale=1.0) and method.sampling_nfe == 7
    with pytest.raises(ConfigError, match=r"options solver, cfg_scale, s_churn"):
        base.sampling_options(method, gamma=0.5)
    # NFE → (solver, Karras points): Heun 2N − 1 (35 → 18), an even NFE on a second-order solver is Euler
    assert [edm.solver_steps(s, n) for s, n in (("heun", 35), ("heun", 4), ("stochastic", 9), ("dpmpp_2m", 6))] == [
        ("heun", 18), ("euler", 4), ("stochastic", 5), ("dpmpp_2m", 6)]
    assert method.describe_sampler(35, base.sampling_options(method, solver="heun"))["num_steps"] == 18
