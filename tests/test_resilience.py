"""Never lose a run (issue 8), on the tiny test-only method (tests/dummy_method.py): a kill -9 in the middle of a
checkpoint save, a truncated latest checkpoint, a workdir's config against a new command's (mismatches refused
before anything is written, safe overrides accepted), and the save guard against a blown-up state."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)
import dummy_method  # noqa: E402  (registers dummy, dummy_sgd and the fake:* datasets)

from consistency.core import checkpoint  # noqa: E402
from consistency.run import train, workdir  # noqa: E402
from consistency.core.errors import ConfigError  # noqa: E402


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def _same_state(a, b) -> bool:
    return all(_leaves_equal(getattr(a, f), getattr(b, f)) for f in ("step", "params", "opt_state", "ema"))


def _snapshot(directory: str) -> dict:
    """Every file's bytes hash and mtime, every directory's mtime: equal snapshots ⇔ nothing was written."""
    out = {}
    for root, dirs, files in os.walk(directory):
        out[os.path.relpath(root, directory) + "/"] = os.stat(root).st_mtime_ns
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(path, directory)] = (digest, os.stat(path).st_mtime_ns)
    return out


def _truncate_state_data(step_dir: str) -> dict[str, int]:
    """Cut every array data file of a step's ``state`` item to half its size (a disk-full or killed copy);
    returns {path: new size}."""
    paths = [p for p in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True) if os.path.isfile(p)]
    assert paths, os.listdir(os.path.join(step_dir, "state"))
    for path in paths:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    return {path: os.path.getsize(path) for path in paths}


# ----------------------------------------------------------------------------------------------------------
# The CLI in a subprocess, on a config file that knows nothing of the test method but its name
# ----------------------------------------------------------------------------------------------------------

CONFIG_FILE = textwrap.dedent("""
    from consistency.config import base_config

    def get_config():
        c = base_config()
        c.method = "dummy"
        c.data.name = "fake:toy"
        c.optim.lr = 1e-2
        c.training.update(dict(num_steps=6, batch_size=8, log_every=1, ckpt_every=2, keep_checkpoints=3,
                               sample_every=0, ema_decay=0.9))
        c.sampling.num_samples = 9
        c.eval.num_samples = 9
        return c
""")

# Imported by the child with --imports: holds Orbax's final rename of step HOLD_STEP's temporary directory (the
# commit of the save) and tells the parent, which then kills the child with SIGKILL mid-save.
HOLD_COMMIT = textwrap.dedent("""
    import os, time
    _rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == os.environ["HOLD_STEP"] and "tmp" in os.path.basename(os.fspath(src)):
            open(os.environ["HOLD_MARKER"], "w").close()
            time.sleep(600)
        return _rename(src, dst, *args, **kwargs)

    os.rename = rename
