"""Optimizers from ``config.optim``: Adam, RAdam or AdamW, each wrapped in the same warm-up, schedule and clipping.

The wrappers are applied to *every* choice (docs/methods.md §18 item 8: jcm's RAdam path silently dropped warm-up and
clipping, so its learning rate was constant and its gradients unclipped).

``config.optim`` fields: name ('adam' | 'radam' | 'adamw'), lr, warmup_steps (linear ramp from 0), schedule
('constant' | 'cosine' decay to 0 over the steps after warm-up), grad_clip (global-norm clip; 0 → off), b1, b2,
eps, weight_decay (AdamW only).
"""
from __future__ import annotations

import ml_collections
import optax

from consistency.core.errors import ConfigError

OPTIMIZERS = ("adam", "radam", "adamw")
SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(optim_config, num_steps: int) -> optax.Schedule:
    """lr(k): linear warm-up 0 → lr over ``warmup_steps`` (EDM's lr ramp-up, Karras 2022), then constant or
    cosine decay lr·½(1 + cos(π (k − W)/(K − W))) to 0 at k = K = num_steps (Loshchilov & Hutter 2017)."""
    o = optim_config
    lr, warmup = float(o.lr), int(o.warmup_steps)
    if warmup < 0:
        raise ConfigError(f"config.optim.warmup_steps: must be >= 0, got {warmup}")
    if o.schedule == "constant":
        after = optax.constant_schedule(lr)
    elif o.schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, decay_steps=max(int(num_steps) - warmup, 1))
    else:
        raise ConfigError(f"config.optim.schedule: must be one of {', '.join(SCHEDULES)}, got {o.schedule!r}")
    if warmup == 0:
        return after
    ramp = optax.linear_schedule(0.0, lr, transition_steps=warmup)
    return optax.join_schedules([ramp, after], boundaries=[warmup])


def _base_optimizer(o, lr: optax.Schedule) -> optax.GradientTransformation:
    if o.name == "adam":
        return optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
    if o.name == "radam":
        return optax.radam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
    if o.name == "adamw":
        return optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
    raise ConfigError(f"config.optim.name: must be one of {', '.join(OPTIMIZERS)}, got {o.name!r}")


def make_optimizer(optim_config, num_steps: int) -> optax.GradientTransformation:
    """clip_by_global_norm(grad_clip) → {adam | radam | adamw} with the warm-up/decay schedule, for every choice."""
    o = optim_config
    if o.weight_decay and o.name != "adamw":
        raise ConfigError(f"config.optim.weight_decay: only 'adamw' uses weight decay, but optim.name is {o.name!r}; "
                          "set optim.name='adamw' or weight_decay=0")
    if o.grad_clip < 0:
        raise ConfigError(f"config.optim.grad_clip: must be >= 0 (0 → off), got {o.grad_clip}")
    base = _base_optimizer(o, learning_rate_schedule(o, num_steps))
    if o.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(o.grad_clip), base)
    return base


def optim_config_for(config, name: str) -> ml_collections.ConfigDict:
    """``config.optim`` with the set fields of an optional ``config.optim_<name>`` block on top (e.g. DMD's fake score:
    ``config.optim_fake = config_lib.optim_override(lr=2e-5)``; a ``None`` field inherits ``config.optim``)."""
    merged = ml_collections.ConfigDict(config.optim.to_dict())
    override = config.get(f"optim_{name}")
    if override:
        for key, value in override.items():
            if key not in merged:
                raise ConfigError(f"config.optim_{name}.{key}: not an optimizer field; "
                                  f"choose from {', '.join(sorted(merged.keys()))}")
            if value is not None:
                merged[key] = value
    return merged


def make_optimizer_for(config, name: str, num_updates: int | None = None) -> optax.GradientTransformation:
    """The optimizer of parameter set ``name`` (``config.optim`` overridden by ``config.optim_<name>``), its
    schedule counted over ``num_updates`` updates of that set (default ``training.num_steps``)."""
    total = config.training.num_steps if num_updates is None else num_updates
    return make_optimizer(optim_config_for(config, name), total)
