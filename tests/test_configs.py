"""The config files: every variant validates, the CIFAR-10 defaults are the papers' recipes (docs/methods.md §2, §4–§7),
and a CIFAR recipe really starts (on tfds mock data, since CIFAR-10 cannot be downloaded here)."""
import glob
import math
import importlib.util
import os

import pytest

from consistency.config import validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name, variant=""):
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))))
def test_every_config_and_variant_validates(path):
    name = os.path.basename(path)
    extra = ("gan",) if name.endswith("_ctm.py") and name != "toy_ctm.py" else ()   # CTM's GAN fine-tuning stage
    for variant in ("", "cpu" if name.startswith(("cifar", "imagenet")) else "quick") + extra:
        validate(load(name, variant))
    with pytest.raises(ValueError, match="unknown variant"):
        load(name, "nope")


def test_cifar_recipes_carry_the_papers_numbers():
    edm = load("cifar_edm.py")
    assert (edm.model.channels, tuple(edm.model.channel_mult), edm.model.num_res_blocks) == (128, (2, 2, 2), 4)
    assert tuple(edm.model.attn_resolutions) == (16,) and edm.model.dropout == 0.13
    assert (edm.training.batch_size, edm.training.num_steps, edm.optim.lr) == (512, 400_000, 1e-3)
    assert edm.training.ema_half_life_images == 500_000 and edm.sampling.num_steps == 18
    cd = load("cifar_cd.py")
    assert (cd.cm.num_scales, cd.cm.solver, cd.cm.target_ema) == (18, "heun", 0.0)
    assert (cd.optim.name, cd.optim.lr, cd.optim.warmup_steps) == ("radam", 4e-4, 0)
    assert (cd.training.batch_size, cd.training.num_steps, cd.training.ema_decay) == (512, 800_000, 0.9999)
    ct = load("cifar_ct.py")
    assert (ct.cm.curriculum, ct.cm.s0, ct.cm.s1, ct.cm.mu0, ct.cm.mu_form) == ("ct", 2, 150, 0.9, "code")
    assert (ct.optim.lr, ct.training.batch_size, ct.training.num_steps) == (4e-4, 512, 800_000)
    ict = load("cifar_ict.py")
    assert (ict.cm.curriculum, ict.cm.s0, ict.cm.s1, ict.cm.target_ema) == ("ict", 10, 1280, 0.0)
    assert (ict.cm.distance, ict.cm.weighting, ict.cm.index_sampling) == ("pseudo_huber", "inv_delta", "lognormal")
    assert (ict.cm.p_mean, ict.cm.p_std, ict.model.dropout, ict.model.fourier_scale) == (-1.1, 2.0, 0.3, 0.02)
    ecm = load("cifar_ecm.py")
    assert (ecm.training.batch_size, ecm.optim.lr, ecm.model.dropout, ecm.training.num_steps) == (128, 1e-4, 0.2,
                                                                                                   200_000)
    assert (ecm.ecm.q, ecm.ecm.k, ecm.ecm.b, ecm.ecm.steps_per_stage) == (2.0, 8.0, 1.0, 25_000)


def _param_count(config, shape):
    import jax
    import jax.numpy as jnp

    from consistency.nets import make_net, param_count
    net = make_net(config.model, shape)
    labels = jnp.zeros((1,), jnp.int32) if config.model.num_classes else None
    return param_count(jax.eval_shape(lambda: net.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, *shape)),
                                                       jnp.zeros((1,)), labels))["params"])


def test_paper_recipes_build_the_papers_networks():
    """EDM's DDPM++ / NCSN++ / ADM (NVlabs/edm train.py) with the parameter counts of the public pickles
    (edm-cifar10-32x32-uncond-vp.pkl 55,733,891; -ve.pkl 56,397,827 + the 128 Fourier frequencies EDM keeps as a
    buffer; edm-imagenet-64x64-cond-adm.pkl 295,899,267, counted with NVlabs' code); `:cpu` keeps the family."""
    expected = {"cifar_edm.py": "ddpmpp", "cifar_cd.py": "ncsnpp", "cifar_ct.py": "ncsnpp", "cifar_ict.py": "ncsnpp", "cifar_ecm.py": "ddpmpp", "cifar_sct.py": "ddpmpp",
                "cifar_scd.py": "ddpmpp", "cifar_sid.py": "ddpmpp", "cifar_dmd.py": "ddpmpp",
                "cifar_dmd2.py": "ddpmpp", "cifar_ctm.py": "ddpmpp", "imagenet64_mcm.py": "adm",
                "imagenet64_pagoda.py": "adm"}
    for name, arch in expected.items():
        full, cpu = load(name), load(name, "cpu")
        assert (full.model.name, cpu.model.name) == (arch, arch), name
        assert cpu.model.channels <= 32, name
        if arch != "adm":
            assert (full.model.channels, tuple(full.model.channel_mult), full.model.num_res_blocks,
                    tuple(full.model.attn_resolutions), full.model.augment_dim) == (128, (2, 2, 2), 4, (16,), 9)
    assert load("cifar_edm.py", "ve").model.name == "ncsnpp" and load("cifar_cd.py").teacher.workdir.endswith("_ve")
    assert _param_count(load("cifar_edm.py"), (32, 32, 3)) == 55_733_891
    assert _param_count(load("cifar_edm.py", "ve"), (32, 32, 3)) == 56_397_827 + 128
    assert _param_count(load("imagenet64_mcm.py"), (64, 64, 3)) == 295_899_267