""")


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    (directory / "resilience_cfg.py").write_text(CONFIG_FILE)
    (directory / "hold_commit.py").write_text(HOLD_COMMIT)
    return directory


def _cli_env(cli_files, **extra) -> dict:
    return dict(os.environ, JAX_PLATFORMS="cpu", **extra,
                PYTHONPATH=os.pathsep.join([REPO, TESTS, str(cli_files), os.environ.get("PYTHONPATH", "")]))


def _cli(cli_files, *args, timeout=300):
    return subprocess.run(["timeout", "-s", "KILL", str(timeout), sys.executable, "-m", "consistency.main",
                           f"--config={cli_files / 'resilience_cfg.py'}", "--imports=dummy_method", *args],
                          cwd=REPO, env=_cli_env(cli_files), capture_output=True, text=True)


def _file_config(cli_files):
    import importlib.util
    spec = importlib.util.spec_from_file_location("resilience_cfg", cli_files / "resilience_cfg.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


# ----------------------------------------------------------------------------------------------------------
# A broken latest checkpoint is skipped and moved aside, never fatal
# ----------------------------------------------------------------------------------------------------------

def _tiny_state(value: float, width: int = 3) -> dict:
    return {"step": jnp.asarray(int(value), jnp.int32), "params": {"online": {"w": jnp.full((width,), value)}}}


def _save_steps(wd: str, steps) -> None:
    manager = checkpoint.make_manager(wd, keep=None)
    for step in steps:
        checkpoint.save(manager, step, _tiny_state(float(step)), {"step": step})
    manager.wait_until_finished()
    manager.close()


@pytest.mark.slow
def test_restore_latest_skips_and_moves_aside_broken_steps(tmp_path):
    wd = str(tmp_path / "run")
    _save_steps(wd, [1, 2, 3])
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _tiny_state(0.0))
    truncated = _truncate_state_data(os.path.join(wd, "checkpoints", "3"))

    lines = []
    manager = checkpoint.make_manager(wd, create=False)
    state, meta, step = checkpoint.restore_latest(manager, target, on_skip=lines.append)
    assert step == 2 and meta == {"step": 2} and np.array_equal(state["params"]["online"]["w"], [2.0, 2.0, 2.0])
    assert manager.all_steps() == [1, 2] and checkpoint.available_steps(wd) == [1, 2]
    broken = os.path.join(wd, "checkpoints_broken", "3")
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(f"broken checkpoint step 3 in {os.path.join(wd, 'checkpoints')}: moved to {broken}; "
                               "restored step 2 instead (")
    for path, size in truncated.items():  # moved, not deleted: the very bytes are kept for inspection
        moved = path.replace(os.sep + "checkpoints" + os.sep, os.sep + "checkpoints_broken" + os.sep)
        assert os.path.getsize(moved) == size

    # partly deleted (2) and truncated (1): none restores → None, one line naming both
    os.remove(os.path.join(wd, "checkpoints", "2", "state", "manifest.ocdbt"))
    _truncate_state_data(os.path.join(wd, "checkpoints", "1"))
    lines.clear()
    assert checkpoint.restore_latest(manager, target, on_skip=lines.append) is None
    manager.close()
    assert len(lines) == 1 and lines[0].startswith("broken checkpoint steps 2, 1 in ")
    assert "no older step restores" in lines[0]
    assert sorted(os.listdir(os.path.join(wd, "checkpoints_broken"))) == ["1", "2", "3"]
    assert checkpoint.available_steps(wd) == []


def test_restore_latest_refuses_a_checkpoint_of_another_shape_and_moves_nothing(tmp_path):
    """A step that fails because the run expects other shapes is not broken: a ConfigError, nothing moved."""
    wd = str(tmp_path / "run")
    _save_steps(wd, [1, 2])
    before = _snapshot(wd)
    wider = jax.tree.map(ocp.utils.to_shape_dtype_struct, _tiny_state(0.0, width=5))
    manager = checkpoint.make_manager(wd, create=False)
    with pytest.raises(checkpoint.CheckpointMismatchError,
                       match=r"checkpoint step 2 .* another model or optimizer \(params\.online\.w: saved \(3,\) "
                             r"float32, this run expects \(5,\) float32\)"):
        checkpoint.restore_latest(manager, wider, on_skip=pytest.fail)
    manager.close()
    assert issubclass(checkpoint.CheckpointMismatchError, ConfigError)
    assert _snapshot(wd) == before


@pytest.mark.slow
def test_truncated_latest_checkpoint_resumes_from_previous_step(cli_files, tmp_path):
    wd = str(tmp_path / "run")
    config = _file_config(cli_files)
    config.training.num_steps = 4
    first = train.train_and_evaluate(config, wd)
    assert checkpoint.available_steps(wd) == [2, 4]
    _truncate_state_data(os.path.join(wd, "checkpoints", "4"))

    # --mode=sample/eval: the newest step that restores, the broken one left in place (they never modify checkpoints)
    run = train.restore_run(config, wd)
    assert run.step == 2 and int(run.state.step) == 2
    assert os.path.isdir(os.path.join(wd, "checkpoints", "4")) and not os.path.exists(wd + "/checkpoints_broken")
    with pytest.raises(ValueError):  # an explicitly requested broken step is an error, not a silent fallback
        train.restore_run(config, wd, step=4)

    rerun = _cli(cli_files, f"--workdir={wd}", "--config.training.num_steps=4")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    broken_lines = [line for line in rerun.stderr.splitlines() if "broken checkpoint" in line]
    assert len(broken_lines) == 1, rerun.stderr[-3000:]
    assert re.search(r"broken checkpoint step 4 in .*checkpoints: moved to .*checkpoints_broken/4; "
                     r"restored step 2 instead \(ValueError: ", broken_lines[0]), broken_lines[0]
    assert "Traceback" not in rerun.stderr  # Orbax's noise about the failed reads is not shown either
    assert "dummy: resumed from step 2 of " in rerun.stderr
    assert os.path.isdir(os.path.join(wd, "checkpoints_broken", "4", "state"))  # moved aside, not deleted
    assert checkpoint.available_steps(wd) == [2, 4]                             # step 4 written anew
    # steps 3-4 replayed from step 2 give the lost step 4 bit for bit
    assert _same_state(first, train.restore_run(config, wd, step=4).state)


# ----------------------------------------------------------------------------------------------------------
# kill -9 in the middle of a save (CLI in a subprocess)
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_during_save_resumes_from_previous_step_with_the_same_result(cli_files, tmp_path):
    wd = str(tmp_path / "run")
    marker = tmp_path / "holding"
    env = _cli_env(cli_files, HOLD_STEP="4", HOLD_MARKER=str(marker))
    child = subprocess.Popen([sys.executable, "-m", "consistency.main", f"--config={cli_files / 'resilience_cfg.py'}",
                              f"--workdir={wd}", "--imports=dummy_method", "--imports=hold_commit"],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not marker.exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), child.stderr.read()[-3000:] if child.poll() is not None else "timed out"
        in_flight = glob.glob(os.path.join(wd, "checkpoints", "4.orbax-checkpoint-tmp*"))
        assert in_flight  # the save of step 4 is half done: written to a temporary directory, not committed
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert checkpoint.available_steps(wd) == [2]  # the uncommitted step 4 is not a step

    rerun = _cli(cli_files, f"--workdir={wd}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "dummy: resumed from step 2 of " in rerun.stderr, rerun.stderr[-3000:]
    assert "broken checkpoint" not in rerun.stderr
    assert checkpoint.available_steps(wd) == [2, 4, 6]

    config = _file_config(cli_files)
    straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
    resumed = train.restore_run(config, wd, step=6).state
    assert _same_state(straight, resumed)


# ----------------------------------------------------------------------------------------------------------
# The workdir's config against the new command's
# ----------------------------------------------------------------------------------------------------------

def test_check_compatible_names_fields_and_allows_safe_overrides():
    saved = dummy_method.tiny_config()
    new = dummy_method.tiny_config()
    new.model.channels = 64
    with pytest.raises(ConfigError) as error:
        workdir.check_compatible(saved, new)
    assert str(error.value) == ("config.model.channels: the workdir was trained with 32, this command says 64; "
                                "use a fresh --workdir or drop the override")
    new.method = "dummy_sgd"
    new.model.channel_mult = (1, 2, 2)
    with pytest.raises(ConfigError) as error:
        workdir.check_compatible(saved, new)
    assert str(error.value) == ("config.method: the workdir was trained with 'dummy', this command says 'dummy_sgd'; "
                                "also differ: config.model.channel_mult ((1, 2) vs (1, 2, 2)), config.model.channels "
                                "(32 vs 64); use a fresh --workdir or drop the overrides")

    safe = dummy_method.tiny_config(num_steps=99, log_every=7, ckpt_every=5, sample_every=0, eval_every=3,
                                    keep_checkpoints=9, max_param_abs=0.0)
    safe.optim.update(dict(lr=3e-4, warmup_steps=10, schedule="cosine"))
    safe.eval.nfes = (1, 2, 4)
    safe.sampling.num_steps = 3
    safe.teacher.workdir = "/moved/teacher"
    safe.data.data_dir = "/mnt/tfds"
    workdir.check_compatible(saved, safe)
    workdir.check_compatible(json.loads(saved.to_json()), safe)  # as read back from config.json

    # clipping may change while it stays on, not be switched on or off (that changes the optimizer state)
    clipped, tighter = dummy_method.tiny_config(), dummy_method.tiny_config()
    clipped.optim.grad_clip, tighter.optim.grad_clip = 1.0, 0.25
    workdir.check_compatible(clipped, tighter)
    with pytest.raises(ConfigError, match=r"^config\.optim\.grad_clip: the workdir was trained with 0\.0, this "
                                          r"command says 1\.0 \(switching gradient clipping on or off"):
        workdir.check_compatible(saved, clipped)

    # a field only one side has (added by a newer version of the code) is accepted; other fields are not
    older = saved.to_dict()
    del older["training"]["max_param_abs"]
    workdir.check_compatible(older, dummy_method.tiny_config())
    for field, value in [("seed", 1), ("training.batch_size", 16), ("training.ema_decay", 0.5), ("optim.b1", 0.5),
                         ("diffusion.sigma_max", 40.0), ("data.name", "fake:image")]:
        other = dummy_method.tiny_config()
        section, _, name = field.rpartition(".")
        (other[section] if section else other)[name] = value
        with pytest.raises(ConfigError, match=rf"^config\.{re.escape(field)}: the workdir was trained with"):
            workdir.check_compatible(saved, other)


def test_prepare_writes_config_atomically_and_refuses_an_unwritable_workdir(tmp_path):
    c = dummy_method.tiny_config()
    wd = str(tmp_path / "new" / "run")
    path = workdir.prepare(c, wd)
    assert path == os.path.join(wd, "config.json") and os.listdir(wd) == ["config.json"]  # no temporary left
    assert train.load_config(wd).to_dict() == c.to_dict()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ConfigError, match=r"^--workdir: cannot write to .*a_file/run \("):
        workdir.prepare(c, str(tmp_path / "a_file" / "run"))
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "config.json").write_text('{"method": "dum')  # e.g. written by an old, killed version
    with pytest.raises(ConfigError, match=r"^--workdir: .*config\.json cannot be read"):
        workdir.prepare(c, str(tmp_path / "garbled"))


@pytest.fixture(scope="module")
def trained_workdir(cli_files, tmp_path_factory):
    """A finished run of the CLI's config file (trained in-process: same config, same config.json)."""
    wd = str(tmp_path_factory.mktemp("trained") / "run")
    config = _file_config(cli_files)
    config.training.num_steps = 2
    train.train_and_evaluate(config, wd)
    return wd


