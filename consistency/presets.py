"""Recipe building blocks shared by the files in ``configs/`` (each config file stays a short, readable list of the
paper's numbers; the blocks below are the parts several files share).
"""
from __future__ import annotations

import os

from consistency.config import base_config


def digits(c, method: str):
    """sklearn digits (8×8×1, 1500 train images) with a 0.6M-parameter U-Net: the offline real-image default."""
    c.method = method
    c.data.name = "digits"
    c.model.name = "unet"
    c.model.channels = 32
    c.model.channel_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = ()
    c.training.batch_size = 128
    c.training.log_every = 100
    c.training.sample_every = 1000
    c.training.ckpt_every = 1000
    c.training.ema_decay = 0.999
    c.sampling.num_samples = 100
    c.eval.num_samples = 297  # size of the held-out digits split (the reference set)
    return c


def toy(c, method: str, name: str = "8gaussians"):
    """2-D toy mixture with an MLP; the mixture's exact denoiser is available as teacher.oracle='mixture'."""
    c.method = method
    c.data.name = f"toy:{name}"
    c.model.name = "mlp"
    c.model.hidden = 256
    c.model.depth = 4
    c.model.fourier_scale = 1.0  # the σ-embedding need not oscillate for a smooth 2-D map
    c.training.batch_size = 512
    c.training.num_steps = 4000
    c.training.log_every = 200
    c.training.sample_every = 2000
    c.training.ckpt_every = 2000
    c.training.ema_decay = 0.999
    c.optim.lr = 1e-3
    c.sampling.num_samples = 2000
    c.eval.num_samples = 2000
    return c


EDM_CIFAR10_FILES = {"ddpmpp": "edm-cifar10-32x32-uncond-vp.pkl", "ncsnpp": "edm-cifar10-32x32-uncond-ve.pkl"}


def cifar_network(c, dropout: float, fourier_scale: float = 16.0, arch: str = "unet"):
    """The CIFAR-10 papers' U-Net size: 128 channels, (2, 2, 2), 4 blocks, attention at 16 (docs/methods.md §2).

    ``arch`` 'ddpmpp' / 'ncsnpp' is EDM's own network (NVlabs/edm train.py ``--arch``, consistency/nets/edm_networks.py)
    with EDM's augmentation-label input (augment_dim 9: EDM's CIFAR-10 runs use ``--augment=0.12``), so the public
    ``edm-cifar10-32x32-uncond-{vp,ve}.pkl`` load into it parameter for parameter; 'unet' is the project's
    NCSN++-family U-Net (jcm ``cifar10_k_ve``)."""
    c.data.name = "cifar10"
    c.data.random_flip = True
    c.model.name = arch
    c.model.augment_dim = 9 if arch in EDM_CIFAR10_FILES else 0
    c.model.channels = 128
    c.model.channel_mult = (2, 2, 2)
    c.model.num_res_blocks = 4
    c.model.attn_resolutions = (16,)
    c.model.dropout = dropout
    c.model.embedding = "fourier"
    c.model.fourier_scale = fourier_scale
    c.training.log_every = 1000
    c.training.ckpt_every = 10_000
    c.training.sample_every = 10_000
    c.training.keep_checkpoints = 3
    c.sampling.num_samples = 64
    c.eval.num_samples = 50_000
    return c


def cifar_cpu_smoke(c):
    """The `:cpu` variant of a CIFAR recipe: same method and objective, a network and run small enough for a laptop."""
    c.model.channels = 32
    c.model.channel_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = ()
    c.training.batch_size = 16
    c.training.num_steps = 20
    c.training.log_every = 5
    c.training.ckpt_every = 10
    c.training.sample_every = 20
    c.sampling.num_samples = 16
    c.eval.num_samples = 64
    return c


