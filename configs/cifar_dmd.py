"""DMD on CIFAR-10 (unconditional) from the EDM teacher (configs/cifar_edm.py) (Yin et al. 2023; no official code):
distribution matching with the per-sample normaliser, fake score 1:1, λ_reg = 0.25 regression onto the teacher's
35-NFE Heun ODE pairs. DMD regresses with LPIPS, whose VGG weights cannot be fetched offline: l2 here (pseudo_huber
with --config.dmd.regression_distance). lr, batch and length follow DMD2's EDM scripts (docs/methods.md §10.2); DMD's own
CIFAR-10 numbers are [unverified]. CIFAR-10 uncond 3.77 [unverified].
The network is EDM's DDPM++ (config.model.name='ddpmpp', NVlabs/edm train.py --arch=ddpmpp: 128 channels, (2, 2, 2), 4 blocks,
attention at 16, augment_dim 9; 55.7M parameters), the architecture of the public teacher `edm-cifar10-32x32-uncond-vp.pkl`
(EDM preconditioning), which `python launch/import_edm.py --pkl=edm-cifar10-32x32-uncond-vp.pkl --out=EDM_DIR` turns into a
teacher workdir (or train one with configs/cifar_edm.py).
DMD initialises the generator and the fake score from the teacher (dmd.init).

python launch/make_ode_pairs.py --teacher=EDM_DIR --num=100000 --out=EDM_DIR/ode_pairs.npz
python -m consistency.main --config=configs/cifar_dmd.py --workdir=DIR --config.teacher.workdir=EDM_DIR \
    --config.dmd.pairs=EDM_DIR/ode_pairs.npz
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("dmd"), dropout=0.0, arch="ddpmpp")   # the teacher's DDPM++
    c.teacher.workdir = "workdirs/cifar_edm"
    c.dmd.init = "teacher"
    c.dmd.ttur = 1
    c.dmd.regression_weight = 0.25
    c.dmd.regression_distance = "l2"
    c.dmd.pairs = "workdirs/cifar_edm/ode_pairs.npz"
    c.optim.update(dict(name="adamw", lr=2e-6, b1=0.9, b2=0.999, weight_decay=0.01, warmup_steps=500, grad_clip=10.0))
    c.training.batch_size = 280
    c.training.num_steps = 400_000         # [unverified]
    c.training.ema_decay = 0.0
    c.eval.nfes = (1,)

    def cpu(c):
        presets.cifar_cpu_smoke(c)
        c.teacher.workdir = "workdirs/cifar_edm_cpu"
        c.dmd.pairs = "workdirs/cifar_edm_cpu/ode_pairs.npz"
        c.optim.warmup_steps = 0

    return presets.variants(c, variant, __file__, cpu=cpu)
