"""CTM (Kim et al. 2023; METHODS.md §13.1) on sklearn digits from the digits EDM teacher (workdirs/digits_teacher): the
jump map starts as a copy of the teacher U-Net (the target-level embedding is new and starts at zero, so
G_θ(x, t, s) is the teacher's DDIM jump at initialisation).

CTM's recipe where it transfers: N = 18, k ≤ 17 teacher Heun steps, θ⁻ EMA 0.999, DSM with the adaptive weight, lr
4e-4 (CTM CIFAR-10); l2 in place of LPIPS (no VGG weights offline). Scaled for a CPU: batch 128, 2000 steps, the
heun_steps cap 8 (every teacher step is two U-Net evaluations), sampling EMA 0.99.

python -m consistency.main --config=configs/digits_ctm.py --workdir=workdirs/digits_ctm
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.digits_distillation(presets.new("ctm"), "ctm")
    c.ctm.num_scales = 18
    c.ctm.heun_steps = 8
    c.ctm.target_ema = 0.999
    c.optim.lr = 4e-4
    c.eval.nfes = (1, 2, 4)
    if variant == "quick":
        presets.quick(c, 100)
    elif variant:
        raise ValueError(f"configs/digits_ctm.py: unknown variant {variant!r}; use '' or 'quick'")
    return c
