"""EDM teacher on CIFAR-10, the recipe of `openai/consistency_models_cifar10` configs/cifar10_k_ve.py (METHODS.md §2):
NCSN++-family U-Net (128 ch, (2,2,2), 4 blocks, attention at 16, dropout 0.13), batch 512, 400k iterations,
Adam lr 1e-3 with a 10M-image warm-up, EMA half-life 0.5M images, Heun with 18 points (35 NFE). FID 1.97 [EDM].

Variant ':cpu' keeps the method and shrinks the network and run to a CPU smoke test.
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("edm"), dropout=0.13)
    c.model.resample = "fir"  # NCSN++ FIR [1, 3, 3, 1] resampling: jcm configs/cifar10_k_ve.py fir=True (METHODS.md §2)
    c.training.batch_size = 512
    c.training.num_steps = 400_000
    c.training.ema_half_life_images = 500_000  # r = 0.5^(512/5e5) = 0.99929
    c.optim.name = "adam"
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 10_000_000 // 512  # 10M images
    c.sampling.solver = "heun"
    c.sampling.num_steps = 18
    c.eval.nfes = (35,)  # Heun, 18 points
    if variant == "cpu":
        presets.cifar_cpu_smoke(c)
        c.training.ema_half_life_images = 0.0
        c.optim.warmup_steps = 0
    elif variant:
        raise ValueError(f"configs/cifar_edm.py: unknown variant {variant!r}; use '' or 'cpu'")
    return c
