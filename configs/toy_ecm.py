"""ECT's objective on a 2-D mixture, from scratch (set --config.teacher.workdir to tune a configs/toy_edm.py run)."""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy(presets.new("ecm"), "ecm")
    c.ecm.steps_per_stage = 500
    c.eval.nfes = (1, 2, 4)
    if variant == "quick":
        presets.quick(c, 200)
        c.ecm.steps_per_stage = 50
    elif variant:
        raise ValueError(f"configs/toy_ecm.py: unknown variant {variant!r}; use '' or 'quick'")
    return c
