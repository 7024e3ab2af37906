"""The one training loop: it builds, shards, steps, checkpoints, logs, samples and evaluates any method.

The loop never names a method (docs/architecture.md, "The loop never names a method"): it reads the method's declarative spec (:mod:`consistency.methods.base`:
trained sets with their optimizers and update periods, moving and frozen sets) and treats the
:class:`~consistency.methods.base.TrainState` as an opaque pytree. At loop step k it runs the compiled step of the
sets due at k (:class:`PhasedStep`: one compilation per distinct due tuple) and averages each metric over the steps
that produced it.

* **Sharding.** One :class:`jax.sharding.Mesh` over every device of every host with axis ``'data'``; the batch is
  split over it (``P('data')``), the state is replicated, and the step is ``jax.jit``-ed with those shardings and
  the state donated. Each step is blocked on (its metrics are fetched to the host): sharded ``jit`` on CPU
  deadlocks in the all-reduce rendezvous otherwise (docs/platform.md §4a), and the NaN guard needs the values anyway.
* **Randomness.** The step key is ``fold_in(PRNGKey(config.seed), step)`` and the batch is a pure function of
  ``(seed, step)``, so a resumed run repeats an uninterrupted one bit for bit.
* **State.step** is owned by the loop: after ``train_step`` it is set to the number of steps taken.
* **Workdir** (docs/architecture.md, "Workdir layout"): ``config.json``, ``checkpoints/<step>/`` (Orbax), ``samples/step_<k>.png``,
  ``eval/metrics_<k>.json``, TensorBoard ``events.out.tfevents.*`` (clu writers).
"""
from __future__ import annotations

import functools
import math
import os
import sys
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from consistency.run import blowup, stopping
from consistency.core import checkpoint, fileio
from consistency import methods
from consistency.methods import base
from consistency.run.sampling import (draw_samples, make_sampler, reference_points,  # noqa: F401
                                      render_samples, sample_labels, to_host, write_sample_grid)
from consistency import config as config_lib
from consistency.data import build_dataset  # noqa: F401  (re-exported: train.build_dataset)
from consistency.core.runtime import prefer_fast_cpu_random  # noqa: F401  (re-exported)
from consistency.core.errors import ConfigError
from consistency.run.placement import (Placement, check_processes_agree, global_batch,  # noqa: F401  (re-exported)
                                       make_placement, maybe_initialize_distributed)
from consistency.run.restore import (Restored, restore_run, restore_target, state_shapes,  # noqa: F401  (re-exported)
                                     check_meta, stream_keys, warm_start, warm_start_from)


class NonFiniteMetricError(FloatingPointError):
    """A training metric became NaN or ±Inf; the state of that step was not saved."""


# ----------------------------------------------------------------------------------------------------------
# Config: validation, config.json
# ----------------------------------------------------------------------------------------------------------