@pytest.mark.slow
@pytest.mark.parametrize("override, field, saved, new", [
    ("--config.model.channels=64", "config.model.channels", "32", "64"),
    ("--config.method=dummy_sgd", "config.method", "'dummy'", "'dummy_sgd'"),
])
def test_mismatched_config_exits_2_and_leaves_the_workdir_unchanged(cli_files, trained_workdir, tmp_path,
                                                                   override, field, saved, new):
    wd = str(tmp_path / "run")
    shutil.copytree(trained_workdir, wd)
    before = _snapshot(wd)
    time.sleep(0.01)  # so that any write would show in the mtimes
    proc = _cli(cli_files, f"--workdir={wd}", "--config.training.num_steps=2", override, timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {field}: the workdir was trained with {saved}, this command says {new}; "
                      "use a fresh --workdir or drop the override"], proc.stderr[-2000:]
    assert _snapshot(wd) == before  # not a byte, not an mtime, no new file or directory


def test_safe_override_of_num_steps_continues_the_run(tmp_path):
    wd = str(tmp_path / "run")
    train.train_and_evaluate(dummy_method.tiny_config(num_steps=2, sample_every=0), wd)
    longer = dummy_method.tiny_config(num_steps=4, sample_every=0, log_every=1, keep_checkpoints=3)
    longer.sampling.num_samples = 8
    resumed = train.train_and_evaluate(longer, wd)
    assert int(resumed.step) == 4 and checkpoint.available_steps(wd) == [2, 4]
    assert train.load_config(wd).training.num_steps == 4  # config.json records the command that continued
    straight = train.train_and_evaluate(dummy_method.tiny_config(num_steps=4, sample_every=0), str(tmp_path / "s"))
    assert _same_state(straight, resumed)


