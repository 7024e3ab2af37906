"""One config schema for every method (docs/architecture.md, "One config schema").

Config files under ``configs/`` start from :func:`base_config` and override fields; every field can be
overridden on the command line (``--config.optim.lr=1e-4``). :func:`validate` turns a bad value into
one :class:`ConfigError` line naming the field and the fix, before anything compiles.
"""
from __future__ import annotations

import math
import os

import ml_collections

from consistency.errors import ConfigError  # noqa: F401  (re-exported: consistency.config.ConfigError)



def __getattr__(name):
    """``config.METHODS``: the registry's method names (:func:`consistency.methods.available`), never a copy."""
    if name == "METHODS":
        from consistency import methods
        return methods.available()
    raise AttributeError(name)



def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = "edm"
    c.seed = 0

    c.data = d = ml_collections.ConfigDict()
    d.name = "digits"            # 'digits' | 'mnist5k' | 'toy:<name>' | any tfds image dataset name | your own images:
                                 # 'folder:PATH' | 'npz:PATH' | 'array_record:PATH' (consistency/data/sources.py)
    d.data_dir = ""              # tfds data_dir ('' → tfds default)
    d.resolution = 0             # 0 → native; else resize images to resolution × resolution
    d.random_flip = False        # horizontal flips (CIFAR recipes)
    d.conditional = False        # feed class labels to the model
    d.toy_size = 100_000         # number of points drawn for toy datasets
    d.latents = ""               # an inversion directory (launch/invert.py): batches carry 'latent' = E(x) (PaGoDA)
    d.pipeline = "memory"        # 'memory': the split in host memory | 'stream': read by example id (TFDS ArrayRecord,
                                 # folder:, array_record:; huge splits); the same batches (consistency/data/pipeline.py)
    d.workers = 2                # Grain threads reading (decoding) the coming batches ahead; 0: in the caller's thread
    d.test_fraction = 0.1        # folder:/npz:/array_record: held-out share ('test' split) of a fixed permutation
    d.test_path = ""             # … or the held-out set as another folder:/npz:/array_record: name ('' = test_fraction)

    c.model = m = ml_collections.ConfigDict()
    m.name = "unet"              # 'unet' | 'mlp' | EDM's networks (NVlabs/edm, parameter for parameter):
                                 # 'ddpmpp' | 'ncsnpp' (SongUNet) | 'adm' (DhariwalUNet); for those three the
                                 # architecture fixes embedding, resample, num_groups and mid_attention
    m.channels = 32              # U-Net base width (NCSN++/DDPM++ CIFAR: 128)
    m.channel_mult = (1, 2)      # width multipliers per resolution
    m.num_res_blocks = 1         # CIFAR papers: 4
    m.attn_resolutions = ()      # resolutions with self-attention, e.g. (16,)
    m.dropout = 0.0
    m.embedding = "fourier"      # 'fourier' (NCSN++) | 'positional' (DDPM++)
    m.fourier_scale = 16.0       # NCSN++: 16; iCT: 0.02
    m.resample = "nearest"       # U-Net ×2 resampling: 'nearest' (box, DDPM++) | 'fir' ([1,3,3,1], NCSN++, CM CIFAR)
    m.num_groups = 32            # U-Net GroupNorm groups: min(C/4, num_groups) (NCSN++: 32)
    m.mid_attention = True       # U-Net self-attention in the middle block (NCSN++ / DDPM)
    m.remat = False              # U-Net: recompute ResBlock activations in the backward pass (jax.checkpoint): less
                                 # memory, about one more forward pass of compute
    m.hidden = 256               # MLP width
    m.depth = 4                  # MLP hidden layers
    m.embed_dim = 128            # MLP: sinusoidal features of c_noise (Fourier: embed_dim/2 frequencies)
    m.num_classes = 0            # > 0: class-conditional, label num_classes is the null label for CFG
    m.augment_dim = 0            # EDM nets: augmentation-label inputs (EDM --augment: 9; used only when fed)
    m.channel_mult_emb = 4       # EDM nets: embedding width = channels · channel_mult_emb
    # Checked by consistency.nets.validate_model_config (one line naming the field).

    c.diffusion = f = ml_collections.ConfigDict()
    f.process = "ve"             # 've' (EDM) | 'vp'
    f.sigma_min = 0.002          # EDM / CM ε
    f.sigma_max = 80.0
    f.sigma_data = 0.5
    f.rho = 7.0
    f.p_mean = -1.2              # EDM lognormal σ
    f.p_std = 1.2
    f.vp_schedule = "cosine"     # 'cosine' | 'linear' (VP only)

    c.optim = o = ml_collections.ConfigDict()
    o.name = "adam"              # 'adam' | 'radam' | 'adamw'
    o.lr = 1e-3
    o.warmup_steps = 0
    o.grad_clip = 0.0            # global-norm clip; 0 → off
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = 1e-8
    o.weight_decay = 0.0         # adamw only
    o.schedule = "constant"      # 'constant' | 'cosine' (after warm-up)

    c.training = t = ml_collections.ConfigDict()
    t.num_steps = 2000
    t.batch_size = 128
    t.log_every = 100
    t.ckpt_every = 1000
    t.keep_checkpoints = 2
    t.sample_every = 1000
    t.eval_every = 0             # 0 → evaluate only at the end
    t.ema_decay = 0.999          # sampling EMA per step
    t.ema_half_life_images = 0.0  # > 0 overrides ema_decay: r = 0.5^(B/H) (EDM)
    t.label_dropout = 0.0        # p(label → null) for CFG training
    t.max_param_abs = 1e4        # refuse to checkpoint a state with max|θ| of params/EMA above this (diverged);
                                 # 0 → off. Healthy weights are O(1) (consistency/checkpoint.py)
    t.blowup_ratio = 1e3         # stop, unsaved, when a set's loss exceeds this × its recent median (or max|θ| this × its
                                 # value at the last save): a finite blow-up (consistency/blowup.py); 0 → off
    t.init_from = ""             # warm start: a finished workdir whose parameter sets (params, EMA, moving) of the
                                 # same names and shapes are copied in at step 0 (CTM's GAN fine-tuning stage)
    t.init_sets = ()             # warm start only these set names, e.g. ('generator',) (PaGoDA growing); () → all
    t.compute_dtype = "float32"  # network compute: 'float32' | 'bfloat16' (mixed precision: float32 parameters,
                                 # optimizer state, EMA, σ grids, losses; consistency/networks.py MixedPrecisionNet)
    t.fsdp = 1                   # > 1: parameters, EMA and optimizer state split over a second mesh axis of this size
                                 # (FSDP / ZeRO-3; consistency/train.py Placement); must divide the device count
    t.grad_accumulation = 1      # > 1: each update averages the gradients of this many micro-batches of
                                 # batch_size / grad_accumulation (consistency/methods/base.py train_step)

    c.teacher = te = ml_collections.ConfigDict()
    te.workdir = ""              # a trained EDM workdir (its EMA params are the teacher)
    te.oracle = ""               # '' | 'mixture' | 'empirical' | 'gaussian': closed-form teacher from the data

    c.sampling = s = ml_collections.ConfigDict()
    s.solver = "heun"            # 'euler' | 'heun' | 'dpm_solver_2' | 'dpmpp_2m' | 'stochastic' (EDM Alg. 2)
    s.num_steps = 18             # Karras grid points (Heun: NFE = 2N − 1)
    s.sigmas = ()                # CM multistep: explicit σ list, first σ_max (see methods/cm docs)
    s.cfg_scale = 1.0            # w: D_w = D_∅ + w (D_c − D_∅); 1 → plain conditional
    s.num_samples = 64
    s.clip = True                # clip x0 to the data range after each CM step

    # Consistency models (CD, CT, iCT and the notebook's variants; docs/methods.md §4–§6). Defaults: CM paper CIFAR-10 CD.
    c.cm = cm = ml_collections.ConfigDict()
    cm.num_scales = 18           # N of the Karras grid when curriculum == 'fixed' (CD CIFAR-10: 18)
    cm.curriculum = "fixed"      # 'fixed' (N = num_scales) | 'ct' (Song 2023 N(k)) | 'ict' (doubling N(k))
    cm.s0 = 2                    # curriculum start (CT: 2, iCT: 10)
    cm.s1 = 150                  # curriculum end (CT: 150, iCT: 1280)
    cm.target_ema = 0.0          # μ of θ⁻ when target_schedule == 'fixed'; 0 → θ⁻ = stopgrad(θ), no copy kept
    cm.target_schedule = "fixed"  # 'fixed' | 'ct' (μ(k) from mu0, s0, s1)
    cm.mu0 = 0.9                 # CT μ₀
    cm.mu_form = "code"          # 'code' μ₀^{s₀/(N−1)} (jcm/cm) | 'paper' μ₀^{s₀/N} (docs/methods.md §17 item 1)
    cm.distance = "l2"           # 'l2' | 'l1' | 'pseudo_huber' | 'feature' (LPIPS-like, in-project feature net)
    cm.huber_c = -1.0            # pseudo-Huber c; < 0 → 0.00054·√d (iCT)
    cm.weighting = "uniform"     # 'uniform' | 'snr' | 'snr+1' | 'truncated_snr' | 'inv_delta' (iCT 1/Δσ)
    cm.index_sampling = "uniform"  # 'uniform' over pairs | 'lognormal' (iCT discrete lognormal)
    cm.p_mean = -1.1             # iCT lognormal index sampling
    cm.p_std = 2.0
    cm.solver = "heun"           # CD teacher solver: 'euler' | 'heun' | 'dpm_solver_2' (notebook ablation: solver order)
    cm.teacher_steps = 1         # solver steps per target (notebook: multi-step teacher)
    cm.max_gap = 1               # pairs (i, i+g), g ~ U{1..max_gap} (seed eq. 13: distant-step pairs)
    cm.ct_weight = 0.0           # CD + ct_weight·CT on an arbitrary pair (seed eq. 14)
    cm.split_gap = 0             # > 0: pairs with gap ≤ split_gap use the CD target, farther ones the CT target
    cm.posterior = "none"        # CT target E[x₀|x]: 'none' (x₀, seed eq. 17 n=1) | 'batch' | 'dataset' (seed eq. 22–25)
    cm.posterior_k = 0           # > 0: k nearest neighbours only
    cm.init_from_teacher = True  # CD: start the student from the teacher's EMA weights

    # ECT, Geng et al. 2024 (docs/methods.md §7).
    c.ecm = ecm = ml_collections.ConfigDict()
    ecm.p_mean = -1.1
    ecm.p_std = 2.0
    ecm.q = 2.0
    ecm.k = 8.0
    ecm.b = 1.0
    ecm.steps_per_stage = 25_000  # CIFAR-10: double = 250 ticks of 12.8k images at batch 128 → 25k iterations
    ecm.huber_c = 0.0            # 0 → un-squared ‖·‖₂ (ECT default); > 0 → pseudo-Huber
    ecm.sigma_min_eval = 0.003   # CM boundary of the sampling consistency function (ECMPrecond, docs/methods.md §7)
    ecm.clip_t = False           # False: t = e^{P_mean + P_std n} as drawn (locuslab/ect loss.py); True: clip to [σ_min, σ_max]

    # Score distillation (docs/methods.md §10–§12; consistency/methods/distillation.py). Shared fields: init 'teacher' copies
    # the teacher network into G and D_fake (an oracle teacher is first fitted for init_fit_steps Adam steps) |
    # 'scratch'; ttur = fake (or discriminator) updates per generator update; a 1000-point Karras grid of timesteps.
    # DMD, Yin et al. 2023 (docs/methods.md §10.1).
    c.dmd = dmd = ml_collections.ConfigDict()
    dmd.init = "teacher"         # G and D_fake start from the teacher (DMD §3.1)
    dmd.init_fit_steps = 0       # oracle teacher + init='teacher': Adam steps fitting the net to the oracle first
    dmd.generator_sigma = 0.0    # σ_g of G(z) = D_θ(σ_g z, σ_g); 0 → diffusion.sigma_max (DMD2 EDM code)
    dmd.ttur = 1                 # fake updates per generator update (DMD: 1:1 [unverified])
    dmd.num_train_timesteps = 1000  # teacher grid T (DMD2 EDM code: 1000-point Karras grid, index 0 = σ_min)
    dmd.min_step_fraction = 0.02  # DM-gradient t ~ U[0.02 T, 0.98 T] (DMD §3.2; docs/methods.md §1.4)
    dmd.max_step_fraction = 0.98
    dmd.normalise = True         # g = (D_fake − D_real)/mean|x − D_real| (DMD §3.2 weight); False → s_fake − s_real
    dmd.reduce = "mean"          # surrogate ½‖x − sg(x − g)‖²: 'mean' over B·d (DMD2 code) | 'sum' over pixels
    dmd.fake_weighting = "edm"   # fake DSM λ: 'edm' 1/σ² + 1/σ_d² (DMD2 code) | 'uniform' (seed eq. 66)
    dmd.regression_weight = 0.25  # λ_reg (DMD [unverified], docs/methods.md §10.1); 0 → no regression term
    dmd.regression_distance = "l2"  # 'l2' | 'pseudo_huber' | 'feature' (LPIPS-like in-project net; DMD uses LPIPS)
    dmd.huber_c = -1.0           # pseudo-Huber c; < 0 → 0.00054·√d (iCT)
    dmd.pairs = ""               # .npz of teacher ODE pairs (z, y): launch/make_ode_pairs.py (DMD §3.3)

    # DMD2, Yin et al. 2024 (docs/methods.md §10.2; tianweiy/DMD2 EDM code): no regression, TTUR, diffusion GAN.
    c.dmd2 = dmd2 = ml_collections.ConfigDict()
    dmd2.init = "teacher"        # G and D_fake start from the teacher (DMD2: the generator is a copy of the teacher)
    dmd2.init_fit_steps = 0      # oracle teacher + init='teacher': Adam steps fitting the net to the oracle first
    dmd2.generator_sigma = 0.0   # σ_g of a one-step G; 0 → diffusion.sigma_max (DMD2 EDM code)
    dmd2.generator_timesteps = ()  # K-step G by backward simulation: descending, from T−1, e.g. (999, 749, 499, 249)
    dmd2.ttur = 5                # DMD2 TTUR: fake score + GAN head every step, generator every 5th
    dmd2.generator_first = True  # DMD2 code: generator at steps ≡ 0 mod ttur, before that step's fake update;
                                 # False: at steps ≡ ttur − 1, after the fake side's ttur updates
    dmd2.num_train_timesteps = 1000  # teacher grid T (DMD2 EDM code)
    dmd2.min_step_fraction = 0.02  # DM index ~ U[20, 980] of 1000 (DMD2 `min_step_percent`)
    dmd2.max_step_fraction = 0.98  # (DMD2 `max_step_percent`)
    dmd2.normalise = True        # g / mean|x − D_real| (DMD2 `compute_distribution_matching_loss`)
    dmd2.reduce = "mean"         # DM surrogate mean over B·d (DMD2 code, docs/methods.md §10.2)
    dmd2.fake_weighting = "edm"  # fake DSM λ = 1/σ² + 1/σ_d² (DMD2 `compute_loss_fake`)
    dmd2.gan_generator_weight = 3e-3  # softplus(−D(G(z))) weight (DMD2 `gen_cls_loss_weight`); 0 → no GAN
    dmd2.gan_discriminator_weight = 1e-2  # discriminator loss weight in the fake set (DMD2 `guidance_cls_loss_weight`)
    dmd2.gan_max_timestep = 1000  # diffusion-GAN noise index ~ U[0, gan_max_timestep) (DMD2 `diffusion_gan_max_timestep`)

    # ADD, Sauer et al. 2023 (docs/methods.md §11; no training code: several defaults [unverified]).
    c.add = add = ml_collections.ConfigDict()
    add.init = "teacher"         # the student starts from the teacher (ADD §3.1)
    add.init_fit_steps = 0       # oracle teacher + init='teacher': Adam steps fitting the net to the oracle first
    add.student_timesteps = (999, 749, 499, 249)  # student noise set on the T grid, first = σ_max (ADD §3.1)
    add.num_train_timesteps = 1000  # teacher grid T
    add.min_step_fraction = 0.02  # teacher level of the distillation term: index ~ U[0.02 T, 0.98 T] (as DMD)
    add.max_step_fraction = 0.98
    add.distillation_weight = 2.5  # λ of L_adv^G + λ L_distill (ADD §3.2)
    add.weighting = "exponential"  # c(t): 'exponential' α_t = 1/√(1+σ²) (ADD) | 'uniform'
    add.r1_weight = 1e-5         # γ of the R1 penalty on real inputs (ADD §3.2)
    add.features = "classifier"  # frozen discriminator features: 'classifier' (in-project digits net, DINOv2's
                                 # stand-in) | 'teacher' (teacher U-Net encoder at feature_sigma) | 'input' (raw x: toys)
    add.feature_sigma = 0.002    # 'teacher' features: the σ the frozen teacher encoder reads clean images at
    add.ttur = 1                 # discriminator updates per student update (ADD: alternate G:D)
    add.augment = ""             # DiffAugment policy on the discriminator's real and fake inputs, e.g.
                                 # 'color,translation,cutout' (Projected GAN / StyleGAN-T); images only

    # SiD, Zhou et al. 2024 (docs/methods.md §12; mingyuanzhou/SiD).
    c.sid = sid = ml_collections.ConfigDict()
    sid.init = "teacher"         # G and D_fake start from the teacher (SiD)
    sid.init_fit_steps = 0       # oracle teacher + init='teacher': Adam steps fitting the net to the oracle first
    sid.sigma_init = 2.5         # x_g = G(σ_init z, σ_init) (SiD `init_sigma`)
    sid.alpha = 1.2              # α of the code-form loss (SiD CIFAR-10/ImageNet; 1.0 for AFHQ)
    sid.t_max_fraction = 0.8     # generator σ: u ~ U[0, 0.8] on the ρ-schedule, σ ∈ [0.002, 24.4] (SiD tmax = 800)
    sid.normalise = True         # divide by sg(max(mean|x_g − D_r|, 1e-5)) (SiD `weight_factor`)
    sid.generator_loss_scale = 100.0  # summed-over-pixels loss × 100/batch (SiD `loss_scaling_G`)
    sid.fake_p_mean = -1.2       # fake DSM σ: ln σ ~ N(−1.2, 1.2²) (EDM lognormal; SiD)
    sid.fake_p_std = 1.2
    sid.ttur = 1                 # fake updates per generator update (SiD: alternating 1:1)

    # Discriminator head (DMD2's diffusion GAN on the fake U-Net; ADD's heads on frozen features): the fields of
    # consistency.nets.heads.default_head_config (make_head reads them).
    c.discriminator = h = ml_collections.ConfigDict()
    h.name = "dmd2"              # 'dmd2' (DMD2 classifier) | 'multiscale' (Projected GAN patch heads) | 'mlp' (toys)
    h.features = ()              # feature names; () → dmd2: the U-Net encoder output 'enc_<coarsest>' (DMD2 code),
                                 # mlp: ('bottleneck',), multiscale: every image feature
    h.channels = 0               # head width; 0 → the input feature's width (DMD2 keeps 768 throughout)
    h.num_groups = 32            # GroupNorm group cap (DMD2: 32)
    h.end_size = 8               # multiscale: downsample each map to <= end_size, then a 4×4 logit conv (CTM: 8)
    h.depth = 2                  # mlp: hidden layers
    h.num_classes = 0            # > 0: projection-conditional head; DMD2: 0 (the label enters through the U-Net)
    h.cmap_dim = 64              # projection dimension of a conditional head (StyleGAN-XL / CTM: 64)
    h.reduce = "concat"          # multiscale: 'concat' patch logits (Projected GAN) | 'mean'

    # Consistency trajectory models, CTM (Kim et al. 2023; docs/methods.md §13.1; consistency/methods/ctm.py). Defaults:
    # the CIFAR-10 CTM+DSM recipe of `sony/ctm` (N = 18, θ⁻ EMA 0.999, adaptive DSM weight).
    c.ctm = ctm = ml_collections.ConfigDict()
    ctm.init = "teacher"         # 'teacher' copies the EDM teacher (CTM initialises from it) | 'scratch'
    ctm.init_fit_steps = 0       # oracle teacher + init='teacher': Adam steps fitting the net to the oracle first
    ctm.num_scales = 18          # N of the Karras grid t, u, s live on (CTM: 18 CIFAR-10, 40 ImageNet-64)
    ctm.heun_steps = 17          # K: k ∈ {1 … K} teacher Heun steps from t to u, one k per batch (CTM: up to N − 1)
    ctm.heun_step_strategy = "weighted"  # P(k) ∝ k (CTM's default) | 'uniform' 1/K
    ctm.target_ema = 0.999       # μ of θ⁻ (CTM); 0 → θ⁻ = sg θ
    ctm.distance = "l2"          # soft-consistency d: 'l2' | 'pseudo_huber' (CTM: LPIPS, not available offline)
    ctm.huber_c = -1.0           # pseudo-Huber c; < 0 → 0.00054·√d (iCT)
    ctm.dsm_weight = 1.0         # DSM auxiliary weight (× the adaptive ratio when adaptive_dsm); 0 → no DSM
    ctm.adaptive_dsm = True      # λ_DSM = ‖∇_last L_CTM‖ / ‖∇_last L_DSM‖ (CTM)
    ctm.dsm_sigmas = "half_uniform"  # DSM σ: half lognormal, half ρ-uniform (CTM's halflognormal) | 'lognormal'
    ctm.dsm_uniform_fraction = 0.7   # the ρ-uniform half covers this fraction of the σ_max → σ_min ramp (CTM: 0.7)
    ctm.p_mean = -1.2            # DSM ln σ ~ N(p_mean, p_std²) (EDM; CTM's lognormal half)
    ctm.p_std = 1.2
    ctm.gamma = 0.0              # γ-sampling: 0 deterministic long jumps … 1 CM-style re-noising
    ctm.gan_weight = 0.0         # > 0: hinge GAN on x_est, × clip(‖∇_last L_CTM‖/‖∇_last L_GAN‖, 0.01, 10) (CTM's GAN
                                 # stage); the head is config.discriminator, its optimizer config.optim_discriminator
    ctm.gan_features = "input"   # frozen discriminator features, as add.features: 'input' | 'classifier' | 'teacher'
    ctm.gan_augment = ""         # DiffAugment policy of the GAN's discriminator inputs, as add.augment

    # Multistep consistency models, MCM (Heek et al. 2024; seed eq. 44–54; docs/methods.md §8; consistency/methods/mcm.py,
    # checked by consistency.methods.mcm.validate_config). Defaults: the VP MCD recipe of docs/methods.md §8.1.
    c.mcm = mcm = ml_collections.ConfigDict()
    mcm.process = "vp"           # 'vp' DDIM/aDDIM form (docs/methods.md §8.1) | 've' the notebook's eq. 51 form (§8.2)
    mcm.mode = "distill"         # 'distill' MCD (teacher step) | 'train' MCT (data in place of the teacher, §8.1 step 2)
    mcm.segments = 4             # T: segments = sampling steps; T = 1 is a CM (MCM paper: 1…16, ImageNet-64 at 8)
    mcm.boundaries = ()          # VE only: ascending σ boundaries b_0 < … < b_T (T + 1 values); () → T + 1 Karras points
    mcm.num_steps_start = 64.0   # teacher steps N(i) over the whole range at i = 0 (unofficial MCM port, §8.1 step 5)
    mcm.num_steps_end = 1280.0   # N(i) after the ramp (§8.1 step 5); equal to num_steps_start → a fixed grid
    mcm.num_steps_ramp = 100_000  # i at which the log-linear ramp of N(i) ends (§8.1 step 5)
    mcm.teacher_solver = "addim"  # 'addim' (§8.1) | 'ddim' (= VE Euler, seed eq. 50) | 'heun' (EDM, in VE coordinates)
    mcm.addim_eta = 0.75         # η of aDDIM's v_x = η·‖x̂_tch − x‖²/d (docs/methods.md §8.1)
    mcm.loss_space = "x"         # 'x' x̂_θ vs invDDIM target (§8.1 step 4) | 'eps' corrected nb (47) (§17 item 11) |
                                 # 'jump' F_θ vs ẑ at the segment start (nb (46); VE: nb (52))
    mcm.weighting = "snr+1"      # λ(t): 'snr+1' (§8.1 step 4) | 'snr' | 'uniform'
    mcm.distance = "pseudo_huber"  # 'pseudo_huber' (§8.1 step 4) | 'l2'
    mcm.huber_c = 1e-4           # pseudo-Huber c ("ε = 1e-4", §8.1 step 4, unofficial port); < 0 → 0.00054·√d (iCT)
    mcm.target_ema = 0.0         # μ of the target θ⁻ (§8.1 step 4: "θ⁻ an EMA", no value given); 0 → θ⁻ = sg θ
    mcm.cfg_scale = 1.0          # w of the guided teacher D_w = D_∅ + w(D_c − D_∅) (docs/methods.md §2; nb (44))
    mcm.init_from_teacher = True  # workdir teacher: the student starts from the teacher's EMA weights

    # Continuous-time consistency models in TrigFlow, sCM (Lu & Song 2024; docs/methods.md §13.2; consistency/methods/scm.py).
    # Defaults: FastGen's CIFAR-10 sCD recipe where docs/methods.md §13.2 gives one.
    c.scm = scm = ml_collections.ConfigDict()
    scm.mode = "distill"         # 'distill' sCD (teacher velocity) | 'train' sCT (conditional velocity cos t z − sin t x₀)
    scm.init = "teacher"         # 'teacher' copies the EDM teacher (sCD; sCT from an EDM checkpoint) | 'scratch'
    scm.init_fit_steps = 0       # oracle teacher + init='teacher': Adam steps fitting the net to the oracle first
    scm.time_input = "edm"       # c_noise: 'edm' ¼ ln(σ_d tan t) (an EDM net is an sCM F as is) | 'trigflow' t (sCM)
    scm.p_mean = -1.0            # ln σ ~ N(p_mean, p_std²), t = arctan(σ/σ_d) (CIFAR-10: −1.0, 1.4 [unofficial code])
    scm.p_std = 1.4
    scm.tangent_warmup_steps = 10_000  # r = min(1, k / this) (sCM §4.2)
    scm.tangent_norm_const = 0.1  # c of g / (‖g‖ + c) (sCM §4.2)
    scm.tangent_norm = "paper"   # 'paper' g/(‖g‖ + c) (sCM §4.2) | 'fastgen' g/(‖g‖/√d + c) (docs/fidelity.md)
    scm.t_sampling = "clip"      # lognormal σ 'clip'ped to [σ_min, σ_max] | 'truncate'd to it (FastGen)
    scm.jvp = "jvp"              # 'jvp' (jax.jvp, exact) | 'finite_difference' (central, ε = 1e-3·t)
    scm.mid_t = 1.1              # 2-step sampler's intermediate t (sCM 1.1; FastGen arctan(0.821/σ_d) = 1.0238)
    scm.cfg_scale = 1.0          # sCD teacher guidance w: dx = dx_c + (w − 1)(dx_c − dx_∅)

    # PaGoDA, Kim et al. 2024 (docs/methods.md §9; consistency/methods/pagoda.py). Defaults: the official 64→64 stage.
    c.pagoda = pg = ml_collections.ConfigDict()
    pg.init = "teacher"          # the base generator starts as a copy of the teacher (PaGoDA) | 'scratch'
    pg.init_fit_steps = 0        # oracle teacher + init='teacher': Adam steps fitting the net to the oracle first
    pg.stage = 1                 # 1: teacher resolution R; s: output 2^(s−1)·R through s − 1 growth blocks
    pg.grow_channels = 64        # width of each growth block (consistency/nets/growing.py)
    pg.grow_res_blocks = 1       # residual blocks per growth block
    pg.distance = "feature"      # L_rec d: 'feature' (in-project classifier; PaGoDA LPIPS / cnn_vit) | 'l2' |
                                 # 'pseudo_huber'
    pg.huber_c = -1.0            # pseudo-Huber c; < 0 → 0.00054·√d (iCT)
    pg.reconstruction_weight = 1.0
    pg.discriminator_weight = 0.2  # GAN weight (PaGoDA 64→64: 0.2 adaptive; growing stages: 1)
    pg.adaptive = True           # λ_adv = clip(‖∇_last L_rec‖/‖∇_last L_GAN‖, 0.01, 10)·discriminator_weight
    pg.prior = "sigma_max"       # generator input at sampling (and for the GAN's fakes): 'sigma_max' σ_max·ε (PaGoDA) |
                                 # 'latent' the per-coordinate Gaussian of the inverted latents (consistency/inversion.py)
    pg.alternate = True          # D and G alternate 1:1, one set per loop step (official step % 2); False → both
    pg.r1_weight = 0.0           # γ·R1 on real inputs (not in PaGoDA)
    pg.features = "classifier"   # frozen discriminator features, as add.features: 'classifier' | 'teacher' | 'input'
    pg.feature_sigma = 0.002     # 'teacher' features: the σ the teacher encoder reads images at
    pg.augment = ""              # DiffAugment policy of the discriminator inputs, as add.augment
    pg.guidance_scales = ()      # CFG (seed eq. 56–58): the w grid the latents were inverted with (launch/invert.py
                                 # --guidance_scales); G and D are conditioned on (c, w), w ~ uniform over the grid
    pg.sample_guidance = 0.0     # w that sampling/eval uses; 0 → the first scale (or no guidance)

    c.eval = e = ml_collections.ConfigDict()
    e.num_samples = 1000
    e.nfes = ()                  # NFEs to evaluate (method-specific meaning, see README); () → the method's default_nfes
    e.inception_weights = ""     # pytorch-fid's pt_inception-2015-12-05-6726825d.pth: turns on FID (docs/fid.md)
    e.fid_reference = ""         # published reference statistics (.npz with mu, sigma); '' → computed from the
                                 # training split once and cached
    e.bootstrap = 0              # > 0: that many bootstrap replicates → 95 % intervals (fd_ci, kid_ci / swd_ci, mmd_ci)
                                 # over samples: fd_ci / swd_ci basic intervals of the population value (bias-corrected,
                                 # clipped at 0; may lie below the upward-biased estimate at small n), kid_ci / mmd_ci
                                 # percentile intervals (unbiased estimates); see docs/benchmark.md, "Intervals"
    c.distributed = False        # call jax.distributed.initialize() (multi-host)
    return c


