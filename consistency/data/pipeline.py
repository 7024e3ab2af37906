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

Where the rows come from (``config.data.pipeline``).  'memory' (default) holds the whole split in host memory
(images.py).  'stream' (TFDS datasets prepared as ArrayRecord, e.g. ImageNet-64) holds nothing: each batch reads
its example ids by random access (images.TfdsRows), in the same id order, so it serves exactly the batches of the
memory path — the same function of (seed, step) and host rows, flips included — and a run resumed at step k
(a new Dataset) continues the uninterrupted stream.  A streaming Dataset computes the next
:data:`STREAM_PREFETCH` batches in one background thread (:class:`Prefetcher`) while the caller uses the current
one; this changes when a batch is read, never what it holds.  Its ``data_std`` is estimated from a fixed
subsample of :data:`DATA_STD_SAMPLE` examples (:func:`data_std_ids`; the exact value when the split is no
larger), and ``arrays()`` reads the split in chunks, refused above :data:`STREAM_ARRAYS_MAX_BYTES`.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import threading
from typing import Callable, Optional

import jax
import numpy as np

from consistency.config import ConfigError
from consistency.data import images, toys

PERMUTATION_STREAM = 0            # first word of the numpy seed for epoch permutations
FLIP_STREAM = 1                   # … for flips
TOY_SEED = 0                      # toy points are drawn once from (TOY_SEED, split): fixed across runs
TOY_SPLITS = {"train": 0, "test": 1, "all": 0}   # 'all' is the training draw for toys
IMAGE_RANGE = (-1.0, 1.0)
UNBOUNDED = (-float("inf"), float("inf"))
PIPELINES = ("memory", "stream")  # config.data.pipeline
STREAM_PREFETCH = 2               # batches a streaming Dataset reads ahead in its background thread
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


class Prefetcher:
    """``get(step)``: ``compute(step)``, with ``compute(step + 1 … step + depth)`` already started in one background
    thread, so a caller walking the steps in order finds each batch read.  Pending steps outside the new window are
    cancelled; an exception in ``compute`` reaches the caller of ``get``."""

    def __init__(self, compute: Callable[[int], dict], depth: int):
        self._compute, self._depth = compute, int(depth)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-prefetch")
        self._pending: dict = {}
        self._lock = threading.Lock()
        self._closed = False

    def get(self, step: int) -> dict:
        step = int(step)
        with self._lock:
            if self._closed:                 # after close(): read in the caller's thread
                return self._compute(step)
            future = self._pending.pop(step, None) or self._pool.submit(self._compute, step)
            window = range(step + 1, step + 1 + self._depth)
            for stale in [s for s in self._pending if s not in window]:
                self._pending.pop(stale).cancel()
            for ahead in window:
                if ahead not in self._pending:
                    self._pending[ahead] = self._pool.submit(self._compute, ahead)
        return future.result()

    def pending(self) -> list[int]:
        """Steps read (or being read) ahead."""
        with self._lock:
            return sorted(self._pending)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """One split of one dataset, served as deterministic host-local batches (module docstring).

    ``examples`` holds the split in its stored form (raw images, or toy points) and ``decode`` maps stored
    rows to model space (float32, images in [−1, 1], resized when configured).  A streaming dataset
    (``pipeline == 'stream'``) has ``examples = labels = None`` and reads stored rows and labels from ``rows``
    (images.TfdsRows) instead, ``prefetch`` batches ahead in a background thread; its ``data_std`` comes from the
    fixed subsample :func:`data_std_ids` of the split.
    """

    name: str
    kind: str                           # 'image' | 'toy'
    split: str
    example_shape: tuple
    num_classes: int                    # 0: no labels (label is all 0)
    size: int                           # examples in the split
    data_range: tuple                   # (lo, hi) of x; (−inf, inf) for toys (nothing to clip)
    data_std: float                     # toys: exact RMS per-coordinate std (toys.TOY_STD); images: pixel std
                                        # of the split at native resolution (streaming: of data_std_ids)
    mixture: Optional[tuple]            # toy mixtures: exact (weights [K], means [K, d], stds [K]); else None
    global_batch_size: int
    seed: int
    random_flip: bool
    host_index: int
    host_count: int
    examples: np.ndarray = dataclasses.field(repr=False)
    labels: np.ndarray = dataclasses.field(repr=False)
    decode: Callable[[np.ndarray], np.ndarray] = dataclasses.field(repr=False)
    # Per-example arrays served beside 'x' (e.g. PaGoDA's inverted latents, consistency/inversion.py): name →
    # (rows aligned with ``examples`` [N, ...], the rows of the mirrored examples or None).  A flipped row of a batch
    # takes the mirrored entry, so an extra stays the function of exactly the image the batch shows.
    extras: dict = dataclasses.field(default_factory=dict, repr=False)
    rows: object = dataclasses.field(default=None, repr=False)   # streaming: read(ids) → (stored rows, labels)
    prefetch: int = 0                   # batches read ahead in a background thread (streaming datasets)

    def __post_init__(self):
        prefetcher = Prefetcher(self._compute_batch, self.prefetch) if self.prefetch > 0 else None
        object.__setattr__(self, "_prefetcher", prefetcher)   # one per object: dataclasses.replace makes a new one

    @property
    def pipeline(self) -> str:
        return "memory" if self.rows is None else "stream"

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
        """(stored rows, labels) of example ids: a fresh copy, from memory or from the streaming reader."""
        if self.rows is not None:
            return self.rows.read(ids)
        return self.examples[ids], self.labels[ids]       # fancy indexing copies

    def batch(self, step: int) -> dict:
        """This host's share of global batch `step`: {'x', 'label', 'index'} (module docstring)."""
        if self._prefetcher is not None:
            return self._prefetcher.get(step)
        return self._compute_batch(step)

    def close(self) -> None:
        """Stop the prefetch thread (a no-op for in-memory datasets)."""
        if self._prefetcher is not None:
            self._prefetcher.close()

    def _compute_batch(self, step: int) -> dict:
        rows = host_rows(self.global_batch_size, self.host_index, self.host_count)
        ids, index = stream_example_ids(self.seed, step, self.global_batch_size, self.size, rows)
        stored, labels = self.read(ids)
        if self.random_flip and self.kind == "image":
            # Mirror the stored rows: decode (pointwise scale, half-pixel bilinear resize) commutes with it.
            flip = np.flatnonzero(flip_mask(self.seed, step, self.global_batch_size)[rows])
            width = stored.shape[2]
            stored[flip] = np.take(stored[flip], np.arange(width - 1, -1, -1), axis=2)
        x = self.decode(stored)
        out = {
            "x": np.ascontiguousarray(x, dtype=np.float32),
            "label": labels.astype(np.int32),
            "index": (index % (1 << 31)).astype(np.int32),
        }
        for name, (rows, mirrored) in self.extras.items():
            value = np.asarray(rows[ids], np.float32)
            if self.random_flip and self.kind == "image":
                value[flip] = mirrored[ids[flip]]
            out[name] = value
        return out

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
        if self.rows is None:
            parts = [self.decode(self.examples[s:s + chunk]) for s in range(0, self.size, chunk)]
            return np.concatenate(parts).astype(np.float32), self.labels.astype(np.int32)
        need = 4 * self.size * int(np.prod(self.example_shape))
        if need > STREAM_ARRAYS_MAX_BYTES:
            raise ConfigError(
                f"config.data.pipeline: the whole streamed split {self.name}/{self.split} was asked for in memory "
                f"({need / 2 ** 30:.1f} GiB of float32 > {STREAM_ARRAYS_MAX_BYTES / 2 ** 30:.0f} GiB); use a smaller "
                f"split (e.g. '{self.split}[:10000]') for what needs the whole split (teacher.oracle, eval reference)")
        xs, ys = [], []
        for s in range(0, self.size, chunk):
            stored, labels = self.read(np.arange(s, min(s + chunk, self.size)))
            xs.append(self.decode(stored))
            ys.append(labels)
        return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int32)


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


