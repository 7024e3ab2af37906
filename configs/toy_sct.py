"""sCT (Lu & Song 2024; docs/methods.md §13.2) on the 2-D 8-Gaussians mixture, from scratch: the conditional velocity
cos t·z − sin t·x₀ in place of a teacher, c_noise = t (TrigFlow time input, sCM §4.1), the tangent from one jax.jvp with
warm-up and normalisation, adaptive weighting w_φ(t), lognormal t (P_mean −1.0, P_std 1.4). Scaled for a 2-D MLP on a
CPU: Adam lr 2e-4 with β₂ 0.99, batch 512, 8000 steps, tangent warm-up 2000 steps (sCM: 10k of 400k), sampling EMA 0.999.

python -m consistency.main --config=configs/toy_sct.py --workdir=workdirs/toy_sct
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy(presets.new("scm"), "scm")
    c.scm.update(dict(mode="train", init="scratch", time_input="trigflow", tangent_warmup_steps=2000))
    c.optim.update(dict(lr=2e-4, b2=0.99))   # sCM's Adam β₂ 0.99 (lr 2e-4: the toy trains from scratch)
    c.training.update(dict(num_steps=8000, ckpt_every=4000, sample_every=4000))
    c.eval.nfes = (1, 2)
    return presets.scm_variant(c, variant, "toy_sct.py", cpu=False)
