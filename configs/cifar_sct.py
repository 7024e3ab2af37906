"""sCT on CIFAR-10 (unconditional), FastGen's CIFAR-10 recipe where docs/methods.md §13.2 gives it [unofficial code]:
started from an EDM checkpoint (configs/cifar_edm.py; its weights only — sCT uses the data's conditional velocity
cos t·z − sin t·x₀, no teacher), P_mean −1.0, P_std 1.8 (sCT from an EDM checkpoint), dropout 0.2, RAdam, batch 512,
350k iterations, tangent warm-up 10k, normalisation c = 0.1, adaptive weighting, the JVP in float32, 2-step sampling at
σ = 0.821. The lr and the sampling EMA are [unverified]. sCT CIFAR-10 FID 2.06 at 2 steps (sCM).
The network is EDM's DDPM++ (config.model.name='ddpmpp', NVlabs/edm train.py --arch=ddpmpp: 128 channels, (2, 2, 2), 4 blocks,
attention at 16, augment_dim 9; 55.7M parameters), the architecture of the public teacher `edm-cifar10-32x32-uncond-vp.pkl`
(EDM preconditioning), which `python launch/import_edm.py --pkl=edm-cifar10-32x32-uncond-vp.pkl --out=EDM_DIR` turns into a
teacher workdir (or train one with configs/cifar_edm.py).
sCT starts from the EDM checkpoint's weights (scm.init='teacher').

python -m consistency.main --config=configs/cifar_sct.py --workdir=workdirs/cifar_sct --config.teacher.workdir=EDM_DIR
From scratch: --config.scm.init=scratch --config.scm.time_input=trigflow --config.teacher.workdir=''
"""

from consistency import presets


def get_config(variant: str = ""):
    c = presets.cifar_scm("train", dropout=0.2, p_std=1.8, num_steps=350_000)
    return presets.scm_variant(c, variant, "cifar_sct.py", cpu=True)
