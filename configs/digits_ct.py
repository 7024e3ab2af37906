"""Consistency training on sklearn digits, from scratch, with CT's N(k)/μ(k) schedule (s0 = 2, s1 = 150, μ0 = 0.9).

--config.cm.posterior=batch|dataset (and --config.cm.posterior_k=K) switches to the notebook's better E[x0|x]
(seed eq. 22–25); --config.cm.target_schedule=fixed --config.cm.target_ema=0 removes the EMA target.
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.digits(presets.new("ct"), "ct")
    presets.consistency_training(c, s0=2, s1=150, mu0=0.9)
    c.cm.distance = "l2"
    c.training.num_steps = 2000  # CPU budget of docs/results.md
    c.optim.lr = 1e-3
    c.eval.nfes = (1, 2, 4)
    if variant == "quick":
        presets.quick(c, 100)
    elif variant:
        raise ValueError(f"configs/digits_ct.py: unknown variant {variant!r}; use '' or 'quick'")
    return c
