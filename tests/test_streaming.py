"""Tests for data.pipeline='stream': a TFDS split read by example id (ArrayRecord) serves exactly the batches of the
in-memory path, resumes like it, and refuses what it cannot do in one line.

The data is a tiny TFDS dataset defined here and prepared offline twice, as tfrecord (the memory path reads it with
``as_dataset``) and as ArrayRecord (the stream path reads it with ``as_data_source``): the two paths share no reader,
so equal batches check the id order, the flips, the host rows and the decode of the streaming path.
"""
import socket

import jax
import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

from consistency.core.errors import ConfigError
from consistency.config import base_config, validate  # noqa: E402
from consistency.data import make_dataset, pipeline  # noqa: E402
from consistency.data import images as images_lib  # noqa: E402

NUM_TRAIN, NUM_TEST = 37, 11          # odd sizes: batches of 8 straddle epoch boundaries
IMAGE_SHAPE = (6, 5, 3)               # odd width: a flip moves every column but the middle one
NUM_CLASSES = 4
BATCH = 8
STEPS = range(14)                     # about three epochs of 37
NUM_SHARDS = 2                        # > 16 examples a shard: TFDS's default interleave (blocks of 16) would reorder


class StreamTestImages(tfds.core.GeneratorBasedBuilder):
    """Random uint8 images with labels i % 4, generated locally (no download)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=IMAGE_SHAPE),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, NUM_TRAIN), "test": self._generate_examples(1, NUM_TEST)}

    def _generate_examples(self, seed, n):
        rng = np.random.default_rng(seed)
        for i in range(n):
            yield i, {"image": rng.integers(0, 256, IMAGE_SHAPE, dtype=np.uint8), "label": i % NUM_CLASSES}


NAME = "stream_test_images"           # the name TFDS registers StreamTestImages under


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    """{'tfrecord': dir, 'array_record': dir}: the same dataset prepared in each file format, in NUM_SHARDS shards."""
    dirs = {}
    for file_format in ("tfrecord", "array_record"):
        root = str(tmp_path_factory.mktemp(file_format))
        StreamTestImages(data_dir=root).download_and_prepare(
            file_format=file_format, download_config=tfds.download.DownloadConfig(num_shards=NUM_SHARDS))
        dirs[file_format] = root
        assert StreamTestImages(data_dir=root).info.splits["train"].num_shards == NUM_SHARDS
    yield dirs
    images_lib.load_tfds_split.cache_clear()


@pytest.fixture
def no_network(monkeypatch):
    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access attempted: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def data_config(data_dir, **overrides):
    c = base_config().data
    c.name, c.data_dir = NAME, data_dir
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def one_line(e: Exception) -> str:
    msg = str(e)
    assert msg and "\n" not in msg, msg
    return msg


def assert_same_batch(got: dict, want: dict):
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def host_datasets(monkeypatch, cfg, hosts=2, split="train"):
    """The Dataset of each of `hosts` simulated hosts (jax.process_index / process_count patched)."""
    out = []
    monkeypatch.setattr(jax, "process_count", lambda: hosts)
    for p in range(hosts):
        monkeypatch.setattr(jax, "process_index", lambda p=p: p)
        out.append(make_dataset(cfg, BATCH, seed=7, split=split))
    monkeypatch.undo()
    return out


# ---------------------------------------------------------------------------------------------------------
# (a) the same batches as the memory path

@pytest.mark.parametrize("flip,resolution", [(False, 0), (True, 0), (True, 8)])
def test_stream_serves_the_memory_batches(data_dirs, no_network, flip, resolution):
    memory = make_dataset(data_config(data_dirs["tfrecord"], random_flip=flip, resolution=resolution), BATCH, seed=7)
    stream = make_dataset(data_config(data_dirs["array_record"], random_flip=flip, resolution=resolution,
                                      pipeline="stream"), BATCH, seed=7)
    assert (memory.pipeline, stream.pipeline) == ("memory", "stream")
    assert stream.examples is None and stream.labels is None          # nothing of the split is held
    for attr in ("size", "example_shape", "num_classes", "data_range", "kind"):
        assert getattr(stream, attr) == getattr(memory, attr), attr
    assert stream.size == NUM_TRAIN and stream.data_std == memory.data_std   # N <= DATA_STD_SAMPLE: exact
    assert (STEPS[-1] + 1) * BATCH > 2 * NUM_TRAIN                    # the steps cross two epoch boundaries
    for step in STEPS:
        assert_same_batch(stream.batch(step), memory.batch(step))
    for got, want in zip(stream.arrays(), memory.arrays()):
        np.testing.assert_array_equal(got, want)
    stream.close()


def test_memory_path_reads_an_array_record_dataset_in_the_stream_order(data_dirs, no_network):
    """The memory path on ArrayRecord files (as_dataset cannot read them) materialises the data source's order."""
    images_lib.load_tfds_split.cache_clear()
    from_array_record = make_dataset(data_config(data_dirs["array_record"], random_flip=True), BATCH, seed=3)
    from_tfrecord = make_dataset(data_config(data_dirs["tfrecord"], random_flip=True), BATCH, seed=3)
    for step in (0, 4, 5, 13):
        assert_same_batch(from_array_record.batch(step), from_tfrecord.batch(step))


