"""DMD2 (docs/methods.md §10.2) on sklearn digits from the digits EDM teacher (workdirs/digits_teacher): G and the fake
denoiser are copies of the teacher U-Net; the diffusion-GAN head is DMD2's classifier on the fake U-Net's encoder
output (enc_4: 4×4×64 for the digits U-Net) and trains inside the fake set.

DMD2's recipe where it transfers: TTUR 5, GAN weights 3e-3 / 1e-2, DM index U[20, 980], fake index U[0, 1000),
AdamW (0.9, 0.999) with weight decay 0.01, grad clip 10; scaled for digits on a CPU: lr 1e-4 (paper 2e-6), batch 128,
4000 steps (800 generator updates), generator EMA 0.99 (DMD2 keeps none).

python -m consistency.main --config=configs/digits_dmd2.py --workdir=workdirs/digits_dmd2
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.digits_distillation(presets.new("dmd2"), "dmd2")
    presets.dmd2_recipe(c)
    c.discriminator.name = "dmd2"
    c.discriminator.features = ()           # → 'enc_<coarsest>', the encoder output DMD2 taps
    c.optim.name = "adamw"
    c.optim.weight_decay = 0.01
    c.optim.grad_clip = 10.0
    c.training.num_steps = 4000
    c.training.ckpt_every = c.training.sample_every = 2000
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 100))
