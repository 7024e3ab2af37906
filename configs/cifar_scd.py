"""sCD on CIFAR-10 (unconditional) from the EDM teacher (configs/cifar_edm.py), FastGen's CIFAR-10 recipe where
docs/methods.md §13.2 gives it [unofficial code]: the student is the teacher's network copied (an EDM-preconditioned network
is an sCM consistency function as is, consistency/objectives/scm.py), P_mean −1.0, P_std 1.4, dropout 0, RAdam, batch
512, 500k iterations, tangent warm-up 10k and normalisation c = 0.1 (sCM §4.2), adaptive weighting, the JVP in float32,
2-step sampling at FastGen's σ = 0.821 (t = arctan(0.821/0.5)). The lr and the sampling EMA are [unverified].
The network is EDM's DDPM++ (config.model.name='ddpmpp', NVlabs/edm train.py --arch=ddpmpp: 128 channels, (2, 2, 2), 4 blocks,
attention at 16, augment_dim 9; 55.7M parameters), the architecture of the public teacher `edm-cifar10-32x32-uncond-vp.pkl`
(EDM preconditioning), which `python launch/import_edm.py --pkl=edm-cifar10-32x32-uncond-vp.pkl --out=EDM_DIR` turns into a
teacher workdir (or train one with configs/cifar_edm.py).
sCD copies the teacher into the student (scm.init='teacher').

python -m consistency.main --config=configs/cifar_scd.py --workdir=workdirs/cifar_scd --config.teacher.workdir=EDM_DIR
"""

from consistency import presets


def get_config(variant: str = ""):
    c = presets.cifar_scm("distill", dropout=0.0, p_std=1.4, num_steps=500_000)
    return presets.scm_variant(c, variant, "cifar_scd.py", cpu=True)