# ----------------------------------------------------------------------------------------------------------
# The save guard: a non-finite or blown-up state is never saved
# ----------------------------------------------------------------------------------------------------------

def test_find_unsafe_leaf_names_the_set_the_leaf_and_the_value():
    good = {"step": jnp.int32(7), "params": {"online": {"b": jnp.zeros(2), "w": jnp.array([[0.5, -3.0]])}},
            "opt_state": {"online": ({"nu": {"w": jnp.ones((1, 2))}},)},
            "ema": {"online": {"w": jnp.array([[0.5, -3.0]])}},
            "frozen": {"teacher": {"w": jnp.full(2, 5e5)}}}  # not trained: large is allowed, non-finite is not
    assert checkpoint.find_unsafe_leaf(good, 1e4) is None
    blown = {**good, "params": {"online": {"b": jnp.zeros(2), "w": jnp.array([[0.5, -2e6]])}}}
    assert checkpoint.find_unsafe_leaf(blown, 1e4) == ("params['online'] w[0, 1] = -2e+06 exceeds "
                                                        "training.max_param_abs = 10000")
    assert checkpoint.find_unsafe_leaf(blown, 0.0) is None  # 0 disables the bound ...
    nan = {**good, "opt_state": {"online": ({"nu": {"w": jnp.array([[1.0, jnp.nan]])}},)}}
    # ... the finiteness check of every leaf
    assert checkpoint.find_unsafe_leaf(nan, 0.0) == "opt_state['online'] 0.nu.w[0, 1] = nan is not finite"
    big_ema = {**good, "ema": {"online": {"w": jnp.array([[2e4, 0.0]])}}}
    assert checkpoint.find_unsafe_leaf(big_ema, 1e4).startswith("ema['online'] w[0, 0] = 2e+04 exceeds")
    with pytest.raises(checkpoint.DivergedStateError,
                       match=r"^training diverged: not saving step 9: params\['online'\] w\[0, 1\] = -2e\+06 exceeds "
                             r"training.max_param_abs = 10000; the last good checkpoint is step 7: rerun to resume "
                             r"from it with a lower optim.lr"):
        checkpoint.check_state(blown, 9, 1e4, last_good=lambda: 7)
    assert issubclass(checkpoint.DivergedStateError, FloatingPointError)


