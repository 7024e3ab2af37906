"""Orbax checkpoints of a :class:`~consistency.methods.base.TrainState` in ``WORKDIR/checkpoints/<step>/``.

Each step directory holds ``state`` (the whole TrainState pytree) and ``meta`` (a small JSON: step, method).
Orbax writes a step into a temporary directory and renames it when complete, so a killed run never leaves a
half-written step behind: :func:`available_steps` lists only finished ones (docs/platform.md §6).

Never lose a run (issue 8):

* **A broken step is skipped, not fatal.** :func:`restore_latest` restores the newest step that restores; a step
  that fails (a truncated or partly deleted file) is moved to ``WORKDIR/checkpoints_broken/<step>`` — outside
  Orbax's directory, so it is never listed again, and kept for inspection — and one log line names it and the
  step restored instead. A step whose saved shapes differ from the target is *not* broken but another model or
  optimizer: that raises :class:`CheckpointMismatchError` (a ConfigError) and moves nothing.
* **A bad state is never saved.** :func:`save` first checks (one jitted reduction, a few scalars to the host) that
  every leaf of the state is finite and that max|θ| of the trained params and their EMA is at most the bound set
  with :func:`guard_saves` (``config.training.max_param_abs``; 0 disables); else it raises
  :class:`DivergedStateError` naming the set, the leaf, the value and the last good step.
* **Damage on disk is noticed** (issue 33). The meta records a CRC-32 of every array (:func:`leaf_digests`); every
  restore — resume, sample/eval, teacher and ``init_from`` loads (:func:`read_step_items`) — verifies it, and a step
  whose bytes changed is broken like a truncated one (:class:`CorruptCheckpointError`).
* **Storage that cannot take a step is one line**: :func:`storage_problem` before any step (read-only, full), and
  :class:`CheckpointWriteError` for a save that fails mid-run, naming the last good step.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging as std_logging
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
import weakref
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from consistency.core import fileio
from consistency.core.errors import ConfigError

PyTree = Any

# Default bound on max|θ| of trained params and EMA at save time. Healthy weights are O(1) (initialisers scale by
# 1/√fan_in) and an Adam step moves a weight by at most ≈ lr, so even 10⁶ steps at lr = 10⁻³ end 10× below it.
# Beyond it float32 can no longer apply such steps (ulp(10⁴) ≈ 10⁻³: an lr = 10⁻⁴ update rounds away), so a
# weight there has stopped training anyway. A blow-up (one lr = 10⁶ Adam step gives |θ| ≈ 10⁶) is caught long
# before float32 overflows to Inf; a bound of 1e6 would let exactly that case through.
DEFAULT_MAX_PARAM_ABS = 1e4
BOUNDED_FIELDS = ("params", "ema")  # the state fields whose max|θ| is bounded (every field must be finite)
BROKEN_DIR = "checkpoints_broken"


class DivergedStateError(FloatingPointError):
    """The state about to be saved is not finite or has blown up; it was not saved."""


class CheckpointMismatchError(ConfigError):
    """A checkpoint holds a state of another structure or shape than the run expects (another model/optimizer)."""


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
                                f"({_one_line(error)}); training stopped, {kept}: free space or fix the "
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


# ----------------------------------------------------------------------------------------------------------
# Integrity: per-leaf digests in the meta, verified on every restore
# ----------------------------------------------------------------------------------------------------------

DIGESTS_KEY = "digests"


class CorruptCheckpointError(ValueError):
    """A restored leaf's bytes differ from the digest recorded when it was saved (silent on-disk damage)."""


def flat_leaves(tree: PyTree) -> dict[str, Any]:
    """``{'params.online.w1': leaf, ...}``: the leaves of ``tree`` keyed as Orbax stores them."""
    flat = ocp.tree.to_flat_dict(ocp.tree.serialize_tree(tree, keep_empty_nodes=True))
    return {".".join(map(str, k)): v for k, v in flat.items() if hasattr(v, "shape")}


def _whole_value(x) -> np.ndarray | None:
    """The complete value of a leaf on this host (None for a leaf split over hosts: no host holds all of it)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0)) if x.is_fully_replicated else None
    return np.asarray(x)


def digest(x: np.ndarray) -> str:
    """``crc32:<8 hex>:<dtype>:<shape>`` of an array's bytes (CRC-32: every burst of ≤ 32 changed bits is
    caught, any other change escapes with probability 2⁻³²; zlib's runs at ≈ 2 GB/s on one core)."""
    x = np.ascontiguousarray(x)
    crc = zlib.crc32(memoryview(x).cast("B")) if x.size else 0
    return f"crc32:{crc:08x}:{x.dtype}:{'x'.join(map(str, x.shape))}"


def leaf_digests(tree: PyTree) -> dict[str, str]:
    """:func:`digest` of every leaf of ``tree`` whose whole value this host holds, by :func:`flat_leaves` key."""
    digests = {}
    for key, leaf in flat_leaves(tree).items():
        value = _whole_value(leaf)
        if value is not None:
            digests[key] = digest(value)
    return digests


