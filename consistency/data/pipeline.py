"""Deterministic, host-sharded batches: every batch is a pure function of (seed, step).

The stream.  Global batch number ``step`` holds the stream positions ``index = step·B + r``, r = 0..B−1
(B = global batch size).  Position ``index`` lies in epoch ``e = index // N`` at offset ``index % N``
(N = split size) and shows example ``perm_e[index % N]``, where ``perm_e`` is a permutation of range(N)
drawn from (seed, e) alone.  Hence each epoch shows every example exactly once, batches may straddle
epochs, and a run resumed at any step sees exactly the batches it would have seen.

Flips (``data.random_flip``, images only): row r of global batch ``step`` is mirrored horizontally iff
``u_r < ½`` with ``u = default_rng((FLIP_STREAM, seed, step)).random(B)``, i.e. a function of
(seed, step, index) independent of the host layout.  The stored (e.g. uint8) rows are mirrored before
decoding, which is equivalent because scaling is pointwise and the half-pixel bilinear resize is symmetric.

Hosts.  Host p of P (``jax.process_index()`` / ``jax.process_count()``) takes rows
[p·B/P, (p+1)·B/P) of the global batch; it computes only those rows.  The caller assembles the global
array from the per-host pieces (e.g. ``jax.make_array_from_process_local_data``).

``batch(step)`` returns ``{'x': float32 [B/P, *example_shape], 'label': int32 [B/P], 'index': int32 [B/P]}``;
``index`` is the stream position (taken modulo 2³¹ to fit int32, i.e. it wraps after 2.1e9 examples).

Where the rows come from.  Every source is a random-access Grain source (``len``, ``source[i] → (stored row,
label)``, sources.py) and every batch comes out of one Grain pipeline: ``grain.MapDataset.range`` over the steps,
each mapped to this host's batch — example ids and flips by the rule above, the stored rows read from the source,
flipped, decoded.  ``config.data.workers`` > 0 Grain threads (``grain.ReadOptions``; one batch per thread) read the
coming batches ahead of the caller while it asks for the steps in order; this changes when a batch is read, never
what it holds (0 reads each batch in the caller's thread).  ``config.data.pipeline``: 'memory' (default) holds the
split in host memory (images.py; ``npz:PATH``; ``folder:PATH`` and ``array_record:PATH`` decoded once), 'stream'
holds nothing and reads each example by id when its batch is due: a TFDS dataset prepared as ArrayRecord
(images.TfdsRows), ``folder:PATH`` (files decoded on demand), ``array_record:PATH`` (launch/prepare_data.py).  Both
serve exactly the same batches: the same id order, flips, host rows and decode.  A streaming split's ``data_std`` is
estimated from a fixed subsample of :data:`DATA_STD_SAMPLE` examples (:func:`data_std_ids`; the exact value when the
split is no larger; ``array_record`` takes the exact value of the whole set from its stats.json), and ``arrays()``
reads the split in chunks, refused above :data:`STREAM_ARRAYS_MAX_BYTES`.

Own data (sources.py): ``folder:PATH`` and ``npz:PATH`` hold ``train`` = the first (1 − data.test_fraction)·N
examples of the fixed permutation ``default_rng(0).permutation(N)`` and ``test`` the rest (the digits rule), or,
with ``data.test_path`` set (another ``folder:``/``npz:``/``array_record:`` name), ``train`` = all of data.name and
``test`` = all of test_path; ``all`` is every example of data.name.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Optional

import grain
import jax
import numpy as np

from consistency.core.errors import ConfigError
from consistency.data import images, sources, toys

PERMUTATION_STREAM = 0            # first word of the numpy seed for epoch permutations
FLIP_STREAM = 1                   # … for flips
TOY_SEED = 0                      # toy points are drawn once from (TOY_SEED, split): fixed across runs
TOY_SPLITS = {"train": 0, "test": 1, "all": 0}   # 'all' is the training draw for toys
IMAGE_RANGE = (-1.0, 1.0)
UNBOUNDED = (-float("inf"), float("inf"))
PIPELINES = ("memory", "stream")  # config.data.pipeline
PREFETCH_BATCHES = 2              # batches Grain's threads read ahead (config.data.workers > 0)
MAX_STEPS = 1 << 62               # length of the Grain MapDataset of steps (never reached)
TEST_FRACTION = 0.1               # default config.data.test_fraction of folder/npz/array_record sets
DATA_STD_STREAM = 2               # first word of the numpy seed of the data_std subsample (seed-independent)
DATA_STD_SAMPLE = 10_000          # examples behind a streaming split's data_std
STREAM_ARRAYS_MAX_BYTES = 4 << 30  # arrays() of a streaming split: refused above this many float32 bytes
STD_CHUNK = 4096                  # examples per chunk of the pixel std and of arrays()


def _entropy(seed: int) -> int:
    """numpy SeedSequence wants a non-negative int; map negative seeds injectively."""
    return int(seed) % (1 << 64)


@functools.lru_cache(maxsize=16)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of epoch `epoch`: a permutation of range(n) from (seed, epoch) only (read-only array)."""
    perm = np.random.default_rng([PERMUTATION_STREAM, _entropy(seed), epoch]).permutation(n)
    perm.flags.writeable = False
    return perm


