"""Consistency training on CIFAR-10, CM paper Table 3 and Appendix C: s0 = 2, s1 = 150, μ0 = 0.9 (N(k), μ(k) in the
official code's form), RAdam lr 4e-4, batch 512, 800k iterations, sampling EMA 0.9999, no dropout, from scratch, on the
CM paper's NCSN++ (openai/consistency_models_cifar10 configs/cifar10_ve_ct_adaptive.py: Fourier embedding, FIR
[1, 3, 3, 1], residual progressive input) as EDM implements it (config.model.name='ncsnpp', NVlabs/edm SongUNet).
The paper's metric is LPIPS (FID 8.70 / 5.83); l2 is the offline default (see configs/cifar_cd.py).
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("ct"), dropout=0.0, arch="ncsnpp")
    presets.consistency_training(c, s0=2, s1=150, mu0=0.9)
    c.cm.distance = "l2"
    c.training.batch_size = 512
    c.training.num_steps = 800_000
    c.training.ema_decay = 0.9999
    c.optim.name = "radam"
    c.optim.lr = 4e-4
    c.sampling.sigmas = (80.0, 0.821)
    c.eval.nfes = (1, 2)
    return presets.variants(c, variant, __file__, cpu=lambda c: presets.cifar_cpu_smoke(c))
