"""Consistency distillation on CIFAR-10, CM paper (Song et al. 2023) Table 3 and `openai/consistency_models_cifar10`:
N = 18, Heun teacher (the EDM run of configs/cifar_edm.py), μ = 0, RAdam lr 4e-4 constant (jcm's RAdam path has no
warm-up), batch 512, 800k iterations, sampling EMA 0.9999, dropout 0, student initialised from the teacher.
The paper's metric is LPIPS (FID 3.55 / 2.93 at 1 / 2 steps); VGG weights cannot be fetched offline, so the default
here is l2 (the paper's CD-l2 ablation) — set --config.cm.distance to change it.
The network is EDM's NCSN++ (config.model.name='ncsnpp', NVlabs/edm train.py --arch=ncsnpp: 128 channels, (2, 2, 2),
4 blocks, attention at 16, augment_dim 9), the CM paper's teacher architecture (jcm cifar10_k_ve) and that of the
public `edm-cifar10-32x32-uncond-ve.pkl` (EDM preconditioning): `python launch/import_edm.py
--pkl=edm-cifar10-32x32-uncond-ve.pkl --out=workdirs/cifar_edm_ve`, or train it with configs/cifar_edm.py:ve.
CD initialises the student from the teacher (cm.init_from_teacher, jcm's CD configs).

python -m consistency.main --config=configs/cifar_cd.py --workdir=DIR --config.teacher.workdir=EDM_DIR
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("cd"), dropout=0.0, arch="ncsnpp")   # the teacher's NCSN++
    presets.consistency_distillation(c, num_scales=18)
    c.cm.distance = "l2"
    c.teacher.workdir = "workdirs/cifar_edm_ve"
    c.training.batch_size = 512
    c.training.num_steps = 800_000
    c.training.ema_decay = 0.9999
    c.optim.name = "radam"
    c.optim.lr = 4e-4
    c.sampling.sigmas = (80.0, 0.585)  # CM paper 2-step: ts = [0, 11, 17] on the N = 18 grid → σ ≈ 0.585
    c.eval.nfes = (1, 2)

    def cpu(c):
        presets.cifar_cpu_smoke(c)
        c.teacher.workdir = "workdirs/cifar_edm_cpu"

    return presets.variants(c, variant, __file__, cpu=cpu)
