"""SiD (docs/methods.md §12) on a 2-D mixture (toy:8gaussians) with the EXACT mixture denoiser as teacher
(teacher.oracle='mixture'): G and the fake denoiser start from the MLP fitted to the oracle (presets.toy_distillation).

SiD's recipe where it transfers: α = 1.2, σ_init = 2.5, Adam β₁ = 0 for both networks, alternating 1:1 updates, each
on a freshly generated batch; scaled for a 2-D MLP on a CPU: lr 1e-4 (paper 1e-5), batch 256, 2000 steps, EMA 0.99.

python -m consistency.main --config=configs/toy_sid.py --workdir=workdirs/toy_sid
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy_distillation(presets.new("sid"), "sid")
    presets.sid_recipe(c)
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 200))