def test_blown_up_state_is_not_saved_and_a_rerun_resumes_from_the_last_good_checkpoint(tmp_path):
    wd = str(tmp_path / "run")
    train.train_and_evaluate(dummy_method.tiny_config(num_steps=2, ckpt_every=1, sample_every=0), wd)
    assert checkpoint.available_steps(wd) == [1, 2]

    blowing = dummy_method.tiny_config(num_steps=4, ckpt_every=1, sample_every=0)
    blowing.optim.lr = 1e6  # one Adam step moves every weight by ≈ 1e6: finite, but the run is lost
    with pytest.raises(checkpoint.DivergedStateError) as error:
        train.train_and_evaluate(blowing, wd)
    message = str(error.value)
    value = re.search(r"params\['online'\] \w+\[[\d, ]*\] = (-?[\d.]+e\+\d+) exceeds training\.max_param_abs = "
                      r"10000; the last good checkpoint is step 2: ", message)
    assert value and abs(float(value.group(1))) > 1e5, message
    assert message.startswith("training diverged: not saving step 3: ") and "optim.lr" in message
    assert checkpoint.available_steps(wd) == [1, 2]  # nothing of the diverged run was saved

    fixed = dummy_method.tiny_config(num_steps=4, ckpt_every=1, sample_every=0)  # back to lr = 1e-2
    resumed = train.train_and_evaluate(fixed, wd)
    straight = train.train_and_evaluate(dummy_method.tiny_config(num_steps=4, ckpt_every=1, sample_every=0),
                                        str(tmp_path / "straight"))
    assert _same_state(straight, resumed)  # resumed from the good step 2, not from a blown-up state


# ----------------------------------------------------------------------------------------------------------
# Integrity: per-leaf digests recorded on save, verified on every restore (issue 33)
# ----------------------------------------------------------------------------------------------------------

def _change_bytes(path: str, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = bytearray(open(path, "rb").read())
    for i in rng.choice(len(data), size=count, replace=False):
        data[i] = (data[i] + int(rng.integers(1, 256))) % 256
    with open(path, "r+b") as f:  # in place: same size, same name, same mtime resolution — only values change
        f.write(bytes(data))


def _value_file(step_dir: str) -> str:
    """The largest array data file of a step's ``state`` item (the one holding the values)."""
    paths = [p for p in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True) if os.path.isfile(p)]
    return max(paths, key=os.path.getsize)


