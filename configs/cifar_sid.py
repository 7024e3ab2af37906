"""SiD on CIFAR-10 (unconditional), the recipe of `mingyuanzhou/SiD` (docs/methods.md §12): G and the fake denoiser are
copies of the EDM teacher (configs/cifar_edm.py), x_g = G(2.5 z, 2.5), α = 1.2, t_max = 800, Adam β₁ = 0 / β₂ = 0.999
/ eps 1e-8 for both networks, lr 1e-5, batch 256, alternating 1:1 (one fake and one generator update per step, each on
a fresh batch), EMA half-life 0.5M images, 500M images seen ≈ 1.95M generator iterations. FID 1.923 [official code].
The network is EDM's DDPM++ (config.model.name='ddpmpp', NVlabs/edm train.py --arch=ddpmpp: 128 channels, (2, 2, 2), 4 blocks,
attention at 16, augment_dim 9; 55.7M parameters), the architecture of the public teacher `edm-cifar10-32x32-uncond-vp.pkl`
(EDM preconditioning), which `python launch/import_edm.py --pkl=edm-cifar10-32x32-uncond-vp.pkl --out=EDM_DIR` turns into a
teacher workdir (or train one with configs/cifar_edm.py).
SiD initialises the generator and the fake denoiser from the teacher (sid.init).

python -m consistency.main --config=configs/cifar_sid.py --workdir=DIR --config.teacher.workdir=EDM_DIR
"""
from consistency import presets
from consistency.config import optim_override


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("sid"), dropout=0.0, arch="ddpmpp")   # the teacher's DDPM++
    c.teacher.workdir = "workdirs/cifar_edm"
    c.sid.init = "teacher"
    c.sid.alpha = 1.2
    c.sid.sigma_init = 2.5
    c.sid.t_max_fraction = 0.8
    c.sid.ttur = 1
    c.optim.update(dict(name="adam", lr=1e-5, b1=0.0, b2=0.999, eps=1e-8))
    c.optim_fake = optim_override(b1=0.0)
    c.training.batch_size = 256
    c.training.num_steps = 500_000_000 // 256  # 500M images
    c.training.ema_half_life_images = 500_000
    c.eval.nfes = (1,)

    def cpu(c):
        presets.cifar_cpu_smoke(c)
        c.teacher.workdir = "workdirs/cifar_edm_cpu"
        c.training.ema_half_life_images = 0.0

    return presets.variants(c, variant, __file__, cpu=cpu)