def stream_example_ids(seed: int, step: int, global_batch_size: int, n: int, rows: np.ndarray):
    """Example ids and stream positions for `rows` of global batch `step` (module docstring)."""
    index = np.int64(step) * global_batch_size + rows.astype(np.int64)
    epoch, offset = np.divmod(index, n)
    ids = np.empty_like(index)
    for e in np.unique(epoch):
        where = epoch == e
        ids[where] = epoch_permutation(seed, int(e), n)[offset[where]]
    return ids, index


def flip_mask(seed: int, step: int, global_batch_size: int) -> np.ndarray:
    """bool [B]: which rows of global batch `step` are mirrored."""
    return np.random.default_rng([FLIP_STREAM, _entropy(seed), step]).random(global_batch_size) < 0.5


def host_rows(global_batch_size: int, host_index: int, host_count: int) -> np.ndarray:
    """Rows [p·B/P, (p+1)·B/P) of the global batch that host p of P owns."""
    if global_batch_size % host_count:
        raise ConfigError(
            f"config.training.batch_size: global batch {global_batch_size} is not divisible by the "
            f"{host_count} hosts (jax.process_count())"
        )
    per_host = global_batch_size // host_count
    return np.arange(host_index * per_host, (host_index + 1) * per_host)


def _image_std(chunks, raw_max: float) -> float:
    """Std of all pixel values in model space (2·raw/raw_max − 1) at native resolution, accumulated in float64
    over an iterable of raw chunks."""
    total, total_sq, count = 0.0, 0.0, 0
    for raw in chunks:
        v = raw.astype(np.float64) * (2.0 / raw_max) - 1.0
        total, total_sq, count = total + v.sum(), total_sq + np.square(v).sum(), count + v.size
    mean = total / count
    return float(np.sqrt(max(total_sq / count - mean ** 2, 0.0)))


def _chunks_of(raw: np.ndarray, chunk: int = STD_CHUNK):
    return (raw[start:start + chunk] for start in range(0, len(raw), chunk))