OPTIM_FIELD_TYPES = {"name": str, "lr": float, "warmup_steps": int, "grad_clip": float, "b1": float, "b2": float,
                     "eps": float, "weight_decay": float, "schedule": str}


def optim_override(**values) -> ml_collections.ConfigDict:
    """A ``config.optim_<set>`` block for a method's extra trained parameter set (e.g. ``optim_fake``).

    It has every field of ``config.optim``, each a typed placeholder: ``None`` inherits ``config.optim``'s value, so
    ``--config.optim_fake.b1=0.0`` works on any such block (SiD: Adam β₁ = 0) and an unknown field is refused.
    ``values`` set fields now, e.g. ``optim_override(lr=2e-5, b1=0.0)``.
    """
    block = ml_collections.ConfigDict({k: ml_collections.config_dict.placeholder(t)
                                       for k, t in OPTIM_FIELD_TYPES.items()})
    for key, value in values.items():
        if key not in OPTIM_FIELD_TYPES:
            raise ConfigError(f"optim_override: {key!r} is not an optimizer field; choose from "
                              f"{', '.join(OPTIM_FIELD_TYPES)}")
        block[key] = value
    return block


def _err(field: str, msg: str) -> ConfigError:
    return ConfigError(f"config.{field}: {msg}")


# ----------------------------------------------------------------------------------------------------------
# Validation: one ConfigError line `config.<field>: <what is wrong>; <the fix>` before anything is built
# ----------------------------------------------------------------------------------------------------------

