"""sCD (Lu & Song 2024; docs/methods.md §13.2) on the 2-D 8-Gaussians mixture with the EXACT mixture denoiser as teacher
(teacher.oracle='mixture', read as the TrigFlow velocity (cos t·x_t − D(x_t/cos t, σ_d tan t))/sin t): the student's
network is EDM-preconditioned, so F_θ starts as the MLP fitted to the oracle (presets.toy_distillation) and f_θ as its
one-step DDIM jump. The tangent from one jax.jvp, warm-up, normalisation c = 0.1, adaptive weighting w_φ(t), t from
the lognormal (P_mean −1.0, P_std 1.4: FastGen's CIFAR-10 values), Adam lr 1e-4 with β₂ 0.99 (sCM's ImageNet-64
optimizer). Scaled for a 2-D MLP on a CPU: batch 256, 8000 steps, tangent warm-up 1000 steps (sCM: 10k of 400k),
sampling EMA 0.99.

python -m consistency.main --config=configs/toy_scd.py --workdir=workdirs/toy_scd
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy_distillation(presets.new("scm"), "scm")
    c.scm.update(dict(mode="distill", tangent_warmup_steps=1000))
    c.optim.update(dict(lr=1e-4, b2=0.99))   # sCM's Adam β₂ 0.99 and lr 1e-4 (lr 5e-4 / β₂ 0.999: 0/8 modes at 4000)
    c.training.update(dict(num_steps=8000, ckpt_every=4000, sample_every=4000))
    c.eval.nfes = (1, 2)
    return presets.scm_variant(c, variant, "toy_scd.py", cpu=False)
