"""CT on a 2-D mixture with CT's N(k)/μ(k) schedule."""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy(presets.new("ct"), "ct")
    presets.consistency_training(c, s0=2, s1=150, mu0=0.9)
    c.eval.nfes = (1, 2, 4)
    if variant == "quick":
        presets.quick(c, 200)
    elif variant:
        raise ValueError(f"configs/toy_ct.py: unknown variant {variant!r}; use '' or 'quick'")
    return c