def test_digests_are_recorded_and_a_changed_value_is_refused():
    state = _tiny_state(2.0, width=64)
    digests = checkpoint.leaf_digests(state)
    assert sorted(digests) == ["params.online.w", "step"] and digests["params.online.w"].startswith("crc32:")
    checkpoint.verify_digests(state, {"digests": digests}, "here")          # the same bytes pass
    changed = {**state, "params": {"online": {"w": state["params"]["online"]["w"].at[17].set(2.0000002)}}}
    with pytest.raises(checkpoint.CorruptCheckpointError,
                       match=r"^here: the bytes of params\.online\.w differ from the digest recorded"):
        checkpoint.verify_digests(changed, {"digests": digests}, "here")
    checkpoint.verify_digests(changed, {}, "here")                          # no digests (older checkpoints): passes


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_byte_damage_in_a_saved_array_is_detected_and_the_previous_step_restored(tmp_path, seed):
    wd = str(tmp_path / "run")
    manager = checkpoint.make_manager(wd, keep=None)
    states = {step: jax.tree.map(lambda x: x + step, _tiny_state(0.0, width=4096)) for step in (1, 2)}
    for step, state in states.items():
        checkpoint.save(manager, step, state, {"step": step})
    manager.wait_until_finished()
    _change_bytes(_value_file(os.path.join(wd, "checkpoints", "2")), 1 + 12 * seed, seed)

    lines = []
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, states[2])
    restored, meta, step = checkpoint.restore_latest(manager, target, on_skip=lines.append)
    manager.close()
    assert step == 1 and meta == {"step": 1} and _leaves_equal(restored, states[1])
    assert len(lines) == 1 and lines[0].startswith("broken checkpoint step 2 in "), lines
    assert os.path.isdir(os.path.join(wd, "checkpoints_broken", "2"))


def test_teacher_and_init_from_loads_verify_digests_and_fall_back_with_one_line(tmp_path):
    wd = str(tmp_path / "run")
    train.train_and_evaluate(dummy_method.tiny_config(num_steps=4, ckpt_every=2, sample_every=0), wd)
    with open(os.path.join(wd, "checkpoints", "4", "meta", "metadata")) as f:
        meta = json.load(f)
    meta["digests"]["params.online.w1"] = "crc32:00000000:float32:2x8"   # as if w1's bytes had changed on disk
    with open(os.path.join(wd, "checkpoints", "4", "meta", "metadata"), "w") as f:
        json.dump(meta, f)

    lines = []
    step, restored, _ = checkpoint.read_step_items(wd, lambda tree, meta: {"params": tree["params"]},
                                                   on_skip=lines.append)
    assert step == 2 and len(lines) == 1 and "differ from the digest" in lines[0], lines
    assert os.path.isdir(os.path.join(wd, "checkpoints", "4"))       # another run's workdir: left in place
    step, sets = checkpoint.read_parameter_sets(wd)                    # training.init_from
    assert step == 2 and "online" in sets["params"]
    with pytest.raises(checkpoint.CorruptCheckpointError):             # an explicit step is never replaced
        checkpoint.read_parameter_sets(wd, step=4)


# ----------------------------------------------------------------------------------------------------------
# Finite blow-ups: caught against the run's own history, before they are saved (issue 33)
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_finite_blow_up_is_not_saved_and_the_suggested_lr_resumes_from_the_good_step(tmp_path):
    wd = str(tmp_path / "run")
    config = dummy_method.tiny_config("dummy_blowup", num_steps=20, ckpt_every=4, sample_every=0,
                                      keep_checkpoints=10)
    with pytest.raises(checkpoint.DivergedStateError) as error:
        train.train_and_evaluate(config, wd)
    message = str(error.value)
    first = dummy_method.BLOWUP_FROM_STEP + 1      # the first step whose loss is 10⁸ times larger
    assert re.match(rf"^training blew up in set 'online' at step {first}: metric 'loss' = [\d.]+e\+08, [\d.]+e\+0\d× "
                    rf"the median \|loss\| of its last {first - 1} updates \([\d.e-]+\); step {first} was not saved; "
                    r"the last good checkpoint is step 12 in .*checkpoints: rerun to resume from it with a lower "
                    r"optim\.lr \(e\.g\. --config\.optim\.lr=0\.001\)", message), message
    assert checkpoint.available_steps(wd) == [4, 8, 12]          # nothing after the jump was saved
    meta = checkpoint.read_meta(os.path.join(wd, "checkpoints", "12"))
    assert len(meta["blowup"]["losses"]["loss"]) == 12           # the history travels with the checkpoint

    config.optim.lr = 1e-3                                        # the suggested change
    resumed = train.train_and_evaluate(config, wd)
    assert int(resumed.step) == 20 and checkpoint.available_steps(wd) == [4, 8, 12, 16, 20]
    straight = str(tmp_path / "straight")                         # 12 steps at lr 1e-2, then 8 at 1e-3
    train.train_and_evaluate(dummy_method.tiny_config("dummy_blowup", num_steps=12, ckpt_every=4, sample_every=0,
                                                      keep_checkpoints=10), straight)
    assert _same_state(train.train_and_evaluate(config, straight), resumed)   # resumed from the good step 12


