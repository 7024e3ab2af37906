"""VE multistep consistency distillation, the notebook's own derivation (seed eq. 48–54; docs/methods.md §8.2), on the 2-D
8-Gaussians mixture with the EXACT mixture denoiser as teacher: f_θ(x, σ, b) = (b/σ)x + (1 − b/σ)x^θ (eq. 51), the
teacher Euler step (eq. 50), loss d(f_θ(x_n, σ_n, b), sg f_θ⁻(x^φ_{n−1}, σ_{n−1}, b)) (eq. 52), T equal segments of
the 17-interval Karras grid (CD's N = 18 grid, docs/methods.md §4).

python -m consistency.main --config=configs/toy_mcm_ve.py --workdir=workdirs/toy_mcm_ve --config.mcm.segments=2
Explicit boundaries: --config.mcm.boundaries='(0.002, 0.5, 80.0)' --config.mcm.segments=2.
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy(presets.new("mcm"), "mcm")
    c.teacher.oracle = "mixture"
    m = c.mcm
    m.process = "ve"
    m.mode = "distill"
    m.segments = 4
    m.boundaries = ()              # T + 1 Karras points = T equal segments of the Karras grid
    m.teacher_solver = "ddim"      # VE-DDIM = the Euler step of seed eq. 50
    m.loss_space = "jump"          # seed eq. 52
    m.weighting = "uniform"
    m.distance = "l2"              # CD's l2 (seed eq. 12, 52 write ‖·‖)
    m.num_steps_start = m.num_steps_end = 17.0  # fixed grid: 17 intervals (CD N = 18), M = round(17/T) per segment
    m.target_ema = 0.0
    c.eval.nfes = ()               # → (T,)
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 200))
