"""DMD2 on CIFAR-10 (unconditional) from the EDM teacher (configs/cifar_edm.py), with the optimiser recipe of
`tianweiy/DMD2`'s EDM (ImageNet-64) scripts, the only one docs/methods.md §10.2 records: AdamW (0.9, 0.999), weight decay
0.01, lr 2e-6 for both networks, 500 warm-up updates, grad-norm clip 10, batch 280 (40 × 7 GPUs), TTUR 5 (fake score +
GAN head every step, generator every 5th), GAN weights 3e-3 (generator) / 1e-2 (guidance), diffusion GAN on the fake
U-Net's encoder output (enc_8), no EMA, generator a copy of the teacher. The iteration count is [unverified]
(DMD2 reports its best checkpoint). CIFAR-10 c: 2.13 [unofficial code, FastGen].
The network is EDM's DDPM++ (config.model.name='ddpmpp', NVlabs/edm train.py --arch=ddpmpp: 128 channels, (2, 2, 2), 4 blocks,
attention at 16, augment_dim 9; 55.7M parameters), the architecture of the public teacher `edm-cifar10-32x32-uncond-vp.pkl`
(EDM preconditioning), which `python launch/import_edm.py --pkl=edm-cifar10-32x32-uncond-vp.pkl --out=EDM_DIR` turns into a
teacher workdir (or train one with configs/cifar_edm.py).
DMD2 initialises the generator and the fake score from the teacher (dmd2.init).

python -m consistency.main --config=configs/cifar_dmd2.py --workdir=DIR --config.teacher.workdir=EDM_DIR
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("dmd2"), dropout=0.0, arch="ddpmpp")   # the teacher's DDPM++
    c.teacher.workdir = "workdirs/cifar_edm"
    c.dmd2.init = "teacher"
    c.dmd2.ttur = 5
    c.dmd2.gan_generator_weight = 3e-3
    c.dmd2.gan_discriminator_weight = 1e-2
    c.dmd2.gan_max_timestep = 1000
    c.discriminator.name = "dmd2"
    c.discriminator.features = ()          # → 'enc_8' (256 channels at 8×8)
    c.optim.update(dict(name="adamw", lr=2e-6, b1=0.9, b2=0.999, weight_decay=0.01, warmup_steps=500, grad_clip=10.0))
    c.training.batch_size = 280
    c.training.num_steps = 400_000         # [unverified]
    c.training.ema_decay = 0.0             # DMD2: no EMA (the "EMA" equals the generator)
    c.eval.nfes = (1,)

    def cpu(c):
        presets.cifar_cpu_smoke(c)
        c.teacher.workdir = "workdirs/cifar_edm_cpu"
        c.optim.warmup_steps = 0

    return presets.variants(c, variant, __file__, cpu=cpu)