OPTIMIZERS = ("adam", "radam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
SAMPLING_SOLVERS = ("euler", "heun", "dpm_solver_2", "dpmpp_2m", "stochastic")
ORACLES = ("mixture", "empirical", "gaussian")
CM_CHOICES = {"curriculum": ("fixed", "ct", "ict"), "target_schedule": ("fixed", "ct"), "mu_form": ("code", "paper"),
              "distance": ("l2", "l1", "pseudo_huber", "feature"),
              "weighting": ("uniform", "snr", "snr+1", "truncated_snr", "inv_delta"),
              "index_sampling": ("uniform", "lognormal"), "solver": ("euler", "heun", "dpm_solver_2"),
              "posterior": ("none", "batch", "dataset")}
# How a method uses config.teacher; methods not listed (e.g. added with methods.register) are not checked.
TEACHER_USE = {"cd": "required", "ecm": "optional", "edm": "unused", "ct": "unused", "ict": "unused",
               "dmd": "required", "dmd2": "required", "add": "required", "sid": "required",
               "ctm": "required", "pagoda": "required"}
IN_MEMORY_CLASSES = {"digits": 10, "mnist5k": 10}   # class counts known without loading the data


def _fail(field: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"config.{field}: {problem}; {fix}")


def _require(ok: bool, field: str, problem: str, fix: str) -> None:
    if not ok:
        raise _fail(field, problem, fix)


def _default_of(field: str):
    """The base_config() default of a dotted field (None when the schema has no such field)."""
    node = base_config()
    for key in field.split("."):
        if not hasattr(node, "get") or key not in node:
            return None
        node = node[key]
    return node


def _bounds_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _number(value, field: str, lo=None, hi=None, *, lo_open: bool = False, hi_open: bool = False,
            integer: bool = False, fix: str = "") -> None:
    """``value`` is a finite number (an int if ``integer``) within the bounds; else a one-line ConfigError."""
    bounded = lo is not None or hi is not None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or (integer and not isinstance(value, int)):
        problem = f"{value!r} is not {'an integer' if integer else 'a finite number'}"
    elif (lo is not None and (value <= lo if lo_open else value < lo)) or (
            hi is not None and (value >= hi if hi_open else value > hi)):
        problem = f"{value!r} is not {_bounds_text(lo, hi, lo_open, hi_open)}"
    else:
        return
    default = _default_of(field)
    hint = fix or (f"use a value {_bounds_text(lo, hi, lo_open, hi_open)}" if bounded else "use a number")
    raise _fail(field, problem, hint + ("" if default is None else f" (default {default!r})"))


def _choice(value, field: str, choices) -> None:
    _require(value in choices, field, f"{value!r} is not one of {', '.join(map(repr, choices))}",
             f"choose one of them (default {_default_of(field)!r})")


def _flag(value, field: str) -> None:
    _require(isinstance(value, bool), field, f"{value!r} is not a bool", "use True or False")


LATENT_METHODS = ("pagoda",)   # the methods whose batches use data.latents (inverted latents, launch/invert.py)


def _toy_short_name(name: str) -> str | None:
    """'toy:moons' → 'moons' (None for other data names)."""
    return name.split(":", 1)[1] if name.startswith("toy:") else None


def _dataset_num_classes(name: str) -> int | None:
    """Class count of a dataset known without loading it (digits, mnist5k, toys); None otherwise."""
    short = _toy_short_name(name)
    if short is not None:
        from consistency.data import toys
        return toys.toy_num_classes(short)
    return IN_MEMORY_CLASSES.get(name)


OWN_DATA_KINDS = ("folder", "npz", "array_record")   # data.name = '<kind>:PATH' (consistency/data/sources.py)


def _own_data_kind(name) -> str | None:
    kind, sep, _ = str(name).partition(":")
    return kind if sep and kind in OWN_DATA_KINDS else None


def _validate_own_data_path(name, field: str) -> None:
    """'folder:PATH' names a directory, 'npz:PATH' a file, 'array_record:PATH' a directory (checked here, before
    any data is read: one line)."""
    import os

    _require(isinstance(name, str), field, f"{name!r} is not a string", "use 'folder:PATH', 'npz:PATH' or "
             "'array_record:PATH'")
    kind = _own_data_kind(name)
    if kind is None:
        _require(field == "data.name" or name == "", field, f"{name!r} is not folder:PATH, npz:PATH or "
                 "array_record:PATH", "name the held-out images that way, or use ''")
        return
    path = os.path.expanduser(name.split(":", 1)[1])
    want_dir = kind != "npz"
    _require(path != "" and (os.path.isdir(path) if want_dir else os.path.isfile(path)), field,
             f"{path!r} is not {'a directory' if want_dir else 'a file'}",
             {"folder": "give a folder of images (class sub-folders become labels)",
              "npz": "give an .npz with x uint8 [N, H, W, C] (and optional labels [N])",
              "array_record": "give a directory written by launch/prepare_data.py"}[kind])


def _validate_top(c) -> None:
    from consistency import methods
    names = methods.available()
    _require(c.method in names, "method", f"unknown method {c.method!r}", f"choose one of {', '.join(names)}")
    _number(c.seed, "seed", integer=True)
    _flag(c.get("distributed", False), "distributed")


def _validate_data(c) -> None:
    d = c.data
    _require(isinstance(d.name, str) and d.name.strip() != "", "data.name", f"{d.name!r} names no dataset",
             "use 'digits', 'mnist5k', 'toy:<name>' or a TFDS name such as 'cifar10'")
    _require(isinstance(d.data_dir, str), "data.data_dir", f"{d.data_dir!r} is not a path", "use '' (TFDS default)")
    _number(d.resolution, "data.resolution", 0, integer=True, fix="use 0 (native) or the image side in pixels")
    _flag(d.random_flip, "data.random_flip")
    _flag(d.conditional, "data.conditional")
    _number(d.toy_size, "data.toy_size", 1, integer=True)
    _require(isinstance(d.get("latents", ""), str), "data.latents", f"{d.get('latents')!r} is not a path",
             "use '' or an inversion directory made by launch/invert.py")
    _choice(d.get("pipeline", "memory"), "data.pipeline", ("memory", "stream"))
    _number(d.get("workers", 0), "data.workers", 0, integer=True, fix="use 0 (read in the caller's thread) or a few "
            "threads per accelerator")
    _number(d.get("test_fraction", 0.1), "data.test_fraction", 0, 1, hi_open=True)
    for field in ("name", "test_path"):
        _validate_own_data_path(d.get(field, ""), f"data.{field}")
    _require(not d.get("test_path", "") or _own_data_kind(d.name) is not None, "data.test_path",
             f"{d.test_path!r} is a held-out set for folder:/npz:/array_record: data, but data.name is {d.name!r}",
             "set it to ''")
    if d.get("pipeline", "memory") == "stream":
        _require(d.name not in IN_MEMORY_CLASSES and _toy_short_name(d.name) is None, "data.pipeline",
                 f"'stream' is only for TFDS datasets, but {d.name!r} is built in memory", "set data.pipeline='memory'")
        _require(not d.get("latents", ""), "data.pipeline", "'stream' cannot serve data.latents (the inverted "
                 "latents of the whole split are held in memory)", "set data.pipeline='memory'")
    short = _toy_short_name(d.name)
    if short is not None:
        from consistency.data import toys
        _require(short in toys.TOY_NAMES, "data.name", f"unknown toy {short!r}",
                 f"choose toy:<name> with <name> one of {', '.join(toys.TOY_NAMES)}")
        batch = c.training.batch_size
        _require(not isinstance(batch, int) or d.toy_size >= batch, "data.toy_size",
                 f"{d.toy_size} points are fewer than one batch (training.batch_size = {batch})",
                 f"use data.toy_size >= {batch} or a smaller training.batch_size")
        _require(d.resolution == 0, "data.resolution", f"toy data {d.name!r} has no image resolution", "set it to 0")
        _require(not d.random_flip, "data.random_flip", f"toy data {d.name!r} cannot be flipped", "set it to False")
    if d.get("latents", "") and c.method not in LATENT_METHODS:
        _require(False, "data.latents", f"{d.latents!r} is set, but method {c.method!r} reads no inverted latents "
                 f"(only {', '.join(LATENT_METHODS)} does)", "drop --config.data.latents")
    classes = _dataset_num_classes(d.name)
    if d.conditional:
        _require(classes != 0, "data.conditional", f"{d.name} has no class labels", "set it to False")
        _require(c.model.num_classes > 0, "data.conditional", "True, but config.model.num_classes is 0, so the "
                 "model would ignore the labels", f"set model.num_classes={classes or 'the number of classes'}")
    if c.model.num_classes > 0 and classes:
        _require(c.model.num_classes == classes, "model.num_classes",
                 f"{c.model.num_classes} differs from the {classes} classes of {d.name}",
                 f"set it to {classes} (or 0 for an unconditional model)")


def _validate_model(c) -> None:
    """``consistency.nets.validate_model_config`` when the networks provide it; the network name otherwise."""
    from consistency import nets
    validate_model = getattr(nets, "validate_model_config", None)
    if validate_model is not None:
        validate_model(c.model)
    else:
        _choice(c.model.name, "model.name", ("unet", "mlp", "ddpmpp", "ncsnpp", "adm"))
    _number(c.model.num_classes, "model.num_classes", 0, integer=True, fix="use 0 (unconditional) or the class count")


def _validate_diffusion(c) -> None:
    f = c.diffusion
    _choice(f.process, "diffusion.process", ("ve", "vp"))
    _choice(f.vp_schedule, "diffusion.vp_schedule", ("cosine", "linear"))
    _number(f.sigma_min, "diffusion.sigma_min", 0, lo_open=True)
    _number(f.sigma_max, "diffusion.sigma_max", 0, lo_open=True)
    _require(f.sigma_min < f.sigma_max, "diffusion.sigma_min", f"{f.sigma_min} is not below "
             f"diffusion.sigma_max = {f.sigma_max}", "need 0 < sigma_min < sigma_max (EDM: 0.002 and 80)")
    _number(f.sigma_data, "diffusion.sigma_data", 0, lo_open=True)
    _number(f.rho, "diffusion.rho", 0, lo_open=True)
    _number(f.p_mean, "diffusion.p_mean")
    _number(f.p_std, "diffusion.p_std", 0, lo_open=True)


def validate_optim_block(o, prefix: str = "optim", set_fields=None) -> None:
    """Check one optimizer config (``config.optim`` or a merged ``config.optim_<set>``). Errors name
    ``config.<prefix>.<field>`` for the fields in ``set_fields`` (default: all), ``config.optim.<field>`` for the
    others (inherited from ``config.optim``)."""
    def field(name):
        return f"{prefix}.{name}" if set_fields is None or name in set_fields else f"optim.{name}"
    _choice(o.name, field("name"), OPTIMIZERS)
    _choice(o.schedule, field("schedule"), LR_SCHEDULES)
    _number(o.lr, field("lr"), 0, lo_open=True)
    _number(o.warmup_steps, field("warmup_steps"), 0, integer=True, fix="use 0 (no warm-up) or a step count")
    _number(o.grad_clip, field("grad_clip"), 0, fix="use 0 (off) or a global-norm bound such as 1.0")
    _number(o.b1, field("b1"), 0, 1, hi_open=True)
    _number(o.b2, field("b2"), 0, 1, hi_open=True)
    _number(o.eps, field("eps"), 0, lo_open=True)
    _number(o.weight_decay, field("weight_decay"), 0)
    _require(o.weight_decay == 0 or o.name == "adamw", field("weight_decay"),
             f"{o.weight_decay} is set but optim.name is {o.name!r}, which has no weight decay",
             "set name='adamw' or weight_decay=0")


def optim_block_names(c) -> list[str]:
    """The ``config.optim_<set>`` blocks of a config: ['fake', ...] for ``optim_fake``, …"""
    return sorted(k[len("optim_"):] for k in c.keys() if k.startswith("optim_"))


def _validate_optim(c) -> None:
    from consistency import optim
    validate_optim_block(c.optim)
    for name in optim_block_names(c):
        block = c[f"optim_{name}"]
        _require(hasattr(block, "items"), f"optim_{name}", f"{block!r} is not an optimizer block",
                 "make it with consistency.config.optim_override(...)")
        merged = optim.optim_config_for(c, name)  # ConfigError (one line) for a field that is not an optimizer field
        validate_optim_block(merged, f"optim_{name}", {k for k, v in block.items() if v is not None})


def _validate_training(c) -> None:
    t = c.training
    _number(t.num_steps, "training.num_steps", 1, integer=True,
            fix="train at least one step (to evaluate a checkpoint, use --mode=eval)")
    _number(t.batch_size, "training.batch_size", 1, integer=True)
    _number(t.log_every, "training.log_every", 1, integer=True)
    for name in ("ckpt_every", "sample_every", "eval_every"):
        _number(t[name], f"training.{name}", 0, integer=True, fix="use 0 (only at the end) or a step interval")
    _number(t.keep_checkpoints, "training.keep_checkpoints", 1, integer=True)
    _number(t.ema_decay, "training.ema_decay", 0, 1, hi_open=True)
    _number(t.ema_half_life_images, "training.ema_half_life_images", 0,
            fix="use 0 (use ema_decay) or a half-life in images such as 500000 (EDM)")
    _number(t.get("max_param_abs", 0.0), "training.max_param_abs", 0,
            fix="use 0 (only the finiteness check) or a bound on |θ| such as 1e4")
    _number(t.get("blowup_ratio", 0.0), "training.blowup_ratio", 0,
            fix="use 0 (off) or a factor such as 1000 (three orders of magnitude above the recent median)")
    _number(t.label_dropout, "training.label_dropout", 0, 1, hi_open=True)
    _choice(t.get("compute_dtype", "float32"), "training.compute_dtype", ("float32", "bfloat16"))
    _number(t.get("grad_accumulation", 1), "training.grad_accumulation", 1, integer=True)
    _number(t.get("fsdp", 1), "training.fsdp", 1, integer=True, fix="use 1 (replicated state) or a divisor of the "
            "device count")
    _require(t.batch_size % t.get("grad_accumulation", 1) == 0, "training.grad_accumulation",
             f"batch_size {t.batch_size} is not divisible into {t.get('grad_accumulation', 1)} micro-batches",
             "use a divisor of training.batch_size")
    _require(isinstance(t.get("init_from", ""), str), "training.init_from", f"{t.get('init_from')!r} is not a path",
             "use '' (fresh start) or a finished workdir")
    _require(isinstance(tuple(t.get("init_sets", ())), tuple) and all(isinstance(n, str) for n in t.get("init_sets", ())),
             "training.init_sets", f"{t.get('init_sets')!r} is not a tuple of set names", "use () or e.g. ('generator',)")
    _require(t.label_dropout == 0 or c.model.num_classes > 0, "training.label_dropout",
             f"{t.label_dropout} drops class labels but the model is unconditional (model.num_classes = 0)",
             "set model.num_classes > 0 and data.conditional=True, or label_dropout=0")


def _validate_teacher(c) -> None:
    te = c.teacher
    _require(isinstance(te.workdir, str), "teacher.workdir", f"{te.workdir!r} is not a path", "use '' or a workdir")
    _require(te.oracle == "" or te.oracle in ORACLES, "teacher.oracle", f"{te.oracle!r} is not an oracle",
             f"use '' or one of {', '.join(ORACLES)}")
    _require(not (te.workdir and te.oracle), "teacher", f"both workdir={te.workdir!r} and oracle={te.oracle!r} "
             "are set", "keep one: a trained EDM workdir or a closed-form oracle")
    if te.oracle == "mixture":
        short = _toy_short_name(c.data.name)
        from consistency.data import toys
        _require(short in toys.TOY_NAMES and toys.toy_mixture(short) is not None, "teacher.oracle",
                 f"'mixture' needs a Gaussian-mixture toy, but data.name is {c.data.name!r}",
                 "use data.name='toy:8gaussians' (or 25gaussians, gaussian1d, mog1d) or teacher.oracle='empirical'")
    use = TEACHER_USE.get(c.method)
    if use == "required":
        _require(bool(te.workdir or te.oracle), "teacher", f"method {c.method!r} distils a teacher but none is set",
                 "set teacher.workdir to a trained EDM run (configs/digits_edm.py) or teacher.oracle to "
                 f"{' | '.join(ORACLES)}")
    elif use == "unused":
        _require(not (te.workdir or te.oracle), "teacher.workdir" if te.workdir else "teacher.oracle",
                 f"method {c.method!r} does not use a teacher", "clear it, or use method='cd' (or 'ecm' to tune "
                 "from a teacher workdir)")
    elif use == "optional":
        _require(not te.oracle, "teacher.oracle", f"method {c.method!r} starts from a network, not an oracle",
                 "clear it, or set teacher.workdir to a trained EDM run")


def cm_sampling_boundary(c) -> float:
    """σ at which the method's consistency sampler's boundary f(x, σ) = x sits (ECT: ecm.sigma_min_eval)."""
    return float(c.ecm.sigma_min_eval) if c.method == "ecm" else float(c.diffusion.sigma_min)


def validate_sigma_list(c, sigmas=None) -> None:
    """Refuse a CM sampling σ list (``sigmas``, default ``c.sampling.sigmas``) in one line: finite, strictly
    descending, within (the sampler's boundary σ_min, diffusion.sigma_max]."""
    sigmas, f = tuple(c.sampling.sigmas if sigmas is None else sigmas), c.diffusion
    if not sigmas:
        return
    field = "sampling.sigmas"
    _require(c.method != "edm", field,
             f"{sigmas} is set, but EDM samples on the Karras grid of sampling.num_steps",
             "leave it empty (it is the σ list of consistency samplers)")
    for s in sigmas:
        _require(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s), field,
                 f"{s!r} in {sigmas} is not a finite number", f"use σ values such as ({f.sigma_max}, 0.821)")
    lo = cm_sampling_boundary(c)
    _require(sigmas[0] <= f.sigma_max, field, f"the first σ {sigmas[0]} is above diffusion.sigma_max = {f.sigma_max}",
             f"start the list at sigma_max, e.g. ({f.sigma_max},) + {sigmas[1:]}")
    _require(all(b < a for a, b in zip(sigmas, sigmas[1:])), field, f"{sigmas} is not strictly descending",
             f"list σ values from high to low, e.g. ({f.sigma_max}, 0.821)")
    _require(sigmas[-1] > lo, field, f"the last σ {sigmas[-1]} is not above the sampler's boundary σ_min = {lo}",
             f"keep every σ in ({lo}, {f.sigma_max}]")


