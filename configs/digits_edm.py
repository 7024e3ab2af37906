"""EDM teacher on sklearn digits (8×8): the README quick start and the teacher of configs/digits_{cd,ecm}.py.

python -m consistency.main --config=configs/digits_edm.py --workdir=workdirs/digits_edm

Variants, joined with '_' (e.g. ``:quick_conditional``):
  quick        the README smoke run: 300 steps (workdirs/digits_teacher, the teacher of the digits distillation
               configs).
  positional   the noise level enters through sinusoidal (DDPM) features instead of Fourier features of scale 16:
               the teacher of the sCM configs (configs/digits_sc{d,t}.py). A Fourier-16 embedding makes dF/dt — which
               sCM's tangent differentiates — oscillate on a scale of Δt ≈ 0.003 near t = 0 (docs/distillation.md,
               "sCM on digits"), as sCM §4.1 warns.
  conditional  class-conditional (10 digits) with label dropout 0.1 for classifier-free guidance: the teacher of
               PaGoDA's CFG run (configs/digits_pagoda.py:cfg).
"""
from consistency import presets

VARIANTS = ("quick", "positional", "conditional")


def get_config(variant: str = ""):
    c = presets.digits(presets.new("edm"), "edm")
    c.training.num_steps = 3000  # recognisable 35-NFE digits from ≈2000 steps (docs/results.md)
    c.training.ema_decay = 0.999
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 200
    c.sampling.solver = "heun"
    c.sampling.num_steps = 18
    c.eval.nfes = (35,)  # Heun on 18 points: 35 NFE, as EDM on CIFAR-10
    words = [w for w in variant.split("_") if w]
    unknown = [w for w in words if w not in VARIANTS]
    if unknown:
        raise ValueError(f"configs/digits_edm.py: unknown variant {variant!r}; join any of {VARIANTS} with '_'")
    if "positional" in words:
        c.model.embedding = "positional"
    if "conditional" in words:
        c.data.conditional = True
        c.model.num_classes = 10
        c.training.label_dropout = 0.1
    if "quick" in words:
        presets.quick(c, 300)
    return c