def verify_digests(tree: PyTree, meta: dict, where: str) -> None:
    """Raise :class:`CorruptCheckpointError` (one line) when a leaf of the restored ``tree`` differs from the digest
    ``meta`` recorded at save time. Checkpoints written before digests existed have none and pass; so does a leaf
    restored into another dtype (its bytes differ by design)."""
    recorded = (meta or {}).get(DIGESTS_KEY) or {}
    if not recorded:
        return
    bad = []
    for key, leaf in flat_leaves(tree).items():
        saved = recorded.get(key)
        value = None if saved is None else _whole_value(leaf)
        if value is None or saved.split(":")[2] != str(value.dtype):
            continue
        if digest(value) != saved:
            bad.append(key)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise CorruptCheckpointError(f"{where}: the bytes of {bad[0]}{more} differ from the digest recorded when "
                                     "it was saved (damaged on disk)")


# ----------------------------------------------------------------------------------------------------------
# Save guard: never write a non-finite or blown-up state
# ----------------------------------------------------------------------------------------------------------

_SAVE_BOUNDS: "weakref.WeakKeyDictionary[ocp.CheckpointManager, float]" = weakref.WeakKeyDictionary()


def guard_saves(manager: ocp.CheckpointManager, max_param_abs: float) -> None:
    """Make :func:`save` on ``manager`` refuse a state with max|θ| > ``max_param_abs`` (0 → only the finiteness
    check). Managers not configured here use :data:`DEFAULT_MAX_PARAM_ABS`."""
    _SAVE_BOUNDS[manager] = float(max_param_abs)


def max_param_abs_of(manager: ocp.CheckpointManager) -> float:
    return _SAVE_BOUNDS.get(manager, DEFAULT_MAX_PARAM_ABS)


@jax.jit
def _leaf_summaries(leaves: list) -> tuple[jax.Array, jax.Array]:
    """Per leaf: all finite (bool) and max |x| (float32); integer leaves count as finite with max 0."""
    def summary(x):
        if not jnp.issubdtype(x.dtype, jnp.inexact) or x.size == 0:
            return jnp.array(True), jnp.array(0.0, jnp.float32)
        return jnp.all(jnp.isfinite(x)), jnp.max(jnp.abs(x)).astype(jnp.float32)
    finite, max_abs = zip(*(summary(jnp.asarray(x)) for x in leaves))
    return jnp.stack(finite), jnp.stack(max_abs)


def _host(x) -> np.ndarray:
    """A replicated device value → numpy (multi-host: this host's first replica)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _describe_leaf(path, leaf, value: float) -> str:
    """``params['online'] w1[0, 3] = 1e+06``: the parameter set, the leaf path inside it, its worst element."""
    names = [_key_name(k) for k in path]
    where = f"{names[0]}[{names[1]!r}]" if len(names) > 1 else (names[0] if names else "state")
    inner = ".".join(names[2:]) or "(the whole set)"
    x = _host(leaf)
    if x.ndim:
        bad = ~np.isfinite(x) if not math.isfinite(value) else np.abs(x) == value
        index = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else ()
        inner += "[" + ", ".join(map(str, index)) + "]"
        value = float(x[index]) if index else value
    else:
        value = float(x)
    return f"{where} {inner} = {value:.4g}"


def find_unsafe_leaf(state: PyTree, max_param_abs: float) -> str | None:
    """None when every leaf of ``state`` is finite and max|θ| of the :data:`BOUNDED_FIELDS` leaves is at most
    ``max_param_abs`` (0 → no bound); else a description of the first offending leaf. One jitted reduction: only
    two scalars per leaf reach the host (and the offending leaf, to name its element)."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    if not flat:
        return None
    finite, max_abs = (_host(v) for v in _leaf_summaries([leaf for _, leaf in flat]))
    for (path, leaf), ok in zip(flat, finite):
        if not ok:
            return _describe_leaf(path, leaf, math.nan) + " is not finite"
    if max_param_abs > 0:
        for (path, leaf), m in zip(flat, max_abs):
            if path and _key_name(path[0]) in BOUNDED_FIELDS and m > max_param_abs:
                return (_describe_leaf(path, leaf, float(m)) +
                        f" exceeds training.max_param_abs = {max_param_abs:g}")
    return None


def check_state(state: PyTree, step: int, max_param_abs: float = DEFAULT_MAX_PARAM_ABS,
                last_good: Callable[[], int | None] = lambda: None) -> None:
    """Raise :class:`DivergedStateError` (one line: the leaf, the value, the last good step and the fix) when
    :func:`find_unsafe_leaf` finds one."""
    problem = find_unsafe_leaf(state, max_param_abs)
    if problem is None:
        return
    good = last_good()
    resume = (f"the last good checkpoint is step {good}: rerun to resume from it" if good is not None
              else "no checkpoint was saved yet: rerun to start again")
    raise DivergedStateError(
        f"training diverged: not saving step {step}: {problem}; {resume} with a lower optim.lr, a longer "
        "optim.warmup_steps or, if clipping is on, a smaller optim.grad_clip (training.max_param_abs=0 disables "
        "the bound)")


