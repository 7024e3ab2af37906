"""DMD2 — Improved Distribution Matching Distillation (Yin et al. 2024, arXiv 2405.14867, `tianweiy/DMD2`;
docs/methods.md §10.2). Built by the distribution-matching family builder of ``consistency/methods/dmd.py``.

Changes from DMD (docs/methods.md §10.2):
1. no regression loss (no ODE pairs);
2. TTUR: the fake score and the GAN head update every step, the generator every ``config.dmd2.ttur`` = 5th step
   (``every=5``). ``config.dmd2.generator_first`` (default, DMD2's `main/edm/train_edm.py`): the generator is due at
   steps ≡ 0 mod 5 and updates before that step's fake update; False: at steps ≡ 4 mod 5, after the fake side's 5
   updates on the current generator;
3. a diffusion GAN on real data. **The head lives inside the 'fake' trained set**, as in DMD2 (its ``guidance_model``
   holds the fake U-Net and ``cls_pred_branch`` under one optimizer): params ``{'denoiser', 'head'}``; the head is
   ``config.discriminator`` (default: DMD2's classifier on the fake U-Net's encoder output ``'enc_<coarsest>'``;
   toys: an MLP head on the MLP's bottleneck). Real and generated inputs are noised first (index U[0, 1000)),
   the fake set minimises L_fake + 1e-2·[softplus(D(fake)) + softplus(−D(real))] and the generator adds
   3e-3·softplus(−D(G(z))) with the head's and the fake U-Net's parameters frozen (gradient through the inputs);
4. optional K-step generator by backward simulation (``config.dmd2.generator_timesteps``, e.g. (999, 749, 499, 249)).

Optimiser recipe (ImageNet-64, docs/methods.md §10.2): AdamW (0.9, 0.999), weight decay 0.01, lr 2e-6 for both sets,
500 warm-up steps, grad clip 10, no EMA — see configs/cifar_dmd2.py.
"""
from __future__ import annotations

from consistency.core import schema
from consistency.methods import base
from consistency.methods.components import distillation
from consistency.methods import dmd

NAME = "dmd2"


# config.dmd2: DMD2, Yin et al. 2024 (docs/methods.md §10.2; tianweiy/DMD2 EDM code): no regression, TTUR, diffusion
# GAN.
CONFIG_BLOCK = "dmd2"
CONFIG_FIELDS = {
    **distillation.init_fields('G and D_fake start from the teacher (DMD2: the generator is a copy of the teacher)'),
    "generator_sigma": schema.Field(0.0, 'σ_g of a one-step G; 0 → diffusion.sigma_max (DMD2 EDM code)',
                                    lo=0, hi="diffusion.sigma_max", fix="use 0 (→ diffusion.sigma_max) or a level in (0, sigma_max]"),
    "generator_timesteps": schema.Field((), "K-step G by backward simulation: descending, from T−1, e.g. (999, 749, "
                                            "499, 249)",
                                        fix="use () (one step) or descending timesteps from T − 1, e.g. (999, 749, 499, 249)"),
    "ttur": distillation.ttur_field(5, 'DMD2 TTUR: fake score + GAN head every step, generator every 5th'),
    "generator_first": schema.Field(True, "DMD2 code: generator at steps ≡ 0 mod ttur, before that step's fake update; "
                                          "False: at steps ≡ ttur − 1, after the fake side's ttur updates"),
    **distillation.grid_fields('teacher grid T (DMD2 EDM code)',
                               'DM index ~ U[20, 980] of 1000 (DMD2 `min_step_percent`)',
                               '(DMD2 `max_step_percent`)'),
    "normalise": schema.Field(True, 'g / mean|x − D_real| (DMD2 `compute_distribution_matching_loss`)'),
    "reduce": schema.Field("mean", 'DM surrogate mean over B·d (DMD2 code, docs/methods.md §10.2)',
                           choices=("mean", "sum")),
    "fake_weighting": schema.Field("edm", 'fake DSM λ = 1/σ² + 1/σ_d² (DMD2 `compute_loss_fake`)',
                                   choices=("edm", "uniform")),
    "gan_generator_weight": schema.Field(3e-3, 'softplus(−D(G(z))) weight (DMD2 `gen_cls_loss_weight`); 0 → no GAN',
                                         lo=0, fix="use DMD2's 3e-3, or 0 (no GAN term)"),
    "gan_discriminator_weight": schema.Field(1e-2, "discriminator loss weight in the fake set (DMD2 "
                                                   "`guidance_cls_loss_weight`)",
                                             lo=0, fix="use DMD2's 1e-2, or 0 (no GAN term)"),
    "gan_max_timestep": schema.Field(1000, "diffusion-GAN noise index ~ U[0, gan_max_timestep) (DMD2 "
                                           "`diffusion_gan_max_timestep`)",
                                     lo=1, hi="dmd2.num_train_timesteps", fix="use a value in [1, num_train_timesteps] (DMD2: 1000)"),
}
TEACHER_USE = "required"


def validate_config(config) -> None:
    """``config.dmd2`` and, with the GAN on, ``config.discriminator`` (one ConfigError line naming the field)."""
    schema.check_block(config, CONFIG_BLOCK, CONFIG_FIELDS)   # every field: type, choices, bounds
    b = config.dmd2
    dmd.validate_family(config, NAME)
    distillation.require((b.gan_generator_weight > 0) == (b.gan_discriminator_weight > 0),
                         "dmd2.gan_generator_weight", f"{b.gan_generator_weight} with gan_discriminator_weight = "
                         f"{b.gan_discriminator_weight}: one side of the GAN would train without the other",
                         "set both > 0 (DMD2: 3e-3 and 1e-2) or both to 0")
    if b.gan_generator_weight > 0:
        distillation.check_head_block(config)


def make(config, dataset) -> base.Method:
    validate_config(config)
    return dmd.build(config, dataset, NAME)
