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

The package, one job a module (this ``__init__`` is its interface: ``from consistency.core import checkpoint``):
``steps`` (the step directories, saving and restoring one step, storage problems), ``save_guard`` (a non-finite or
blown-up state is never written), ``digests`` (a CRC-32 per array, checked on every restore), ``recovery`` (the
newest step that restores; broken steps moved aside), ``warm_start`` (parameter sets of another run, read as numpy)
and ``orbax_errors`` (Orbax's failures as one line).
"""
from consistency.core.checkpoint.steps import (BROKEN_DIR, checkpoint_dir, available_steps, latest_step,  # noqa: F401
                                               make_manager, CheckpointWriteError, finish,
                                               storage_problem, save, abstract_state, restore,
                                               step_path, broken_dir, read_meta)
from consistency.core.checkpoint.save_guard import (DEFAULT_MAX_PARAM_ABS, BOUNDED_FIELDS,  # noqa: F401
                                                    DivergedStateError, guard_saves, max_param_abs_of,
                                                    find_unsafe_leaf, check_state, set_max_abs)
from consistency.core.checkpoint.digests import (DIGESTS_KEY, CorruptCheckpointError, flat_leaves,  # noqa: F401
                                                 digest, leaf_digests, verify_digests)
from consistency.core.checkpoint.recovery import (CheckpointMismatchError, target_layout, saved_layout,  # noqa: F401
                                                  describe_mismatch, move_step_aside, skip_message,
                                                  restore_latest)
from consistency.core.checkpoint.warm_start import (WARM_START_GROUPS, read_step_items,  # noqa: F401
                                                    read_parameter_sets)
from consistency.core.checkpoint.orbax_errors import (one_line, drop_tracebacks, QuietOrphanedReads,  # noqa: F401
                                                      no_missing_metadata_warning)
