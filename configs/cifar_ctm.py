"""CTM on CIFAR-10 (unconditional) from the EDM teacher (configs/cifar_edm.py), the CTM+DSM stage of `sony/ctm`
(docs/methods.md §13.1): N = 18 Karras grid, k ≤ 17 teacher Heun steps, s ≤ u on the grid, θ⁻ EMA 0.999, DSM with the
adaptive weight ‖∇_last L_CTM‖/‖∇_last L_DSM‖, lr 4e-4, batch 256. CTM measures d with LPIPS, whose VGG weights
cannot be fetched offline: l2 here (pseudo_huber with --config.ctm.distance). The iteration count is [unverified].

The ``:gan`` variant is CTM's second stage: GAN fine-tuning of the finished CTM+DSM run (training.init_from copies its
jump map, EMA and θ⁻) at batch 528 with the hinge GAN, discriminator lr 2e-3 and the adaptive GAN weight clipped to
[0.01, 10] [official code]; the teacher U-Net's encoder stands in for CTM's StyleGAN-XL feature nets (EfficientNet /
DeiT weights cannot be fetched offline), and the discriminator inputs are DiffAugmented ('color,translation,cutout',
Projected GAN's policy, whose discriminator CTM uses [unverified for CTM's CIFAR run]).
CIFAR-10 1.98 / 1.87 (1 / 2 steps, with GAN) [official code].
The network is EDM's DDPM++ (config.model.name='ddpmpp', NVlabs/edm train.py --arch=ddpmpp: 128 channels, (2, 2, 2), 4 blocks,
attention at 16, augment_dim 9; 55.7M parameters), the architecture of the public teacher `edm-cifar10-32x32-uncond-vp.pkl`
(EDM preconditioning), which `python launch/import_edm.py --pkl=edm-cifar10-32x32-uncond-vp.pkl --out=EDM_DIR` turns into a
teacher workdir (or train one with configs/cifar_edm.py).
CTM initialises the student from the teacher (ctm.init; sony/ctm loads the EDM pickle).

python -m consistency.main --config=configs/cifar_ctm.py --workdir=workdirs/cifar_ctm --config.teacher.workdir=EDM_DIR
python -m consistency.main --config=configs/cifar_ctm.py:gan --workdir=workdirs/cifar_ctm_gan --config.teacher.workdir=EDM_DIR
"""
from consistency import presets
from consistency.config import optim_override


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("ctm"), dropout=0.0, arch="ddpmpp")   # the teacher's DDPM++
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

    def gan(c):
        c.training.init_from = "workdirs/cifar_ctm"
        c.training.batch_size = 528            # CTM's GAN fine-tuning batch [official code]
        c.ctm.gan_weight = 1.0
        c.ctm.gan_features = "teacher"
        c.ctm.gan_augment = "color,translation,cutout"
        c.discriminator.update(dict(name="multiscale", features=(), channels=64, end_size=8, reduce="concat"))

    def cpu(c):
        presets.cifar_cpu_smoke(c)
        c.teacher.workdir = "workdirs/cifar_edm_cpu"
        c.ctm.heun_steps = 3

    return presets.variants(c, variant, __file__, gan=gan, cpu=cpu)