def consistency_distillation(c, num_scales: int = 18):
    """CD, CM paper (Song et al. 2023) Table 3 / jcm: N = 18, Heun teacher, μ = 0 (θ⁻ = sg θ), student from teacher."""
    c.method = "cd"
    c.cm.num_scales = num_scales
    c.cm.curriculum = "fixed"
    c.cm.target_schedule = "fixed"
    c.cm.target_ema = 0.0
    c.cm.solver = "heun"
    c.cm.weighting = "uniform"
    c.cm.index_sampling = "uniform"
    c.cm.init_from_teacher = True
    return c


def consistency_training(c, s0: int = 2, s1: int = 150, mu0: float = 0.9):
    """CT, CM paper Appendix C: N(k) from s0 to s1 + 1, θ⁻ EMA with μ(k) (code form), uniform pairs."""
    c.method = "ct"
    c.cm.curriculum = "ct"
    c.cm.s0, c.cm.s1, c.cm.mu0 = s0, s1, mu0
    c.cm.target_schedule = "ct"
    c.cm.mu_form = "code"
    c.cm.weighting = "uniform"
    c.cm.index_sampling = "uniform"
    return c


def improved_consistency_training(c, s0: int = 10, s1: int = 1280):
    """iCT (Song & Dhariwal 2023): θ⁻ = sg θ, pseudo-Huber (c = 0.00054√d), λ = 1/Δσ, lognormal pairs (−1.1, 2.0),
    doubling curriculum s0 = 10 → s1 = 1280."""
    c.method = "ict"
    c.cm.curriculum = "ict"
    c.cm.s0, c.cm.s1 = s0, s1
    c.cm.target_schedule = "fixed"
    c.cm.target_ema = 0.0
    c.cm.distance = "pseudo_huber"
    c.cm.huber_c = -1.0
    c.cm.weighting = "inv_delta"
    c.cm.index_sampling = "lognormal"
    c.cm.p_mean, c.cm.p_std = -1.1, 2.0
    return c


def new(method: str):
    c = base_config()
    c.method = method
    return c


