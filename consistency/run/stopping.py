"""Graceful stop on SIGTERM / SIGINT: finish the step, save it, exit with 128 + signum (issue 33).

Clusters announce the end of a run with SIGTERM (a preempted cloud or TPU VM, SLURM at the time limit) and users with
Ctrl-C (SIGINT). Inside :class:`GracefulStop` the first such signal only *asks* the loop to stop: the loop finishes
the step in flight, writes a checkpoint of it and raises :class:`Stopped`, which the command line turns into one line
with the step and the resume command, and exit status 128 + signum (143 for SIGTERM, 130 for SIGINT). A signal
never interrupts a checkpoint save half-way: a save in progress completes first. A second signal means *now*: one
line, then the process ends at once with the same status, like ``kill -9`` (Orbax commits a step by renaming its
temporary directory, so an unfinished save is never taken for a step, and the run resumes from the last committed
one).

Multi-process runs (``jax.distributed``): JAX installs its own SIGTERM handler (the coordination service's
preemption notifier) that tells every process; :func:`stop_requested` then asks Orbax
(:meth:`orbax.checkpoint.CheckpointManager.reached_preemption`, i.e.
``jax.experimental.multihost_utils.reached_preemption_sync_point``) whether this step is the one every process
agreed to stop at, so all of them save the same step. Our handler is then installed for SIGINT only, and forwards
it to JAX's as a SIGTERM, so a Ctrl-C on any process stops the whole job at one common step.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_status(signum: int) -> int:
    """The shell's convention for a process ended by signal ``signum``: 128 + signum."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Stopped(Exception):
    """Training stopped on a signal after saving ``step`` (None: nothing could be saved). ``exit_status`` is
    128 + signum; the message is one line without the resume command (the command line adds it)."""

    def __init__(self, signum: int, step: int | None, message: str):
        super().__init__(message)
        self.signum, self.step = int(signum), step

    @property
    def exit_status(self) -> int:
        return exit_status(self.signum)


# How to resume, for the one line printed on a stop: the command line sets the exact command it was started with.
RESUME_HINT = "rerun the same command"


def set_resume_hint(text: str) -> None:
    global RESUME_HINT
    RESUME_HINT = text


def _distributed() -> bool:
    import jax
    try:
        return jax.process_count() > 1 and jax.distributed.is_initialized()
    except Exception:  # noqa: BLE001 — no backend yet: a single process
        return False


class GracefulStop:
    """Context manager: while active, SIGTERM/SIGINT set :attr:`signum` (the loop polls :meth:`stop_requested`);
    a second one writes ``now_line()`` and ends the process at once. Outside the main thread it does nothing
    (Python delivers signals to the main thread only). The previous handlers come back on exit."""

    def __init__(self, now_line: Callable[[int], str] = lambda signum: ""):
        self.signum: int | None = None
        self._now_line = now_line
        self._previous: dict[int, object] = {}
        self._distributed = False

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is not threading.main_thread():
            return self
        self._distributed = _distributed()
        # Multi-process: SIGTERM stays with JAX's preemption notifier (replacing it would stop the other processes
        # from hearing of the preemption); SIGINT is forwarded to it.
        for signum in (signal.SIGINT,) if self._distributed else STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            if self._distributed:
                os.kill(os.getpid(), signal.SIGTERM)   # JAX's notifier tells every process
            return
        line = self._now_line(signum)
        if line:
            sys.stderr.write(line.rstrip("\n") + "\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(exit_status(signum))

    def stop_requested(self, step: int, manager=None) -> bool:
        """True when the loop should save ``step`` and stop: a signal arrived (single process), or every process
        reached the preemption sync point at ``step`` (multi-process; ``manager``: the run's CheckpointManager)."""
        if self._distributed:
            if manager is not None:
                reached = manager.reached_preemption(step)
            else:
                from jax.experimental import multihost_utils
                reached = multihost_utils.reached_preemption_sync_point(step)
            if reached and self.signum is None:
                self.signum = signal.SIGTERM
            return bool(reached)
        return self.signum is not None

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            # None: a handler installed outside Python (e.g. JAX's in a one-process jax.distributed run)
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
