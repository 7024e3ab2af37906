"""CTM (Kim et al. 2023; docs/methods.md §13.1) on sklearn digits from the digits EDM teacher (workdirs/digits_teacher): the
jump map starts as a copy of the teacher U-Net (the target-level embedding is new and starts at zero, so
G_θ(x, t, s) is the teacher's DDIM jump at initialisation).

CTM's recipe where it transfers: N = 18, k ≤ 17 teacher Heun steps, θ⁻ EMA 0.999, DSM with the adaptive weight, lr
4e-4 (CTM CIFAR-10); l2 in place of LPIPS (no VGG weights offline). Scaled for a CPU: batch 128, 400 steps, the
heun_steps cap 4 (every teacher step is two U-Net evaluations; one k per batch with P(k) ∝ k as CTM, so a step
holds 2k teacher passes, 6 on average, besides the jump-map passes), sampling EMA 0.99.

python -m consistency.main --config=configs/digits_ctm.py --workdir=workdirs/digits_ctm

The second stage (CTM's GAN fine-tuning, docs/methods.md §13.1) starts from that run (training.init_from): the hinge GAN
on the in-project classifier's conv maps (the stand-in for CTM's StyleGAN-XL feature nets), nonlinear patch heads,
DiffAugment on the discriminator inputs, discriminator lr 2e-3 (CTM), the generator's GAN weight adaptive:

python -m consistency.main --config=configs/digits_ctm.py:gan --workdir=workdirs/digits_ctm_gan
"""
from consistency import presets
from consistency.config import optim_override


def get_config(variant: str = ""):
    c = presets.digits_distillation(presets.new("ctm"), "ctm")
    c.ctm.num_scales = 18
    c.ctm.heun_steps = 4
    c.ctm.target_ema = 0.999
    c.optim.lr = 4e-4
    c.training.num_steps = c.training.ckpt_every = c.training.sample_every = 400
    c.eval.nfes = (1, 2, 4, 8)
    return presets.variants(c, variant, __file__,
                            gan=lambda c: gan_stage(c, init_from="workdirs/digits_ctm"),
                            quick=lambda c: presets.quick(c, 100))


def gan_stage(c, init_from: str):
    """CTM's GAN fine-tuning stage on digits, warm-started from a finished CTM+DSM run."""
    c.training.init_from = init_from
    c.training.num_steps = c.training.ckpt_every = c.training.sample_every = 300
    c.ctm.gan_weight = 1.0
    c.ctm.gan_features = "classifier"
    c.ctm.gan_augment = "color,translation,cutout"
    c.discriminator.update(dict(name="multiscale", features=(), channels=64, end_size=2, reduce="concat"))
    c.optim_discriminator = optim_override(lr=2e-3)   # CTM's discriminator lr (docs/methods.md §13.1)
    return c
