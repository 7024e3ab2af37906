"""ECT (easy consistency tuning) on CIFAR-10, `locuslab/ect` (docs/methods.md §7): initialised from the EDM teacher, batch 128,
RAdam lr 1e-4, dropout 0.2, 200k iterations (25.6M images), stage doubles every 25k iterations (q = 2, k = 8, b = 1),
ln t ~ N(−1.1, 2.0²), un-squared ℓ2 metric, EMA 0.9999. FID 3.60 / 2.11 at 400k iterations [official code].
The network is EDM's DDPM++ (config.model.name='ddpmpp', NVlabs/edm train.py --arch=ddpmpp: 128 channels, (2, 2, 2), 4 blocks,
attention at 16, augment_dim 9; 55.7M parameters), the architecture of the public teacher `edm-cifar10-32x32-uncond-vp.pkl`
(EDM preconditioning), which `python launch/import_edm.py --pkl=edm-cifar10-32x32-uncond-vp.pkl --out=EDM_DIR` turns into a
teacher workdir (or train one with configs/cifar_edm.py).
ECT initialises the student from the teacher's weights (locuslab/ect `--transfer` of that pickle: ecm.init from teacher.workdir).
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("ecm"), dropout=0.2, arch="ddpmpp")   # locuslab/ect starts from DDPM++
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

    def cpu(c):
        presets.cifar_cpu_smoke(c)
        c.teacher.workdir = "workdirs/cifar_edm_cpu"
        c.ecm.steps_per_stage = 5

    return presets.variants(c, variant, __file__, cpu=cpu)
