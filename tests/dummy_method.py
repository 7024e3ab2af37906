"""A tiny test-only method and dataset, so the loop can be tested without any real method, network or data.

Method ``dummy``: a residual one-hidden-layer MLP denoiser g(x̃) = x̃ + tanh(x̃ W₁ + b₁) W₂ + b₂ trained on
‖g(x + ½ε) − x‖² with per-example noise ε (keys folded from the global example index, so the result does not
depend on the device count), optimizer from ``config.optim``, sampling EMA ``training.ema_decay``.
It does NOT advance ``state.step`` itself: the loop owns the counter.
``dummy_sgd``: the same with plain SGD (for exact multi-device comparisons; docs/platform.md §4a).
``dummy_nan``: the same but its loss metric is NaN from step ``NAN_FROM_STEP`` on (NaN-guard test).
``dummy_blowup``: the same but, while ``optim.lr`` > ``BLOWUP_ABOVE_LR``, its loss is 10⁸ times larger from step
``BLOWUP_FROM_STEP`` on: a finite blow-up that a lower lr avoids (blow-up guard test).

Dataset ``config.data.name = 'fake:toy'`` (2-D points) or ``'fake:image'`` (4×4×1 images in [-1, 1]): a fixed
bank of 256 examples with labels in {0, 1}; example i of the stream is bank[(i · 37) mod 256] and the batch of
step k holds the global indices k·B … k·B + B − 1 — a pure function of (seed, step).

Importing this module registers the methods and routes ``fake:*`` data names to :class:`FakeDataset`
(so ``python -m consistency.main --imports=dummy_method`` works too).
"""
from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from consistency import methods
from consistency.run import restore, train
from consistency.config import base_config
from consistency.methods.base import Method, Trained, example_keys, per_example_normal

NAN_FROM_STEP = 3
BLOWUP_FROM_STEP = 14
BLOWUP_ABOVE_LR = 5e-3
HIDDEN = 8
BANK_SIZE = 256
# How often each dummy_pair loss was traced (one compiled step per distinct tuple of due sets).
TRACES: collections.Counter = collections.Counter()


class FakeDataset:
    """Same interface as ``consistency.data.make_dataset``'s datasets."""

    def __init__(self, kind: str, global_batch_size: int, seed: int):
        self.kind = kind
        self.example_shape = (2,) if kind == "toy" else (4, 4, 1)
        self.num_classes = 2
        self.global_batch_size = global_batch_size
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 2, BANK_SIZE).astype(np.int32)
        if kind == "toy":  # two Gaussian blobs at (±1, 0.5)
            centres = np.stack([np.where(labels == 0, -1.0, 1.0), np.full(BANK_SIZE, 0.5)], axis=1)
            x = centres + 0.2 * rng.normal(size=(BANK_SIZE, 2))
        else:
            x = np.clip(rng.normal(size=(BANK_SIZE, 4, 4, 1)) * 0.5 + (labels[:, None, None, None] - 0.5), -1, 1)
        self._x, self._labels = x.astype(np.float32), labels

    def batch(self, step: int) -> dict:
        hosts, host = jax.process_count(), jax.process_index()
        local = self.global_batch_size // hosts
        index = (step * self.global_batch_size + host * local + np.arange(local)).astype(np.int32)
        rows = (index.astype(np.int64) * 37) % BANK_SIZE
        return {"x": self._x[rows], "label": self._labels[rows], "index": index}

    def arrays(self):
        return self._x, self._labels


def make(config, dataset, sgd_lr: float | None = None, nan_from_step: int | None = None, name: str = "dummy",
         blowup_from_step: int | None = None):
    dim = int(np.prod(dataset.example_shape))
    shape = tuple(dataset.example_shape)
    if sgd_lr is not None:
        optimizer = optax.sgd(sgd_lr)
    else:
        from consistency.methods.components.optim import make_optimizer
        optimizer = make_optimizer(config.optim, config.training.num_steps)

    def denoise(p, x):
        return x + jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    def init(rng, batch):
        k1, k2 = jax.random.split(rng)
        params = {"w1": jax.random.normal(k1, (dim, HIDDEN)) / np.sqrt(dim), "b1": jnp.zeros(HIDDEN),
                  "w2": jax.random.normal(k2, (HIDDEN, dim)) / np.sqrt(HIDDEN), "b2": jnp.zeros(dim)}
        return {"online": params}, {}

    def loss(p, state, batch, rng):
        x = batch["x"].reshape(batch["x"].shape[0], dim)
        noise = per_example_normal(example_keys(rng, batch["index"]), (dim,))
        value = jnp.mean(jnp.sum((denoise(p, x + 0.5 * noise) - x) ** 2, axis=-1))
        if nan_from_step is not None:
            value = jnp.where(state.step >= nan_from_step, jnp.nan, value)
        if blowup_from_step is not None and float(config.optim.lr) > BLOWUP_ABOVE_LR:
            value = jnp.where(state.step >= blowup_from_step, 1e8 * (1.0 + value), value)
        return value, {}

    def sample(state, rng, num_samples, *, nfe, options, labels=None, params=None):
        z = jax.random.normal(rng, (num_samples, dim))
        return denoise(state.ema["online"], z).reshape((num_samples,) + shape)

    trained = Trained("online", loss, optimizer, ema_decay=float(config.training.ema_decay))
    return Method(name=name, init=init, trained=(trained,), sample=sample, sample_params="online")


