"""MCM on class-conditional ImageNet-64 (Heek et al. 2024; docs/methods.md §8.1), the paper's headline setting: 8 segments
(FID 1.4 at 8 steps [paper]), VP DDIM/aDDIM (η = 0.75) distillation from an EDM-class teacher, x̂-space loss with SNR + 1
weighting and pseudo-Huber 1e-4, teacher steps annealed 64 → 1280 over 100k steps [unofficial code], CFG on the
teacher. The network is EDM's ADM (config.model.name='adm', NVlabs/edm DhariwalUNet: 192 channels, (1, 2, 3, 4),
3 blocks, attention at 32, 16, 8; 296M parameters), that of the public `edm-imagenet-64x64-cond-adm.pkl` (EDM
preconditioning), which `python launch/import_edm.py --pkl=edm-imagenet-64x64-cond-adm.pkl --out=EDM_IN64_DIR` turns
into the teacher workdir; the student is initialised from the teacher (mcm.init_from_teacher). Batch, lr, iteration
count and w are not given by the paper (docs/methods.md §8.1): the values below are [unverified] placeholders.

ImageNet-64 comes from TFDS 'imagenet_resized/64x64', which needs its files in <data_dir>/downloads/manual (nothing
is downloaded here); offline, use configs/digits_mcm_vp.py.

python -m consistency.main --config=configs/imagenet64_mcm.py --workdir=DIR --config.teacher.workdir=EDM_IN64_DIR
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.new("mcm")
    c.method = "mcm"
    c.data.name = "imagenet_resized/64x64"
    c.data.random_flip = True
    c.model.update(dict(name="adm", channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                        attn_resolutions=(32, 16, 8), dropout=0.0, num_classes=1000))
    c.teacher.workdir = "workdirs/imagenet64_edm"
    m = c.mcm
    m.process, m.mode, m.segments = "vp", "distill", 8
    m.teacher_solver, m.addim_eta = "addim", 0.75
    m.loss_space, m.weighting, m.distance, m.huber_c = "x", "snr+1", "pseudo_huber", 1e-4
    m.num_steps_start, m.num_steps_end, m.num_steps_ramp = 64.0, 1280.0, 100_000
    m.cfg_scale = 1.5              # [unverified]
    m.target_ema = 0.0
    c.optim.update(dict(name="adam", lr=1e-4, warmup_steps=1000))  # [unverified]
    c.training.batch_size = 2048   # [unverified]
    c.training.num_steps = 200_000  # [unverified]
    c.training.ema_decay = 0.9999
    c.eval.nfes = ()               # → (8,)

    def cpu(c):
        presets.cifar_cpu_smoke(c)
        c.model.num_classes = 1000
        c.teacher.workdir = "workdirs/imagenet64_edm_cpu"
        m.num_steps_ramp = 20

    return presets.variants(c, variant, __file__, cpu=cpu)