def data_std_ids(n: int, sample: Optional[int] = None) -> np.ndarray:
    """Sorted example ids behind a streaming split's data_std: all of range(n) when n <= sample (default
    DATA_STD_SAMPLE), else `sample` ids drawn without replacement from (DATA_STD_STREAM, n) alone (the same for
    every run seed)."""
    sample = DATA_STD_SAMPLE if sample is None else int(sample)
    if n <= sample:
        return np.arange(n)
    return np.sort(np.random.default_rng([DATA_STD_STREAM, n]).choice(n, sample, replace=False))


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """One split of one dataset, served as deterministic host-local batches by a Grain pipeline (module docstring).

    ``source`` is the split as a random-access Grain source (``len``, ``source[i] → (stored row, label)``): in host
    memory (``examples``/``labels`` set, ``pipeline == 'memory'``) or read on demand (files, ArrayRecord, a TFDS
    data source: ``examples = labels = None``, ``pipeline == 'stream'``).  ``decode`` maps a batch of stored rows to
    model space (float32, images in [−1, 1], resized when configured).  ``workers`` Grain read threads read and decode
    the coming batches ahead of the caller (0: each batch is read in the caller's thread when asked).
    """

    name: str
    kind: str                           # 'image' | 'toy'
    split: str
    example_shape: tuple
    num_classes: int                    # 0: no labels (label is all 0)
    size: int                           # examples in the split
    data_range: tuple                   # (lo, hi) of x; (−inf, inf) for toys (nothing to clip)
    data_std: float                     # toys: exact RMS per-coordinate std (toys.TOY_STD); images: pixel std of
                                        # the split's stored rows (streaming: of data_std_ids; array_record: stats.json)
    mixture: Optional[tuple]            # toy mixtures: exact (weights [K], means [K, d], stds [K]); else None
    global_batch_size: int
    seed: int
    random_flip: bool
    host_index: int
    host_count: int
    examples: Optional[np.ndarray] = dataclasses.field(repr=False)
    labels: Optional[np.ndarray] = dataclasses.field(repr=False)
    decode: Callable[[np.ndarray], np.ndarray] = dataclasses.field(repr=False)
    # Per-example arrays served beside 'x' (e.g. PaGoDA's inverted latents, consistency/tools/inversion.py): name →
    # (rows aligned with ``examples`` [N, ...], the rows of the mirrored examples or None).  A flipped row of a batch
    # takes the mirrored entry, so an extra stays the function of exactly the image the batch shows.
    extras: dict = dataclasses.field(default_factory=dict, repr=False)
    source: object = dataclasses.field(default=None, repr=False)   # streaming: source[i] → (stored row, label)
    workers: int = 0                    # Grain read threads (config.data.workers)

    def __post_init__(self):
        batches = grain.MapDataset.range(0, MAX_STEPS).map(self._compute_batch)
        object.__setattr__(self, "_batches", batches)        # step → this host's batch (module docstring)
        object.__setattr__(self, "_iterator", None)          # (next step, Grain iterator) while reading in order

    @property
    def pipeline(self) -> str:
        return "memory" if self.source is None else "stream"

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.host_count

    @property
    def steps_per_epoch(self) -> float:
        return self.size / self.global_batch_size

    def example_ids(self, step: int) -> np.ndarray:
        """int64 [B/P]: rows of the split that this host's share of global batch `step` shows."""
        rows = host_rows(self.global_batch_size, self.host_index, self.host_count)
        return stream_example_ids(self.seed, step, self.global_batch_size, self.size, rows)[0]

    def read(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(stored rows, labels) of example ids: a fresh copy, from memory or from the source."""
        if self.source is None:
            return self.examples[ids], self.labels[ids]       # fancy indexing copies
        keys = [int(i) for i in np.asarray(ids).reshape(-1)]
        if isinstance(self.source, images.TfdsRows):
            return self.source.read(keys)                      # TFDS's batched read
        many = getattr(self.source, "__getitems__", None)     # e.g. ArrayRecord's batched read
        pairs = many(keys) if many is not None else [self.source[i] for i in keys]
        if not pairs:
            return np.zeros((0, *self.example_shape), np.uint8), np.zeros(0, np.int32)
        return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs], np.int32)

    def _compute_batch(self, step: int) -> dict:
        rows = host_rows(self.global_batch_size, self.host_index, self.host_count)
        ids, index = stream_example_ids(self.seed, step, self.global_batch_size, self.size, rows)
        stored, labels = self.read(ids)
        if self.random_flip and self.kind == "image":
            # Mirror the stored rows: decode (pointwise scale, half-pixel bilinear resize) commutes with it.
            flip = np.flatnonzero(flip_mask(self.seed, step, self.global_batch_size)[rows])
            width = stored.shape[2]
            stored[flip] = np.take(stored[flip], np.arange(width - 1, -1, -1), axis=2)
        out = {
            "x": np.ascontiguousarray(self.decode(stored), dtype=np.float32),
            "label": labels.astype(np.int32),
            "index": (index % (1 << 31)).astype(np.int32),
        }
        for name, (values, mirrored) in self.extras.items():
            value = np.asarray(values[ids], np.float32)
            if self.random_flip and self.kind == "image":
                value[flip] = mirrored[ids[flip]]
            out[name] = value
        return out

    def batch(self, step: int) -> dict:
        """This host's share of global batch `step`: {'x', 'label', 'index'} (module docstring).  Asked in order
        (step, step + 1, …) with ``workers`` > 0, it was read ahead by Grain's threads."""
        step = int(step)
        if self.workers <= 0:
            return self._batches[step]
        current = self._iterator
        if current is None or current[0] != step:
            self.close()
            options = grain.ReadOptions(num_threads=self.workers, prefetch_buffer_size=self.workers + PREFETCH_BATCHES)
            current = (step, iter(self._batches[step:].to_iter_dataset(options)))
        out = next(current[1])
        object.__setattr__(self, "_iterator", (step + 1, current[1]))
        return out

    def close(self) -> None:
        """Stop Grain's read-ahead threads (the next batch() starts them again)."""
        if self._iterator is not None:
            self._iterator[1].close()
            object.__setattr__(self, "_iterator", None)

    def with_extras(self, **extras) -> "Dataset":
        """This dataset serving ``extras`` (name → (rows [N, ...], mirrored rows or None)) in every batch."""
        for name, (rows, mirrored) in extras.items():
            if name in ("x", "label", "index"):
                raise ValueError(f"extra {name!r} would replace a batch field")
            if len(rows) != self.size or (mirrored is not None and len(mirrored) != self.size):
                raise ValueError(f"extra {name!r} has {len(rows)} rows for a split of {self.size}")
            if self.random_flip and self.kind == "image" and mirrored is None:
                raise ConfigError(f"config.data.random_flip: extra {name!r} has no entries for mirrored images; "
                                  "set random_flip=False or make them (launch/invert.py --flip)")
        return dataclasses.replace(self, extras={**self.extras, **extras})

    def arrays(self, chunk: int = STD_CHUNK):
        """(x float32 [N, *example_shape], labels int32 [N]): the whole split in model space, unflipped.  A
        streaming split is read in chunks, and refused (one-line ConfigError) above STREAM_ARRAYS_MAX_BYTES."""
        if self.source is None:
            parts = [self.decode(self.examples[s:s + chunk]) for s in range(0, self.size, chunk)]
            return np.concatenate(parts).astype(np.float32), self.labels.astype(np.int32)
        need = 4 * self.size * int(np.prod(self.example_shape))
        if need > STREAM_ARRAYS_MAX_BYTES:
            raise ConfigError(
                f"config.data.pipeline: the whole streamed split {self.name}/{self.split} was asked for in memory "
                f"({need / 2 ** 30:.1f} GiB of float32 > {STREAM_ARRAYS_MAX_BYTES / 2 ** 30:.0f} GiB); use a smaller "
                f"split (e.g. '{self.split}[:10000]') for what needs the whole split (teacher.oracle, eval reference)")
        stored, labels = read_all(self.source, np.arange(self.size), self.workers)
        xs = [self.decode(stored[s:s + chunk]) for s in range(0, self.size, chunk)]
        return np.concatenate(xs).astype(np.float32), labels


def with_examples(dataset: Dataset, examples: np.ndarray, labels: Optional[np.ndarray] = None) -> Dataset:
    """``dataset`` serving ``examples`` [n, *example_shape] instead of its split: same batch size, seed, stream order
    rule and metadata (kind, mixture, data_std), so a run trains on the given arrays as it would on the split — e.g. a
    teacher's own samples for data-free distillation. ``examples`` are in model space (float32, served as they are:
    no decode); ``labels`` default to 0 (no class)."""
    examples = np.ascontiguousarray(examples, np.float32)
    if examples.shape[1:] != tuple(dataset.example_shape) or len(examples) == 0:
        raise ValueError(f"with_examples: got examples of shape {examples.shape}, need [n > 0, "
                         f"*{tuple(dataset.example_shape)}]")
    labels = np.zeros(len(examples), np.int32) if labels is None else np.asarray(labels, np.int32)
    return dataclasses.replace(dataset, examples=examples, labels=labels, size=len(examples), source=None,
                               decode=lambda rows: rows, extras={})


def read_all(source, ids: np.ndarray, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """(stored rows, labels int32) of ``ids`` in order, read through Grain with ``workers`` threads (0: serially)."""
    ids = np.asarray(ids, np.int64)
    rows = grain.MapDataset.range(0, len(ids)).map(lambda k: source[int(ids[k])])
    if workers > 0:
        pairs = list(rows.to_iter_dataset(grain.ReadOptions(num_threads=workers, prefetch_buffer_size=4 * workers)))
    else:
        pairs = [rows[k] for k in range(len(ids))]
    if not pairs:
        return np.zeros((0,), np.uint8), np.zeros(0, np.int32)
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs], np.int32)


