"""Warm start: the parameter sets of another run's checkpoint (``training.init_from``, teachers), read as numpy by an
Orbax partial restore and verified against the recorded digests."""
from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from consistency.core.checkpoint.digests import verify_digests
from consistency.core.checkpoint.orbax_errors import (QuietOrphanedReads, drop_tracebacks, no_missing_metadata_warning,
                                                      one_line)
from consistency.core.checkpoint.recovery import skip_message
from consistency.core.checkpoint.steps import available_steps, checkpoint_dir, read_meta

WARM_START_GROUPS = ("params", "ema", "moving")


def _read_step_items(step_dir: str, choose: Callable[[dict, dict], dict]) -> tuple[dict, dict]:
    """Partial restore (as numpy) of the items ``choose(saved tree metadata, meta)`` picks from ``step_dir/state``,
    verified against the recorded digests → (restored, meta)."""
    meta = read_meta(step_dir)
    state_dir = os.path.join(step_dir, "state")
    checkpointer = ocp.PyTreeCheckpointer()
    with no_missing_metadata_warning(), QuietOrphanedReads() as quiet:
        try:
            tree = checkpointer.metadata(state_dir).item_metadata.tree
            item = choose(tree, meta)
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
            restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
                item=item, restore_args=restore_args, partial_restore=True))
        except Exception as error:  # noqa: BLE001 — re-raised without Orbax's frames
            failure = error
        else:
            failure = None
        finally:
            checkpointer.close()
        if failure is not None:
            drop_tracebacks(failure)
            quiet.settle()
            raise failure
    verify_digests(restored, meta, f"checkpoint {step_dir}")
    return restored, meta


def read_step_items(workdir: str, choose: Callable[[dict, dict], dict], step: int | None = None,
                    on_skip: Callable[[str], Any] = logging.warning) -> tuple[int, dict, dict]:
    """(step, restored, meta) of :func:`_read_step_items` on ``workdir``'s checkpoint ``step``; ``step=None``: the
    newest one that restores and matches its digests — a broken newer step costs ONE ``on_skip`` line (it is left
    in place: this is another run's workdir, read only). FileNotFoundError (one line) when there is no finished
    checkpoint or none restores."""
    steps = available_steps(workdir)
    if not steps:
        raise FileNotFoundError(f"no finished checkpoint in {checkpoint_dir(workdir)}")
    if step is not None:
        return int(step), *_read_step_items(os.path.join(checkpoint_dir(workdir), str(step)), choose)
    skipped = []
    for candidate in reversed(steps):
        try:
            restored, meta = _read_step_items(os.path.join(checkpoint_dir(workdir), str(candidate)), choose)
        except Exception as error:  # noqa: BLE001 — any failure to read a step marks it broken
            skipped.append((candidate, one_line(error), None))
            continue
        if skipped:
            on_skip(skip_message(checkpoint_dir(workdir), skipped, candidate))
        return candidate, restored, meta
    reasons = "; ".join(f"{s}: {reason}" for s, reason, _ in skipped)
    raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(workdir)} restores ({reasons})")


def read_parameter_sets(workdir: str, step: int | None = None) -> tuple[int, dict]:
    """(step, {group: {set name: numpy tree}}) of ``workdir``'s checkpoint ``step`` (None → the newest that restores,
    :func:`read_step_items`) for the groups a warm start copies (params, ema, moving; never optimizer states or
    counters). An Orbax partial restore as numpy, so no Method or dataset of the source run is built; verified
    against the recorded digests. FileNotFoundError when there is no finished checkpoint or none restores."""
    def choose(tree, meta):
        return {group: tree[group] for group in WARM_START_GROUPS if tree.get(group)}
    step, restored, _ = read_step_items(workdir, choose, step)
    return step, {group: dict(restored.get(group, {})) for group in WARM_START_GROUPS}
