"""Improved consistency training on CIFAR-10 (Song & Dhariwal 2023; docs/methods.md §6): θ⁻ = sg θ, pseudo-Huber with
c = 0.00054·√3072 = 0.0299, λ = 1/Δσ, lognormal pairs (−1.1, 2.0), s0 = 10 → s1 = 1280 doubling, dropout 0.3,
Fourier scale 0.02, batch 1024, 400k iterations, RAdam lr 1e-4, sampling EMA 0.99993 (the last four are recalled in
docs/methods.md §6 as [unverified]). FID 2.83 / 2.46. The network is the CM paper's NCSN++ (iCT keeps it, changing the
Fourier scale and dropout) as EDM implements it (config.model.name='ncsnpp', NVlabs/edm SongUNet).
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("ict"), dropout=0.3, fourier_scale=0.02, arch="ncsnpp")
    presets.improved_consistency_training(c, s0=10, s1=1280)
    c.training.batch_size = 1024
    c.training.num_steps = 400_000
    c.training.ema_decay = 0.99993
    c.optim.name = "radam"
    c.optim.lr = 1e-4
    c.sampling.sigmas = (80.0, 0.821)
    c.eval.nfes = (1, 2)
    return presets.variants(c, variant, __file__, cpu=lambda c: presets.cifar_cpu_smoke(c))
