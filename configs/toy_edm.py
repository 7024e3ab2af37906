"""EDM teacher on a 2-D mixture (toy:8gaussians by default; --config.data.name=toy:25gaussians etc.)."""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy(presets.new("edm"), "edm")
    c.sampling.num_steps = 18
    c.eval.nfes = (35,)  # Heun, 18 points
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 200))
