"""PaGoDA (docs/methods.md §9) on a 2-D mixture (toy:8gaussians) with the EXACT mixture denoiser as teacher
(teacher.oracle='mixture'). First invert the 20,000 training points with the exact PF-ODE (Heun, 40 steps):

python launch/invert.py --oracle=mixture --data=toy:8gaussians --toy_size=20000 --out=workdirs/toy_pagoda_inversion
python -m consistency.main --config=configs/toy_pagoda.py --workdir=workdirs/toy_pagoda

The one-step generator G(x_T) = D_θ(x_T, σ_max) starts from the MLP fitted to the oracle (presets.toy_distillation)
and trains on the L2 reconstruction of each point from its inverted latent plus the hinge GAN with PaGoDA's adaptive
weight. A 2-D point has no feature net, so the discriminator reads the point itself (pagoda.features='input', an MLP
head). Scaled from PaGoDA for 2-D points: Adam (PaGoDA RAdam; both are tested) with β₁ 0.5, generator lr 1e-4 and
discriminator lr 1e-3 (PaGoDA: 8e-6 / 2e-3 on ImageNet), R1 0.01 as the toy ADD, discriminator weight 1 (the growing
stages' value; 0.2 at ImageNet's 64→64), 4000 steps (2000 per network, alternating 1:1).
"""
from consistency import presets
from consistency.config import optim_override


def get_config(variant: str = ""):
    c = presets.toy_distillation(presets.new("pagoda"), "pagoda")
    c.data.toy_size = 20_000
    c.data.latents = "workdirs/toy_pagoda_inversion"
    c.pagoda.update(dict(features="input", distance="l2", discriminator_weight=1.0, r1_weight=0.01))
    c.discriminator.update(dict(name="mlp", channels=128, depth=3))
    c.optim.update(dict(lr=1e-4, b1=0.5))
    c.optim_discriminator = optim_override(lr=1e-3)
    c.training.num_steps = 4000
    c.training.ckpt_every = c.training.sample_every = 2000
    c.eval.nfes = (1,)
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 200))
