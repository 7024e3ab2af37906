"""Improved consistency training on sklearn digits: iCT's recipe (no EMA target, pseudo-Huber, 1/Δσ, lognormal pairs,
doubling N from 10 to 1280) at CPU scale."""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.digits(presets.new("ict"), "ict")
    presets.improved_consistency_training(c, s0=10, s1=1280)
    c.model.dropout = 0.1
    c.training.num_steps = 2000  # CPU budget of docs/results.md
    c.optim.lr = 1e-3
    c.eval.nfes = (1, 2, 4)
    if variant == "quick":
        presets.quick(c, 100)
    elif variant:
        raise ValueError(f"configs/digits_ict.py: unknown variant {variant!r}; use '' or 'quick'")
    return c
