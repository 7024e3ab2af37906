"""sCD (Lu & Song 2024; METHODS.md §13.2) on sklearn digits from the digits EDM teacher (workdirs/digits_teacher): the
student is a copy of the teacher U-Net (an EDM-preconditioned network is an sCM consistency function as is, so it
starts as the teacher's one-step DDIM jump), the teacher read as the TrigFlow velocity, one jax.jvp per step, tangent
warm-up and normalisation c = 0.1, adaptive weighting, P_mean −1.0 / P_std 1.4 (FastGen CIFAR-10). Scaled for a CPU:
batch 128, Adam lr 1e-4 with β₂ 0.99 (sCM), 2000 steps, tangent warm-up 500 steps (sCM: 10k of 400k), sampling EMA
0.99.

python -m consistency.main --config=configs/digits_scd.py --workdir=workdirs/digits_scd

"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.digits_distillation(presets.new("scm"), "scm")
    c.scm.update(dict(mode="distill", tangent_warmup_steps=500))
    c.optim.b2 = 0.99                        # sCM's Adam β₂
    c.eval.nfes = (1, 2)
    return presets.scm_variant(c, variant, "digits_scd.py", cpu=False)
