"""sCT on CIFAR-10 (unconditional), FastGen's CIFAR-10 recipe where METHODS.md §13.2 gives it [unofficial code]:
started from an EDM checkpoint (configs/cifar_edm.py; its weights only — sCT uses the data's conditional velocity
cos t·z − sin t·x₀, no teacher), P_mean −1.0, P_std 1.8 (sCT from an EDM checkpoint), dropout 0.2, RAdam, batch 512,
350k iterations, tangent warm-up 10k, normalisation c = 0.1, adaptive weighting, the JVP in float32, 2-step sampling at
σ = 0.821. The lr and the sampling EMA are [unverified]. sCT CIFAR-10 FID 2.06 at 2 steps (sCM).

python -m consistency.main --config=configs/cifar_sct.py --workdir=workdirs/cifar_sct --config.teacher.workdir=EDM_DIR
From scratch: --config.scm.init=scratch --config.scm.time_input=trigflow --config.teacher.workdir=''
"""
import math

from consistency import presets


def get_config(variant: str = ""):
    c = presets.cifar_network(presets.new("scm"), dropout=0.2)
    c.model.resample = "fir"
    c.teacher.workdir = "workdirs/cifar_edm"   # the checkpoint sCT starts from (not a teacher)
    c.scm.mode = "train"
    c.scm.init = "teacher"
    c.scm.time_input = "edm"
    c.scm.p_mean, c.scm.p_std = -1.0, 1.8
    c.scm.tangent_warmup_steps = 10_000
    c.scm.mid_t = math.atan2(0.821, c.diffusion.sigma_data)
    c.optim.update(dict(name="radam", lr=1e-4, warmup_steps=0))
    c.training.batch_size = 512
    c.training.num_steps = 350_000
    c.training.ema_decay = 0.9999          # [unverified]
    c.eval.nfes = (1, 2)
    if variant == "cpu":
        presets.cifar_cpu_smoke(c)
        c.teacher.workdir = "workdirs/cifar_edm_cpu"
        c.scm.tangent_warmup_steps = 10
    elif variant:
        raise ValueError(f"configs/cifar_sct.py: unknown variant {variant!r}; use '' or 'cpu'")
    return c
