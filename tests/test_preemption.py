"""A run survives what clusters do to it (issue 33), on the tiny test-only method (tests/dummy_method.py):
SIGTERM/SIGINT stop after the step in flight with a checkpoint of it, a second signal stops at once, and a signal
during a save never hangs."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)
import dummy_method  # noqa: E402  (registers dummy and the fake:* datasets)
from test_resilience import CONFIG_FILE, _cli_env, _same_state  # noqa: E402

from consistency.core import checkpoint  # noqa: E402
from consistency.run import stopping, train  # noqa: E402


def _signal_after_step(monkeypatch, signum: int, at_step: int) -> None:
    """Send ``signum`` to this process while the loop handles step ``at_step`` (after its metrics came back)."""
    check_finite = train.check_finite

    def check_and_signal(metrics, step, method_name):
        check_finite(metrics, step, method_name)
        if step == at_step:
            os.kill(os.getpid(), signum)
    monkeypatch.setattr(train, "check_finite", check_and_signal)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_saves_the_step_and_the_resumed_run_is_bitwise_the_same(tmp_path, monkeypatch, signum):
    config = dummy_method.tiny_config(num_steps=6, ckpt_every=4, sample_every=0)
    wd = str(tmp_path / "run")
    _signal_after_step(monkeypatch, signum, 3)
    previous = signal.getsignal(signum)
    with pytest.raises(stopping.Stopped) as stopped:
        train.train_and_evaluate(config, wd)
    assert signal.getsignal(signum) is previous               # the handlers are put back
    assert stopped.value.step == 3 and stopped.value.exit_status == 128 + signum
    message = str(stopped.value)
    assert "\n" not in message
    assert message.startswith(f"stopped by {signal.Signals(signum).name} after step 3 of 6 (dummy): saved checkpoint "
                              f"3 in {os.path.join(wd, 'checkpoints')}; resume: ")
    assert checkpoint.available_steps(wd) == [3]             # the stopped step, not the last periodic one
    assert not os.path.exists(os.path.join(wd, "eval"))      # stopped before sampling and evaluating

    monkeypatch.undo()
    resumed = train.train_and_evaluate(config, wd)
    straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
    assert _same_state(straight, resumed)


HOLD_SAVE = """
import os, time
_rename = os.rename

def rename(src, dst, *args, **kwargs):
    if os.path.basename(os.fspath(dst)) == os.environ["HOLD_STEP"] and "tmp" in os.path.basename(os.fspath(src)):
        open(os.environ["HOLD_MARKER"], "w").close()
        time.sleep(float(os.environ["HOLD_SECONDS"]))
    return _rename(src, dst, *args, **kwargs)

os.rename = rename
"""


def _run_and_signal_during_save(tmp_path, signals: int, hold_seconds: float):
    """The CLI with the commit of step 4's save held for ``hold_seconds``; ``signals`` SIGINTs sent while held."""
    (tmp_path / "preempt_cfg.py").write_text(CONFIG_FILE)
    (tmp_path / "hold_save.py").write_text(HOLD_SAVE)
    wd, marker = str(tmp_path / "run"), tmp_path / "holding"
    env = _cli_env(tmp_path, HOLD_STEP="4", HOLD_MARKER=str(marker), HOLD_SECONDS=str(hold_seconds))
    argv = [sys.executable, "-m", "consistency.main", f"--config={tmp_path / 'preempt_cfg.py'}", f"--workdir={wd}",
            "--imports=dummy_method", "--imports=hold_save"]
    child = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not marker.exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), child.communicate()[1][-3000:] if child.poll() is not None else "timed out"
        sent = time.time()
        for _ in range(signals):
            os.kill(child.pid, signal.SIGINT)
            time.sleep(0.3)
        _, stderr = child.communicate(timeout=60)
        return child.returncode, stderr, time.time() - sent, wd
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.slow
def test_sigint_during_a_save_finishes_the_save_and_exits_130_without_a_traceback(tmp_path):
    status, stderr, seconds, wd = _run_and_signal_during_save(tmp_path, signals=1, hold_seconds=2)
    assert status == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("stopped by")]
    assert len(lines) == 1, stderr[-3000:]
    step = checkpoint.latest_step(wd)
    assert step in (4, 5, 6) and f"after step {step} of 6" in lines[0]     # the held save of step 4 completed
    assert "resume: python" in lines[0] and f"--workdir={wd}" in lines[0]
    assert seconds < 120     # (generous: a shared CPU) a finished save, not a hang


@pytest.mark.slow
def test_a_second_sigint_stops_at_once_even_while_a_save_hangs(tmp_path):
    status, stderr, seconds, wd = _run_and_signal_during_save(tmp_path, signals=2, hold_seconds=600)
    assert status == 130, stderr[-3000:]
    assert seconds < 90                                   # not the 600 s the save is held for
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("stopped at once")]
    assert len(lines) == 1 and "checkpoint 2 is the last saved" in lines[0], stderr[-3000:]
    assert checkpoint.available_steps(wd) == [2]          # the interrupted save of step 4 is not a step


# ----------------------------------------------------------------------------------------------------------
# One training process per workdir
# ----------------------------------------------------------------------------------------------------------