def _field(data_config, key, default):
    return getattr(data_config, key, default) if not isinstance(data_config, dict) else data_config.get(key, default)


def _toy_parts(name: str, split: str, toy_size: int):
    if split not in TOY_SPLITS:
        raise ConfigError(f"toy data has splits 'train' | 'test' | 'all', got {split!r}")
    if toy_size <= 0:
        raise ConfigError(f"config.data.toy_size: must be > 0, got {toy_size}")
    try:
        short = toys.toy_name(name)
    except ValueError as e:
        raise ConfigError(f"config.data.name: {e}") from None
    x, labels = toys.sample_toy(short, toy_size, np.random.default_rng([TOY_SEED, TOY_SPLITS[split]]))
    return dict(kind="toy", example_shape=(toys.toy_dim(short),), num_classes=toys.toy_num_classes(short),
                data_range=UNBOUNDED, data_std=toys.TOY_STD[short], mixture=toys.toy_mixture(short),
                size=len(x), examples=x, labels=labels, decode=lambda rows: rows)


def _check_resolution(resolution: int) -> None:
    if resolution < 0:
        raise ConfigError(f"config.data.resolution: must be >= 0 (0 = native), got {resolution}")


def _image_shape(native: tuple, resolution: int) -> tuple:
    h, w, c = native
    return (resolution, resolution, c) if resolution else (h, w, c)