def validate_run_config(config: ml_collections.ConfigDict, num_devices: int | None = None,
                        num_processes: int | None = None, check_data: bool = True):
    """:func:`consistency.config.validate` plus what the loop itself needs, before anything compiles; one
    ConfigError line on failure. Returns the training Dataset when ``check_data`` (else None).

    Beyond the config alone: the batch splits over the devices and hosts, the teacher workdir holds a checkpoint,
    and (``check_data``) the dataset can be read here (:func:`build_dataset`: a missing TFDS dataset is a one-line
    DataUnavailableError in seconds) and the network fits its shape (``consistency.nets.validate_model_config``
    with the data shape, for the package's own methods).
    """
    config_lib.validate(config)
    t = config.training
    num_devices = jax.device_count() if num_devices is None else num_devices
    num_processes = jax.process_count() if num_processes is None else num_processes
    if t.batch_size % num_devices:
        raise ConfigError(f"config.training.batch_size: {t.batch_size} is not divisible by the {num_devices} devices "
                          f"the batch is split over; use a multiple of {num_devices}")
    fsdp = int(t.get("fsdp", 1))
    if num_devices % fsdp:
        raise ConfigError(f"config.training.fsdp: {fsdp} does not divide the {num_devices} devices; use a divisor of "
                          f"{num_devices} (1 = replicated state)")
    if t.batch_size % num_processes:
        raise ConfigError(f"config.training.batch_size: {t.batch_size} is not divisible by the {num_processes} "
                          f"hosts; use a multiple of {num_processes}")
    teacher_dir = config.teacher.workdir
    if teacher_dir and checkpoint.latest_step(teacher_dir) is None:
        raise ConfigError(f"config.teacher.workdir: no finished checkpoint in {teacher_dir!r}; train an EDM teacher "
                          "there first (e.g. configs/digits_edm.py)")
    if teacher_dir:
        from consistency.methods.components import teachers
        teachers.check_teacher_data(config)
    if config.eval.inception_weights:   # every tensor's name and shape (the config check reads a few names only)
        from consistency.metrics import features
        path = config.eval.inception_weights
        problem = features.inception_weights_problem(path)
        if problem is not None:
            raise features.InceptionWeightsMissing(features.missing_inception_message(path, problem))
    if not check_data:
        return None
    dataset = build_dataset(config)  # cached loaders: the run's own build_dataset reads nothing twice
    from consistency import nets
    validate_model = getattr(nets, "validate_model_config", None)
    if validate_model is not None and not methods.is_registered(config.method):
        validate_model(config.model, data_shape=tuple(dataset.example_shape))
    return dataset

def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Write the resolved config to ``WORKDIR/config.json`` (process 0 only)."""
    path = os.path.join(workdir, "config.json")
    if jax.process_index() == 0:
        fileio.write_text(path, config.to_json_best_effort(indent=2, sort_keys=True))
    return path


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run saved in ``WORKDIR/config.json`` (:func:`consistency.config.load_run_config`)."""
    return config_lib.load_run_config(workdir)


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
# The step
# ----------------------------------------------------------------------------------------------------------

def make_train_step(method, placement: Placement, due: tuple[str, ...] | None = None,
                    micro_batches: int = 1, state_sharding=None, donate: bool = True) -> Callable:
    """``step(state, batch, root_key) -> (state, metrics)`` updating the trained sets ``due`` (default: all),
    jitted over the mesh with the state donated (unless ``donate=False``); it advances ``state.step``.

    The step key is fold_in(root_key, state.step) (computed on device, so the host does no key arithmetic).
    """
    due = method.trained_names if due is None else tuple(due)

    def step_fn(state, batch, root_key):
        rng = jax.random.fold_in(root_key, state.step)
        new_state, metrics = base.train_step(method, state, batch, rng, due, micro_batches)
        return new_state.replace(step=state.step + 1), metrics

    r, d = placement.replicated, placement.batch
    s = r if state_sharding is None else state_sharding          # a pytree of shardings under FSDP
    return jax.jit(step_fn, in_shardings=(s, d, r), out_shardings=(s, r), donate_argnums=0 if donate else ())


class PhasedStep:
    """The compiled step for loop step k: one compilation per distinct tuple of due sets (:func:`base.due_sets`),
    so a 5:1 update ratio compiles two steps and runs no skipped update."""

    def __init__(self, method, placement: Placement, micro_batches: int = 1, state_sharding=None,
                 donate: bool = True):
        self._method, self._placement, self._compiled = method, placement, {}
        self._micro_batches = int(micro_batches)     # config.training.grad_accumulation
        self._state_sharding = state_sharding        # None: replicated
        self._donate = bool(donate)

    def __call__(self, step: int) -> Callable:
        due = base.due_sets(self._method, step)
        if due not in self._compiled:
            self._compiled[due] = make_train_step(self._method, self._placement, due, self._micro_batches,
                                                  self._state_sharding, self._donate)
        return self._compiled[due]


