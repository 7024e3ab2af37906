"""DMD (docs/methods.md §10.1) on sklearn digits from the digits EDM teacher (workdirs/digits_teacher): G and the fake
denoiser are copies of the teacher U-Net; λ_reg = 0.25 regression onto the teacher's 35-NFE Heun ODE pairs with the
LPIPS-like feature distance of the in-project digits classifier (DMD uses LPIPS, which cannot be fetched offline).

python launch/make_ode_pairs.py --teacher=workdirs/digits_teacher --num=2000 --out=workdirs/digits_teacher/ode_pairs.npz
python -m consistency.main --config=configs/digits_dmd.py --workdir=workdirs/digits_dmd
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.digits_distillation(presets.new("dmd"), "dmd")
    c.dmd.ttur = 1
    c.dmd.regression_weight = 0.25
    c.dmd.regression_distance = "feature"
    c.dmd.pairs = "workdirs/digits_teacher/ode_pairs.npz"
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 100))