def _validate_sampling(c) -> None:
    s = c.sampling
    _choice(s.solver, "sampling.solver", SAMPLING_SOLVERS)
    _number(s.num_steps, "sampling.num_steps", 2, integer=True,
            fix="use at least 2 Karras points (Heun NFE = 2N − 1: N = 18 gives 35)")
    _number(s.cfg_scale, "sampling.cfg_scale", 0, fix="use 1 (plain conditional) or a guidance weight w >= 0")
    _require(s.cfg_scale == 1 or c.model.num_classes > 0, "sampling.cfg_scale",
             f"{s.cfg_scale} guides by class but the model is unconditional (model.num_classes = 0)",
             "set it to 1, or train a class-conditional model (model.num_classes > 0)")
    _number(s.num_samples, "sampling.num_samples", 1, integer=True)
    _flag(s.clip, "sampling.clip")
    validate_sigma_list(c)


def _validate_eval(c) -> None:
    e = c.eval
    _number(e.num_samples, "eval.num_samples", 1, integer=True)
    _number(e.get("bootstrap", 0), "eval.bootstrap", 0, integer=True)
    nfes = e.nfes
    _require(isinstance(nfes, (tuple, list)), "eval.nfes", f"{nfes!r} is not a tuple", "use e.g. (1, 2, 4)")
    for n in nfes:
        _require(isinstance(n, int) and not isinstance(n, bool) and n >= 1, "eval.nfes",
                 f"{n!r} in {tuple(nfes)} is not a positive integer", "list network-evaluation counts, e.g. (1, 2, 4)")
    if c.method == "edm":   # NFE 1 would be Heun on a 1-point Karras grid [σ_min]: sampling would start at σ_min
        _require(all(n >= 2 for n in nfes), "eval.nfes", f"{tuple(nfes)} asks EDM for 1 network evaluation, "
                 "which starts sampling at σ_min", "use NFEs >= 2 (odd: Heun on (NFE+1)/2 points, e.g. 35; even: "
                 "Euler), or () for the method's default")
    _require(isinstance(e.inception_weights, str), "eval.inception_weights", f"{e.inception_weights!r} is not a path",
             "use a path, or '' (no FID)")
    if e.inception_weights:
        from consistency import torchfile   # numpy only
        problem = torchfile.state_dict_problem(e.inception_weights, required=FID_INCEPTION_KEYS,
                                               forbidden_prefixes=("AuxLogits.",))
        _require(problem is None, "eval.inception_weights", str(problem),
                 "point it at pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or use '' (no FID)")
    _require(isinstance(e.fid_reference, str), "eval.fid_reference", f"{e.fid_reference!r} is not a path",
             "use a path, or '' (statistics computed from the dataset)")
    if e.fid_reference:
        _require(bool(e.inception_weights), "eval.fid_reference", "is set but config.eval.inception_weights is not",
                 "set config.eval.inception_weights too (FID needs the Inception network), or use ''")
        _require(_npz_has(e.fid_reference, ("mu", "sigma")), "eval.fid_reference",
                 f"{e.fid_reference!r} is not an .npz with 'mu' and 'sigma'",
                 "point it at reference statistics (pytorch-fid --save-stats, EDM fid.py ref), or use ''")


