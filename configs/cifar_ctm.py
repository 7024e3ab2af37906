"""CTM on CIFAR-10 (unconditional) from the EDM teacher (configs/cifar_edm.py), the CTM+DSM stage of `sony/ctm`
(METHODS.md §13.1): N = 18 Karras grid, k ≤ 17 teacher Heun steps, s ≤ u on the grid, θ⁻ EMA 0.999, DSM with the
adaptive weight ‖∇_last L_CTM‖/‖∇_last L_DSM‖, lr 4e-4, batch 256. CTM measures d with LPIPS, whose VGG weights
cannot be fetched offline: l2 here (pseudo_huber with --config.ctm.distance). This is CTM's CTM+DSM stage. The GAN term is
`--config.ctm.gan_weight=1 --config.ctm.gan_features=teacher` (discriminator lr 2e-3 is set below; the teacher
U-Net's encoder stands in for CTM's StyleGAN-XL feature nets, which cannot be fetched offline); it is on from step 0
here, whereas CTM fine-tunes a finished CTM+DSM model with it at batch 528 — starting a run from another CTM run's
weights is not built yet. The iteration count is [unverified].
CIFAR-10 1.98 / 1.87 (1 / 2 steps, with GAN) [official code].

python -m consistency.main --config=configs/cifar_ctm.py --workdir=DIR --config.teacher.workdir=EDM_DIR
"""
from consistency import presets
from consistency.config import optim_override


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("ctm"), dropout=0.0)
    c.model.resample = "fir"               # the teacher's U-Net (configs/cifar_edm.py)
    c.teacher.workdir = "workdirs/cifar_edm"
    c.ctm.init = "teacher"
    c.ctm.num_scales = 18
    c.ctm.heun_steps = 17
    c.ctm.target_ema = 0.999
    c.ctm.distance = "l2"
    c.ctm.adaptive_dsm = True
    c.optim.update(dict(name="radam", lr=4e-4, warmup_steps=0))  # RAdam: the CM code CTM builds on
    c.optim_discriminator = optim_override(lr=2e-3)  # CTM's discriminator lr (used by the GAN stage only)
    c.training.batch_size = 256
    c.training.num_steps = 100_000         # [unverified]
    c.training.ema_decay = 0.999
    c.eval.nfes = (1, 2)
    if variant == "cpu":
        presets.cifar_cpu_smoke(c)
        c.teacher.workdir = "workdirs/cifar_edm_cpu"
        c.ctm.heun_steps = 3
    elif variant:
        raise ValueError(f"configs/cifar_ctm.py: unknown variant {variant!r}; use '' or 'cpu'")
    return c
