"""ADD (docs/methods.md §11) on sklearn digits from the digits EDM teacher (workdirs/digits_teacher): the student is a copy
of the teacher U-Net trained on forward-diffused real digits at {999, 749, 499, 249}; the discriminator is
Projected-GAN patch heads on the frozen conv maps of the in-project digits classifier (consistency/metrics/features.py, the
stand-in for ADD's DINOv2 ViT-S), hinge loss with R1.

What makes the GAN work here (docs/distillation.md, "ADD on digits"): DiffAugment ('color,translation,cutout') on the
discriminator's real and fake inputs, as Projected GAN / StyleGAN-T do before their frozen feature nets — without it
the student learns adversarial patterns of the fixed classifier features and collapses to one image — and non-linear
patch heads (end_size 2: one or two conv-GroupNorm-LeakyReLU blocks before the logit conv, where end_size 8 leaves a
linear head on 8×8 maps) — and a two-time-scale update, 5 discriminator updates per student update (add.ttur = 5, as
DMD2's TTUR): with 1:1 the discriminator never leaves the chance hinge value 2 and the 4-step FD drifts from 77 (300
steps) to 94 (1000 steps); with 5:1 it separates real from fake (hinge 1.93) and 4 steps reach FD 59.0. Scaled for a
CPU: batch 128, discriminator lr 1e-3 and generator lr 1e-4, Adam β₁ 0.5 (the usual GAN setting; ADD's own are not
published), R1 γ 0.01 (ADD's 1e-5 is for 512² DINOv2 inputs), 1000 steps (200 student updates).

python -m consistency.main --config=configs/digits_add.py --workdir=workdirs/digits_add
"""
from consistency import presets
from consistency.config import optim_override


def get_config(variant: str = ""):
    c = presets.digits_distillation(presets.new("add"), "add")
    c.add.features = "classifier"
    c.discriminator.name = "multiscale"
    c.discriminator.features = ()           # every conv map of the classifier
    c.discriminator.channels = 64
    c.discriminator.reduce = "concat"
    c.discriminator.end_size = 2
    c.add.augment = "color,translation,cutout"
    c.add.r1_weight = 0.01
    c.optim.b1 = 0.5
    c.optim_discriminator = optim_override(lr=1e-3)
    c.add.ttur = 5
    c.training.num_steps = 1000
    c.eval.nfes = (1, 4)
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 100))