class Stepper:
    """The training loop's own step outside the loop (scripts, notebooks, diagnostics, tests):
    ``stepper(state, batch, root_key) -> (state, metrics)`` updates the sets due at ``state.step``
    (:func:`base.due_sets`: DMD2's 5:1 TTUR, PaGoDA's alternation) with the loop's compiled step (:class:`PhasedStep`,
    one compilation per distinct due tuple), the step key fold_in(root_key, state.step), and advances ``state.step``
    — so a state stepped here equals the loop's after the same steps from the same state, batches and root key.

    ``donate=True`` lets the step reuse the old state's buffers (that state is then deleted; the loop's choice);
    the default keeps it. ``placement``: the loop's device placement (default: every local device, replicated)."""

    def __init__(self, method, *, micro_batches: int = 1, donate: bool = False, placement: Placement | None = None):
        self.method = method
        self._placement = make_placement() if placement is None else placement
        self._phased = PhasedStep(method, self._placement, micro_batches, donate=donate)

    def __call__(self, state: base.TrainState, batch: dict, root_key: jax.Array,
                 step: int | None = None) -> tuple[base.TrainState, dict]:
        """One loop step; ``step`` is ``state.step`` when known on the host (else read from the state: one sync)."""
        step = int(to_host(state.step)) if step is None else int(step)
        # A state made outside the loop (base.init_state, unjitted) is uncommitted; placing it as the step returns it
        # keeps one compilation per due tuple (a no-op for a state the step returned). Replicated placement only: an
        # FSDP state comes from the loop's own sharded init.
        state = jax.device_put(state, self._placement.replicated)
        return self._phased(step)(state, global_batch(batch, self._placement.batch), root_key)


def run_steps(method, state: base.TrainState, batches, root_key: jax.Array, num_steps: int,
              stepper: Stepper | None = None) -> tuple[base.TrainState, list[dict]]:
    """``num_steps`` loop steps from ``state`` with :class:`Stepper`: step k (k = ``state.step``, ``state.step`` + 1,
    …) takes ``batches.batch(k)`` (a dataset) or ``batches(k)`` and the key fold_in(root_key, k), as the loop does.
    Returns the state and each step's metrics (device values; a set's metrics only at the steps that updated it)."""
    stepper = Stepper(method) if stepper is None else stepper
    batch_at = batches.batch if hasattr(batches, "batch") else batches
    start = int(to_host(state.step))
    metrics = []
    for step in range(start, start + int(num_steps)):
        state, step_metrics = stepper(state, batch_at(step), root_key, step)
        metrics.append(step_metrics)
    return state, metrics


def check_finite(metrics: dict, step: int, method_name: str) -> None:
    """NaN/Inf guard (docs/methods.md §18 item 5): raise naming the step, the metric and the method."""
    for name, value in metrics.items():
        if not np.all(np.isfinite(value)):
            raise NonFiniteMetricError(
                f"training diverged: metric {name!r} = {np.asarray(value).tolist()} at step {step} "
                f"(config.method={method_name!r}); this step was not saved — resume from the last checkpoint with "
                "a lower optim.lr or a longer optim.warmup_steps (turning optim.grad_clip on needs a fresh --workdir)")


class MetricAverager:
    """Mean of each scalar metric over the steps that produced it since the last :meth:`flush` (a set updated
    every 5th step averages over its own updates, never over zeros)."""

    def __init__(self):
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(np.mean(v))
            self._counts[k] = self._counts.get(k, 0) + 1

    def flush(self) -> dict[str, float]:
        means = {k: s / self._counts[k] for k, s in self._sums.items()}
        self._sums, self._counts = {}, {}
        return means


# ----------------------------------------------------------------------------------------------------------
# Evaluation: one entry point, run_eval
# ----------------------------------------------------------------------------------------------------------

