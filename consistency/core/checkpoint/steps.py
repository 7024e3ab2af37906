"""Steps on disk: ``WORKDIR/checkpoints/<step>/`` through an Orbax CheckpointManager; saving (guarded, with digests),
restoring one step, and storage that cannot take a step as one line."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp

from consistency.core import fileio
from consistency.core.checkpoint.digests import DIGESTS_KEY, leaf_digests, verify_digests
from consistency.core.checkpoint.orbax_errors import QuietOrphanedReads, drop_tracebacks, one_line
from consistency.core.checkpoint.save_guard import check_state, max_param_abs_of

PyTree = Any

BROKEN_DIR = "checkpoints_broken"


def checkpoint_dir(workdir: str) -> str:
    return fileio.join(fileio.absolute(workdir), "checkpoints")


def available_steps(workdir: str) -> list[int]:
    """Finished checkpoint steps in ``workdir``, ascending ([] when there are none)."""
    directory = checkpoint_dir(workdir)
    if not fileio.isdir(directory):
        return []
    return sorted(ocp.utils.checkpoint_steps(directory))


def latest_step(workdir: str) -> int | None:
    steps = available_steps(workdir)
    return steps[-1] if steps else None


def make_manager(workdir: str, keep: int | None = None, create: bool = True) -> ocp.CheckpointManager:
    """A CheckpointManager on ``WORKDIR/checkpoints`` keeping the newest ``keep`` steps (None → all; a manager
    that only restores deletes nothing)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a read-only directory); the message is one line with the
    last good step."""


def _write_failure(manager: ocp.CheckpointManager, step: int | None, error: BaseException) -> CheckpointWriteError:
    try:   # what is committed on disk (the manager's own list may hold the step that failed)
        steps = sorted(ocp.utils.checkpoint_steps(os.fspath(manager.directory)))
    except Exception:  # noqa: BLE001 — the line is worth more than the step number
        steps = []
    good = steps[-1] if steps else None
    kept = (f"the last good checkpoint is step {good}" if good is not None else "no checkpoint was written yet")
    what = f"checkpoint step {step}" if step is not None else "a checkpoint"
    return CheckpointWriteError(f"--workdir: could not write {what} to {os.fspath(manager.directory)} "
                                f"({one_line(error)}); training stopped, {kept}: free space or fix the "
                                "directory's permissions, then rerun to resume from it")


def finish(manager: ocp.CheckpointManager) -> None:
    """``manager.wait_until_finished()``; a failed background write is :class:`CheckpointWriteError` (one line)."""
    try:
        manager.wait_until_finished()
    except Exception as error:  # noqa: BLE001 — Orbax re-raises the background thread's error here
        raise _write_failure(manager, None, error) from None


def storage_problem(workdir: str, need_bytes: int = 0) -> str | None:
    """Why checkpoints cannot be written to ``workdir`` (one line), checked in a moment before any step: the workdir
    or its ``checkpoints/`` cannot be written, or (local disks) holds less free space than ``need_bytes`` (one
    checkpoint). None when it can; bucket paths are not probed here."""
    workdir = fileio.absolute(workdir)
    if fileio.is_remote(workdir):
        return None
    for directory in (workdir, checkpoint_dir(workdir)):
        if not os.path.isdir(directory):
            continue
        try:
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as e:
            return (f"--workdir: cannot write to {directory} ({e.strerror or e}); training could not save a step: "
                    "fix its permissions or train in another --workdir")
    existing = checkpoint_dir(workdir) if os.path.isdir(checkpoint_dir(workdir)) else workdir
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    if need_bytes and free < need_bytes:
        return (f"--workdir: {existing} has {free / 2 ** 20:.1f} MiB free, less than one checkpoint of this run "
                f"({need_bytes / 2 ** 20:.1f} MiB); free some space or train in another --workdir")
    return None


def save(manager: ocp.CheckpointManager, step: int, state: PyTree, meta: dict) -> None:
    """Save ``state`` at ``step`` (asynchronously: the device→host copy happens before this returns, so the
    caller may donate ``state`` to the next step) — unless :func:`check_state` finds it non-finite or blown up:
    then :class:`DivergedStateError` and nothing is written. The meta records every leaf's digest
    (:func:`leaf_digests`), which every restore verifies."""
    check_state(state, step, max_param_abs_of(manager), last_good=manager.latest_step)
    meta = {**meta, DIGESTS_KEY: leaf_digests(state)}
    try:
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                     force=True)
    except Exception as error:  # noqa: BLE001 — this save's or the previous background write's failure
        raise _write_failure(manager, step, error) from None


def abstract_state(state_shapes: PyTree, sharding) -> PyTree:
    """``jax.eval_shape`` output → ShapeDtypeStructs carrying ``sharding`` (the restore target): one Sharding for
    every leaf, or a pytree of them matching ``state_shapes`` (FSDP: split leaves restore split)."""
    if isinstance(sharding, jax.sharding.Sharding):
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), state_shapes)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shapes, sharding)


def restore(manager: ocp.CheckpointManager, step: int, target: PyTree) -> tuple[PyTree, dict]:
    """Restore ``step`` into the structure, dtypes and shardings of ``target`` → (state, meta)."""
    with QuietOrphanedReads() as quiet:
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                     meta=ocp.args.JsonRestore()))
        except Exception as error:  # noqa: BLE001 — re-raised below, without Orbax's frames
            failure = error
        else:
            meta = dict(restored.meta or {})
            verify_digests(restored.state, meta, f"checkpoint step {step}")
            meta.pop(DIGESTS_KEY, None)
            return restored.state, meta
        drop_tracebacks(failure)  # its frames hold TensorStore's pending reads: let them go and settle now
        quiet.settle()
    raise failure


def step_path(manager: ocp.CheckpointManager, step: int) -> str:
    return os.path.join(os.fspath(manager.directory), str(step))


def broken_dir(manager: ocp.CheckpointManager) -> str:
    """``WORKDIR/checkpoints_broken``: beside Orbax's directory, so a step moved there is never listed again."""
    return os.path.join(os.path.dirname(os.fspath(manager.directory)), BROKEN_DIR)


def read_meta(step_dir: str) -> dict:
    """The small JSON ``meta`` item of one step directory ({} when it has none)."""
    path = os.path.join(step_dir, "meta", "metadata")
    if not fileio.exists(path):
        return {}
    return dict(fileio.read_json(path) or {})
