"""CD on a 2-D mixture with the EXACT mixture denoiser as teacher (teacher.oracle='mixture'): distillation with no
teacher error, so what remains is the consistency model's own error."""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy(presets.new("cd"), "cd")
    presets.consistency_distillation(c, num_scales=18)
    c.teacher.oracle = "mixture"
    c.cm.init_from_teacher = False
    c.eval.nfes = (1, 2, 4)
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 200))
