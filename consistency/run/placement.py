"""Devices and sharding for the training loop: the mesh, the state's and the batch's shardings (FSDP included), the
multi-host start and the check that every process runs the same config (docs/architecture.md, "Sharding")."""
from __future__ import annotations

import dataclasses
import json
import math

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from consistency.core.errors import ConfigError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"            # training.fsdp > 1: the second mesh axis parameters and optimizer state are split over
FSDP_MIN_SIZE = 2 ** 12       # smaller leaves (biases, norms, scalars) stay replicated: gathering costs more than storing


def maybe_initialize_distributed(config) -> None:
    """``jax.distributed.initialize()`` (cluster auto-detection) once, when ``config.distributed`` is set."""
    if config.get("distributed", False) and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def _flat_fields(tree, prefix: str = "") -> dict:
    """``{'optim.lr': 0.001, ...}`` of a nested dict (JSON-decoded config)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat_fields(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _first_difference(mine: dict, theirs: dict) -> str | None:
    """The first field (sorted) whose value differs between two flat dicts, or None."""
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key, "<absent>") != theirs.get(key, "<absent>"):
            return key
    return None


def check_processes_agree(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Multi-host: every process must train the same config in the same workdir, or the collectives would pair up
    different programs (a hang or silently wrong numbers). Process 0's resolved config and workdir are broadcast to all
    (padded bytes through ``multihost_utils``); a process that differs names its first differing field, and every
    process raises the same kind of one-line ConfigError, so no process is left waiting in a collective."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    mine = {"workdir": str(workdir), "config": json.loads(config.to_json_best_effort(sort_keys=True))}
    encoded = np.frombuffer(json.dumps(mine, sort_keys=True).encode(), np.uint8)
    longest = int(np.max(multihost_utils.process_allgather(np.array([encoded.size], np.int32))))
    padded = np.zeros(longest, np.uint8)
    padded[:encoded.size] = encoded
    chief = np.asarray(multihost_utils.broadcast_one_to_all(padded)).tobytes().rstrip(b"\0")
    field = _first_difference(_flat_fields(mine), _flat_fields(json.loads(chief.decode())))
    differs = multihost_utils.process_allgather(np.array([field is not None], np.int32)).reshape(-1)
    if field is not None:
        name = field if field == "workdir" else "config." + field.split(".", 1)[1]
        raise ConfigError(f"{name}: process {jax.process_index()} has {_flat_fields(mine).get(field)!r} but process 0 "
                          "has another value; start every process with the same --config, overrides and --workdir")
    if differs.any():
        raise ConfigError(f"config: process(es) {np.flatnonzero(differs).tolist()} run another config or workdir than "
                          "process 0 (their error line names the field); start every process with the same command")


@dataclasses.dataclass(frozen=True)
class Placement:
    """The mesh and the shardings the loop uses."""
    mesh: Mesh
    replicated: NamedSharding   # the metrics, the keys (and the state when fsdp == 1)
    batch: NamedSharding        # leading (example) axis split over every device
    fsdp: int = 1               # size of the 'fsdp' axis the state is split over (1: no such axis)

    def leaf_sharding(self, shape: tuple) -> NamedSharding:
        """FSDP (ZeRO-3 style): a state leaf of at least FSDP_MIN_SIZE scalars is split over 'fsdp' along its largest
        dimension divisible by ``fsdp``; others (and every leaf when fsdp == 1) are replicated. XLA all-gathers a
        split parameter where the step needs it whole and reduce-scatters its gradient, so the step computes the same
        numbers as the replicated layout (tests/test_fsdp.py) while each device stores 1/fsdp of the large leaves."""
        if self.fsdp == 1 or math.prod(shape) < FSDP_MIN_SIZE:
            return self.replicated
        divisible = [i for i, n in enumerate(shape) if n % self.fsdp == 0]
        if not divisible:
            return self.replicated
        axis = max(divisible, key=lambda i: shape[i])
        return NamedSharding(self.mesh, P(*[FSDP_AXIS if i == axis else None for i in range(len(shape))]))

    def state_shardings(self, state_shapes):
        """The sharding of every leaf of a state (``jax.eval_shape`` output or arrays)."""
        return jax.tree.map(lambda leaf: self.leaf_sharding(tuple(np.shape(leaf))), state_shapes)


def make_placement(devices=None, fsdp: int = 1) -> Placement:
    """A 1-D ``('data',)`` mesh over ``devices`` (default: all of every host), or with ``fsdp`` > 1 a 2-D
    ``('data', 'fsdp')`` mesh of shape (devices/fsdp, fsdp); the batch is split over every device either way."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    fsdp = int(fsdp)
    if devices.size % fsdp:
        raise ConfigError(f"config.training.fsdp: {fsdp} does not divide the {devices.size} devices; use a divisor "
                          f"of {devices.size} (1 = replicated state)")
    if fsdp == 1:
        mesh = Mesh(devices, (DATA_AXIS,))
        return Placement(mesh, NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS)))
    mesh = Mesh(devices.reshape(-1, fsdp), (DATA_AXIS, FSDP_AXIS))
    return Placement(mesh, NamedSharding(mesh, P()), NamedSharding(mesh, P((DATA_AXIS, FSDP_AXIS))), fsdp)


def global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
    """This host's share of the batch (numpy) → global arrays split over ``'data'`` (multi-host aware).

    On one host the numpy batch is returned as is: the jitted step's ``in_shardings`` split it on the way in,
    which on CPU costs about half of an explicit ``device_put`` per step.
    """
    if jax.process_count() == 1:
        return {k: np.asarray(v) for k, v in local_batch.items()}
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