def test_distillation_recipes_carry_the_papers_numbers():
    """docs/methods.md §10.2 (DMD2 EDM scripts), §12 (SiD), §13.1 (CTM), §8.1 (MCM)."""
    sid = load("cifar_sid.py")
    assert (sid.sid.alpha, sid.sid.sigma_init, sid.sid.t_max_fraction, sid.sid.ttur) == (1.2, 2.5, 0.8, 1)
    assert (sid.optim.lr, sid.optim.b1, sid.optim.b2, sid.optim_fake.b1) == (1e-5, 0.0, 0.999, 0.0)
    assert (sid.training.batch_size, sid.training.ema_half_life_images) == (256, 500_000)
    dmd2 = load("cifar_dmd2.py")
    assert (dmd2.dmd2.ttur, dmd2.dmd2.gan_generator_weight, dmd2.dmd2.gan_discriminator_weight) == (5, 3e-3, 1e-2)
    assert (dmd2.optim.name, dmd2.optim.lr, dmd2.optim.weight_decay, dmd2.optim.grad_clip) == ("adamw", 2e-6, 0.01, 10.0)
    assert (dmd2.training.batch_size, dmd2.optim.warmup_steps, dmd2.discriminator.name) == (280, 500, "dmd2")
    dmd = load("cifar_dmd.py")
    assert (dmd.dmd.regression_weight, dmd.dmd.ttur) == (0.25, 1)
    ctm = load("cifar_ctm.py")
    assert (ctm.ctm.num_scales, ctm.ctm.heun_steps, ctm.ctm.target_ema, ctm.optim.lr) == (18, 17, 0.999, 4e-4)
    assert ctm.training.batch_size == 256 and ctm.ctm.adaptive_dsm
    gan = load("cifar_ctm.py", "gan")   # CTM's second stage: GAN fine-tuning from the CTM+DSM run
    assert (gan.training.init_from, gan.training.batch_size, gan.ctm.gan_weight) == ("workdirs/cifar_ctm", 528, 1.0)
    assert gan.optim_discriminator.lr == 2e-3
    scd, sct = load("cifar_scd.py"), load("cifar_sct.py")   # FastGen's CIFAR-10 sCM recipe (docs/methods.md §13.2)
    assert (scd.scm.mode, scd.scm.p_mean, scd.scm.p_std, scd.model.dropout, scd.training.batch_size) == (
        "distill", -1.0, 1.4, 0.0, 512)
    assert (sct.scm.mode, sct.scm.p_std, sct.model.dropout, sct.training.num_steps) == ("train", 1.8, 0.2, 350_000)
    assert scd.training.num_steps == 500_000 and scd.scm.tangent_warmup_steps == 10_000 and scd.optim.name == "radam"
    assert abs(0.5 * math.tan(scd.scm.mid_t) - 0.821) < 1e-9   # σ = σ_d tan t = 0.821 (FastGen)
    mcm = load("imagenet64_mcm.py")
    assert (mcm.mcm.segments, mcm.mcm.addim_eta, mcm.mcm.weighting, mcm.mcm.huber_c) == (8, 0.75, "snr+1", 1e-4)
    assert (mcm.mcm.num_steps_start, mcm.mcm.num_steps_end, mcm.mcm.num_steps_ramp) == (64.0, 1280.0, 100_000)


@pytest.mark.slow
def test_cifar_ct_cpu_variant_trains_on_mock_cifar10(tmp_path):
    import tensorflow_datasets as tfds

    from consistency.run import train
    config = load("cifar_ct.py", "cpu")
    config.data.data_dir = str(tmp_path / "tfds")
    config.training.num_steps = 2
    config.training.batch_size = 4
    config.sampling.num_samples = 4
    config.eval.num_samples = 4
    config.eval.nfes = (1,)
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        state = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert int(state.step) == 2
    assert os.path.exists(tmp_path / "run" / "eval" / "metrics_2.json")


def test_pagoda_configs_carry_the_official_stage_table():
    """docs/methods.md §9: batch 96/256/360/512 and discriminator weight 0.2 adaptive / 1 / 1 / 1 at 64/128/256/512;
    RAdam, generator lr 8e-6, discriminator lr 2e-3, EMA 0.999; growing stages warm-start the generator only."""
    table = {"": (64, 96, 0.2, True), "stage2": (128, 256, 1.0, False), "stage3": (256, 360, 1.0, False),
             "stage4": (512, 512, 1.0, False)}
    for stage, (variant, (resolution, batch, weight, adaptive)) in enumerate(table.items(), start=1):
        c = load("imagenet64_pagoda.py", variant)
        assert (c.pagoda.stage, c.data.resolution, c.training.batch_size) == (stage, resolution, batch)
        assert (c.pagoda.discriminator_weight, c.pagoda.adaptive, c.pagoda.alternate) == (weight, adaptive, True)
        assert (c.optim.name, c.optim.lr, c.optim_discriminator.lr, c.training.ema_decay) == ("radam", 8e-6, 2e-3,
                                                                                                 0.999)
        assert tuple(c.training.init_sets) == (() if stage == 1 else ("generator",))
    digits = [load("digits_pagoda.py", v) for v in ("", "stage2", "stage3")]
    assert [(d.pagoda.stage, d.data.resolution) for d in digits] == [(1, 0), (2, 16), (3, 32)]
    assert [d.training.init_from for d in digits] == ["", "workdirs/digits_pagoda", "workdirs/digits_pagoda_16"]
