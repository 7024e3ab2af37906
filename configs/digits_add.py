"""ADD (METHODS.md §11) on sklearn digits from the digits EDM teacher (workdirs/digits_teacher): the student is a copy
of the teacher U-Net trained on forward-diffused real digits at {999, 749, 499, 249}; the discriminator is
Projected-GAN patch heads on the frozen conv maps of the in-project digits classifier (consistency/features.py, the
stand-in for ADD's DINOv2 ViT-S), hinge loss with R1.

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
    c.eval.nfes = (1, 4)
    c.optim_discriminator = optim_override()   # None = inherit config.optim; --config.optim_discriminator.lr=… works
    if variant == "quick":
        presets.quick(c, 100)
    elif variant:
        raise ValueError(f"configs/digits_add.py: unknown variant {variant!r}; use '' or 'quick'")
    return c
