"""The one training loop: it builds, shards, steps, checkpoints, logs, samples and evaluates any method.

The loop never names a method (DESIGN.md): it calls ``method.init``, ``method.train_step`` and ``method.sample``
(:mod:`consistency.methods.base`) and treats the :class:`~consistency.methods.base.TrainState` as an opaque pytree.

* **Sharding.** One :class:`jax.sharding.Mesh` over every device of every host with axis ``'data'``; the batch is
  split over it (``P('data')``), the state is replicated, and the step is ``jax.jit``-ed with those shardings and
  the state donated. Each step is blocked on (its metrics are fetched to the host): sharded ``jit`` on CPU
  deadlocks in the all-reduce rendezvous otherwise (PLATFORM.md §4a), and the NaN guard needs the values anyway.
* **Randomness.** The step key is ``fold_in(PRNGKey(config.seed), step)`` and the batch is a pure function of
  ``(seed, step)``, so a resumed run repeats an uninterrupted one bit for bit.
* **State.step** is owned by the loop: after ``train_step`` it is set to the number of steps taken.
* **Workdir** (DESIGN.md): ``config.json``, ``checkpoints/<step>/`` (Orbax), ``samples/step_<k>.png``,
  ``eval/metrics_<k>.json``, TensorBoard ``events.out.tfevents.*`` (clu writers).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from consistency import checkpoint, images, methods
from consistency import config as config_lib
from consistency.config import ConfigError

DATA_AXIS = "data"


class NonFiniteMetricError(FloatingPointError):
    """A training metric became NaN or ±Inf; the state of that step was not saved."""


# ----------------------------------------------------------------------------------------------------------
# Config: validation, config.json
# ----------------------------------------------------------------------------------------------------------

def validate_run_config(config: ml_collections.ConfigDict, num_devices: int | None = None,
                        num_processes: int | None = None) -> None:
    """:func:`consistency.config.validate` plus what the loop itself needs; one ConfigError line on failure.

    A method added with :func:`consistency.methods.register` passes the method-name check.
    """
    if methods.is_registered(config.method) and config.method not in config_lib.METHODS:
        stand_in = config.copy_and_resolve_references()
        with stand_in.unlocked():
            stand_in.method = config_lib.METHODS[0]  # every other field is still checked
        config_lib.validate(stand_in)
    else:
        config_lib.validate(config)
    t = config.training
    num_devices = jax.device_count() if num_devices is None else num_devices
    num_processes = jax.process_count() if num_processes is None else num_processes
    if t.batch_size % num_devices:
        raise ConfigError(f"config.training.batch_size: {t.batch_size} is not divisible by the {num_devices} devices "
                          f"the batch is split over; use a multiple of {num_devices}")
    if t.batch_size % num_processes:
        raise ConfigError(f"config.training.batch_size: {t.batch_size} is not divisible by the {num_processes} hosts")
    if t.log_every <= 0:
        raise ConfigError(f"config.training.log_every: must be > 0, got {t.log_every}")
    for field in ("ckpt_every", "sample_every", "eval_every"):
        if t[field] < 0:
            raise ConfigError(f"config.training.{field}: must be >= 0 (0 → only at the end), got {t[field]}")
    if t.keep_checkpoints < 1:
        raise ConfigError(f"config.training.keep_checkpoints: must be >= 1, got {t.keep_checkpoints}")
    if config.sampling.num_samples <= 0:
        raise ConfigError(f"config.sampling.num_samples: must be > 0, got {config.sampling.num_samples}")
    teacher_dir = config.teacher.workdir
    if teacher_dir and checkpoint.latest_step(teacher_dir) is None:
        raise ConfigError(f"config.teacher.workdir: no finished checkpoint in {teacher_dir!r}; train an EDM teacher "
                          "there first (e.g. configs/digits_edm.py)")


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Write the resolved config to ``WORKDIR/config.json`` (process 0 only)."""
    path = os.path.join(workdir, "config.json")
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    return path


def _lists_to_tuples(value):
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run saved in ``WORKDIR/config.json`` (JSON lists back to tuples, as in the config files)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: {workdir!r} is not a training workdir")
    with open(path) as f:
        return ml_collections.ConfigDict(_lists_to_tuples(json.load(f)))