def _streamed_image_parts(name: str, split: str, data_dir: str, resolution: int):
    """A TFDS split read by example id (ArrayRecord), never held in memory (module docstring)."""
    _check_resolution(resolution)
    reader = images.open_tfds_rows(name, data_dir, split)
    raw_max, size = 255.0, len(reader)
    sample = data_std_ids(size)
    std = _image_std((reader.read(ids)[0] for ids in _chunks_of(sample)), raw_max)
    return dict(kind="image", example_shape=_image_shape(reader.features.image_shape, resolution),
                num_classes=reader.features.num_classes, data_range=IMAGE_RANGE, data_std=std, mixture=None,
                size=size, examples=None, labels=None, rows=reader, prefetch=STREAM_PREFETCH,
                decode=lambda rows: images.to_model_space(rows, raw_max, resolution))


def _check_pipeline(pipeline: str, name: str) -> None:
    if pipeline not in PIPELINES:
        raise ConfigError(f"config.data.pipeline: {pipeline!r} is not one of {', '.join(PIPELINES)}; "
                          "use 'memory' (the split in host memory) or 'stream' (TFDS ArrayRecord, read by id)")
    if pipeline == "stream" and (name in ("digits", "mnist5k") or name.startswith("toy:")):
        raise ConfigError(f"config.data.pipeline: 'stream' is only for TFDS datasets, but {name!r} is built in "
                          "memory; set data.pipeline='memory'")


def make_dataset(data_config, global_batch_size: int, seed: int, split: str = "train") -> Dataset:
    """Build the Dataset named by ``config.data`` (see consistency/config.py) for this host.

    data_config.name: 'digits' | 'mnist5k' | 'toy:<name>' (toys.TOY_NAMES) | any TFDS image dataset;
    data_config.pipeline: 'memory' | 'stream' (TFDS datasets prepared as ArrayRecord; module docstring).
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
    if name.startswith("toy:"):
        parts = _toy_parts(name, split, int(_field(data_config, "toy_size", 100_000)))
    else:
        build = _streamed_image_parts if pipeline == "stream" else _image_parts
        parts = build(name, split, str(_field(data_config, "data_dir", "") or ""),
                      int(_field(data_config, "resolution", 0) or 0))
    if _field(data_config, "conditional", False) and parts["num_classes"] == 0:
        raise ConfigError(f"config.data.conditional: {name} has no class labels; set it to False")
    return Dataset(name=name, split=split, global_batch_size=global_batch_size, seed=int(seed),
                   random_flip=bool(_field(data_config, "random_flip", False)),
                   host_index=host_index, host_count=host_count, **parts)