def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_training_process_is_refused_and_a_stale_lock_taken_over(tmp_path):
    from consistency.run import runlock
    from consistency.core.errors import ConfigError
    wd = str(tmp_path / "run")
    config = dummy_method.tiny_config(num_steps=2, sample_every=0)
    held = runlock.acquire(wd)                      # a live holder: this very process
    with pytest.raises(runlock.WorkdirLockedError,
                       match=rf"^--workdir: {wd} is being trained by another process \(pid {os.getpid()} on "):
        train.train_and_evaluate(config, wd)
    assert issubclass(runlock.WorkdirLockedError, ConfigError)    # the CLI: one line, exit 2
    assert checkpoint.available_steps(wd) == [] and not os.path.exists(os.path.join(wd, "config.json"))
    held.release()
    assert not os.path.exists(os.path.join(wd, runlock.LOCK_FILE))

    # a holder that died without releasing (kill -9, a lost node) leaves a stale lock: taken over
    path = os.path.join(wd, runlock.LOCK_FILE)
    with open(path, "w") as f:
        json.dump({**runlock.this_holder(), "pid": _dead_pid()}, f)
    train.train_and_evaluate(config, wd)
    assert checkpoint.available_steps(wd) == [2] and not os.path.exists(path)   # released at the end

    # a holder on another host cannot be checked: refused, with how to clear it
    with open(path, "w") as f:
        json.dump({"host": "node-17", "pid": 4242, "since": "yesterday"}, f)
    with pytest.raises(runlock.WorkdirLockedError, match=r"\(pid 4242 on node-17 since yesterday\); if that process "
                                                         r"is gone .* delete .*train\.lock"):
        train.train_and_evaluate(config, wd)
    assert train.restore_run(config, wd).step == 2      # sample/eval read without the lock


def test_cli_second_process_exits_2_with_one_line(tmp_path):
    from consistency.run import runlock
    (tmp_path / "preempt_cfg.py").write_text(CONFIG_FILE)
    wd = str(tmp_path / "run")
    held = runlock.acquire(wd)
    try:
        proc = subprocess.run([sys.executable, "-m", "consistency.main", f"--config={tmp_path / 'preempt_cfg.py'}",
                               f"--workdir={wd}", "--imports=dummy_method"], cwd=REPO, env=_cli_env(tmp_path),
                              capture_output=True, text=True, timeout=300)
    finally:
        held.release()
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "is being trained by another process" in errors[0] and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------------------------------------
# Unwritable or full storage
# ----------------------------------------------------------------------------------------------------------

DROP_WRITE_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search,-fowner",
                       "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def _without_root_write_override() -> list[str] | None:
    """A command prefix that runs a child without the capabilities that let root write a read-only directory
    (None when this machine cannot, e.g. no setpriv); as non-root, no prefix is needed."""
    if os.geteuid() != 0:
        return []
    probe = subprocess.run(DROP_WRITE_OVERRIDE + [sys.executable, "-c", "pass"], capture_output=True)
    return DROP_WRITE_OVERRIDE if probe.returncode == 0 else None


def test_read_only_checkpoints_dir_is_one_line_in_seconds(tmp_path):
    prefix = _without_root_write_override()
    if prefix is None:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here (no setpriv), and root writes read-only directories")
    (tmp_path / "preempt_cfg.py").write_text(CONFIG_FILE)
    wd = str(tmp_path / "run")
    os.makedirs(os.path.join(wd, "checkpoints"))
    os.chmod(os.path.join(wd, "checkpoints"), 0o555)     # another user's run, a read-only share
    start = time.time()
    proc = subprocess.run(prefix + [sys.executable, "-m", "consistency.main", f"--config={tmp_path / 'preempt_cfg.py'}",
                                    f"--workdir={wd}", "--imports=dummy_method"],
                          cwd=REPO, env=_cli_env(tmp_path), capture_output=True, text=True, timeout=300)
    seconds = time.time() - start
    os.chmod(os.path.join(wd, "checkpoints"), 0o755)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: --workdir: cannot write to {os.path.join(wd, 'checkpoints')} (Permission denied); "
                      "training could not save a step: fix its permissions or train in another --workdir"], proc.stderr
    assert "Traceback" not in proc.stderr and seconds < 120    # not the minutes of retries it took before


def test_full_disk_is_refused_up_front_and_a_failed_save_stops_keeping_the_last_good_step(tmp_path, monkeypatch):
    import errno
    from consistency.core.errors import ConfigError
    wd = str(tmp_path / "run")
    problem = checkpoint.storage_problem(wd, need_bytes=2 ** 62)
    assert problem.startswith(f"--workdir: {tmp_path} has ") and "MiB free, less than one checkpoint" in problem

    rename = os.rename

    def disk_full_at_step_4(source, destination, *args, **kwargs):   # the commit of step 4 fails: ENOSPC
        if os.path.basename(os.fspath(destination)) == "4" and "tmp" in os.path.basename(os.fspath(source)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return rename(source, destination, *args, **kwargs)
    monkeypatch.setattr(os, "rename", disk_full_at_step_4)
    config = dummy_method.tiny_config(num_steps=6, ckpt_every=2, sample_every=0, keep_checkpoints=1)
    with pytest.raises(checkpoint.CheckpointWriteError) as error:
        train.train_and_evaluate(config, wd)
    message = str(error.value)
    assert "\n" not in message and re.match(
        r"^--workdir: could not write (checkpoint step \d|a checkpoint) to .*checkpoints \(OSError: \[Errno 28\] No "
        r"space left on device\); training stopped, the last good checkpoint is step 2: free space", message), message
    assert checkpoint.available_steps(wd) == [2]        # keep_checkpoints=1 did not delete it for the failed step 4
    monkeypatch.undo()
    assert int(train.train_and_evaluate(config, wd).step) == 6   # resumes from step 2 once there is space
    assert not issubclass(checkpoint.CheckpointWriteError, ConfigError)