def quick(c, num_steps: int):
    """The `:quick` variant: the same recipe for ``num_steps`` steps, sampling and checkpointing at the end."""
    c.training.num_steps = num_steps
    c.training.sample_every = c.training.ckpt_every = num_steps
    c.training.log_every = max(1, num_steps // 4)
    # A short run needs a short EMA: 0.999^300 would leave 74% of the sampling weights at their random init.
    c.training.ema_decay = min(c.training.ema_decay, 0.99)
    return c


# ----------------------------------------------------------------------------------------------------------
# Score distillation (DMD, DMD2, ADD, SiD; docs/methods.md §10–§12, consistency/methods/components/distillation.py)
# ----------------------------------------------------------------------------------------------------------

def toy_distillation(c, method: str, fit_steps: int = 2000):
    """A score-distillation run on a 2-D mixture with its EXACT denoiser as teacher (teacher.oracle='mixture').

    G and the fake denoiser start from the teacher: the MLP is first fitted to the oracle for ``fit_steps`` Adam steps
    inside init (an oracle has no weights to copy; from scratch instead, SiD covers 4 of 8 modes at 1000 steps against
    8 of 8 — docs in consistency/methods/components/distillation.py). Scaled from the papers' recipes for a 2-D MLP and a
    budget of minutes on a CPU: lr 5e-4 instead of 1e-5 / 2e-6 (the net is 100× smaller and the runs 1000× shorter),
    batch 256, generator EMA 0.99 per update (SiD's 0.5M-image half-life would average over ≈ 1400 updates).
    """
    toy(c, method)
    c.teacher.oracle = "mixture"
    c[method].init = "teacher"
    c[method].init_fit_steps = fit_steps
    c.training.batch_size = 256
    c.training.num_steps = 2000
    c.training.ckpt_every = 1000
    c.training.sample_every = 1000
    c.training.ema_decay = 0.99
    c.optim.lr = 5e-4
    c.eval.nfes = (1,)
    return c


def digits_distillation(c, method: str, teacher_workdir: str = "workdirs/digits_teacher"):
    """A score-distillation run on sklearn digits from the trained digits EDM teacher (configs/digits_edm.py): G and the
    fake denoiser are copies of the teacher network (same U-Net as presets.digits)."""
    digits(c, method)
    c.teacher.workdir = teacher_workdir
    c[method].init = "teacher"
    c.training.batch_size = 128
    c.training.num_steps = 2000
    c.training.ckpt_every = 1000
    c.training.sample_every = 1000
    c.training.ema_decay = 0.99
    c.optim.lr = 1e-4
    c.eval.nfes = (1,)
    return c


def sid_recipe(c):
    """SiD's recipe where it transfers to the CPU toys and digits (docs/methods.md §12): α = 1.2, σ_init = 2.5, Adam β₁ = 0
    for both networks; lr 1e-4 (paper 1e-5 at batch 256 on a 56M-parameter U-Net)."""
    from consistency.config import optim_override
    c.sid.alpha = 1.2
    c.sid.sigma_init = 2.5
    c.optim.lr = 1e-4
    c.optim.b1 = 0.0                        # SiD: Adam β₁ = 0 for the generator …
    c.optim_fake = optim_override(b1=0.0)   # … and for the fake score
    return c


def dmd2_recipe(c):
    """DMD2's TTUR and GAN weights (docs/methods.md §10.2): fake score + GAN head every step, generator every 5th,
    softplus GAN weights 3e-3 (generator) / 1e-2 (guidance)."""
    c.dmd2.ttur = 5
    c.dmd2.gan_generator_weight = 3e-3
    c.dmd2.gan_discriminator_weight = 1e-2
    return c


def cifar_scm(mode: str, dropout: float, p_std: float, num_steps: int):
    """sCD (``mode='distill'``) / sCT (``'train'``) on CIFAR-10 from the EDM teacher's network, FastGen's CIFAR-10
    recipe where docs/methods.md §13.2 gives it: P_mean −1.0, RAdam, batch 512, tangent warm-up 10k, 2-step sampling at
    σ = 0.821; lr 1e-4 and the sampling EMA 0.9999 are [unverified]."""
    import math
    c = cifar_network(new("scm"), dropout=dropout, arch="ddpmpp")   # the teacher's DDPM++ (configs/cifar_edm.py)
    c.teacher.workdir = "workdirs/cifar_edm"   # sCD's teacher; sCT's starting checkpoint
    c.scm.update(dict(mode=mode, init="teacher", time_input="edm", p_mean=-1.0, p_std=p_std,
                      tangent_warmup_steps=10_000, mid_t=math.atan2(0.821, c.diffusion.sigma_data)))
    c.optim.update(dict(name="radam", lr=1e-4, warmup_steps=0))
    c.training.batch_size = 512
    c.training.num_steps = num_steps
    c.training.ema_decay = 0.9999
    c.eval.nfes = (1, 2)
    return c


def variants(c, variant: str, config_file: str, **named):
    """Apply variant ``variant`` of config file ``config_file`` (its ``__file__``) to ``c`` and return ``c``: ''
    is the recipe itself; ``named`` maps each other variant name to a function that edits the config in place (or to
    None: the file applied it already, e.g. a network chosen by variant). An unknown name is one line naming the
    file and the variants it has (``configs/<file>.py:<variant>``, docs/architecture.md "One config schema")."""
    if variant and variant not in named:
        choices = ["''"] + [repr(name) for name in named]
        listed = choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"
        raise ValueError(f"configs/{os.path.basename(config_file)}: unknown variant {variant!r}; use {listed}")
    edit = named.get(variant) if variant else None
    if edit is not None:
        edit(c)
    return c


def scm_variant(c, variant: str, name: str, cpu: bool):
    """The `:cpu` (CIFAR) or `:quick` (toy/digits) variant of an sCM config."""
    def small(c):
        if cpu:
            cifar_cpu_smoke(c)
            c.teacher.workdir = "workdirs/cifar_edm_cpu" if c.teacher.workdir else ""
        else:
            quick(c, 100 if c.data.name == "digits" else 200)
        c.scm.tangent_warmup_steps = 10
    return variants(c, variant, name, **{"cpu" if cpu else "quick": small})
