"""DMD (docs/methods.md §10.1) on a 2-D mixture (toy:8gaussians) with the EXACT mixture denoiser as teacher
(teacher.oracle='mixture'): G and the fake denoiser start from the MLP fitted to the oracle (presets.toy_distillation).

DMD's recipe: the distribution-matching gradient with the per-sample normaliser, fake score trained 1:1 on sg G(z),
and λ_reg = 0.25 regression onto teacher ODE pairs (l2 here: a 2-D point has no LPIPS). The pairs are made once:

python launch/make_ode_pairs.py --oracle=mixture --data=toy:8gaussians --num=4096 --num_steps=40 \
    --out=workdirs/ode_pairs_8gaussians.npz
python -m consistency.main --config=configs/toy_dmd.py --workdir=workdirs/toy_dmd

--config.dmd.regression_weight=0 runs DMD without the regression loss (allowed to drop modes, docs/methods.md §10.1).
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy_distillation(presets.new("dmd"), "dmd")
    c.dmd.ttur = 1
    c.dmd.regression_weight = 0.25
    c.dmd.regression_distance = "l2"
    c.dmd.pairs = "workdirs/ode_pairs_8gaussians.npz"
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 200))
