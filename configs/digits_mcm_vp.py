"""VP multistep consistency distillation (MCM, Heek et al. 2024; docs/methods.md §8.1) on sklearn digits from the digits EDM
teacher (workdirs/digits_teacher, read in VP as x̂ = D(z_t/α_t, σ_t/α_t)); the student starts from the teacher's
weights. The paper's recipe: aDDIM teacher steps (η = 0.75), x̂-space loss with SNR + 1 weighting and pseudo-Huber
(1e-4), N(i) annealed 64 → 1280 — over this run's 2000 steps instead of the paper's 100k; 4 segments; batch 128,
lr 1e-4, sampling EMA 0.99 (scaled for a CPU).

python -m consistency.main --config=configs/digits_mcm_vp.py --workdir=workdirs/digits_mcm_vp --config.mcm.segments=8
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.digits(presets.new("mcm"), "mcm")
    c.teacher.workdir = "workdirs/digits_teacher"
    m = c.mcm
    m.process, m.mode, m.segments = "vp", "distill", 4
    m.teacher_solver, m.addim_eta = "addim", 0.75
    m.loss_space, m.weighting, m.distance, m.huber_c = "x", "snr+1", "pseudo_huber", 1e-4
    m.num_steps_start, m.num_steps_end = 64.0, 1280.0
    m.target_ema = 0.0
    c.training.num_steps = 2000
    c.training.ema_decay = 0.99
    c.optim.lr = 1e-4
    m.num_steps_ramp = c.training.num_steps
    c.eval.nfes = ()               # → (T,)

    def quick(c):
        presets.quick(c, 100)
        m.num_steps_ramp = 100

    return presets.variants(c, variant, __file__, quick=quick)