FID_INCEPTION_KEYS = ("Conv2d_1a_3x3.conv.weight", "Mixed_6e.branch7x7dbl_5.conv.weight",
                      "Mixed_7c.branch_pool.conv.weight")   # pytorch-fid's FID Inception state dict


def _npz_has(path: str, keys: tuple[str, ...]) -> bool:
    """Whether ``path`` is an .npz archive with these arrays (the zip directory only; nothing is loaded)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return all(f"{key}.npy" in names for key in keys)


def _validate_cm(c) -> None:
    """``config.cm`` (CD, CT, iCT): every field, the curriculum bounds and the method's own rules."""
    cm = c.cm
    for name, choices in CM_CHOICES.items():
        _choice(cm[name], f"cm.{name}", choices)
    _number(cm.num_scales, "cm.num_scales", 2, integer=True, fix="use at least 2 grid points (CD CIFAR-10: 18)")
    for name in ("s0", "s1", "max_gap", "teacher_steps"):
        _number(cm[name], f"cm.{name}", 1, integer=True)
    for name in ("split_gap", "posterior_k"):
        _number(cm[name], f"cm.{name}", 0, integer=True)
    _number(cm.target_ema, "cm.target_ema", 0, 1, hi_open=True, fix="use 0 (θ⁻ = stopgrad θ) or a decay below 1")
    _number(cm.mu0, "cm.mu0", 0, 1, hi_open=True)
    _number(cm.huber_c, "cm.huber_c", fix="use a pseudo-Huber c > 0, or < 0 for iCT's 0.00054·√d")
    _number(cm.p_mean, "cm.p_mean")
    _number(cm.p_std, "cm.p_std", 0, lo_open=True)
    _number(cm.ct_weight, "cm.ct_weight", 0)
    _flag(cm.init_from_teacher, "cm.init_from_teacher")
    if cm.curriculum != "fixed" or cm.target_schedule == "ct":
        # CT: N(0) = s0 points, at least 2 to form a pair (and μ(k) = μ0^{s0/(N−1)}); iCT: N = s0·2^k + 1 ≥ 2.
        least = 1 if (cm.curriculum == "ict" and cm.target_schedule != "ct") else 2
        _require(cm.s0 >= least, "cm.s0", f"the curriculum would start with {cm.s0 + (1 if least == 1 else 0)} "
                 "grid point(s), too few for a pair", f"use s0 >= {least} (CT: 2, iCT: 10)")
        _require(cm.s0 <= cm.s1, "cm.s0", f"the curriculum start s0 = {cm.s0} is above its end cm.s1 = {cm.s1}",
                 "use s0 <= s1 (CT: 2 → 150, iCT: 10 → 1280)")
    if c.method in ("ct", "ict"):
        _require(cm.ct_weight == 0, "cm.ct_weight", f"{cm.ct_weight} mixes in CD, which needs a teacher, but "
                 f"method is {c.method!r}", "set it to 0, or use method='cd'")
        _require(cm.split_gap == 0, "cm.split_gap", f"{cm.split_gap} splits pairs between CD and CT, which needs "
                 f"a teacher, but method is {c.method!r}", "set it to 0, or use method='cd'")
    if c.method == "ict":
        _require(cm.target_schedule == "fixed" and cm.target_ema == 0, "cm.target_ema",
                 "iCT uses θ⁻ = stopgrad θ, but an EMA target is configured "
                 f"(target_schedule={cm.target_schedule!r}, target_ema={cm.target_ema})",
                 "set cm.target_ema=0 and cm.target_schedule='fixed', or use method='ct' to study an EMA target")