def _image_parts(name: str, split: str, data_dir: str, resolution: int):
    _check_resolution(resolution)
    if name == "digits":
        arrays = images.load_digits_split(split)
    elif name == "mnist5k":
        arrays = images.load_mnist5k_split(split)
    else:
        arrays = images.load_tfds_split(name, data_dir, split)
    raw_max = arrays.raw_max
    return dict(kind="image", example_shape=_image_shape(arrays.raw.shape[1:], resolution),
                num_classes=arrays.num_classes, data_range=IMAGE_RANGE,
                data_std=_image_std(_chunks_of(arrays.raw), raw_max), mixture=None, size=len(arrays.raw),
                examples=arrays.raw, labels=arrays.labels,
                decode=lambda rows: images.to_model_space(rows, raw_max, resolution))


def _streamed_image_parts(name: str, split: str, data_dir: str, resolution: int, workers: int):
    """A TFDS split read by example id (ArrayRecord), never held in memory (module docstring)."""
    _check_resolution(resolution)
    reader = images.open_tfds_rows(name, data_dir, split)
    raw_max, size = 255.0, len(reader)
    sample = data_std_ids(size)
    std = _image_std((read_all(reader, ids, workers)[0] for ids in _chunks_of(sample)), raw_max)
    return dict(kind="image", example_shape=_image_shape(reader.features.image_shape, resolution),
                num_classes=reader.features.num_classes, data_range=IMAGE_RANGE, data_std=std, mixture=None,
                size=size, examples=None, labels=None, source=reader,
                decode=lambda rows: images.to_model_space(rows, raw_max, resolution))


@functools.lru_cache(maxsize=8)
def _scan_folder(root: str):
    return sources.scan_folder(root)


@functools.lru_cache(maxsize=8)
def _load_npz(path: str, resolution: int):
    return sources.load_npz(path, resolution)


def _whole_source(name: str, resolution: int):
    """(source, example_shape, num_classes, data_std or None) of a 'folder:' / 'npz:' / 'array_record:' name."""
    kind, path = sources.path_source(name)
    path = os.path.expanduser(path)
    if kind == "folder":
        source = sources.FolderSource(_scan_folder(os.path.abspath(path)), resolution)
        return source, source.shape, len(source.scan.class_names), None
    if kind == "npz":
        x, labels, num_classes = _load_npz(os.path.abspath(path), resolution)
        return sources.ArraySource(x, labels), x.shape[1:], num_classes, None
    source = sources.ArrayRecordSource(path)
    if resolution and source.shape[:2] != (resolution, resolution):
        raise ConfigError(f"config.data.resolution: {resolution}, but {path!r} was prepared at "
                          f"{source.shape[0]}×{source.shape[1]}; set it to {source.shape[0]} (or 0) or rerun "
                          f"launch/prepare_data.py --resolution={resolution}")
    return source, source.shape, int(source.stats["num_classes"]), float(source.stats["data_std"])


def _own_split_ids(n: int, split: str, test_fraction: float, name: str) -> np.ndarray:
    num_test = int(round(test_fraction * n))
    if split == "test" and num_test == 0:
        raise ConfigError(f"config.data.test_fraction: {test_fraction} of {n} examples leaves no held-out split; "
                          "raise it or set data.test_path")
    return images.fixed_split(n, n - num_test, split, name)


