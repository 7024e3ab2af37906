"""VE multistep consistency distillation, the notebook's own form (seed eq. 48–54; docs/methods.md §8.2), on sklearn digits
from the digits EDM teacher (workdirs/digits_teacher); the student starts from the teacher's weights.
f_θ(x, σ, b) = (b/σ)x + (1 − b/σ)x^θ (eq. 51), the teacher Euler step (eq. 50), l2 loss of eq. 52, 4 equal segments
of the 17-interval Karras grid (CD's N = 18); batch 128, lr 1e-4, 2000 steps, sampling EMA 0.99 (scaled for a CPU).

python -m consistency.main --config=configs/digits_mcm_ve.py --workdir=workdirs/digits_mcm_ve --config.mcm.segments=8
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.digits(presets.new("mcm"), "mcm")
    c.teacher.workdir = "workdirs/digits_teacher"
    m = c.mcm
    m.process, m.mode, m.segments, m.boundaries = "ve", "distill", 4, ()
    m.teacher_solver, m.loss_space, m.weighting, m.distance = "ddim", "jump", "uniform", "l2"
    m.num_steps_start = m.num_steps_end = 17.0
    m.target_ema = 0.0
    c.training.num_steps = 2000
    c.training.ema_decay = 0.99
    c.optim.lr = 1e-4
    c.eval.nfes = ()               # → (T,)
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 100))
