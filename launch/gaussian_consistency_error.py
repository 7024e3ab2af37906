"""How close does each consistency method get to the exact consistency function? (a closed-form study)

Data N(0.7, 0.3²) has the exact f*(x, σ) = μ + √((s² + σ_min²)/(s² + σ²))·(x − μ) (METHODS.md §15 O2). This trains
CD (exact Gaussian teacher), CT and iCT with a small MLP through the real train step and prints, per σ, the mean
|f_θ − f*| over x ∈ μ ± 2√(s² + σ²) (the typical inputs at that σ).

    python launch/gaussian_consistency_error.py --methods=cd,ct,ict --steps=3000
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

_METHODS = flags.DEFINE_list("methods", ["cd", "ct", "ict"], "Methods to train.")
_STEPS = flags.DEFINE_integer("steps", 3000, "Training steps per method.")
_SIGMAS = (0.3, 1.0, 3.0, 10.0, 80.0)
MU, S = 0.7, 0.3


def make_config(method: str, steps: int):
    from consistency import presets
    c = presets.toy(presets.new(method), method, name="gaussian1d")
    c.model.hidden, c.model.depth = 64, 2
    c.training.batch_size, c.training.num_steps, c.training.ema_decay = 256, steps, 0.99
    c.optim.lr = 2e-3
    if method == "cd":
        presets.consistency_distillation(c)
        c.teacher.oracle = "mixture"  # the exact N(0.7, 0.3²) denoiser
        c.cm.init_from_teacher = False
    elif method == "ct":
        presets.consistency_training(c)
    else:
        presets.improved_consistency_training(c)
    return c


def mean_abs_errors(config, params):
    from consistency import oracles
    from consistency.methods import common
    f = common.consistency_function(common.build_net(config, (1,)), config.diffusion.sigma_min,
                                    config.diffusion.sigma_data)
    out = {}
    for sigma in _SIGMAS:
        half = 2 * np.sqrt(S ** 2 + sigma ** 2)
        x = jnp.linspace(MU - half, MU + half, 64)[:, None]
        exact = oracles.gaussian_consistency_function(x, sigma, MU, S, config.diffusion.sigma_min)
        out[sigma] = float(jnp.mean(jnp.abs(f(params, x, jnp.full((64,), sigma)) - exact)))
    return out


def main(_):
    from consistency import train
    from consistency.data import make_dataset
    from consistency.methods import base, get_method
    train.prefer_fast_cpu_random()
    for name in _METHODS.value:
        config = make_config(name, _STEPS.value)
        ds = make_dataset(config.data, config.training.batch_size, config.seed)
        method = get_method(config, ds)
        state = base.init_state(method, jax.random.PRNGKey(0), ds.batch(0))
        step = jax.jit(base.full_step(method))
        for k in range(_STEPS.value):
            state, _ = step(state, ds.batch(k), jax.random.fold_in(jax.random.PRNGKey(0), k))
        errors = mean_abs_errors(config, state.ema["online"])
        print(json.dumps({"method": name, "steps": _STEPS.value,
                          "mean_abs_error_by_sigma": {str(k): round(v, 4) for k, v in errors.items()}}))


if __name__ == "__main__":
    app.run(main)
