"""CTM (Kim et al. 2023; docs/methods.md §13.1) on the 2-D 8-Gaussians mixture with the EXACT mixture denoiser as teacher
(teacher.oracle='mixture'): the jump map G_θ(x_t, t, s) starts from the MLP fitted to the oracle
(presets.toy_distillation), soft consistency over k ≤ 17 teacher Heun steps on the N = 18 grid, DSM with the adaptive
weight, θ⁻ EMA 0.999 (CTM's recipe). Scaled for a 2-D MLP on a CPU: lr 5e-4 (paper 4e-4 at batch 256), batch 256,
4000 steps, sampling EMA 0.99.

python -m consistency.main --config=configs/toy_ctm.py --workdir=workdirs/toy_ctm
γ-sampling at evaluation: --config.ctm.gamma=0.5 (0 = long jumps, 1 = CM-style).
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy_distillation(presets.new("ctm"), "ctm")
    c.ctm.num_scales = 18
    c.ctm.heun_steps = 17
    c.ctm.target_ema = 0.999
    c.training.num_steps = 4000
    c.training.ckpt_every = c.training.sample_every = 2000
    c.eval.nfes = (1, 2, 4, 8)
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 200))