def _flat_hparams(config: ml_collections.ConfigDict) -> dict:
    """``{'optim.lr': 1e-3, ...}`` with scalar values (TensorBoard hparams)."""
    flat = {}

    def visit(prefix, node):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, (dict, ml_collections.ConfigDict)):
                visit(name + ".", value)
            elif isinstance(value, (bool, int, float, str)):
                flat[name] = value
            else:
                flat[name] = str(value)
    visit("", config.to_dict())
    return flat


# ----------------------------------------------------------------------------------------------------------
# Devices and sharding
# ----------------------------------------------------------------------------------------------------------

def maybe_initialize_distributed(config) -> None:
    """``jax.distributed.initialize()`` (cluster auto-detection) once, when ``config.distributed`` is set."""
    if config.get("distributed", False) and not jax.distributed.is_initialized():
        jax.distributed.initialize()


@dataclasses.dataclass(frozen=True)
class Placement:
    """The mesh and the two shardings the loop uses."""
    mesh: Mesh
    replicated: NamedSharding   # the state, the metrics, the keys
    batch: NamedSharding        # leading (example) axis split over 'data'


def make_placement(devices=None) -> Placement:
    mesh = Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))
    return Placement(mesh, NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS)))


def global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
    """This host's share of the batch (numpy) → global arrays split over ``'data'`` (multi-host aware).

    On one host the numpy batch is returned as is: the jitted step's ``in_shardings`` split it on the way in,
    which on CPU costs about half of an explicit ``device_put`` per step.
    """
    if jax.process_count() == 1:
        return {k: np.asarray(v) for k, v in local_batch.items()}
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def to_host(tree):
    """Replicated device values → numpy (on multi-host, from this host's first replica; PLATFORM.md §4b)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)
    return jax.tree.map(fetch, tree)


# ----------------------------------------------------------------------------------------------------------
# Building a run
# ----------------------------------------------------------------------------------------------------------

def build_dataset(config, split: str = "train"):
    """``consistency.data.make_dataset`` for the run's data config, global batch size and seed."""
    from consistency.data import make_dataset
    return make_dataset(config.data, config.training.batch_size, config.seed, split=split)


def _stream_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
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


def restore_target(method, dataset, init_key, sharding):
    """The abstract TrainState (shapes, dtypes, ``sharding``) a checkpoint is restored into."""
    shapes = jax.eval_shape(method.init, init_key, _batch_shapes(dataset))
    return checkpoint.abstract_state(shapes, sharding)


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
    if step is None or step < 0:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {checkpoint.checkpoint_dir(workdir)}; "
                                f"available: {steps}")
    placement = placement or make_placement()
    dataset = build_dataset(config)
    method = methods.get_method(config, dataset)
    _, init_key, _ = _stream_keys(config.seed)
    manager = checkpoint.make_manager(workdir, create=False)
    try:
        state, meta = checkpoint.restore(manager, step, restore_target(method, dataset, init_key,
                                                                       placement.replicated))
    finally:
        manager.close()
    _check_meta(meta, config, workdir)
    return Restored(config, dataset, method, state, step, placement)


def _check_meta(meta: dict, config, workdir: str) -> None:
    saved = meta.get("method")
    if saved is not None and saved != config.method:
        raise ConfigError(f"config.method: {workdir!r} holds checkpoints of method {saved!r}, not {config.method!r}; "
                          "use a fresh workdir")


# ----------------------------------------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------------------------------------

def make_train_step(method, placement: Placement) -> Callable:
    """``step(state, batch, root_key) -> (state, metrics)``, jitted over the mesh with the state donated.

    The step key is fold_in(root_key, state.step) (computed on device, so the host does no key arithmetic).
    """
    def step_fn(state, batch, root_key):
        rng = jax.random.fold_in(root_key, state.step)
        new_state, metrics = method.train_step(state, batch, rng)
        return new_state.replace(step=state.step + 1), metrics

    r, d = placement.replicated, placement.batch
    return jax.jit(step_fn, in_shardings=(r, d, r), out_shardings=(r, r), donate_argnums=0)


def check_finite(metrics: dict, step: int, method_name: str) -> None:
    """NaN/Inf guard (METHODS.md §18 item 5): raise naming the step, the metric and the method."""
    for name, value in metrics.items():
        if not np.all(np.isfinite(value)):
            raise NonFiniteMetricError(
                f"training diverged: metric {name!r} = {np.asarray(value).tolist()} at step {step} "
                f"(config.method={method_name!r}); this step was not saved — resume from the last checkpoint with "
                "a lower optim.lr, optim.grad_clip > 0 or optim.warmup_steps > 0")


