"""SiD (docs/methods.md §12) on sklearn digits from the digits EDM teacher (configs/digits_edm.py, here
workdirs/digits_teacher): G and the fake denoiser are copies of the teacher U-Net.

SiD's recipe where it transfers: α = 1.2, σ_init = 2.5, Adam β₁ = 0 for both networks, alternating 1:1 updates on
freshly generated batches; scaled for the 0.6M-parameter digits U-Net on a CPU: lr 1e-4 (paper 1e-5 at batch 256),
batch 128, 2000 steps, generator EMA 0.99.

python -m consistency.main --config=configs/digits_sid.py --workdir=workdirs/digits_sid
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.digits_distillation(presets.new("sid"), "sid")
    presets.sid_recipe(c)
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 100))
