"""sCD on CIFAR-10 (unconditional) from the EDM teacher (configs/cifar_edm.py), FastGen's CIFAR-10 recipe where
METHODS.md §13.2 gives it [unofficial code]: the student is the teacher's NCSN++ copied (an EDM-preconditioned network
is an sCM consistency function as is, consistency/objectives/scm.py), P_mean −1.0, P_std 1.4, dropout 0, RAdam, batch
512, 500k iterations, tangent warm-up 10k and normalisation c = 0.1 (sCM §4.2), adaptive weighting, the JVP in float32,
2-step sampling at FastGen's σ = 0.821 (t = arctan(0.821/0.5)). The lr and the sampling EMA are [unverified].

python -m consistency.main --config=configs/cifar_scd.py --workdir=workdirs/cifar_scd --config.teacher.workdir=EDM_DIR
"""
import math

from consistency import presets


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("scm"), dropout=0.0)
    c.model.resample = "fir"               # the teacher's U-Net (configs/cifar_edm.py)
    c.teacher.workdir = "workdirs/cifar_edm"
    c.scm.mode = "distill"
    c.scm.init = "teacher"
    c.scm.time_input = "edm"
    c.scm.p_mean, c.scm.p_std = -1.0, 1.4
    c.scm.tangent_warmup_steps = 10_000
    c.scm.mid_t = math.atan2(0.821, c.diffusion.sigma_data)
    c.optim.update(dict(name="radam", lr=1e-4, warmup_steps=0))
    c.training.batch_size = 512
    c.training.num_steps = 500_000
    c.training.ema_decay = 0.9999          # [unverified]
    c.eval.nfes = (1, 2)
    if variant == "cpu":
        presets.cifar_cpu_smoke(c)
        c.teacher.workdir = "workdirs/cifar_edm_cpu"
        c.scm.tangent_warmup_steps = 10
    elif variant:
        raise ValueError(f"configs/cifar_scd.py: unknown variant {variant!r}; use '' or 'cpu'")
    return c
