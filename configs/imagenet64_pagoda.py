"""PaGoDA on class-conditional ImageNet (Kim et al. 2024; docs/methods.md §9; `sony/pagoda`): a one-step generator from
the 64×64 EDM teacher's inversion (Heun, 40 steps, images and their mirror images), grown 64 → 128 → 256 → 512.
The official stage table (docs/methods.md §9 [official code]):

| variant  | output | batch | discriminator weight |
|----------|--------|-------|----------------------|
| ''       | 64     | 96    | 0.2, adaptive        |
| stage2   | 128    | 256   | 1                    |
| stage3   | 256    | 360   | 1                    |
| stage4   | 512    | 512   | 1                    |

RAdam, generator lr 8e-6, discriminator lr 2e-3, EMA 0.999, EDM's ADM (config.model.name='adm', the network of
`edm-imagenet-64x64-cond-adm.pkl`; launch/import_edm.py makes it the teacher workdir; G starts from the teacher),
G:D alternating 1:1, feature reconstruction loss and a projected discriminator on frozen features. PaGoDA's LPIPS /
EfficientNet / DeiT features cannot be downloaded; the config names the teacher-encoder features, the one frozen
network that exists for ImageNet here, at stage 1 (its maps exist at 64×64 only), and the reconstruction distance is
pseudo-Huber. The growing stages name pagoda.features='classifier', which exists offline for digits and MNIST only:
on ImageNet they stop at build time with that one-line error until a frozen feature network at the stage's
resolution is supplied. fp16 and PaGoDA's CFG conditioning on w (nb (56)–(58)) are not built.

The images come from TFDS 'imagenet2012' (manual download into <data_dir>/downloads/manual; nothing is downloaded
here) decoded at data.resolution, so that the 64×64 teacher, its inversion and every stage read the same rows:

python -m consistency.main --config=configs/imagenet64_pagoda.py --workdir=W1 --config.teacher.workdir=EDM_IN64
python launch/invert.py --teacher=EDM_IN64 --flip --out=EDM_IN64/inversion
python -m consistency.main --config=configs/imagenet64_pagoda.py:stage2 --workdir=W2 --config.training.init_from=W1

Offline, use configs/digits_pagoda.py (8 → 16 → 32) or configs/toy_pagoda.py.
"""
from consistency import presets
from consistency.config import optim_override

STAGES = {"": (1, 64, 96, 0.2, True), "stage2": (2, 128, 256, 1.0, False), "stage3": (3, 256, 360, 1.0, False),
          "stage4": (4, 512, 512, 1.0, False)}


def get_config(variant: str = ""):
    c = presets.new("pagoda")
    cpu = variant == "cpu"
    if variant not in STAGES and not cpu:
        raise ValueError(f"configs/imagenet64_pagoda.py: unknown variant {variant!r}; use '', 'stage2', 'stage3', "
                         "'stage4' or 'cpu'")
    stage, resolution, batch, weight, adaptive = STAGES["" if cpu else variant]
    c.data.update(dict(name="imagenet2012", resolution=resolution, random_flip=True, conditional=True,
                       latents="workdirs/imagenet64_edm/inversion"))
    c.model.update(dict(name="adm", channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                        attn_resolutions=(32, 16, 8), dropout=0.0, num_classes=1000))
    c.teacher.workdir = "workdirs/imagenet64_edm"
    c.pagoda.update(dict(stage=stage, init="teacher", distance="pseudo_huber",
                         features="teacher" if stage == 1 else "classifier", discriminator_weight=weight,
                         adaptive=adaptive, alternate=True, grow_channels=128, grow_res_blocks=2))
    c.discriminator.update(dict(name="multiscale", features=(), channels=256, end_size=4))
    c.optim.update(dict(name="radam", lr=8e-6, warmup_steps=0))
    c.optim_discriminator = optim_override(lr=2e-3)
    c.training.batch_size = batch
    c.training.ema_decay = 0.999
    c.training.num_steps = 200_000   # [unverified]: docs/methods.md §9 gives no iteration count
    if stage > 1:
        c.training.init_from = {2: "W1", 3: "W2", 4: "W3"}[stage]   # the previous stage's workdir: set it
        c.training.init_sets = ("generator",)
    c.eval.nfes = (1,)
    if cpu:
        presets.cifar_cpu_smoke(c)
        c.data.resolution = 64
        c.teacher.workdir = "workdirs/imagenet64_edm_cpu"
        c.data.latents = "workdirs/imagenet64_edm_cpu/inversion"
    return c