def make_pair(config, dataset, generator_every: int = 5):
    """``dummy_pair``: a two-network method shaped like DMD2 (fake score + generator, TTUR ``generator_every``:1).

    fake f ∈ R^d follows the generator plus the batch mean m:   L_fake(f) = ‖f − sg(g + m)‖²;
    generator g is pulled towards half the *just-updated* fake:  L_gen(g)  = ‖g − ½ sg(f)‖² + ‖g‖²/10.
    Both are deterministic given the batch, so a hand-written reference loop can replay them exactly. Each set's
    optimizer comes from ``config.optim`` / ``config.optim_<set>``, counted in its own updates; the generator keeps the
    sampling EMA, updated once per generator update.
    """
    from consistency.methods.components import common
    dim = int(np.prod(dataset.example_shape))

    def batch_mean(batch):
        return jnp.mean(batch["x"].reshape(batch["x"].shape[0], dim), axis=0)

    def init(rng, batch):
        k1, k2 = jax.random.split(rng)
        return {"fake": jax.random.normal(k1, (dim,)), "generator": jax.random.normal(k2, (dim,))}, {}

    def fake_loss(f, state, batch, rng):
        TRACES["fake"] += 1
        target = jax.lax.stop_gradient(state.params["generator"] + batch_mean(batch))
        return jnp.sum((f - target) ** 2), {"target_norm": jnp.linalg.norm(target)}

    def generator_loss(g, state, batch, rng):
        TRACES["generator"] += 1
        return jnp.sum((g - 0.5 * jax.lax.stop_gradient(state.params["fake"])) ** 2) + jnp.sum(g ** 2) / 10, {}

    def sample(state, rng, num_samples, *, nfe, options, labels=None, params=None):
        z = jax.random.normal(rng, (num_samples, dim))
        return (z + state.ema["generator"]).reshape((num_samples,) + tuple(dataset.example_shape))

    trained = (common.trained_set(config, "fake", fake_loss),
               common.trained_set(config, "generator", generator_loss, every=generator_every,
                                  phase=generator_every - 1, sampled=True))
    return Method(name="dummy_pair", init=init, trained=trained, sample=sample, sample_params="generator",
                  default_nfes=(1,))


def tiny_config(method: str = "dummy", data: str = "fake:toy", **training) -> ml_collections.ConfigDict:
    """A few-step config for the dummy method."""
    c = base_config()
    c.method = method
    c.data.name = data
    c.optim.lr = 1e-2
    c.training.update(dict(num_steps=4, batch_size=8, log_every=2, ckpt_every=2, keep_checkpoints=2,
                           sample_every=2, ema_decay=0.9))
    c.training.update(training)
    c.sampling.num_samples = 16
    c.eval.num_samples = 16
    return c


def register_all() -> None:
    methods.register("dummy", make)
    methods.register("dummy_sgd", functools.partial(make, sgd_lr=0.1, name="dummy_sgd"))
    methods.register("dummy_nan", functools.partial(make, nan_from_step=NAN_FROM_STEP, name="dummy_nan"))
    methods.register("dummy_pair", make_pair)
    methods.register("dummy_blowup", functools.partial(make, blowup_from_step=BLOWUP_FROM_STEP, name="dummy_blowup"))
    _route_fake_data()


def _route_fake_data() -> None:
    original = train.build_dataset
    if getattr(original, "routes_fake_data", False):
        return

    @functools.wraps(original)
    def build_dataset(config, split="train"):
        if str(config.data.name).startswith("fake:"):
            return FakeDataset(config.data.name.split(":", 1)[1], config.training.batch_size, config.seed)
        return original(config, split)

    build_dataset.routes_fake_data = True
    train.build_dataset = restore.build_dataset = build_dataset   # the loop's and the restore's (sample / eval)


register_all()
