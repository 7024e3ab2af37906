"""One training process per workdir (issue 33): ``WORKDIR/train.lock``.

A resubmitted job or a second notebook cell on the same workdir would train alongside the first and overwrite its
checkpoints. Training therefore holds a lock file naming its holder (host, pid, the process's start time and when it
took the lock); a second training process on the workdir is refused with one line naming the holder. The lock is
released when training ends, however it ends short of ``kill -9``; a lock whose holder has died (same host, and the
pid is gone or now belongs to a process started at another time) is stale and taken over. A holder on another host
cannot be checked from here: the message says to delete the file if that process is gone. ``--mode=sample|eval``
only read and take no lock. In a multi-process run process 0 holds the lock for the whole job and every process
learns whether it got it (:func:`acquire_for_job`). Bucket workdirs (``gs://``) are not locked (an object store has
no atomic create-if-absent through the file layer used here).
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import time

from consistency.core import fileio
from consistency.core.errors import ConfigError

LOCK_FILE = "train.lock"


class WorkdirLockedError(ConfigError):
    """Another training process holds the workdir."""


def _process_start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux /proc; None elsewhere or if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def this_holder() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": _process_start_ticks(pid),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}


def holder_alive(holder: dict) -> bool | None:
    """Whether the process named by ``holder`` still runs: True/False on this host, None on another."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's
        pass
    recorded, now = holder.get("pid_start"), _process_start_ticks(pid)
    return not (recorded is not None and now is not None and recorded != now)   # a reused pid is another process


def describe(holder: dict) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}"


@dataclasses.dataclass
class WorkdirLock:
    path: str | None        # None: nothing held (a bucket workdir, or another process of the job holds it)
    holder: dict

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if self.path is None:
            return
        try:
            if _read(self.path) == self.holder:
                os.remove(self.path)
        except OSError:
            pass
        self.path = None


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


def _create(path: str, holder: dict) -> bool:
    """Write ``holder`` to ``path`` only if no file is there (a complete file appears at once: written beside it,
    then hard-linked into place, which fails if the name exists). False when it exists."""
    temporary = f"{path}.{holder['pid']}.tmp"
    with open(temporary, "w") as f:
        json.dump(holder, f)
    try:
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(temporary)


def acquire(workdir: str) -> WorkdirLock:
    """Take ``WORKDIR/train.lock`` (creating the workdir) or raise :class:`WorkdirLockedError` (one line)."""
    workdir = fileio.absolute(workdir)
    if fileio.is_remote(workdir):
        return WorkdirLock(None, {})
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    holder = this_holder()
    for _ in range(3):
        if _create(path, holder):
            return WorkdirLock(path, holder)
        current = _read(path)
        if current is None and os.path.exists(path) and time.time() - os.path.getmtime(path) < 5:
            time.sleep(0.5)   # being written this instant
            continue
        alive = None if current is None else holder_alive(current)
        if current is not None and alive is not False:
            gone = ("" if alive else f"; if that process is gone (its host was stopped), delete {path}")
            raise WorkdirLockedError(
                f"--workdir: {workdir} is being trained by another process ({describe(current)}){gone}; wait for "
                "it to finish or stop it, or train in another --workdir (--mode=sample|eval may run meanwhile)")
        try:   # stale: its holder died without releasing it. Renaming it away is atomic: one taker wins
            os.rename(path, f"{path}.stale.{holder['pid']}")
            os.remove(f"{path}.stale.{holder['pid']}")
        except FileNotFoundError:
            pass
    raise WorkdirLockedError(f"--workdir: could not take {path} (other processes keep taking it); train in another "
                             "--workdir")


def acquire_for_job(workdir: str) -> WorkdirLock:
    """:func:`acquire` by process 0 of a (multi-process) job; every process raises the same one line if it fails."""
    import jax
    if jax.process_count() == 1:
        return acquire(workdir)
    import numpy as np
    from jax.experimental import multihost_utils
    lock, problem = WorkdirLock(None, {}), ""
    if jax.process_index() == 0:
        try:
            lock = acquire(workdir)
        except WorkdirLockedError as e:
            problem = str(e)
    refused = int(multihost_utils.broadcast_one_to_all(np.int32(1 if problem else 0)))
    if refused:
        if not problem:
            current = _read(os.path.join(fileio.absolute(workdir), LOCK_FILE)) or {}
            problem = (f"--workdir: {workdir} is being trained by another process ({describe(current)}); wait for "
                       "it to finish or train in another --workdir")
        raise WorkdirLockedError(problem)
    return lock
