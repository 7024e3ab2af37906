"""ECT on sklearn digits: consistency tuning from the digits EDM teacher (configs/digits_edm.py)."""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.digits(presets.new("ecm"), "ecm")
    c.teacher.workdir = "workdirs/digits_edm"
    c.ecm.steps_per_stage = 200  # 5 curriculum stages in 1000 steps
    c.training.num_steps = 1000  # CPU budget of docs/results.md
    c.optim.lr = 2e-4
    c.eval.nfes = (1, 2, 4)
    if variant == "quick":
        presets.quick(c, 100)
        c.ecm.steps_per_stage = 25
    elif variant:
        raise ValueError(f"configs/digits_ecm.py: unknown variant {variant!r}; use '' or 'quick'")
    return c