def test_blowup_guard_compares_with_the_runs_own_history():
    from consistency.run import blowup
    guard = blowup.BlowUpGuard(1e3, ("generator", "fake"))
    for k in range(20):
        assert guard.check_losses({"generator/loss": 0.5 + 0.01 * k, "fake/loss": 1e-4, "fake/grad_norm": 3.0}) is None
    assert guard.check_losses({"generator/loss": 0.6, "fake/loss": 50.0}) is None   # 5·10⁵ × a near-zero loss: noise
    name, what = guard.check_losses({"generator/loss": 0.6, "fake/loss": 3.4e17})
    assert name == "fake" and what.startswith("metric 'fake/loss' = 3.4e+17, 3.4e+17× the median |fake/loss|")
    assert guard.check_params({"generator": 2.0, "fake": 3.0}) is None
    assert guard.check_params({"generator": 2.5e3, "fake": 3.0})[0] == "generator"
    restored = blowup.BlowUpGuard(1e3, ("generator", "fake"), guard.history())    # as read back from a checkpoint
    assert restored.check_losses({"generator/loss": 0.6, "fake/loss": 4.4e14})[0] == "fake"
    assert blowup.BlowUpGuard(0.0, (), guard.history()).check_losses({"fake/loss": 4.4e14}) is None   # 0: off


# ----------------------------------------------------------------------------------------------------------
# Broken sources of a run: a truncated teacher / init_from checkpoint, --mode=sample with every step broken
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_truncated_init_from_checkpoint_is_one_line_and_orbax_stays_quiet(tmp_path, caplog):
    source = str(tmp_path / "source")
    train.train_and_evaluate(dummy_method.tiny_config(num_steps=4, ckpt_every=2, sample_every=0), source)
    _truncate_state_data(os.path.join(source, "checkpoints", "4"))
    warm = dummy_method.tiny_config(num_steps=2, sample_every=0, init_from=source)
    with caplog.at_level("WARNING"):
        state = train.train_and_evaluate(warm, str(tmp_path / "warm"))   # falls back to the source's step 2
    assert int(state.step) == 2
    skipped = [r.getMessage() for r in caplog.records if "broken checkpoint" in r.getMessage()]
    assert len(skipped) == 1 and "step 4" in skipped[0] and "restored step 2 instead" in skipped[0], skipped
    assert not [r for r in caplog.records if "Metadata file does not exist" in r.getMessage()]

    _truncate_state_data(os.path.join(source, "checkpoints", "2"))          # now none restores: one ConfigError line
    with pytest.raises(ConfigError, match=r"^config\.training\.init_from: no checkpoint in .* restores \(4: .*; 2: "):
        train.train_and_evaluate(warm, str(tmp_path / "warm2"))


def test_sample_with_every_checkpoint_broken_is_one_line(cli_files, trained_workdir, tmp_path):
    wd = str(tmp_path / "run")
    shutil.copytree(trained_workdir, wd)
    for step in checkpoint.available_steps(wd):
        _truncate_state_data(os.path.join(wd, "checkpoints", str(step)))
    proc = subprocess.run(["timeout", "-s", "KILL", "300", sys.executable, "-m", "consistency.main", "--mode=sample",
                           f"--workdir={wd}", "--imports=dummy_method"], cwd=REPO, env=_cli_env(cli_files),
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: no checkpoint in ") and "can be restored" in lines[-1], proc.stderr[-3000:]
    assert len(lines) <= 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]   # at most the skip line first
