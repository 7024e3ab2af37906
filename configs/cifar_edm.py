"""EDM teacher on CIFAR-10 (NVlabs/edm train.py, CIFAR-10 defaults; `openai/consistency_models_cifar10`
configs/cifar10_k_{vp,ve}.py train the same recipe, docs/methods.md §2): EDM's DDPM++ (config.model.name='ddpmpp',
train.py --arch=ddpmpp: 128 channels, (2, 2, 2), 4 blocks, attention at 16, dropout 0.13, augment_dim 9; 55.7M
parameters, the network of the public `edm-cifar10-32x32-uncond-vp.pkl`), batch 512, 400k iterations, Adam lr 1e-3
with a 10M-image warm-up, EMA half-life 0.5M images, Heun with 18 points (35 NFE). FID 1.97 [EDM].
Instead of training it, `python launch/import_edm.py --pkl=edm-cifar10-32x32-uncond-vp.pkl --out=workdirs/cifar_edm`
imports the published network as the teacher workdir the cifar_* distillation recipes read.

Variant ':ve' is EDM's NCSN++ (--arch=ncsnpp, `edm-cifar10-32x32-uncond-ve.pkl`; the CM paper's CIFAR-10 teacher
architecture), the teacher of configs/cifar_cd.py (workdirs/cifar_edm_ve). Variant ':cpu' keeps the method and shrinks
the network and run to a CPU smoke test.
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("edm"), dropout=0.13, arch="ncsnpp" if variant == "ve" else "ddpmpp")
    c.training.batch_size = 512
    c.training.num_steps = 400_000
    c.training.ema_half_life_images = 500_000  # r = 0.5^(512/5e5) = 0.99929
    c.optim.name = "adam"
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 10_000_000 // 512  # 10M images
    c.sampling.solver = "heun"
    c.sampling.num_steps = 18
    c.eval.nfes = (35,)  # Heun, 18 points

    def cpu(c):
        presets.cifar_cpu_smoke(c)
        c.training.ema_half_life_images = 0.0
        c.optim.warmup_steps = 0

    return presets.variants(c, variant, __file__, ve=None, cpu=cpu)