def test_stream_hosts_take_their_rows_of_the_memory_batch(data_dirs, no_network, monkeypatch):
    memory = make_dataset(data_config(data_dirs["tfrecord"], random_flip=True), BATCH, seed=7)
    hosts = host_datasets(monkeypatch, data_config(data_dirs["array_record"], random_flip=True, pipeline="stream"))
    memory_hosts = host_datasets(monkeypatch, data_config(data_dirs["tfrecord"], random_flip=True))
    assert [(h.host_index, h.host_count, h.local_batch_size) for h in hosts] == [(0, 2, 4), (1, 2, 4)]
    for step in STEPS:
        whole, parts = memory.batch(step), [h.batch(step) for h in hosts]
        for k in whole:
            np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k], err_msg=k)
        for part, memory_host in zip(parts, memory_hosts):
            assert_same_batch(part, memory_host.batch(step))
    for h in hosts:
        h.close()


def test_stream_of_a_sliced_split_and_the_test_split(data_dirs, no_network):
    for split in ("train[:50%]", "test"):
        memory = make_dataset(data_config(data_dirs["tfrecord"]), BATCH, seed=1, split=split)
        stream = make_dataset(data_config(data_dirs["array_record"], pipeline="stream"), BATCH, seed=1, split=split)
        assert stream.size == memory.size == {"train[:50%]": 18, "test": NUM_TEST}[split]
        for step in (0, 2, 3):
            assert_same_batch(stream.batch(step), memory.batch(step))
        stream.close()


# ---------------------------------------------------------------------------------------------------------
# (b) prefetch and restart

def test_restart_at_step_k_continues_the_uninterrupted_stream(data_dirs, no_network):
    cfg = data_config(data_dirs["array_record"], random_flip=True, pipeline="stream")
    uninterrupted = make_dataset(cfg, BATCH, seed=11)
    assert uninterrupted.workers == base_config().data.workers > 0
    stream = [uninterrupted.batch(step) for step in STEPS]
    assert uninterrupted._iterator[0] == STEPS[-1] + 1      # one Grain iterator read the steps in order
    for k in (5, 9):
        resumed = make_dataset(cfg, BATCH, seed=11)        # a new process after a checkpoint at step k
        resumed.batch(0)                                   # the loop's shape probe, out of order
        for step in STEPS[k:]:
            assert_same_batch(resumed.batch(step), stream[step])
        resumed.close()
    other_seed = make_dataset(cfg, BATCH, seed=12)
    assert not np.array_equal(other_seed.batch(0)["label"], stream[0]["label"]) or \
        not np.array_equal(other_seed.batch(0)["x"], stream[0]["x"])
    uninterrupted.close()
    assert_same_batch(uninterrupted.batch(3), stream[3])   # after close(): a new iterator
    serial = make_dataset(dict(cfg, workers=0), BATCH, seed=11)   # no read threads: the same batches
    for step in STEPS:
        assert_same_batch(serial.batch(step), stream[step])
    uninterrupted.close()


