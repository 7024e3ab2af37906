"""Restoring the newest step that restores: a broken step is moved aside with one log line; a step of another model
or optimizer is a :class:`CheckpointMismatchError` (issue 8)."""
from __future__ import annotations

import os
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from consistency.core import fileio
from consistency.core.checkpoint.orbax_errors import QuietOrphanedReads, one_line
from consistency.core.checkpoint.steps import broken_dir, restore, step_path
from consistency.core.errors import ConfigError

PyTree = Any


class CheckpointMismatchError(ConfigError):
    """A checkpoint holds a state of another structure or shape than the run expects (another model/optimizer)."""


def _layout(flat: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    return {".".join(map(str, k)): (tuple(v.shape), str(v.dtype)) for k, v in flat.items() if hasattr(v, "shape")}


def target_layout(target: PyTree) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{'params.online.w1': ((2, 8), 'float32'), ...}`` of a restore target, keyed as Orbax stores the tree."""
    return _layout(ocp.tree.to_flat_dict(ocp.tree.serialize_tree(target, keep_empty_nodes=True)))


def saved_layout(step_dir: str) -> dict[str, tuple[tuple[int, ...], str]] | None:
    """The same for the ``state`` item of a step directory, from Orbax's metadata; None when it cannot be read."""
    handler = ocp.StandardCheckpointHandler()
    try:
        tree = getattr(handler.metadata(epath.Path(step_dir) / "state"), "tree", None)
        return _layout(ocp.tree.to_flat_dict(tree)) if tree else None
    except Exception:  # noqa: BLE001 — unreadable metadata is one more sign of a broken step
        return None
    finally:
        handler.close()


def describe_mismatch(saved: dict, wanted: dict, limit: int = 3) -> str | None:
    """None when two layouts agree; else their first differences, e.g. ``params.online.w1: saved (2, 8)
    float32, this run expects (2, 16) float32``."""
    fmt = lambda s: f"{s[0]} {s[1]}"  # noqa: E731
    diffs = [f"{k}: saved {fmt(saved[k])}, this run expects {fmt(wanted[k])}"
             for k in sorted(set(saved) & set(wanted)) if saved[k] != wanted[k]]
    diffs += [f"{k}: only in the checkpoint" for k in sorted(set(saved) - set(wanted))]
    diffs += [f"{k}: missing from the checkpoint" for k in sorted(set(wanted) - set(saved))]
    if not diffs:
        return None
    more = f" (and {len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


def move_step_aside(manager: ocp.CheckpointManager, step: int) -> str | None:
    """Move step directory ``step`` to ``checkpoints_broken/<step>`` (``<step>.1``, … if taken) and make
    ``manager`` forget it. Returns the new path (None when the directory is already gone)."""
    source, parent = step_path(manager, step), broken_dir(manager)
    destination, n = os.path.join(parent, str(step)), 0
    while fileio.exists(destination):
        n += 1
        destination = os.path.join(parent, f"{step}.{n}")
    moved = fileio.isdir(source)
    if moved and jax.process_index() == 0:
        fileio.makedirs(parent)
        fileio.rename(source, destination)
    manager.reload()
    return destination if moved else None


def skip_message(directory: str, skipped: list[tuple[int, str, str | None]], restored: int | None) -> str:
    """One line: which steps were skipped, why, where they went, and which step was restored instead."""
    steps = ", ".join(str(s) for s, _, _ in skipped)
    why = "; ".join(reason for _, reason, _ in skipped) if len(skipped) == 1 else \
        "; ".join(f"{s}: {reason}" for s, reason, _ in skipped)
    destinations = [d for _, _, d in skipped if d]
    if not destinations:
        where = "left in place"
    elif len(destinations) == 1:
        where = f"moved to {destinations[0]}"
    else:
        where = f"moved to {os.path.dirname(destinations[0])}/"
    then = f"restored step {restored} instead" if restored is not None else "no older step restores"
    noun = "step" if len(skipped) == 1 else "steps"
    return f"broken checkpoint {noun} {steps} in {directory}: {where}; {then} ({why})"


def restore_latest(manager: ocp.CheckpointManager, target: PyTree,
                   on_skip: Callable[[str], Any] = logging.warning, move_aside: bool = True
                   ) -> tuple[PyTree, dict, int] | None:
    """Restore the newest step of ``manager`` that restores into ``target`` → (state, meta, step); None when
    there are no steps or none restores.

    A step that fails is broken (a truncated or deleted file): with ``move_aside`` it is moved to
    ``WORKDIR/checkpoints_broken/`` (:func:`move_step_aside`; the read-only sample/eval modes leave it in place),
    and the next older step is tried. ``on_skip`` gets ONE line (:func:`skip_message`) naming the broken steps and
    the step restored. A failing step whose saved shapes differ from ``target`` is not broken but belongs to
    another model or optimizer: :class:`CheckpointMismatchError`, nothing moved.
    """
    skipped: list[tuple[int, str, str | None]] = []
    directory = os.fspath(manager.directory)
    restored = None
    with QuietOrphanedReads() as quiet:
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                restored = (*restore(manager, step, target), step)
                break
            except Exception as error:  # noqa: BLE001 — any failure to read a step marks it broken, unless ...
                saved = saved_layout(step_path(manager, step))
                mismatch = None if saved is None else describe_mismatch(saved, target_layout(target))
                if mismatch:  # ... it is readable and of another shape: a config problem, not a broken step
                    raise CheckpointMismatchError(
                        f"checkpoint step {step} in {directory} holds a state of another model or optimizer "
                        f"({mismatch}); run with the config it was trained with or use a fresh --workdir"
                    ) from error
                skipped.append((step, one_line(error), move_step_aside(manager, step) if move_aside else None))
        if skipped:  # the failed metadata reads leave the same leftovers
            quiet.settle()
    if skipped:
        on_skip(skip_message(directory, skipped, None if restored is None else restored[2]))
    return restored