def sample_statistics(samples: np.ndarray, data: np.ndarray | None, seed: int = 0) -> dict[str, float]:
    """Cheap sample checks: finite fraction, mean/std of samples and data, and the sliced W1
    (:func:`consistency.metrics.set_distances.sliced_wasserstein`) to an equal-size random subset of the data."""
    from consistency.metrics.set_distances import sliced_wasserstein
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


def run_eval(config, workdir: str, state, method, dataset, step: int, train_metrics: dict | None = None,
             force: bool = False) -> dict:
    """Evaluate ``state`` at ``step``: cheap :func:`sample_statistics`, the last training metrics (``train/<name>``)
    and, for every NFE of ``config.eval.nfes``, the metrics of :func:`consistency.run.reports.evaluate_state` with their
    noise floors. Writes ``WORKDIR/eval/metrics_<step>.json`` (atomic, idempotent) and returns a flat dict
    (``nfe<n>/<metric>`` keys) for logging."""
    from consistency.run import reports
    _, _, sample_key = stream_keys(config.seed)
    samples, _ = draw_samples(config, method, state, jax.random.fold_in(sample_key, 1), int(config.eval.num_samples))
    results: dict[str, Any] = {"step": int(step), "method": config.method}
    results.update({f"train/{k}": float(np.mean(v)) for k, v in (train_metrics or {}).items()})
    results.update(sample_statistics(samples, reference_points(dataset, num_points=len(samples)),
                                     seed=config.seed))
    report = reports.evaluate_state(config, method, state, dataset, step, workdir, extra=results, force=force)
    for nfe in report["nfes"]:
        results.update({f"nfe{nfe}/{k}": float(v) for k, v in report[f"nfe_{nfe}"].items() if np.isscalar(v)})
    return results


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------

def _is_due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
    """Train ``config.method`` for ``config.training.num_steps`` steps in ``workdir`` (resuming from its latest
    checkpoint), then sample and evaluate. Returns the final TrainState."""
    maybe_initialize_distributed(config)
    prefer_fast_cpu_random()
    validate_run_config(config)
    workdir = fileio.absolute(workdir)
    from consistency.run import runlock
    from consistency.run import workdir as run_directory  # (the argument is named workdir)
    run_directory.check_workdir(config, workdir)  # against WORKDIR/config.json, before anything is written
    problem = checkpoint.storage_problem(workdir) if jax.process_index() == 0 else None
    if problem:
        raise ConfigError(problem)
    lock = runlock.acquire_for_job(workdir)       # one training process per workdir (process 0 holds it)
    try:
        return _train_locked(config, workdir)
    finally:
        lock.release()


