"""Orbax checkpoints of a :class:`~consistency.methods.base.TrainState` in ``WORKDIR/checkpoints/<step>/``.

Each step directory holds ``state`` (the whole TrainState pytree) and ``meta`` (a small JSON: step, method).
Orbax writes a step into a temporary directory and renames it when complete, so a killed run never leaves a
half-written step behind: :func:`available_steps` lists only finished ones (PLATFORM.md §6).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

PyTree = Any


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def available_steps(workdir: str) -> list[int]:
    """Finished checkpoint steps in ``workdir``, ascending ([] when there are none)."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
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


def save(manager: ocp.CheckpointManager, step: int, state: PyTree, meta: dict) -> None:
    """Save ``state`` at ``step`` (asynchronously: the device→host copy happens before this returns, so the
    caller may donate ``state`` to the next step)."""
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                 force=True)


def abstract_state(state_shapes: PyTree, sharding: jax.sharding.Sharding) -> PyTree:
    """``jax.eval_shape`` output → ShapeDtypeStructs carrying ``sharding`` (the restore target)."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), state_shapes)


def restore(manager: ocp.CheckpointManager, step: int, target: PyTree) -> tuple[PyTree, dict]:
    """Restore ``step`` into the structure, dtypes and shardings of ``target`` → (state, meta)."""
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                             meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta or {})
