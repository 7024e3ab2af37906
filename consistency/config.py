"""One config schema for every method (DESIGN.md, "One config schema").

Config files under ``configs/`` start from :func:`base_config` and override fields; every field can be
overridden on the command line (``--config.optim.lr=1e-4``). :func:`validate` turns a bad value into
one :class:`ConfigError` line naming the field and the fix, before anything compiles.
"""
from __future__ import annotations

import ml_collections



def __getattr__(name):
    """``config.METHODS``: the registry's method names (:func:`consistency.methods.available`), never a copy."""
    if name == "METHODS":
        from consistency import methods
        return methods.available()
    raise AttributeError(name)



class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and the fix."""


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = "edm"
    c.seed = 0

    c.data = d = ml_collections.ConfigDict()
    d.name = "digits"            # 'digits' | 'mnist5k' | 'toy:<name>' | any tfds image dataset name
    d.data_dir = ""              # tfds data_dir ('' → tfds default)
    d.resolution = 0             # 0 → native; else resize images to resolution × resolution
    d.random_flip = False        # horizontal flips (CIFAR recipes)
    d.conditional = False        # feed class labels to the model
    d.toy_size = 100_000         # number of points drawn for toy datasets

    c.model = m = ml_collections.ConfigDict()
    m.name = "unet"              # 'unet' | 'mlp'
    m.channels = 32              # U-Net base width (NCSN++/DDPM++ CIFAR: 128)
    m.channel_mult = (1, 2)      # width multipliers per resolution
    m.num_res_blocks = 1         # CIFAR papers: 4
    m.attn_resolutions = ()      # resolutions with self-attention, e.g. (16,)
    m.dropout = 0.0
    m.embedding = "fourier"      # 'fourier' (NCSN++) | 'positional' (DDPM++)
    m.fourier_scale = 16.0       # NCSN++: 16; iCT: 0.02
    m.hidden = 256               # MLP width
    m.depth = 4                  # MLP hidden layers
    m.num_classes = 0            # > 0: class-conditional, label num_classes is the null label for CFG

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

    # Consistency models (CD, CT, iCT and the notebook's variants; METHODS.md §4–§6). Defaults: CM paper CIFAR-10 CD.
    c.cm = cm = ml_collections.ConfigDict()
    cm.num_scales = 18           # N of the Karras grid when curriculum == 'fixed' (CD CIFAR-10: 18)
    cm.curriculum = "fixed"      # 'fixed' (N = num_scales) | 'ct' (Song 2023 N(k)) | 'ict' (doubling N(k))
    cm.s0 = 2                    # curriculum start (CT: 2, iCT: 10)
    cm.s1 = 150                  # curriculum end (CT: 150, iCT: 1280)
    cm.target_ema = 0.0          # μ of θ⁻ when target_schedule == 'fixed'; 0 → θ⁻ = stopgrad(θ), no copy kept
    cm.target_schedule = "fixed"  # 'fixed' | 'ct' (μ(k) from mu0, s0, s1)
    cm.mu0 = 0.9                 # CT μ₀
    cm.mu_form = "code"          # 'code' μ₀^{s₀/(N−1)} (jcm/cm) | 'paper' μ₀^{s₀/N} (METHODS.md §17.1)
    cm.distance = "l2"           # 'l2' | 'l1' | 'pseudo_huber' | 'feature' (LPIPS-like, in-project feature net)
    cm.huber_c = -1.0            # pseudo-Huber c; < 0 → 0.00054·√d (iCT)
    cm.weighting = "uniform"     # 'uniform' | 'snr' | 'snr+1' | 'truncated_snr' | 'inv_delta' (iCT 1/Δσ)
    cm.index_sampling = "uniform"  # 'uniform' over pairs | 'lognormal' (iCT discrete lognormal)
    cm.p_mean = -1.1             # iCT lognormal index sampling
    cm.p_std = 2.0
    cm.solver = "heun"           # CD teacher solver: 'euler' | 'heun' (notebook ablation: solver order)
    cm.teacher_steps = 1         # solver steps per target (notebook: multi-step teacher)
    cm.max_gap = 1               # pairs (i, i+g), g ~ U{1..max_gap} (seed eq. 13: distant-step pairs)
    cm.ct_weight = 0.0           # CD + ct_weight·CT on an arbitrary pair (seed eq. 14)
    cm.split_gap = 0             # > 0: pairs with gap ≤ split_gap use the CD target, farther ones the CT target
    cm.posterior = "none"        # CT target E[x₀|x]: 'none' (x₀, seed eq. 17 n=1) | 'batch' | 'dataset' (seed eq. 22–25)
    cm.posterior_k = 0           # > 0: k nearest neighbours only
    cm.init_from_teacher = True  # CD: start the student from the teacher's EMA weights

    # ECT, Geng et al. 2024 (METHODS.md §7).
    c.ecm = ecm = ml_collections.ConfigDict()
    ecm.p_mean = -1.1
    ecm.p_std = 2.0
    ecm.q = 2.0
    ecm.k = 8.0
    ecm.b = 1.0
    ecm.steps_per_stage = 25_000  # CIFAR-10: double = 250 ticks of 12.8k images at batch 128 → 25k iterations
    ecm.huber_c = 0.0            # 0 → un-squared ‖·‖₂ (ECT default); > 0 → pseudo-Huber
    ecm.sigma_min_eval = 0.002   # boundary used by the sampling consistency function

    c.eval = e = ml_collections.ConfigDict()
    e.num_samples = 1000
    e.nfes = (1, 2)              # sampling steps to evaluate (method-specific meaning, see README)
    e.inception_path = ""        # user-supplied Inception weights for real FID
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


def validate(c: ml_collections.ConfigDict) -> None:
    """Raise ConfigError (one line, naming the field) for values that cannot work."""
    from consistency import methods
    if c.method not in methods.available():
        raise _err("method", f"unknown method {c.method!r}; choose one of {', '.join(methods.available())}")
    f = c.diffusion
    if not 0 < f.sigma_min < f.sigma_max:
        raise _err("diffusion.sigma_min", f"need 0 < sigma_min < sigma_max, got {f.sigma_min} and {f.sigma_max}")
    if f.sigma_data <= 0:
        raise _err("diffusion.sigma_data", f"must be > 0, got {f.sigma_data}")
    if f.process not in ("ve", "vp"):
        raise _err("diffusion.process", f"must be 've' or 'vp', got {f.process!r}")
    if c.optim.name not in ("adam", "radam", "adamw"):
        raise _err("optim.name", f"must be adam, radam or adamw, got {c.optim.name!r}")
    if c.optim.lr <= 0:
        raise _err("optim.lr", f"must be > 0, got {c.optim.lr}")
    t = c.training
    if t.batch_size <= 0:
        raise _err("training.batch_size", f"must be > 0, got {t.batch_size}")
    if t.num_steps < 0:
        raise _err("training.num_steps", f"must be >= 0, got {t.num_steps}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise _err("training.ema_decay", f"must be in [0, 1), got {t.ema_decay}")
    if c.model.name not in ("unet", "mlp"):
        raise _err("model.name", f"must be 'unet' or 'mlp', got {c.model.name!r}")
    solvers = ("euler", "heun", "dpm_solver_2", "dpmpp_2m", "stochastic")
    if c.sampling.solver not in solvers:
        raise _err("sampling.solver", f"must be one of {', '.join(solvers)}, got {c.sampling.solver!r}")
