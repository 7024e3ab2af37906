"""One config schema for every method (docs/architecture.md, "One config schema").

The shared sections (data, model, diffusion, optim, training, teacher, sampling, discriminator, eval) are declared
here; each method's own block is declared in its module (``CONFIG_BLOCK``, ``CONFIG_FIELDS`` of
:class:`consistency.core.schema.Field`) and :func:`base_config` assembles them from the registry. Config files under
``configs/`` start from :func:`base_config` and override fields; every field can be overridden on the command line
(``--config.optim.lr=1e-4``). :func:`validate` turns a bad value into one :class:`ConfigError` line naming the field
and the fix, before anything compiles.
"""
from __future__ import annotations

import math
import os

import ml_collections

from consistency.core import schema
from consistency.core.errors import ConfigError  # noqa: F401  (re-exported: consistency.config.ConfigError)



def __getattr__(name):
    """``config.METHODS``: the registry's method names (:func:`consistency.methods.available`), never a copy."""
    if name == "METHODS":
        from consistency import methods
        return methods.available()
    raise AttributeError(name)



def method_modules() -> dict:
    """``{method name: module}`` of the registry's package methods (:func:`consistency.methods.available`), in
    registry order; methods added with ``methods.register`` have no module and declare nothing."""
    from consistency import methods
    found = {name: methods.module_of(name) for name in methods.available()}
    return {name: module for name, module in found.items() if module is not None}


def method_blocks() -> dict[str, schema.Fields]:
    """``{block name: fields}`` declared by the method modules (``CONFIG_BLOCK``, ``CONFIG_FIELDS``): ``cm`` once
    for CD, CT and iCT, which share it."""
    blocks: dict[str, schema.Fields] = {}
    for name, module in method_modules().items():
        block = getattr(module, "CONFIG_BLOCK", None)
        if block is None:
            continue
        fields = module.CONFIG_FIELDS
        if blocks.get(block, fields) is not fields:
            raise ValueError(f"method {name!r} declares config.{block} differently from another method")
        blocks[block] = fields
    return blocks


def method_declaration(c, attribute: str, default=None):
    """What the method of config ``c`` declares as module attribute ``attribute`` (TEACHER_USE, DATA_EXTRAS,
    sampling_boundary, validate_config); ``default`` for methods added with ``methods.register``."""
    from consistency import methods
    module = methods.module_of(c.method) if isinstance(c.method, str) else None
    return getattr(module, attribute, default)


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
                                 # 0 → off. Healthy weights are O(1) (consistency/core/checkpoint/save_guard.py)
    t.blowup_ratio = 1e3         # stop, unsaved, when a set's loss exceeds this × its recent median (or max|θ| this × its
                                 # value at the last save): a finite blow-up (consistency/run/blowup.py); 0 → off
    t.init_from = ""             # warm start: a finished workdir whose parameter sets (params, EMA, moving) of the
                                 # same names and shapes are copied in at step 0 (CTM's GAN fine-tuning stage)
    t.init_sets = ()             # warm start only these set names, e.g. ('generator',) (PaGoDA growing); () → all
    t.compute_dtype = "float32"  # network compute: 'float32' | 'bfloat16' (mixed precision: float32 parameters,
                                 # optimizer state, EMA, σ grids, losses; consistency/nets/wrappers.py MixedPrecisionNet)
    t.fsdp = 1                   # > 1: parameters, EMA and optimizer state split over a second mesh axis of this size
                                 # (FSDP / ZeRO-3; consistency/run/placement.py Placement); must divide the device count
    t.grad_accumulation = 1      # > 1: each update averages the gradients of this many micro-batches of
                                 # batch_size / grad_accumulation (consistency/methods/base.py train_step)

    c.teacher = te = ml_collections.ConfigDict()
    te.workdir = ""              # a trained EDM workdir (its EMA params are the teacher)
    te.oracle = ""               # '' | 'mixture' | 'empirical' | 'gaussian': closed-form teacher from the data
    te.oracle_std_scale = 1.0    # 'mixture' only: the components' stds × this, an imperfect teacher with a known error
                                 # (its ODE ends on the widened mixture; 1 = the exact teacher)

    c.sampling = s = ml_collections.ConfigDict()
    s.solver = "heun"            # 'euler' | 'heun' | 'dpm_solver_2' | 'dpmpp_2m' | 'stochastic' (EDM Alg. 2)
    s.num_steps = 18             # Karras grid points (Heun: NFE = 2N − 1)
    s.sigmas = ()                # CM multistep: explicit σ list, first σ_max (see methods/cm docs)
    s.cfg_scale = 1.0            # w: D_w = D_∅ + w (D_c − D_∅); 1 → plain conditional
    s.num_samples = 64
    s.clip = True                # clip x0 to the data range after each CM step

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

    # Each method's own block (config.cm, config.dmd, …), declared in its module (CONFIG_BLOCK, CONFIG_FIELDS).
    for name, fields in method_blocks().items():
        c[name] = schema.defaults(fields)

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
IN_MEMORY_CLASSES = {"digits": 10, "mnist5k": 10}   # class counts known without loading the data


_fail, _require = schema.fail, schema.require


def _default_of(field: str):
    """The base_config() default of a dotted field (None when the schema has no such field)."""
    node = base_config()
    for key in field.split("."):
        if not hasattr(node, "get") or key not in node:
            return None
        node = node[key]
    return node