def _validate_ecm(c) -> None:
    """``config.ecm`` (ECT, Geng et al. 2024): r = t·(1 − q^{−(a+1)}(1 + k·sigmoid(−b t))) must stay in [0, t)."""
    e = c.ecm
    _number(e.p_mean, "ecm.p_mean")
    _number(e.p_std, "ecm.p_std", 0, lo_open=True)
    _number(e.q, "ecm.q", 1, lo_open=True, fix="use q > 1 so that r → t as the stages grow (ECT: 2)")
    _number(e.k, "ecm.k", 0, fix="use k >= 0 so that r stays below t (ECT: 8)")
    _number(e.b, "ecm.b", 0, fix="use b >= 0 (ECT: 1)")
    _number(e.steps_per_stage, "ecm.steps_per_stage", 1, integer=True)
    _number(e.huber_c, "ecm.huber_c", 0, fix="use 0 (un-squared L2, ECT) or a pseudo-Huber c > 0")
    _number(e.sigma_min_eval, "ecm.sigma_min_eval", 0, c.diffusion.sigma_max, lo_open=True, hi_open=True)
    _flag(e.clip_t, "ecm.clip_t")


def _validate_method_block(c) -> None:
    """The method's own block (``config.dmd``, ``config.mcm``, …): a method module that defines
    ``validate_config(config)`` checks its fields here, before anything is built."""
    import importlib
    from consistency import methods
    if methods.is_registered(c.method) or c.method in ("", None):
        return
    name = f"consistency.methods.{c.method}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        return  # _validate_top has already refused unknown methods
    check = getattr(module, "validate_config", None)
    if check is not None:
        check(c)


