"""sCD (Lu & Song 2024; METHODS.md §13.2) on the 2-D 8-Gaussians mixture with the EXACT mixture denoiser as teacher
(teacher.oracle='mixture', read as the TrigFlow velocity (cos t·x_t − D(x_t/cos t, σ_d tan t))/sin t): the student's
network is EDM-preconditioned, so F_θ starts as the MLP fitted to the oracle (presets.toy_distillation) and f_θ as its
one-step DDIM jump. The tangent from one jax.jvp, warm-up, normalisation c = 0.1, adaptive weighting w_φ(t), t from
the lognormal (P_mean −1.0, P_std 1.4: FastGen's CIFAR-10 values). Scaled for a 2-D MLP on a CPU: lr 5e-4, batch 256,
4000 steps, tangent warm-up 1000 steps (sCM: 10k of 400k), sampling EMA 0.99.

python -m consistency.main --config=configs/toy_scd.py --workdir=workdirs/toy_scd
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy_distillation(presets.new("scm"), "scm")
    c.scm.update(dict(mode="distill", tangent_warmup_steps=1000))
    c.training.update(dict(num_steps=4000, ckpt_every=2000, sample_every=2000))
    c.eval.nfes = (1, 2)
    return presets.scm_variant(c, variant, "toy_scd.py", cpu=False)