def test_grain_read_ahead_serves_any_order_and_reraises():
    """Grain's read threads (data.workers) change when a batch is read, never what it holds: in order, out of order,
    and after close() the batches equal the serial ones; an exception in a source read reaches the caller."""
    import dataclasses
    from consistency.data import sources

    serial = make_dataset(dict(base_config().data, random_flip=True, workers=0), BATCH, seed=5)
    threaded = dataclasses.replace(serial, workers=2)
    for step in (0, 1, 2, 40, 41, 3, 3, 0):
        assert_same_batch(threaded.batch(step), serial.batch(step))
    assert threaded._iterator[0] == 1                     # the last call (step 0) left an iterator at step 1
    threaded.close()
    assert threaded._iterator is None

    class Broken(sources.ArraySource):
        def __getitem__(self, i):
            if int(i) == int(serial.example_ids(2)[3]):
                raise RuntimeError("read failed")
            return super().__getitem__(i)

    for workers in (0, 2):
        broken = dataclasses.replace(serial, source=Broken(serial.examples, serial.labels), workers=workers)
        assert_same_batch(broken.batch(1), serial.batch(1))
        with pytest.raises(RuntimeError, match="read failed"):
            broken.batch(2)
        broken.close()


def test_data_std_subsample_is_fixed_and_exact_for_small_splits(data_dirs, no_network, monkeypatch):
    ids = pipeline.data_std_ids(1_000_000, sample=500)
    assert len(ids) == len(np.unique(ids)) == 500 and np.all(np.diff(ids) > 0)
    np.testing.assert_array_equal(ids, pipeline.data_std_ids(1_000_000, sample=500))   # no run seed involved
    np.testing.assert_array_equal(pipeline.data_std_ids(37, sample=500), np.arange(37))
    monkeypatch.setattr(pipeline, "DATA_STD_SAMPLE", 10)
    stream = make_dataset(data_config(data_dirs["array_record"], pipeline="stream"), BATCH, seed=0)
    x, _ = make_dataset(data_config(data_dirs["tfrecord"]), BATCH, seed=0).arrays()
    chosen = pipeline.data_std_ids(NUM_TRAIN, sample=10)
    assert len(chosen) == 10
    assert stream.data_std == pytest.approx(float(np.std(x[chosen].astype(np.float64))), rel=1e-6)   # x is float32
    stream.close()


# ---------------------------------------------------------------------------------------------------------
# (c) one-line errors

def test_config_validation_lines():
    c = base_config()
    c.data.pipeline = "disk"
    with pytest.raises(ConfigError, match=r"^config\.data\.pipeline: 'disk' is not one of 'memory', 'stream'"):
        validate(c)
    for name in ("digits", "mnist5k", "toy:moons"):
        c = base_config()
        c.data.name, c.data.pipeline = name, "stream"
        with pytest.raises(ConfigError) as e:
            validate(c)
        assert one_line(e.value).startswith("config.data.pipeline: 'stream' is only for TFDS datasets")
        assert "set data.pipeline='memory'" in str(e.value)
    c = base_config()
    c.data.name, c.data.pipeline, c.data.latents = "cifar10", "stream", "/tmp/inverted"
    with pytest.raises(ConfigError, match=r"^config\.data\.pipeline: 'stream' cannot serve data\.latents"):
        validate(c)
    c.data.latents = ""
    validate(c)                                             # a TFDS name with stream is fine before loading
    assert base_config().data.pipeline == "memory"


def test_make_dataset_error_lines(data_dirs, no_network, tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as e:
        make_dataset(data_config(data_dirs["tfrecord"], pipeline="stream"), BATCH, seed=0)
    msg = one_line(e.value)
    for part in ("config.data.pipeline:", "tfrecord", f"tfds build {NAME} --data_dir={data_dirs['tfrecord']} "
                 "--file_format=array_record", "download_and_prepare(file_format='array_record')",
                 "data.pipeline='memory'"):
        assert part in msg, msg
    for cfg in (base_config().data, data_config("", name="toy:moons")):
        cfg.pipeline = "stream"
        with pytest.raises(ConfigError, match=r"^config\.data\.pipeline: 'stream' is only for TFDS datasets"):
            make_dataset(cfg, BATCH, seed=0)
    with pytest.raises(images_lib.DataUnavailableError) as e:     # not prepared at all: the usual line
        make_dataset(data_config(str(tmp_path), pipeline="stream"), BATCH, seed=0)
    assert NAME in one_line(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(ConfigError) as e:
        make_dataset(data_config(data_dirs["array_record"], pipeline="stream"), BATCH, seed=0, split="validation")
    assert "validation" in one_line(e.value)
    stream = make_dataset(data_config(data_dirs["array_record"], pipeline="stream"), BATCH, seed=0)
    monkeypatch.setattr(pipeline, "STREAM_ARRAYS_MAX_BYTES", 1000)
    with pytest.raises(ConfigError) as e:
        stream.arrays()
    assert one_line(e.value).startswith("config.data.pipeline: the whole streamed split")
    stream.close()
