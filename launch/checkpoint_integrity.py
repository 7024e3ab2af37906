"""Byte-damage trials and the cost of the checkpoint digests (issue 33), on a synthetic state; prints one JSON line.

    python launch/checkpoint_integrity.py [--trials=45] [--megabytes=64] [--seed=0]

Detection: a state of a few float32 leaves (the layout of a small network's params, optimizer moments and EMA) is
saved with :func:`consistency.core.checkpoint.save`; each trial copies the step, changes 1–64 random bytes *in place* in
one of its array data files (``state/**/d/*``: the values TensorStore wrote), and restores it with
:func:`consistency.core.checkpoint.restore_latest`. A trial is ``detected`` when the damaged step is refused (moved aside,
the previous good step restored), ``undetected`` when it restores values that differ from the saved ones, and
``harmless`` when it restores exactly the saved values (the changed bytes were not array values, e.g. an unused
byte of the file; there was nothing to detect). ``detection_rate`` = detected / (detected + undetected).

Cost: save and restore of a ``--megabytes`` state with and without the digest work (:func:`leaf_digests` on save,
:func:`verify_digests` on restore), median of 3, on this machine's disk.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from consistency.core import checkpoint


def synthetic_state(num_floats: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sizes = {"w1": num_floats // 2, "w2": num_floats // 4, "b1": 64, "b2": 8}
    params = {k: jnp.asarray(rng.normal(size=n).astype(np.float32)) for k, n in sizes.items()}
    moments = {k: jnp.asarray(np.abs(rng.normal(size=n)).astype(np.float32) * 1e-3) for k, n in sizes.items()}
    return {"step": jnp.int32(1), "params": {"online": params}, "opt_state": {"online": {"nu": moments}},
            "ema": {"online": jax.tree.map(lambda x: x * 0.99, params)}}


def save_steps(workdir: str, state: dict, steps) -> None:
    manager = checkpoint.make_manager(workdir, keep=None)
    for step in steps:
        checkpoint.save(manager, step, state, {"step": step})
    manager.wait_until_finished()
    manager.close()


def damage(path: str, count: int, rng: np.random.Generator) -> None:
    """Change ``count`` random bytes of ``path`` in place (each to a different value)."""
    data = bytearray(open(path, "rb").read())
    for i in rng.choice(len(data), size=min(count, len(data)), replace=False):
        data[i] = (data[i] + int(rng.integers(1, 256))) % 256
    with open(path, "r+b") as f:
        f.write(bytes(data))


def trials(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    state = synthetic_state(20_000, seed)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    outcomes = {"detected": 0, "undetected": 0, "harmless": 0}
    with tempfile.TemporaryDirectory() as root:
        clean = os.path.join(root, "clean")
        save_steps(clean, state, [1, 2])
        for trial in range(n):
            wd = os.path.join(root, f"t{trial}")
            shutil.copytree(clean, wd)
            files = sorted(p for p in glob.glob(os.path.join(wd, "checkpoints", "2", "state", "**", "d", "*"),
                                                recursive=True) if os.path.isfile(p))
            damage(files[int(rng.integers(len(files)))], int(rng.integers(1, 65)), rng)
            manager = checkpoint.make_manager(wd, create=False)
            restored = checkpoint.restore_latest(manager, target, on_skip=lambda line: None)
            manager.close()
            if restored is not None and restored[2] == 2:
                same = all(np.array_equal(np.asarray(a), np.asarray(b))
                           for a, b in zip(jax.tree.leaves(restored[0]), jax.tree.leaves(state)))
                outcomes["harmless" if same else "undetected"] += 1
            else:
                outcomes["detected"] += 1
            shutil.rmtree(wd)
    counted = outcomes["detected"] + outcomes["undetected"]
    return {"trials": n, **outcomes, "detection_rate": outcomes["detected"] / counted if counted else None}


def _median_seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def cost(megabytes: int, seed: int) -> dict:
    state = synthetic_state(megabytes * 2 ** 20 // 4 // 2, seed)   # params + moments + EMA ≈ megabytes in all
    nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    with tempfile.TemporaryDirectory() as root:
        manager = checkpoint.make_manager(os.path.join(root, "run"), keep=1)
        step = iter(range(1, 100))

        def save():
            checkpoint.save(manager, next(step), state, {})
            manager.wait_until_finished()
        save()
        saved_meta = checkpoint.read_meta(checkpoint.step_path(manager, manager.latest_step()))
        restored, _ = checkpoint.restore(manager, manager.latest_step(), target)
        result = {
            "state_mb": nbytes / 2 ** 20,
            "save_s": _median_seconds(save),
            "digest_on_save_s": _median_seconds(lambda: checkpoint.leaf_digests(state)),
            "restore_s": _median_seconds(lambda: checkpoint.restore(manager, manager.latest_step(), target)),
            "verify_on_restore_s": _median_seconds(
                lambda: checkpoint.verify_digests(restored, saved_meta, "bench")),
        }
        manager.close()
    result["digest_share_of_save"] = result["digest_on_save_s"] / result["save_s"]
    result["verify_share_of_restore"] = result["verify_on_restore_s"] / result["restore_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=45)
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    jax.config.update("jax_platforms", "cpu")
    print(json.dumps({"damage": trials(args.trials, args.seed), "cost": cost(args.megabytes, args.seed),
                      "backend": jax.default_backend()}))


if __name__ == "__main__":
    main()