def _own_image_parts(name: str, split: str, resolution: int, pipeline: str, workers: int,
                     test_fraction: float, test_path: str):
    """A 'folder:' / 'npz:' / 'array_record:' split (sources.py; module docstring)."""
    _check_resolution(resolution)
    if split not in ("train", "test", "all"):
        raise ConfigError(f"{name} has splits 'train' | 'test' | 'all', got {split!r}")
    if test_path and split == "test":
        whole, shape, num_classes, std = _whole_source(test_path, resolution)
        ids = np.arange(len(whole))
    else:
        whole, shape, num_classes, std = _whole_source(name, resolution)
        ids = np.arange(len(whole)) if (test_path or split == "all") else \
            _own_split_ids(len(whole), split, test_fraction, name)
    source = sources.SubsetSource(whole, ids)
    parts = dict(kind="image", example_shape=tuple(shape), num_classes=num_classes, data_range=IMAGE_RANGE,
                 mixture=None, size=len(ids), decode=lambda rows: images.to_model_space(rows, 255.0, 0))
    if pipeline == "memory":
        if isinstance(whole, sources.ArraySource):
            stored, labels = whole.examples[ids], whole.labels[ids]
        else:
            stored, labels = read_all(source, np.arange(len(ids)), workers)
        std = _image_std(_chunks_of(stored), 255.0) if std is None else std
        return dict(parts, data_std=std, examples=stored, labels=labels)
    if std is None:
        sample = data_std_ids(len(ids))
        std = _image_std((read_all(source, chunk, workers)[0] for chunk in _chunks_of(sample)), 255.0)
    return dict(parts, data_std=std, examples=None, labels=None, source=source)


def _check_pipeline(pipeline: str, name: str) -> None:
    if pipeline not in PIPELINES:
        raise ConfigError(f"config.data.pipeline: {pipeline!r} is not one of {', '.join(PIPELINES)}; "
                          "use 'memory' (the split in host memory) or 'stream' (read by id)")
    if pipeline == "stream" and (name in ("digits", "mnist5k") or name.startswith("toy:")):
        raise ConfigError(f"config.data.pipeline: 'stream' is only for TFDS datasets, but {name!r} is built in "
                          "memory; set data.pipeline='memory'")


def make_dataset(data_config, global_batch_size: int, seed: int, split: str = "train") -> Dataset:
    """Build the Dataset named by ``config.data`` (see consistency/config.py) for this host.

    data_config.name: 'digits' | 'mnist5k' | 'toy:<name>' (toys.TOY_NAMES) | any TFDS image dataset |
    'folder:PATH' | 'npz:PATH' | 'array_record:PATH' (sources.py);
    data_config.pipeline: 'memory' | 'stream' (read by id; module docstring); data_config.workers: Grain threads.
    Raises ConfigError (one line) for a bad name/split/batch size, and images.DataUnavailableError (a
    ConfigError) when the data cannot be read on this machine.
    """
    global_batch_size = int(global_batch_size)
    if global_batch_size <= 0:
        raise ConfigError(f"config.training.batch_size: must be > 0, got {global_batch_size}")
    host_index, host_count = jax.process_index(), jax.process_count()
    host_rows(global_batch_size, host_index, host_count)          # divisibility check, one line
    name = str(_field(data_config, "name", "digits"))
    pipeline = str(_field(data_config, "pipeline", "memory"))
    _check_pipeline(pipeline, name)
    workers = int(_field(data_config, "workers", 0) or 0)
    resolution = int(_field(data_config, "resolution", 0) or 0)
    data_dir = str(_field(data_config, "data_dir", "") or "")
    if name.startswith("toy:"):
        parts = _toy_parts(name, split, int(_field(data_config, "toy_size", 100_000)))
    elif sources.path_source(name) is not None:
        parts = _own_image_parts(name, split, resolution, pipeline, workers,
                                 float(_field(data_config, "test_fraction", TEST_FRACTION)),
                                 str(_field(data_config, "test_path", "") or ""))
    elif pipeline == "stream":
        parts = _streamed_image_parts(name, split, data_dir, resolution, workers)
    else:
        parts = _image_parts(name, split, data_dir, resolution)
    if _field(data_config, "conditional", False) and parts["num_classes"] == 0:
        raise ConfigError(f"config.data.conditional: {name} has no class labels; set it to False")
    return Dataset(name=name, split=split, global_batch_size=global_batch_size, seed=int(seed),
                   random_flip=bool(_field(data_config, "random_flip", False)),
                   host_index=host_index, host_count=host_count, workers=workers, **parts)