SECTION_VALIDATORS = (_validate_top, _validate_model, _validate_data, _validate_diffusion, _validate_optim,
                      _validate_training, _validate_teacher, _validate_sampling, _validate_eval, _validate_cm,
                      _validate_ecm, _validate_method_block)


def validate(c: ml_collections.ConfigDict) -> None:
    """Raise ConfigError, one line ``config.<field>: <what is wrong>; <the fix>``, for the first value that cannot
    work: every section of the schema (:data:`SECTION_VALIDATORS`), in schema order, without building anything."""
    for check in SECTION_VALIDATORS:
        check(c)

def _lists_to_tuples(value):
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run saved in ``WORKDIR/config.json`` (JSON lists back to tuples, as in the config files).
    FileNotFoundError when ``workdir`` holds no run."""
    from consistency import fileio   # imports jax-free etils only
    path = fileio.join(workdir, "config.json")
    if not fileio.exists(path):
        raise FileNotFoundError(f"{path} does not exist: {workdir!r} is not a training workdir")
    saved = _lists_to_tuples(fileio.read_json(path))
    return _merged_over(base_config(), saved)


def _merged_over(defaults: ml_collections.ConfigDict, saved: dict) -> ml_collections.ConfigDict:
    """``saved`` on top of ``defaults``: a run saved before a field was added to the schema gets that field's
    default; method blocks the schema does not have (``optim_fake``, …) are kept as saved."""
    merged = defaults.to_dict()

    def merge(into: dict, values: dict) -> None:
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
    merge(merged, saved)
    return ml_collections.ConfigDict(merged)