class MetricAverager:
    """Mean of each scalar metric over the steps since the last :meth:`flush`."""

    def __init__(self):
        self._sums: dict[str, float] = {}
        self._count = 0

    def add(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(np.mean(v))
        self._count += 1

    def flush(self) -> dict[str, float]:
        means = {k: s / self._count for k, s in self._sums.items()} if self._count else {}
        self._sums, self._count = {}, 0
        return means


# ----------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------

def accepts_keyword(fn: Callable, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def sample_labels(config, num_samples: int, method=None) -> np.ndarray | None:
    """Balanced class labels 0, 1, …, C−1, 0, … for class-conditional models (None when unconditional or when
    the method's ``sample`` takes no ``labels``)."""
    num_classes = int(config.model.num_classes)
    if num_classes <= 0 or (method is not None and not accepts_keyword(method.sample, "labels")):
        return None
    return (np.arange(num_samples) % num_classes).astype(np.int32)


@functools.lru_cache(maxsize=16)
def make_sampler(method, num_samples: int, **static_kwargs) -> Callable:
    """``sampler(state, rng, array_kwargs) -> samples``: ``method.sample`` jitted, with ``num_samples`` and
    ``static_kwargs`` (solver names, step counts, CFG scale) fixed and ``array_kwargs`` (e.g. labels) traced.
    Cached, so the periodic grids and the evaluation of one method compile once per sample count."""
    @jax.jit
    def sampler(state, rng, array_kwargs):
        return method.sample(state, rng, num_samples, **array_kwargs, **static_kwargs)
    return sampler


def draw_samples(config, method, state, rng, num_samples: int, sampler: Callable | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """(samples [N, ...] float32 numpy in data space, labels [N] or None)."""
    labels = sample_labels(config, num_samples, method)
    sampler = sampler or make_sampler(method, num_samples)
    array_kwargs = {} if labels is None else {"labels": jnp.asarray(labels)}
    samples = to_host(sampler(state, rng, array_kwargs))
    return np.asarray(samples, np.float32), labels


def reference_points(dataset, num_points: int = 2000) -> np.ndarray:
    """``num_points`` real examples: the start of the (shuffled) training stream, ``dataset.batch(0), batch(1), …``
    (this host's share). Cheap for any dataset size, unlike decoding the whole split."""
    parts, count, step = [], 0, 0
    while count < num_points:
        x = np.asarray(dataset.batch(step)["x"], np.float32)
        parts.append(x)
        count, step = count + len(x), step + 1
    return np.concatenate(parts)[:num_points]


def render_samples(samples: np.ndarray, dataset, reference: np.ndarray | None = None, title: str = "") -> np.ndarray:
    """A uint8 picture of samples: an image grid (upscaled to ≥ 256 px) or a toy scatter / histogram."""
    if dataset.kind == "image":
        grid = images.image_grid(samples)
        return images.upscale(grid, max(1, 256 // grid.shape[1]))
    flat = samples.reshape(len(samples), -1)[:, :2]
    ref = None if reference is None else reference.reshape(len(reference), -1)[:, :2]
    return images.scatter_image(flat, ref, title=title)


def write_sample_grid(writer, workdir: str, name: str, step: int, samples: np.ndarray, dataset,
                      reference: np.ndarray | None = None) -> str:
    """``WORKDIR/samples/<name>.png`` (process 0) and, with a writer, a TensorBoard image 'samples'."""
    picture = render_samples(samples, dataset, reference, title=f"step {step}")
    path = os.path.join(workdir, "samples", f"{name}.png")
    if jax.process_index() == 0:
        images.save_png(path, picture)
    if writer is not None:
        writer.write_images(step, {"samples": picture[None]})
    return path


# ----------------------------------------------------------------------------------------------------------
# Evaluation: one entry point, run_eval
# ----------------------------------------------------------------------------------------------------------

def sample_statistics(samples: np.ndarray, data: np.ndarray | None, seed: int = 0) -> dict[str, float]:
    """Cheap sample checks: finite fraction, mean/std of samples and data, and the sliced W1
    (:func:`consistency.evaluate.sliced_wasserstein`) to an equal-size random subset of the data."""
    from consistency.evaluate import sliced_wasserstein
    samples = np.asarray(samples, np.float64)
    stats = {"samples/finite_fraction": float(np.mean(np.all(np.isfinite(samples.reshape(len(samples), -1)), 1))),
             "samples/mean": float(np.mean(samples)), "samples/std": float(np.std(samples))}
    if data is not None and len(data):
        data = np.asarray(data, np.float64)
        stats.update({"data/mean": float(np.mean(data)), "data/std": float(np.std(data))})
        n = min(len(samples), len(data))
        rng = np.random.default_rng(seed)
        a = samples[rng.choice(len(samples), n, replace=False)]
        b = data[rng.choice(len(data), n, replace=False)]
        if np.all(np.isfinite(a)):
            stats["samples/sliced_wasserstein"] = sliced_wasserstein(a, b, seed=seed)
    return stats


def run_eval(config, workdir: str, state, method, dataset, step: int, train_metrics: dict | None = None) -> dict:
    """Evaluate ``state`` at ``step``: cheap :func:`sample_statistics`, the last training metrics (``train/<name>``)
    and, for every NFE of ``config.eval.nfes``, the metrics of :func:`consistency.reports.evaluate_state` with their
    noise floors. Writes ``WORKDIR/eval/metrics_<step>.json`` (atomic, idempotent) and returns a flat dict
    (``nfe<n>/<metric>`` keys) for logging."""
    from consistency import reports
    _, _, sample_key = _stream_keys(config.seed)
    samples, _ = draw_samples(config, method, state, jax.random.fold_in(sample_key, 1), int(config.eval.num_samples))
    results: dict[str, Any] = {"step": int(step), "method": config.method}
    results.update({f"train/{k}": float(np.mean(v)) for k, v in (train_metrics or {}).items()})
    results.update(sample_statistics(samples, reference_points(dataset, num_points=len(samples)),
                                     seed=config.seed))
    report = reports.evaluate_state(config, method, state, dataset, step, workdir, extra=results)
    for nfe in report["nfes"]:
        results.update({f"nfe{nfe}/{k}": float(v) for k, v in report[f"nfe_{nfe}"].items() if np.isscalar(v)})
    return results


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------

def _is_due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def prefer_fast_cpu_random() -> None:
    """On CPU, turn off ``jax_threefry_partitionable`` (on by default in jax 0.10): with it XLA-CPU compiles small
    random draws such as conv initialisers 5–15× more slowly (tests/conftest.py). Methods draw their noise from
    per-example keys, so results stay independent of the device count either way; accelerators keep the default.
    Every entry point calls it, so CLI and in-process runs draw the same numbers."""
    if jax.default_backend() == "cpu":
        jax.config.update("jax_threefry_partitionable", False)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
    """Train ``config.method`` for ``config.training.num_steps`` steps in ``workdir`` (resuming from its latest
    checkpoint), then sample and evaluate. Returns the final TrainState."""
    maybe_initialize_distributed(config)
    prefer_fast_cpu_random()
    validate_run_config(config)
    from clu import metric_writers, periodic_actions  # imports TensorFlow (≈5 s): only once a run will start
    workdir = os.path.abspath(workdir)
    save_config(config, workdir)
    t = config.training
    num_steps = int(t.num_steps)

    placement = make_placement()
    dataset = build_dataset(config)
    method = methods.get_method(config, dataset)
    root_key, init_key, sample_key = _stream_keys(config.seed)
    root_key = jax.device_put(root_key, placement.replicated)

    manager = checkpoint.make_manager(workdir, keep=int(t.keep_checkpoints))
    latest = manager.latest_step()
    if latest is None:
        example = global_batch(dataset.batch(0), placement.batch)
        state = jax.jit(method.init, out_shardings=placement.replicated)(init_key, example)
        logging.info("%s: initialised a fresh state", config.method)
    else:
        state, meta = checkpoint.restore(manager, latest, restore_target(method, dataset, init_key,
                                                                         placement.replicated))
        _check_meta(meta, config, workdir)
        logging.info("%s: resumed from step %d of %s", config.method, latest, checkpoint.checkpoint_dir(workdir))
    start = int(to_host(state.step))

    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    if start == 0:
        writer.write_hparams(_flat_hparams(config))
    report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer, every_steps=int(t.log_every))
    train_step = make_train_step(method, placement)
    sampler = make_sampler(method, int(config.sampling.num_samples))
    reference = reference_points(dataset) if dataset.kind != "image" else None
    meta = {"method": config.method}

    def write_samples(step):
        samples, _ = draw_samples(config, method, state, sample_key, int(config.sampling.num_samples), sampler)
        write_sample_grid(writer, workdir, f"step_{step}", step, samples, dataset, reference)

    averager, last_metrics, last_saved = MetricAverager(), {}, latest
    try:
        batch = global_batch(dataset.batch(start), placement.batch) if start < num_steps else None
        for step in range(start, num_steps):
            state, device_metrics = train_step(state, batch, root_key)
            if step + 1 < num_steps:  # prepare the next batch while the device works on this step
                batch = global_batch(dataset.batch(step + 1), placement.batch)
            last_metrics = to_host(device_metrics)  # blocks on the step (PLATFORM.md §4a)
            done = step + 1
            check_finite(last_metrics, done, config.method)
            averager.add(last_metrics)
            report(done)
            if _is_due(done, t.log_every) or done == num_steps:
                writer.write_scalars(done, averager.flush())
            if _is_due(done, t.ckpt_every) or done == num_steps:
                checkpoint.save(manager, done, state, {**meta, "step": done})
                last_saved = done
            if _is_due(done, t.sample_every) and done != num_steps:
                write_samples(done)
            if _is_due(done, t.eval_every) and done != num_steps:
                writer.write_scalars(done, _numeric(run_eval(config, workdir, state, method, dataset, done,
                                                             last_metrics)))

        final = max(start, num_steps)
        if last_saved != final and final > 0:
            checkpoint.save(manager, final, state, {**meta, "step": final})
        manager.wait_until_finished()
        write_samples(final)
        results = run_eval(config, workdir, state, method, dataset, final, last_metrics)
        writer.write_scalars(final, _numeric(results))
    finally:  # also on a NaN or an interrupt: finish in-flight checkpoint writes, flush the logs
        manager.wait_until_finished()
        manager.close()
        writer.flush()
        writer.close()
    logging.info("%s: finished at step %d: %s", config.method, final, results)
    return state


def _numeric(results: dict) -> dict[str, float]:
    """Evaluation results worth a TensorBoard scalar (the 'eval/' ones; training metrics are logged already)."""
    return {f"eval/{k}": v for k, v in results.items()
            if isinstance(v, float) and not k.startswith("train/") and math.isfinite(v)}


def sample(config: ml_collections.ConfigDict, workdir: str, step: int | None = None) -> str:
    """``--mode=sample``: restore ``step`` (None → latest), draw ``config.sampling.num_samples`` with the sampling
    EMA params; write ``WORKDIR/samples/sample_<step>.npz`` (samples, labels) and a PNG beside it. Returns the
    .npz path."""
    maybe_initialize_distributed(config)
    prefer_fast_cpu_random()
    validate_run_config(config)
    run = restore_run(config, workdir, step)
    _, _, sample_key = _stream_keys(config.seed)
    samples, labels = draw_samples(config, run.method, run.state, jax.random.fold_in(sample_key, 2),
                                   int(config.sampling.num_samples))
    path = os.path.join(workdir, "samples", f"sample_{run.step}.npz")
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(path, samples=samples, labels=np.full(len(samples), -1, np.int32) if labels is None else labels)
    reference = reference_points(run.dataset) if run.dataset.kind != "image" else None
    write_sample_grid(None, workdir, f"sample_{run.step}", run.step, samples, run.dataset, reference)
    logging.info("wrote %d samples of step %d to %s", len(samples), run.step, path)
    return path


def evaluate(config: ml_collections.ConfigDict, workdir: str, step: int | None = None) -> dict:
    """``--mode=eval``: :func:`run_eval` on checkpoint ``step`` (None → latest)."""
    maybe_initialize_distributed(config)
    prefer_fast_cpu_random()
    validate_run_config(config)
    run = restore_run(config, workdir, step)
    return run_eval(config, workdir, run.state, run.method, run.dataset, run.step)


def run(mode: str, config: ml_collections.ConfigDict, workdir: str, step: int | None = None):
    """Dispatch ``--mode``."""
    if mode == "train":
        return train_and_evaluate(config, workdir)
    if mode == "sample":
        return sample(config, workdir, step)
    if mode == "eval":
        return evaluate(config, workdir, step)
    raise ConfigError(f"--mode: must be train, sample or eval, got {mode!r}")


__all__ = ["train_and_evaluate", "sample", "evaluate", "run", "run_eval", "validate_run_config",
           "NonFiniteMetricError"]
