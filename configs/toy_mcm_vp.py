"""VP multistep consistency distillation (MCM, Heek et al. 2024; docs/methods.md §8.1) on the 2-D 8-Gaussians mixture with
the EXACT mixture denoiser as teacher (teacher.oracle='mixture', read in VP as x̂ = D(z_t/α_t, σ_t/α_t)): aDDIM teacher
steps (η = 0.75), x̂-space loss with SNR + 1 weighting and pseudo-Huber, N(i) annealed 64 → 1280.

python -m consistency.main --config=configs/toy_mcm_vp.py --workdir=workdirs/toy_mcm_vp --config.mcm.segments=2
One model per T: evaluation is at NFE = T (``config.mcm.segments``). MCT: --config.mcm.mode=train
--config.teacher.oracle=''.
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy(presets.new("mcm"), "mcm")
    c.teacher.oracle = "mixture"
    m = c.mcm
    m.process = "vp"
    m.mode = "distill"
    m.segments = 4
    m.teacher_solver = "addim"     # docs/methods.md §8.1 step 2
    m.addim_eta = 0.75
    m.loss_space = "x"             # docs/methods.md §8.1 step 4
    m.weighting = "snr+1"
    m.distance = "pseudo_huber"
    m.huber_c = 1e-4
    m.num_steps_start, m.num_steps_end = 64.0, 1280.0
    m.target_ema = 0.0
    c.training.num_steps = 4000
    m.num_steps_ramp = c.training.num_steps  # the paper ramps over 100k of its steps; a toy run ramps over its own
    c.eval.nfes = ()               # → (T,)

    def quick(c):
        presets.quick(c, 200)
        m.num_steps_ramp = 200

    return presets.variants(c, variant, __file__, quick=quick)
