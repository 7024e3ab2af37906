"""Images/s of the input pipeline alone, by source and Grain worker count, beside the train step's images/s.

    python launch/benchmark_data.py [--sources=digits,folder32,folder64,cifar10_mock] [--workers=0,1,2,4]
        [--batch_size=128] [--batches=20] [--files=4096] [--step_batch_size=32] [--step_repeats=3]

Prints one JSON line per (source, pipeline, workers): ``images_per_sec`` of ``Dataset.batch(step)`` over
``--batches`` consecutive steps (consistency.tools.throughput.pipeline_images_per_sec: decode, flips, stacking, exactly
what the training loop asks for, no device work), and per source one line with the train step's ``images_per_sec``
(the loop's own compiled step on that source's image shape, consistency.tools.throughput.compiled_train_step, model of
``--step_config``) — so input bounds the run where the pipeline's figure is below the step's.

Sources: ``digits`` (built in, memory); ``folder32`` / ``folder64``: ``--files`` random RGB JPEGs (quality 90) of
32 × 32 / 64 × 64 in two class folders, generated once under ``--tmp``, read as ``folder:`` (stream: decoded every
batch; memory: decoded once) and as ``array_record:`` (converted by launch/prepare_data.py); ``cifar10_mock``: TFDS's
``tfds.testing.mock_data`` CIFAR-10 (random 32 × 32 × 3 uint8, ``--mock_examples`` of them, memory path); or any
``data.name`` (e.g. ``folder:/data/faces``) with ``--resolution`` and ``--pipeline``.
"""
from __future__ import annotations

import contextlib
import json
import os
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from consistency.config import base_config
from consistency.data import make_dataset
from consistency.tools.throughput import compiled_train_step, pipeline_images_per_sec, timed

_SOURCES = flags.DEFINE_list("sources", ["digits", "folder32", "folder64", "cifar10_mock"], "Sources to time.")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2", "4"], "Grain read-thread counts (config.data.workers).")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Global batch of the pipeline timing.")
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed consecutive batches per (source, pipeline, workers).")
_FILES = flags.DEFINE_integer("files", 4096, "JPEGs in each synthetic folder.")
_MOCK = flags.DEFINE_integer("mock_examples", 2048, "Examples of the mock CIFAR-10 train split.")
_RESOLUTION = flags.DEFINE_integer("resolution", 0, "data.resolution for a source given as a data.name.")
_PIPELINE = flags.DEFINE_enum("pipeline", "memory", ["memory", "stream"], "data.pipeline for a source given as a "
                              "data.name.")
_TMP = flags.DEFINE_string("tmp", "/tmp/consistency_benchmark_data", "Where the synthetic folders are written.")
_STEP_CONFIG = config_flags.DEFINE_config_file("step_config", "configs/digits_edm.py", "Config of the train step.")
_STEP_BATCH = flags.DEFINE_integer("step_batch_size", 32, "Batch of the train-step timing (0: skip the step).")
_STEP_REPEATS = flags.DEFINE_integer("step_repeats", 3, "Timed train steps after two warm-up steps.")


def synthetic_folder(side: int, files: int, root: str) -> str:
    """``files`` random RGB JPEGs of side × side in root/jpeg<side>/{a,b}/ (written once; reused when complete)."""
    import PIL.Image

    path = os.path.join(root, f"jpeg{side}_{files}")
    done = os.path.join(path, ".complete")
    if not os.path.exists(done):
        rng = np.random.default_rng(side)
        for i in range(files):
            folder = os.path.join(path, "ab"[i % 2])
            os.makedirs(folder, exist_ok=True)
            image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            PIL.Image.fromarray(image).save(os.path.join(folder, f"{i:06d}.jpg"), quality=90)
        open(done, "w").close()
    return path


def prepared(folder: str, side: int) -> str:
    """The folder converted to ArrayRecord (consistency.data.prepare, as launch/prepare_data.py; resumed when done)."""
    from consistency.data.prepare import prepare

    out = folder + "_array_record"
    prepare(folder, out, side, shard_size=1024, workers=4)
    return out


def variants(source: str):
    """[(label, data overrides, context)] of one --sources entry."""
    if source == "digits":
        return [("digits", dict(name="digits", resolution=0), contextlib.nullcontext)]
    if source in ("folder32", "folder64"):
        side = int(source[len("folder"):])
        folder = synthetic_folder(side, _FILES.value, _TMP.value)
        records = prepared(folder, side)
        return [(f"{source} folder stream", dict(name=f"folder:{folder}", resolution=side, pipeline="stream"),
                 contextlib.nullcontext),
                (f"{source} folder memory", dict(name=f"folder:{folder}", resolution=side), contextlib.nullcontext),
                (f"{source} array_record", dict(name=f"array_record:{records}", resolution=side, pipeline="stream"),
                 contextlib.nullcontext)]
    if source == "cifar10_mock":
        import tensorflow_datasets as tfds

        return [("cifar10_mock", dict(name="cifar10", resolution=0),
                 lambda: tfds.testing.mock_data(num_examples=_MOCK.value))]
    return [(source, dict(name=source, resolution=_RESOLUTION.value, pipeline=_PIPELINE.value),
             contextlib.nullcontext)]


def data_config(overrides: dict, workers: int):
    c = base_config().data
    c.update(overrides)
    c.workers = workers
    c.random_flip = c.name != "digits" and not c.name.startswith("toy:")
    return c


def step_images_per_sec(overrides: dict, context) -> dict:
    config = _STEP_CONFIG.value.copy_and_resolve_references()
    config.data.update(overrides)
    config.data.workers = 0
    config.training.batch_size = _STEP_BATCH.value
    with context():
        built = compiled_train_step(config)
    holder = {"state": built["state"]}

    def run():
        holder["state"], metrics = built["compiled"](holder["state"], built["batch"], built["root_key"])
        return metrics

    step_s = timed(run, _STEP_REPEATS.value)
    return {"step_batch": _STEP_BATCH.value, "step_ms": round(1e3 * step_s, 1),
            "step_images_per_sec": round(_STEP_BATCH.value / step_s, 1), "compile_s": round(built["compile_s"], 1)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if jax.default_backend() == "cpu":
        jax.config.update("jax_threefry_partitionable", False)
    for source in _SOURCES.value:
        labelled = variants(source)
        for label, overrides, context in labelled:
            for workers in (int(w) for w in _WORKERS.value):
                with context():
                    start = time.perf_counter()
                    ds = make_dataset(data_config(overrides, workers), _BATCH.value, seed=0)
                    build_s = time.perf_counter() - start
                    rate = pipeline_images_per_sec(ds, _BATCHES.value)
                    ds.close()
                print(json.dumps({"source": label, "pipeline": ds.pipeline, "workers": workers,
                                  "example_shape": list(ds.example_shape), "batch": _BATCH.value,
                                  "images_per_sec": round(rate, 1), "build_s": round(build_s, 2),
                                  "backend": jax.default_backend()}), flush=True)
        if _STEP_BATCH.value > 0:
            _, overrides, context = labelled[0]
            print(json.dumps({"source": source, "train_step": _STEP_CONFIG.value.method,
                              **step_images_per_sec(overrides, context)}), flush=True)


if __name__ == "__main__":
    app.run(main)
