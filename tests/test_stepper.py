"""The step runner outside the CLI (``train.Stepper`` / ``train.run_steps``) is the loop's own step: the sets due at each
step (DMD2's 5:1 TTUR holds, where updating every set each step would give the generator 5× its updates), and for a
one-set method the very state ``train.train_and_evaluate`` reaches, bit for bit."""
from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from consistency import methods, presets
from consistency.run import train
from consistency.methods import base

STEPS = 7


def _tiny(c):
    c.model.update(dict(hidden=16, depth=1, embed_dim=8))
    c.training.update(dict(num_steps=STEPS, batch_size=16, log_every=STEPS, ckpt_every=STEPS, sample_every=0,
                           keep_checkpoints=1))
    c.sampling.num_samples = 16
    c.eval.num_samples = 16
    return c


def _loop_and_runner(c, workdir):
    """(the loop's final state, the runner's state after as many steps from the loop's own initial state and keys)."""
    looped = train.train_and_evaluate(c, workdir)
    dataset = train.build_dataset(c)
    method = methods.get_method(c, dataset)
    root_key, init_key, _ = train.stream_keys(c.seed)
    state = jax.jit(functools.partial(base.init_state, method))(init_key, dataset.batch(0))
    stepped, metrics = train.run_steps(method, state, dataset, root_key, STEPS)
    return method, looped, stepped, metrics


def _assert_same_state(a, b):
    for part in ("step", "params", "opt_state", "updates", "ema", "moving"):
        leaves_a, leaves_b = jax.tree.leaves(getattr(a, part)), jax.tree.leaves(getattr(b, part))
        assert len(leaves_a) == len(leaves_b), part
        for x, y in zip(leaves_a, leaves_b):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=part)


@pytest.mark.slow   # two real runs of the loop (checkpoints, eval) and the oracle fit: ≈ 75 s here
def test_runner_keeps_dmd2_ttur_like_the_loop(tmp_path):
    c = _tiny(presets.toy_distillation(presets.new("dmd2"), "dmd2", fit_steps=2))
    c.discriminator.update(dict(name="mlp", features=("bottleneck",), channels=8, depth=1))
    assert c.dmd2.ttur == 5
    method, looped, stepped, metrics = _loop_and_runner(c, str(tmp_path / "run"))
    counts = {name: int(v) for name, v in stepped.updates.items()}
    assert counts == {name: int(v) for name, v in looped.updates.items()}
    expected = {t.name: base.updates_in(STEPS, t.every, t.phase) for t in method.trained}
    assert counts == expected and counts["generator"] == 2 and counts["fake"] == STEPS, counts
    # the generator's metrics exist only at the steps that updated it (0 and 5 of 0…6: DMD2's generator-first cycle)
    assert [k for k, m in enumerate(metrics) if "generator/loss" in m] == [0, 5]
    _assert_same_state(stepped, looped)


@pytest.mark.slow   # a real run of the loop (checkpoints, eval): ≈ 30 s here
def test_runner_state_equals_the_loop_bit_for_bit_for_a_one_set_method(tmp_path):
    c = _tiny(presets.toy(presets.new("ct"), "ct"))
    _, looped, stepped, _ = _loop_and_runner(c, str(tmp_path / "run"))
    assert int(stepped.step) == STEPS
    _assert_same_state(stepped, looped)