def _number(value, field: str, lo=None, hi=None, *, lo_open: bool = False, hi_open: bool = False,
            integer: bool = False, fix: str = "") -> None:
    """``value`` is a finite number (an int if ``integer``) within the bounds; else a one-line ConfigError."""
    schema.check_number(value, field, lo, hi, lo_open=lo_open, hi_open=hi_open, integer=integer, fix=fix,
                        default=_default_of(field))


def _choice(value, field: str, choices) -> None:
    schema.check_choice(value, field, choices, _default_of(field))


_flag = schema.check_flag


def data_extras_readers(extra: str) -> tuple[str, ...]:
    """The methods that declare ``extra`` (e.g. 'latents': PaGoDA's inverted latents) in their DATA_EXTRAS."""
    return tuple(name for name, module in method_modules().items() if extra in getattr(module, "DATA_EXTRAS", ()))


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
    if d.get("latents", "") and "latents" not in method_declaration(c, "DATA_EXTRAS", ()):
        _require(False, "data.latents", f"{d.latents!r} is set, but method {c.method!r} reads no inverted latents "
                 f"(only {', '.join(data_extras_readers('latents'))} does)", "drop --config.data.latents")
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
    from consistency.methods.components import optim
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


def teacher_use(c) -> tuple[str | None, str]:
    """How the method of ``c`` uses ``config.teacher``, as its module declares it (``TEACHER_USE``: a string, or a
    function of the config returning one or (use, the other setting that fits, for the error's fix)): 'required',
    'optional' (a workdir to start from, no oracle) or 'unused'; None for a method that declares nothing (e.g. added
    with ``methods.register``): not checked."""
    use = method_declaration(c, "TEACHER_USE")
    use = use(c) if callable(use) else use
    return use if isinstance(use, tuple) else (use, "")


def _validate_teacher(c) -> None:
    te = c.teacher
    _require(isinstance(te.workdir, str), "teacher.workdir", f"{te.workdir!r} is not a path", "use '' or a workdir")
    _require(te.oracle == "" or te.oracle in ORACLES, "teacher.oracle", f"{te.oracle!r} is not an oracle",
             f"use '' or one of {', '.join(ORACLES)}")
    _require(not (te.workdir and te.oracle), "teacher", f"both workdir={te.workdir!r} and oracle={te.oracle!r} "
             "are set", "keep one: a trained EDM workdir or a closed-form oracle")
    scale = te.get("oracle_std_scale", 1.0)
    _require(isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0,
             "teacher.oracle_std_scale", f"{scale!r} is not a finite number > 0",
             "use 1.0 (the exact mixture) or a factor such as 2.0")
    _require(scale == 1.0 or te.oracle == "mixture", "teacher.oracle_std_scale",
             f"{scale!r} widens the 'mixture' oracle, but teacher.oracle is {te.oracle!r}",
             "set teacher.oracle='mixture' or keep oracle_std_scale=1.0")
    if te.oracle == "mixture":
        short = _toy_short_name(c.data.name)
        from consistency.data import toys
        _require(short in toys.TOY_NAMES and toys.toy_mixture(short) is not None, "teacher.oracle",
                 f"'mixture' needs a Gaussian-mixture toy, but data.name is {c.data.name!r}",
                 "use data.name='toy:8gaussians' (or 25gaussians, gaussian1d, mog1d) or teacher.oracle='empirical'")
    use, other = teacher_use(c)
    if use == "required":
        _require(bool(te.workdir or te.oracle), "teacher", f"method {c.method!r} distils a teacher but none is set",
                 "set teacher.workdir to a trained EDM run (configs/digits_edm.py) or teacher.oracle to "
                 f"{' | '.join(ORACLES)}" + (f", or use {other}" if other else ""))
    elif use == "unused":
        _require(not (te.workdir or te.oracle), "teacher.workdir" if te.workdir else "teacher.oracle",
                 f"method {c.method!r} does not use a teacher", f"clear it, or use {other}" if other else
                 "clear it, or use method='cd' (or 'ecm' to tune from a teacher workdir)")
    elif use == "optional":
        _require(not te.oracle, "teacher.oracle", f"method {c.method!r} starts from a network (teacher.workdir) or from scratch, not from an oracle",
                 "clear it, or set teacher.workdir to a trained EDM run" + (f", or use {other}" if other else ""))


def cm_sampling_boundary(c) -> float:
    """σ at which the method's consistency sampler's boundary f(x, σ) = x sits: what its module declares
    (``sampling_boundary(config)``, ECT: ecm.sigma_min_eval), else diffusion.sigma_min."""
    boundary = method_declaration(c, "sampling_boundary")
    return float(boundary(c)) if boundary is not None else float(c.diffusion.sigma_min)


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
        from consistency.core import torchfile  # numpy only
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


def _validate_method_blocks(c) -> None:
    """Every method block (``config.cm``, ``config.dmd``, …) against the fields its module declares."""
    for block, fields in method_blocks().items():
        if block in c:
            schema.check_block(c, block, fields)


def _validate_method_rules(c) -> None:
    """The run's method's own rules: its module's ``validate_config(config)`` (which checks its block's fields
    first, then the rules across fields; :func:`_validate_method_blocks` then checks every other block)."""
    check = method_declaration(c, "validate_config")
    if check is not None:
        check(c)


SECTION_VALIDATORS = (_validate_top, _validate_model, _validate_data, _validate_diffusion, _validate_optim,
                      _validate_training, _validate_teacher, _validate_sampling, _validate_eval,
                      _validate_method_rules, _validate_method_blocks)


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
    from consistency.core import fileio  # imports jax-free etils only
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
