"""DMD2 (docs/methods.md §10.2) on a 2-D mixture (toy:8gaussians) with the EXACT mixture denoiser as teacher
(teacher.oracle='mixture'): G and the fake denoiser start from the MLP fitted to the oracle (presets.toy_distillation).

DMD2's recipe where it transfers: TTUR 5 (fake score + GAN head every step, generator every 5th), no regression, the
diffusion GAN with weights 3e-3 (generator) / 1e-2 (discriminator) and inputs noised on the 1000-point grid; the
classifier head is an MLP on the fake MLP's bottleneck (the toy's stand-in for DMD2's conv head on the U-Net
encoder). Scaled for a 2-D MLP on a CPU: lr 5e-4 for both (paper 2e-6), batch 256, 5000 steps (1000 generator
updates), generator EMA 0.99 per update (DMD2 keeps none).

python -m consistency.main --config=configs/toy_dmd2.py --workdir=workdirs/toy_dmd2
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy_distillation(presets.new("dmd2"), "dmd2")
    presets.dmd2_recipe(c)
    c.discriminator.name = "mlp"
    c.discriminator.features = ("bottleneck",)
    c.discriminator.channels = 128
    c.training.num_steps = 5000
    c.training.ckpt_every = c.training.sample_every = 2500
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 250))