@jax.jit
def _set_max_abs(params: dict) -> dict:
    return {name: jnp.max(jnp.stack([jnp.max(jnp.abs(x)).astype(jnp.float32) for x in jax.tree.leaves(tree)
                                     if jnp.issubdtype(x.dtype, jnp.inexact) and x.size] or [jnp.float32(0)]))
            for name, tree in params.items()}


def set_max_abs(params: dict) -> dict[str, float]:
    """{set name: max|θ| over its leaves} of a state's ``params`` (one jitted reduction, one scalar per set)."""
    return {name: float(_host(v)) for name, v in _set_max_abs(dict(params)).items()}


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
        _drop_tracebacks(failure)  # its frames hold TensorStore's pending reads: let them go and settle now
        quiet.settle()
    raise failure


# ----------------------------------------------------------------------------------------------------------
# Restoring the newest step that restores
# ----------------------------------------------------------------------------------------------------------

def step_path(manager: ocp.CheckpointManager, step: int) -> str:
    return os.path.join(os.fspath(manager.directory), str(step))


def broken_dir(manager: ocp.CheckpointManager) -> str:
    """``WORKDIR/checkpoints_broken``: beside Orbax's directory, so a step moved there is never listed again."""
    return os.path.join(os.path.dirname(os.fspath(manager.directory)), BROKEN_DIR)


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


def _one_line(error: BaseException, width: int = 200) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= width else text[:width - 1] + "…"


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


def _drop_tracebacks(error: BaseException) -> None:
    """Forget the tracebacks of ``error`` and its causes (their messages stay)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__


class _DropMessage(std_logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = prefix

    def filter(self, record: std_logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._prefix)


class QuietOrphanedReads:
    """When one read of a broken step fails, Orbax closes its event loop while TensorStore still completes the
    other reads; each then reports through ``sys.unraisablehook`` ('RuntimeError: Event loop is closed', or the
    read error again when its coroutine is finalized): a traceback apiece, dozens per step, some of them after the
    failure has been raised. Inside this context exactly those are dropped, and :meth:`settle` waits for them, so a
    skipped step costs one log line."""

    def __enter__(self) -> "QuietOrphanedReads":
        self._previous, self._last = sys.unraisablehook, time.monotonic()
        sys.unraisablehook = self._hook
        # the same failed reads, when their future is collected: "Future exception was never retrieved" + the error
        self._asyncio_filter = _DropMessage("Future exception was never retrieved")
        std_logging.getLogger("asyncio").addFilter(self._asyncio_filter)
        return self

    def _hook(self, unraisable) -> None:
        value = unraisable.exc_value
        if (isinstance(value, RuntimeError) and str(value) == "Event loop is closed") or \
                asyncio.iscoroutine(unraisable.object):
            self._last = time.monotonic()
        else:
            self._previous(unraisable)

    def settle(self, quiet_for: float = 0.2, at_most: float = 2.0) -> None:
        """Collect the failed reads' garbage and wait until they have been silent for ``quiet_for`` seconds
        (at most ``at_most``): only ever after a failed restore."""
        start = time.monotonic()
        self._last = max(self._last, start)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
            while time.monotonic() - self._last < quiet_for and time.monotonic() - start < at_most:
                gc.collect()
                time.sleep(0.02)

    def __exit__(self, *exc_info) -> None:
        sys.unraisablehook = self._previous
        std_logging.getLogger("asyncio").removeFilter(self._asyncio_filter)


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
                skipped.append((step, _one_line(error), move_step_aside(manager, step) if move_aside else None))
        if skipped:  # the failed metadata reads leave the same leftovers
            quiet.settle()
    if skipped:
        on_skip(skip_message(directory, skipped, None if restored is None else restored[2]))
    return restored


def read_meta(step_dir: str) -> dict:
    """The small JSON ``meta`` item of one step directory ({} when it has none)."""
    path = os.path.join(step_dir, "meta", "metadata")
    if not fileio.exists(path):
        return {}
    return dict(fileio.read_json(path) or {})


# ----------------------------------------------------------------------------------------------------------
# Warm start: parameter sets of another run (training.init_from)
# ----------------------------------------------------------------------------------------------------------

WARM_START_GROUPS = ("params", "ema", "moving")


@contextlib.contextmanager
def _no_missing_metadata_warning():
    """Orbax warns 'Metadata file does not exist' when a ``state`` item is read on its own (its step metadata lives
    one folder up): true, expected and no use to a user, on every teacher and ``init_from`` load."""
    drop = _DropMessage("Metadata file does not exist")
    logger = logging.get_absl_logger()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _read_step_items(step_dir: str, choose: Callable[[dict, dict], dict]) -> tuple[dict, dict]:
    """Partial restore (as numpy) of the items ``choose(saved tree metadata, meta)`` picks from ``step_dir/state``,
    verified against the recorded digests → (restored, meta)."""
    meta = read_meta(step_dir)
    state_dir = os.path.join(step_dir, "state")
    checkpointer = ocp.PyTreeCheckpointer()
    with _no_missing_metadata_warning(), QuietOrphanedReads() as quiet:
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
            _drop_tracebacks(failure)
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
            skipped.append((candidate, _one_line(error), None))
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