def _train_locked(config: ml_collections.ConfigDict, workdir: str):
    """:func:`train_and_evaluate` once this process (process 0 of the job) holds the workdir lock."""
    from clu import metric_writers, periodic_actions  # imports TensorFlow (≈5 s): only once a run will start
    from consistency.run import workdir as run_directory
    run_directory.prepare(config, workdir)  # check against WORKDIR/config.json, then write it (process 0)
    t = config.training
    num_steps = int(t.num_steps)

    placement = make_placement(fsdp=int(t.get("fsdp", 1)))
    dataset = build_dataset(config)
    method = methods.get_method(config, dataset)
    root_key, init_key, sample_key = stream_keys(config.seed)
    state_sharding = placement.state_shardings(state_shapes(method, dataset, init_key))
    root_key = jax.device_put(root_key, placement.replicated)

    need = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(state_shapes(method, dataset, init_key)))
    problem = checkpoint.storage_problem(workdir, need)   # read-only or full: one line before any step
    if problem:
        raise ConfigError(problem)
    manager = checkpoint.make_manager(workdir, keep=int(t.keep_checkpoints))
    checkpoint.guard_saves(manager, float(t.get("max_param_abs", checkpoint.DEFAULT_MAX_PARAM_ABS)))
    restored = (checkpoint.restore_latest(manager, restore_target(method, dataset, init_key, placement))
                if manager.latest_step() is not None else None)  # skips (and moves aside) broken steps
    latest = None if restored is None else restored[2]
    restored_meta: dict = {}
    if latest is None:
        example = global_batch(dataset.batch(0), placement.batch)
        state = jax.jit(functools.partial(base.init_state, method), out_shardings=state_sharding)(init_key, example)
        logging.info("%s: initialised a fresh state", config.method)
        if t.get("init_from", ""):
            state = warm_start_from(state, t.init_from, tuple(t.get("init_sets", ())))
    else:
        state, meta, _ = restored
        check_meta(meta, config, workdir)
        restored_meta = meta
        logging.info("%s: resumed from step %d of %s", config.method, latest, checkpoint.checkpoint_dir(workdir))
    start = int(to_host(state.step))

    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    if start == 0:
        writer.write_hparams(_flat_hparams(config))
    report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer, every_steps=int(t.log_every))
    phased_step = PhasedStep(method, placement, config.training.get("grad_accumulation", 1), state_sharding)
    sampler = make_sampler(method, int(config.sampling.num_samples))
    reference = reference_points(dataset) if dataset.kind != "image" else None
    meta = {"method": config.method, "sample_params": method.sample_params}

    def write_samples(step):
        samples, _ = draw_samples(config, method, state, sample_key, int(config.sampling.num_samples), sampler)
        write_sample_grid(writer, workdir, f"step_{step}", step, samples, dataset, reference)

    averager, last_metrics, last_saved = MetricAverager(), {}, latest
    progress = {"step": start, "saved": latest}   # for the line a second signal prints

    def stop_now_line(signum):
        saved = checkpoint.latest_step(workdir)     # the last committed step (a save in flight is not one)
        kept = f"checkpoint {saved} is the last saved" if saved is not None else "no checkpoint was saved yet"
        return (f"stopped at once by a second {stopping.signal_name(signum)} at step {progress['step']} of "
                f"{config.method}; {kept} in {checkpoint.checkpoint_dir(workdir)}; resume: {stopping.RESUME_HINT}")

    guard = blowup.BlowUpGuard(float(t.get("blowup_ratio", blowup.DEFAULT_RATIO)), method.trained_names,
                               restored_meta.get("blowup"))

    def blew_up(step, set_name, what):
        checkpoint.finish(manager)
        good = manager.latest_step()
        block = f"optim_{set_name}" if f"optim_{set_name}" in config else "optim"
        lr = config[block].get("lr") or config.optim.lr
        resume = (f"the last good checkpoint is step {good} in {checkpoint.checkpoint_dir(workdir)}: rerun to resume "
                  "from it" if good is not None else "no checkpoint was saved yet: rerun to start again")
        raise checkpoint.DivergedStateError(
            f"training blew up in set {set_name!r} at step {step}: {what}; step {step} was not saved; {resume} with "
            f"a lower {block}.lr (e.g. --config.{block}.lr={float(lr) / 10:g}) or a longer {block}.warmup_steps "
            "(--config.training.blowup_ratio=0 turns this check off)")

    def save_step(step):
        """Save ``step`` unless its parameters jumped since the last save (then :func:`blew_up`)."""
        checkpoint.check_state(state, step, checkpoint.max_param_abs_of(manager), manager.latest_step)  # absolute
        jump = guard.check_params(checkpoint.set_max_abs(state.params))
        if jump:
            blew_up(step, *jump)
        checkpoint.save(manager, step, state, {**meta, "step": step, "blowup": guard.history()})
        progress["saved"] = step

    def stop(signum, step):
        """Save ``step`` (unless it is saved already), wait for the write, raise :class:`stopping.Stopped`."""
        if progress["saved"] != step and step > 0:
            save_step(step)
        checkpoint.finish(manager)
        progress["saved"] = step
        raise stopping.Stopped(signum, step, (
            f"stopped by {stopping.signal_name(signum)} after step {step} of {num_steps} ({config.method}): "
            f"saved checkpoint {step} in {checkpoint.checkpoint_dir(workdir)}; resume: {stopping.RESUME_HINT}"))

    graceful = stopping.GracefulStop(stop_now_line)
    graceful.__enter__()
    try:
        batch = global_batch(dataset.batch(start), placement.batch) if start < num_steps else None
        for step in range(start, num_steps):
            progress["step"] = step
            state, device_metrics = phased_step(step)(state, batch, root_key)
            if step + 1 < num_steps:  # prepare the next batch while the device works on this step
                batch = global_batch(dataset.batch(step + 1), placement.batch)
            step_metrics = to_host(device_metrics)  # blocks on the step (docs/platform.md §4a)
            done = step + 1
            progress["step"] = done
            check_finite(step_metrics, done, config.method)
            jump = guard.check_losses(step_metrics)   # before any save of this step
            if jump:
                blew_up(done, *jump)
            averager.add(step_metrics)
            last_metrics.update(step_metrics)  # the latest value of every metric (sets may update on other steps)
            report(done)
            if _is_due(done, t.log_every) or done == num_steps:
                writer.write_scalars(done, averager.flush())
            if _is_due(done, t.ckpt_every) or done == num_steps:
                save_step(done)
                last_saved = done
            if graceful.stop_requested(done, manager):   # every process agrees on this step (multi-host)
                stop(graceful.signum, done)
            if _is_due(done, t.sample_every) and done != num_steps:
                write_samples(done)
            if _is_due(done, t.eval_every) and done != num_steps:
                writer.write_scalars(done, _numeric(run_eval(config, workdir, state, method, dataset, done,
                                                             last_metrics)))

        final = max(start, num_steps)
        if last_saved != final and final > 0:
            save_step(final)
        checkpoint.finish(manager)
        if graceful.signum is not None:   # a signal while the final step was saved: stop before sampling
            stop(graceful.signum, final)
        write_samples(final)
        results = run_eval(config, workdir, state, method, dataset, final, last_metrics)
        writer.write_scalars(final, _numeric(results))
    finally:  # also on a NaN or an interrupt: finish in-flight checkpoint writes, flush the logs
        propagating = sys.exc_info()[0] is not None   # the body raised: that error is the one to report
        if hasattr(dataset, "close"):
            dataset.close()   # Grain's read-ahead threads (a later batch() starts them again)
        try:
            manager.wait_until_finished()
        except Exception:  # noqa: BLE001 — a write failure already raised (CheckpointWriteError) is the one reported
            if not propagating:
                raise
        manager.close()
        writer.flush()
        writer.close()
        graceful.__exit__(None, None, None)
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
    _, _, sample_key = stream_keys(config.seed)
    samples, labels = draw_samples(config, run.method, run.state, jax.random.fold_in(sample_key, 2),
                                   int(config.sampling.num_samples))
    path = os.path.join(workdir, "samples", f"sample_{run.step}.npz")
    if jax.process_index() == 0:
        fileio.save_npz(path, samples=np.asarray(samples),
                        labels=np.full(len(samples), -1, np.int32) if labels is None else np.asarray(labels))
    reference = reference_points(run.dataset) if run.dataset.kind != "image" else None
    write_sample_grid(None, workdir, f"sample_{run.step}", run.step, samples, run.dataset, reference)
    logging.info("wrote %d samples of step %d to %s", len(samples), run.step, path)
    return path


def evaluate(config: ml_collections.ConfigDict, workdir: str, step: int | None = None, force: bool = True) -> dict:
    """``--mode=eval``: :func:`run_eval` on checkpoint ``step`` (None → latest); recomputes an existing report unless
    ``force=False``."""
    maybe_initialize_distributed(config)
    prefer_fast_cpu_random()
    validate_run_config(config)
    run = restore_run(config, workdir, step)
    return run_eval(config, workdir, run.state, run.method, run.dataset, run.step, force=force)


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
