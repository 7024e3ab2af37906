"""EDM teacher on sklearn digits (8×8): the README quick start and the teacher of configs/digits_{cd,ecm}.py.

python -m consistency.main --config=configs/digits_edm.py --workdir=workdirs/digits_edm
Variants: ":quick" (the README smoke run: 300 steps).
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.digits(presets.new("edm"), "edm")
    c.training.num_steps = 3000  # recognisable 35-NFE digits from ≈2000 steps (docs/results.md)
    c.training.ema_decay = 0.999
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 200
    c.sampling.solver = "heun"
    c.sampling.num_steps = 18
    c.eval.nfes = (35,)  # Heun on 18 points: 35 NFE, as EDM on CIFAR-10
    if variant == "quick":
        presets.quick(c, 300)
    elif variant:
        raise ValueError(f"configs/digits_edm.py: unknown variant {variant!r}; use '' or 'quick'")
    return c
