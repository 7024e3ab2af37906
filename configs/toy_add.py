"""ADD (docs/methods.md §11) on a 2-D mixture (toy:8gaussians) with the EXACT mixture denoiser as teacher
(teacher.oracle='mixture'): the student starts from the MLP fitted to the oracle (presets.toy_distillation).

ADD's recipe: student on forward-diffused real points at the four levels {999, 749, 499, 249} (σ ≈ 80, 17.5, 2.5,
0.17), distillation term with the teacher input under sg and c(t) = α_t, hinge GAN with R1. A 2-D point has no
feature net, so the discriminator's frozen "features" are the point itself (add.features='input') and the head is
an MLP.

Scaled from ADD for a GAN on 2-D points: Adam β₁ = 0.5 (the usual GAN setting), discriminator lr 1e-3 against the
student's 1e-4 (TTUR by learning rate), R1 γ = 0.01 (ADD's 1e-5 is for DINOv2 features; on raw 2-D inputs it leaves
the critic unregularised and the pair oscillates), 4000 steps. With ADD's own numbers (lr 5e-4 both, γ = 1e-5) the
student collapses to the data mean, as docs/methods.md §11 predicts for the distillation term alone.

python -m consistency.main --config=configs/toy_add.py --workdir=workdirs/toy_add
"""
from consistency import presets
from consistency.config import optim_override


def get_config(variant: str = ""):
    c = presets.toy_distillation(presets.new("add"), "add")
    c.add.features = "input"
    c.discriminator.name = "mlp"
    c.discriminator.channels = 128
    c.discriminator.depth = 3
    c.optim.update(dict(lr=1e-4, b1=0.5))
    c.optim_discriminator = optim_override(lr=1e-3)
    c.add.r1_weight = 0.01
    c.training.num_steps = 4000
    c.training.ckpt_every = c.training.sample_every = 2000
    c.eval.nfes = (1, 4)
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 200))
