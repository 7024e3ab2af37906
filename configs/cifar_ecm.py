"""ECT (easy consistency tuning) on CIFAR-10, `locuslab/ect` (METHODS.md §7): initialised from the EDM teacher, batch 128,
RAdam lr 1e-4, dropout 0.2, 200k iterations (25.6M images), stage doubles every 25k iterations (q = 2, k = 8, b = 1),
ln t ~ N(−1.1, 2.0²), un-squared ℓ2 metric, EMA 0.9999. FID 3.60 / 2.11 at 400k iterations [official code].
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("ecm"), dropout=0.2)
    # FIR to match the NCSN++ teacher it starts from (configs/cifar_edm.py); resampling has no params, so a mismatch
    # would load silently and compute another function. (locuslab/ect starts from EDM's DDPM++, box filter.)
    c.model.resample = "fir"
    c.teacher.workdir = "workdirs/cifar_edm"
    c.ecm.steps_per_stage = 25_000
    c.ecm.huber_c = 0.0
    c.training.batch_size = 128
    c.training.num_steps = 200_000
    c.training.ema_decay = 0.9999
    c.optim.name = "radam"
    c.optim.lr = 1e-4
    c.data.random_flip = False  # ECT: no augmentation
    c.sampling.sigmas = (80.0, 0.821)
    c.eval.nfes = (1, 2)
    if variant == "cpu":
        presets.cifar_cpu_smoke(c)
        c.teacher.workdir = "workdirs/cifar_edm_cpu"
        c.ecm.steps_per_stage = 5
    elif variant:
        raise ValueError(f"configs/cifar_ecm.py: unknown variant {variant!r}; use '' or 'cpu'")
    return c
