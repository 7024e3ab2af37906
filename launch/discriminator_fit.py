"""Can the discriminator of a GAN method separate real data from the *initial* (frozen) generator? A diagnostic for
ADD / CTM-GAN runs whose hinge loss sits at the chance value 2: it fits only the method's 'discriminator' set, with
its own loss, against the generator as initialised, and prints the hinge loss and mean logits as it goes.

    python launch/discriminator_fit.py --config=configs/digits_add.py --steps=150 --lr=1e-3 \
        --config.discriminator.end_size=8 --config.add.augment=''

A hinge loss that falls well below 2 here but stays at 2 in training means the generator keeps up with the
discriminator (docs/distillation.md, "ADD on digits").
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/digits_add.py", "Config file of a GAN method.")
_STEPS = flags.DEFINE_integer("steps", 150, "Adam steps on the discriminator alone.")
_LR = flags.DEFINE_float("lr", 1e-3, "Discriminator learning rate.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")


def main(_):
    from consistency import methods
    from consistency.run import train
    from consistency.methods import base
    train.prefer_fast_cpu_random()
    config = _CONFIG.value
    config.training.batch_size = _BATCH.value
    dataset = train.build_dataset(config)
    method = methods.get_method(config, dataset)
    state = base.init_state(method, jax.random.PRNGKey(0), dataset.batch(0))
    trained = {t.name: t for t in method.trained}
    if "discriminator" not in trained:
        raise SystemExit(f"error: method {config.method!r} trains no 'discriminator' set")
    loss_fn = trained["discriminator"].loss
    optimizer = optax.adam(_LR.value)
    params = state.params["discriminator"]
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch, rng):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, batch, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    for k in range(_STEPS.value):
        batch = jax.tree.map(jnp.asarray, dataset.batch(k))
        params, opt_state, metrics = step(params, opt_state, batch, jax.random.PRNGKey(k))
        if k % 25 == 0 or k == _STEPS.value - 1:
            print(json.dumps({"step": k + 1, **{name: round(float(v), 4) for name, v in metrics.items()}}), flush=True)


if __name__ == "__main__":
    app.run(main)
