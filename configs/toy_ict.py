"""iCT on a 2-D mixture (no EMA target, pseudo-Huber, 1/Δσ, lognormal pairs, doubling curriculum)."""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy(presets.new("ict"), "ict")
    presets.improved_consistency_training(c, s0=10, s1=1280)
    c.eval.nfes = (1, 2, 4)
    if variant == "quick":
        presets.quick(c, 200)
    elif variant:
        raise ValueError(f"configs/toy_ict.py: unknown variant {variant!r}; use '' or 'quick'")
    return c
