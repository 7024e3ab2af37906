"""A run's state from its workdir: the abstract TrainState a checkpoint restores into, the restore of a finished run
(for sampling and evaluation), and the warm start of a fresh run from another run's parameter sets
(``training.init_from``)."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from consistency import methods
from consistency.core import checkpoint
from consistency.core.errors import ConfigError
from consistency.data import build_dataset
from consistency.methods import base
from consistency.run.placement import Placement, make_placement


def stream_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Root key (step k uses fold_in(root, k)), the init key, and the fixed key of every sample grid."""
    root = jax.random.PRNGKey(seed)
    init_key, sample_key = jax.random.split(jax.random.fold_in(root, np.iinfo(np.int32).max))
    return root, init_key, sample_key


def _batch_shapes(dataset) -> dict:
    """ShapeDtypeStructs of one *global* batch (for ``jax.eval_shape``; no data is moved)."""
    local = dataset.batch(0)
    hosts = jax.process_count()
    return {k: jax.ShapeDtypeStruct((np.shape(v)[0] * hosts,) + np.shape(v)[1:], np.asarray(v).dtype)
            for k, v in local.items()}


def state_shapes(method, dataset, init_key):
    """The TrainState's ShapeDtypeStructs (``jax.eval_shape`` of init: nothing is computed)."""
    return jax.eval_shape(functools.partial(base.init_state, method), init_key, _batch_shapes(dataset))


def restore_target(method, dataset, init_key, placement: Placement):
    """The abstract TrainState (shapes, dtypes, the placement's shardings) a checkpoint is restored into."""
    shapes = state_shapes(method, dataset, init_key)
    return checkpoint.abstract_state(shapes, placement.state_shardings(shapes))


@dataclasses.dataclass
class Restored:
    config: ml_collections.ConfigDict
    dataset: Any
    method: Any
    state: Any
    step: int
    placement: Placement


def restore_run(config, workdir: str, step: int | None = None, placement: Placement | None = None) -> Restored:
    """Rebuild dataset and method from ``config`` and restore checkpoint ``step`` (None → the latest)."""
    steps = checkpoint.available_steps(workdir)
    if not steps:
        raise FileNotFoundError(f"no finished checkpoint in {checkpoint.checkpoint_dir(workdir)}")
    newest_restorable = step is None or step < 0
    if step is None or step < 0:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {checkpoint.checkpoint_dir(workdir)}; "
                                f"available: {steps}")
    placement = placement or make_placement()
    dataset = build_dataset(config)
    method = methods.get_method(config, dataset)
    _, init_key, _ = stream_keys(config.seed)
    manager = checkpoint.make_manager(workdir, create=False)
    try:
        target = restore_target(method, dataset, init_key, placement)
        if newest_restorable:  # skip broken steps (left in place: sample/eval never modify the checkpoints)
            restored = checkpoint.restore_latest(manager, target, move_aside=False)
            if restored is None:
                raise FileNotFoundError(f"no checkpoint in {checkpoint.checkpoint_dir(workdir)} can be restored")
            state, meta, step = restored
        else:
            state, meta = checkpoint.restore(manager, step, target)
    finally:
        manager.close()
    check_meta(meta, config, workdir)
    return Restored(config, dataset, method, state, step, placement)


def warm_start(state: base.TrainState, source: dict, origin: str,
               only: tuple[str, ...] = ()) -> tuple[base.TrainState, list[str]]:
    """``state`` with every parameter set of ``source`` ({group: {name: tree}}, :func:`checkpoint.read_parameter_sets`)
    that this run also has — trained params, their sampling EMA, moving sets such as θ⁻ — copied in (cast to this
    run's dtypes and shardings); optimizer states, update counters and the step stay fresh, and sets the source lacks
    (e.g. a discriminator added for GAN fine-tuning, CTM §13.1) keep their fresh initialisation. ``only``
    (``training.init_sets``) limits the copy to those set names. A set of this run that *extends* the source's — a
    dict with every top-level sub-network of the source plus new ones, as a PaGoDA generator grown by a block — takes
    the shared sub-networks and keeps the new ones fresh. Any other difference of structure or shape is a ConfigError
    naming ``training.init_from``. Returns (state, copied names as 'group/name')."""
    def matches(a, b) -> bool:
        return (jax.tree.structure(a) == jax.tree.structure(b)
                and all(np.shape(x) == np.shape(y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))

    def cast(new, old):
        return jax.tree.map(lambda n, o: jax.device_put(jnp.asarray(n, o.dtype), o.sharding), new, old)

    copied, groups = [], {}
    for group in checkpoint.WARM_START_GROUPS:
        mine = dict(getattr(state, group))
        for name, tree in source.get(group, {}).items():
            if name not in mine or (only and name not in only):
                continue
            if matches(mine[name], tree):
                mine[name] = cast(tree, mine[name])
                copied.append(f"{group}/{name}")
                continue
            extends = (isinstance(mine[name], dict) and isinstance(tree, dict) and set(tree) < set(mine[name])
                       and all(matches(mine[name][k], tree[k]) for k in tree))
            if not extends:
                raise ConfigError(f"config.training.init_from: set {group}/{name} of {origin!r} does not match this "
                                  "run's network (other layers or shapes); warm-start from a run of the same model")
            mine[name] = {**mine[name], **{k: cast(v, mine[name][k]) for k, v in tree.items()}}
            copied.append(f"{group}/{name} ({', '.join(sorted(tree))} of {len(mine[name])} sub-networks)")
        groups[group] = mine
    if not copied:
        raise ConfigError(f"config.training.init_from: {origin!r} has none of this run's parameter sets "
                          f"({sorted(state.params)}{', training.init_sets ' + str(tuple(only)) if only else ''}); "
                          "warm-start from a run of the same method family")
    return state.replace(**groups), copied


def warm_start_from(state: base.TrainState, source_workdir: str, only: tuple[str, ...] = ()) -> base.TrainState:
    """:func:`warm_start` from the latest checkpoint of ``source_workdir`` (``config.training.init_from``)."""
    try:
        step, source = checkpoint.read_parameter_sets(source_workdir)
    except FileNotFoundError as e:
        raise ConfigError(f"config.training.init_from: {e}; finish that run first or fix the path") from None
    state, copied = warm_start(state, source, source_workdir, tuple(only))
    logging.info("warm start from step %d of %s: copied %s", step, source_workdir, ", ".join(copied))
    return state


def check_meta(meta: dict, config, workdir: str) -> None:
    saved = meta.get("method")
    if saved is not None and saved != config.method:
        raise ConfigError(f"config.method: {workdir!r} holds checkpoints of method {saved!r}, not {config.method!r}; "
                          "use a fresh workdir")
