"""Every bad input is ONE line ``error: <field>: <what is wrong>; <the fix>`` and exit status 2, before anything
compiles: a table of command lines and config files run through the CLI's own parse + check path in-process
(``consistency.main.check``: a fresh absl FlagValues, the same code ``python -m consistency.main`` runs up to the
training loop), plus a few real subprocesses for the whole stderr, ``--help`` and the TensorFlow-free failure path."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from consistency import main

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

# Config files with bad contents (written to tmp_path), each named in a case below as FILE:<key>.
CONFIG_FILES = {
    "unknown_optim_field": """
        import ml_collections
        from consistency import presets

        def get_config(variant=None):
            c = presets.toy(presets.new("edm"), "edm")
            c.optim_fake = ml_collections.ConfigDict({"lrr": 1e-4})
            return c
    """,
    "bad_optim_block": """
        from consistency import config, presets

        def get_config(variant=None):
            c = presets.toy(presets.new("edm"), "edm")
            c.optim_fake = config.optim_override(b1=1.5)
            return c
    """,
    "override_typo_in_file": """
        from consistency import config, presets

        def get_config(variant=None):
            c = presets.toy(presets.new("edm"), "edm")
            c.optim_fake = config.optim_override(lrr=1.0)
            return c
    """,
    "cm_bounds": """
        from consistency import presets

        def get_config(variant=None):
            c = presets.toy(presets.new("ct"), "ct")
            presets.consistency_training(c, s0=200, s1=150)
            return c
    """,
    "raises": """
        def get_config(variant=None):
            raise RuntimeError("no such dataset version")
    """,
    "bad_import": """
        from consistency import no_such_module

        def get_config(variant=None):
            return no_such_module.config()
    """,
    "no_return": """
        from consistency import presets

        def get_config(variant=None):
            c = presets.toy(presets.new("edm"), "edm")
    """,
    "with_optim_block": """
        from consistency import config, presets

        def get_config(variant=None):
            c = presets.toy(presets.new("edm"), "edm")
            c.optim_fake = config.optim_override(lr=2e-5)
            return c
    """,
}

TOY_EDM, TOY_CD, TOY_CT, TOY_ICT, TOY_ECM = (f"--config=configs/toy_{m}.py" for m in ("edm", "cd", "ct", "ict", "ecm"))
DIGITS_EDM, DIGITS_CD = "--config=configs/digits_edm.py", "--config=configs/digits_cd.py"

# (command line without --workdir, what the one error line starts with after "error: ")
BAD_INPUTS = [
    # flags and overrides ml_collections / absl refuse while parsing
    (["--config=configs/nope.py"], "--config: 'configs/nope.py' does not exist"),
    (["--config=configs/nope.py", "--config.optim.lr=1"], "--config: 'configs/nope.py' does not exist"),
    ([TOY_EDM.replace(".py", ".py:nope")], "--config: configs/toy_edm.py: unknown variant 'nope'"),
    ([TOY_EDM, "--config.optim.lrr=1"], "config.optim.lrr: no such field (did you mean 'lr'?)"),
    ([TOY_EDM, "--config.optim_fake.lr=1e-4"], "config.optim_fake: no such optimizer block: method 'edm' trains no "
     "set 'fake' with its own optimizer (this config's optimizer blocks: optim)"),
    (["FILE:raises"], "--config: FILE could not be loaded (RuntimeError: no such dataset version); fix that file"),
    (["FILE:bad_import"], "--config: FILE could not be loaded (ImportError: cannot import name 'no_such_module'"),
    (["FILE:no_return"], "--config: get_config() of FILE returned None; end it with `return config`"),
    ([TOY_EDM, "--config.seed.x=1"], "config.seed: is 0, not a section"),
    ([TOY_EDM, "--config.optim.lr=abc"], "config.optim.lr: 'abc' is not valid"),
    ([TOY_EDM, "--config.training.num_steps=1.5"], "config.training.num_steps: '1.5' is not valid"),
    ([TOY_EDM, "--mode=trian"], "flag --mode=trian: value should be one of"),
    ([TOY_EDM, "--wrkdir=x"], "Unknown command line flag 'wrkdir'"),
    (["--mode=sample"], "--config: not given and"),                       # a workdir without config.json
    # config values: one check per field that can be wrong
    ([TOY_EDM, "--config.method=nope"], "config.method: unknown method 'nope'"),
    ([TOY_EDM, "--config.diffusion.sigma_min=100.0"], "config.diffusion.sigma_min: 100.0 is not below"),
    ([TOY_EDM, "--config.diffusion.process=vv"], "config.diffusion.process: 'vv' is not one of"),
    ([TOY_EDM, "--config.diffusion.sigma_data=0.0"], "config.diffusion.sigma_data: 0.0 is not > 0"),
    ([TOY_EDM, "--config.optim.name=sgd"], "config.optim.name: 'sgd' is not one of"),
    ([TOY_EDM, "--config.optim.lr=nan"], "config.optim.lr: nan is not a finite number"),
    ([TOY_EDM, "--config.optim.b1=1.0"], "config.optim.b1: 1.0 is not in [0, 1)"),
    ([TOY_EDM, "--config.optim.weight_decay=0.1"], "config.optim.weight_decay: 0.1 is set but optim.name is 'adam'"),
    ([TOY_EDM, "--config.optim.schedule=linear"], "config.optim.schedule: 'linear' is not one of"),
    (["FILE:unknown_optim_field"], "config.optim_fake.lrr: not an optimizer field"),
    (["FILE:bad_optim_block"], "config.optim_fake.b1: 1.5 is not in [0, 1)"),
    (["FILE:with_optim_block", "--config.optim_fake.b2=2.0"], "config.optim_fake.b2: 2.0 is not in [0, 1)"),
    (["FILE:override_typo_in_file"], "--config: optim_override: 'lrr' is not an optimizer field"),
    ([TOY_EDM, "--config.training.ema_decay=1.5"], "config.training.ema_decay: 1.5 is not in [0, 1)"),
    ([TOY_EDM, "--config.training.ema_half_life_images=-1.0"], "config.training.ema_half_life_images: -1.0 is not"),
    ([TOY_EDM, "--config.training.label_dropout=1.0"], "config.training.label_dropout: 1.0 is not in [0, 1)"),
    ([TOY_EDM, "--config.training.label_dropout=0.1"], "config.training.label_dropout: 0.1 drops class labels"),
    ([TOY_EDM, "--config.training.log_every=0"], "config.training.log_every: 0 is not >= 1"),
    ([TOY_EDM, "--config.training.batch_size=0"], "config.training.batch_size: 0 is not >= 1"),
    ([TOY_EDM, "--config.training.keep_checkpoints=0"], "config.training.keep_checkpoints: 0 is not >= 1"),
    ([TOY_EDM, "--config.data.name=toy:nope"], "config.data.name: unknown toy 'nope'"),
    ([TOY_EDM, "--config.data.random_flip=True"], "config.data.random_flip: toy data 'toy:8gaussians' cannot be"),
    ([TOY_EDM, "--config.data.toy_size=0"], "config.data.toy_size: 0 is not >= 1"),
    ([DIGITS_EDM, "--config.data.resolution=-1"], "config.data.resolution: -1 is not >= 0"),
    ([DIGITS_EDM, "--config.data.conditional=True"], "config.data.conditional: True, but config.model.num_classes"),
    ([DIGITS_EDM, "--config.data.workers=-1"], "config.data.workers: -1 is not >= 0"),
    ([DIGITS_EDM, "--config.data.test_fraction=1.0"], "config.data.test_fraction: 1.0 is not in [0, 1)"),
    ([DIGITS_EDM, "--config.data.test_path=npz:/x.npz"], "config.data.test_path: '/x.npz' is not a file"),
    ([DIGITS_EDM, "--config.data.name=folder:/no/such/dir"], "config.data.name: '/no/such/dir' is not a directory"),
    ([DIGITS_EDM, "--config.data.name=array_record:/no/such"], "config.data.name: '/no/such' is not a directory"),
    ([DIGITS_EDM, "--config.model.num_classes=5"], "config.model.num_classes: 5 differs from the 10 classes"),
    ([DIGITS_EDM, "--config.sampling.cfg_scale=2.0"], "config.sampling.cfg_scale: 2.0 guides by class"),
    ([TOY_EDM, "--config.model.name=resnet"], "config.model.name"),
    ([TOY_EDM, "--config.sampling.solver=rk4"], "config.sampling.solver: 'rk4' is not one of"),
    ([TOY_EDM, "--config.sampling.num_steps=1"], "config.sampling.num_steps: 1 is not >= 2"),
    ([TOY_EDM, "--config.sampling.num_samples=0"], "config.sampling.num_samples: 0 is not >= 1"),
    ([TOY_EDM, "--config.sampling.sigmas=(80.0,)"], "config.sampling.sigmas: (80.0,) is set, but EDM"),
    ([TOY_CT, "--config.sampling.sigmas=(80.0,100.0)"], "config.sampling.sigmas: (80.0, 100.0) is not strictly"),
    ([TOY_CT, "--config.sampling.sigmas=(100.0,1.0)"], "config.sampling.sigmas: the first σ 100.0 is above"),
    ([TOY_CT, "--config.sampling.sigmas=(80.0,0.001)"], "config.sampling.sigmas: the last σ 0.001 is not above"),
    ([TOY_EDM, "--config.eval.nfes=(0,)"], "config.eval.nfes: 0 in (0,) is not a positive integer"),
    ([TOY_EDM, "--config.eval.nfes=(1,35)"], "config.eval.nfes: (1, 35) asks EDM for 1 network evaluation"),
    ([TOY_EDM, "--config.eval.num_samples=0"], "config.eval.num_samples: 0 is not >= 1"),
    ([TOY_EDM, "--config.eval.inception_weights=/no/such/pt_inception.pth"],
     "config.eval.inception_weights: '/no/such/pt_inception.pth' is not a file"),
    ([TOY_EDM, "--config.eval.inception_weights=JUNK_FILE"], "config.eval.inception_weights: cannot read"),
    ([TOY_EDM, "--config.eval.fid_reference=/no/such/ref.npz"],
     "config.eval.fid_reference: is set but config.eval.inception_weights is not"),
    ([TOY_EDM, "--config.eval.inception_weights=STUB_PTH", "--config.eval.fid_reference=JUNK_FILE"],
     "config.eval.fid_reference: '"),
    ([TOY_EDM, "--config.eval.inception_weights=STUB_PTH"],   # the right names, not the whole network
     "config.eval.inception_weights: FID needs pytorch-fid's Inception weights"),
    (["FILE:cm_bounds"], "config.cm.s0: the curriculum start s0 = 200 is above its end cm.s1 = 150"),
    ([TOY_CT, "--config.cm.s0=1"], "config.cm.s0: the curriculum would start with 1 grid point(s)"),
    ([TOY_CT, "--config.cm.curriculum=cosine"], "config.cm.curriculum: 'cosine' is not one of"),
    ([TOY_CT, "--config.cm.weighting=snr2"], "config.cm.weighting: 'snr2' is not one of"),
    ([TOY_CT, "--config.cm.ct_weight=1.0"], "config.cm.ct_weight: 1.0 mixes in CD"),
    ([TOY_CT, "--config.cm.mu0=1.0"], "config.cm.mu0: 1.0 is not in [0, 1)"),
    ([TOY_CD, "--config.cm.num_scales=1"], "config.cm.num_scales: 1 is not >= 2"),
    ([TOY_CD, "--config.cm.max_gap=0"], "config.cm.max_gap: 0 is not >= 1"),
    ([TOY_CD, "--config.cm.teacher_steps=0"], "config.cm.teacher_steps: 0 is not >= 1"),
    ([TOY_ICT, "--config.cm.target_ema=0.9"], "config.cm.target_ema: iCT uses θ⁻ = stopgrad θ"),
    ([TOY_ECM, "--config.ecm.q=1.0"], "config.ecm.q: 1.0 is not > 1"),
    ([TOY_ECM, "--config.ecm.steps_per_stage=0"], "config.ecm.steps_per_stage: 0 is not >= 1"),
    ([TOY_ECM, "--config.ecm.sigma_min_eval=0.0"], "config.ecm.sigma_min_eval: 0.0 is not in (0, 80.0)"),
    ([TOY_ECM, "--config.teacher.oracle=mixture"], "config.teacher.oracle: method 'ecm' starts from a network"),
    ([TOY_CD, "--config.teacher.oracle="], "config.teacher: method 'cd' distils a teacher but none is set"),
    ([TOY_CD, "--config.teacher.workdir=/tmp/x"], "config.teacher: both workdir='/tmp/x' and oracle='mixture'"),
    ([TOY_CD, "--config.teacher.oracle=exact"], "config.teacher.oracle: 'exact' is not an oracle"),
    ([DIGITS_CD, "--config.teacher.workdir=", "--config.teacher.oracle=mixture"],
     "config.teacher.oracle: 'mixture' needs a Gaussian-mixture toy"),
    ([TOY_CT, "--config.teacher.oracle=mixture"], "config.teacher.oracle: method 'ct' does not use a teacher"),
    ([DIGITS_CD, "--config.teacher.workdir=NO_TEACHER"], "config.teacher.workdir: no finished checkpoint in"),
    ([DIGITS_CD, "--config.teacher.workdir=TEACHER_16PX"], "config.data.resolution: the teacher in 'TEACHER_16PX' was "
     "trained with data.resolution = 16, this run has 0; use --config.data.resolution=16 or a teacher trained on 0"),
    ([DIGITS_CD, "--config.teacher.workdir=TEACHER_TOY"], "config.data.name: the teacher in 'TEACHER_TOY' was trained "
     "with data.name = 'toy:8gaussians', this run has 'digits'"),
    ([TOY_EDM, "--config.training.num_steps=0"], "config.training.num_steps: 0 is not >= 1"),
    ([TOY_EDM, "--config.model.depth=0"], "config.model.depth: must be an integer >= 1, got 0"),
    ([TOY_EDM, "--config.data.toy_size=100"], "config.data.toy_size: 100 points are fewer than one batch "
     "(training.batch_size = 512); use data.toy_size >= 512"),
    ([TOY_EDM, "--config.data.latents=/some/inversion"], "config.data.latents: '/some/inversion' is set, but method "
     "'edm' reads no inverted latents"),
    (["--config=configs/toy_pagoda.py", "--config.data.latents="], "config.data.latents: '' but PaGoDA trains on "
     "(example, inverted latent) pairs; make them with python launch/invert.py --oracle=mixture "
     "--data=toy:8gaussians --out=DIR"),
    # the environment: cluster, data, workdir
    ([TOY_EDM, "--config.distributed=True"], "config.distributed: jax.distributed.initialize() found no cluster"),
    (["--config=configs/cifar_edm.py:cpu", "--config.data.data_dir=DATA_DIR"], "config.data.name: cifar10 is not "
     "prepared in"),
    ([TOY_EDM, "WORKDIR=A_FILE/run"], "--workdir: cannot write to"),
    ([TOY_EDM, "WORKDIR="], "--workdir: required"),
]


# Lines worded by absl, the data loader and consistency.nets, whose messages have their own form.
NOT_OUR_WORDING = ("Unknown command line flag", "flag --", "config.data.name: cifar10 is not prepared", "config.model.")


# Teacher workdirs (a config.json and an empty finished step: what the checks before training read), by placeholder.
FAKE_TEACHERS = {"TEACHER_16PX": {"name": "digits", "resolution": 16},
                 "TEACHER_TOY": {"name": "toy:8gaussians", "resolution": 0}}


def _fake_teacher(workdir, data_fields) -> str:
    from consistency.config import base_config
    c = base_config()
    c.method = "edm"
    c.data.update(data_fields)
    os.makedirs(workdir / "checkpoints" / "1", exist_ok=True)
    (workdir / "config.json").write_text(c.to_json())
    return str(workdir)


def _argv(args, tmp_path) -> list[str]:
    """Fill in the placeholders of a case: FILE:<key>, DATA_DIR, NO_TEACHER, JUNK_FILE, STUB_PTH, WORKDIR=… (default: a fresh
    dir)."""
    out, workdir = ["consistency.main"], str(tmp_path / "run")
    for arg in args:
        if arg.startswith("FILE:"):
            path = tmp_path / f"{arg[5:]}.py"
            path.write_text(textwrap.dedent(CONFIG_FILES[arg[5:]]))
            arg = f"--config={path}"
        elif arg.startswith("WORKDIR="):
            workdir = arg[len("WORKDIR="):]
            if workdir.startswith("A_FILE"):
                (tmp_path / "a_file").write_text("not a directory")
                workdir = str(tmp_path / "a_file" / "run")
            continue
        if "STUB_PTH" in arg:   # a state dict with the names config validation looks for, and nothing else
            from consistency import config as config_lib
            from consistency.core import torchfile
            torchfile.save_state_dict(tmp_path / "stub.pth", {name: np.zeros((1, 1, 1, 1), np.float32)
                                                              for name in config_lib.FID_INCEPTION_KEYS})
            arg = arg.replace("STUB_PTH", str(tmp_path / "stub.pth"))
        if "JUNK_FILE" in arg:
            (tmp_path / "junk.pth").write_text("not a checkpoint")
            arg = arg.replace("JUNK_FILE", str(tmp_path / "junk.pth"))
        arg = arg.replace("DATA_DIR", str(tmp_path / "tfds")).replace("NO_TEACHER", str(tmp_path / "no_teacher"))
        for name, fields in FAKE_TEACHERS.items():
            if name in arg:
                arg = arg.replace(name, _fake_teacher(tmp_path / name.lower(), fields))
        out.append(arg)
    return out + ([f"--workdir={workdir}"] if workdir else [])


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)   # the config paths of the cases are relative to the repository root


@pytest.mark.parametrize("args, starts", BAD_INPUTS, ids=[f"{i:02d}" for i in range(len(BAD_INPUTS))])
def test_bad_input_is_one_line_and_exit_2(args, starts, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main.check(_argv(args, tmp_path))
    err = capsys.readouterr().err
    for name in FAKE_TEACHERS:                                   # the placeholders stand for the real paths
        err = err.replace(str(tmp_path / name.lower()), name)
    for key in CONFIG_FILES:
        err = err.replace(str(tmp_path / f"{key}.py"), "FILE")
    assert exited.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"error: {starts}"), err
    if not starts.startswith(NOT_OUR_WORDING):
        assert "; " in err, f"no fix after the problem: {err}"   # <field>: <what is wrong>; <the fix>
    assert not os.path.exists(tmp_path / "run"), "a failed check must not create the workdir"


def test_a_good_command_passes_every_check(tmp_path):
    config = main.check(_argv([TOY_CD, "--config.cm.max_gap=4", "--config.sampling.sigmas=(80.0,0.5)"], tmp_path))
    assert config.method == "cd" and config.cm.max_gap == 4 and tuple(config.sampling.sigmas) == (80.0, 0.5)
    assert os.path.isdir(tmp_path / "run")   # train mode creates the workdir once every check has passed


def test_field_problem_and_metrics_table_by_value():
    from consistency.config import base_config
    c = base_config()
    assert main.field_problem(c, "optim.lr") is None
    assert main.field_problem(c, "training.ema_decy").startswith(
        "config.training.ema_decy: no such field (did you mean 'ema_decay'?); config.training has batch_size,")
    report = {"nfes": [1, 2], "nfe_1": {"swd": 0.5, "swd_floor": 0.0625, "finite_fraction": 1.0, "num_samples": 9},
              "nfe_2": {"swd": 0.25, "swd_floor": 0.0625, "finite_fraction": 1.0}}
    assert main.metrics_table(report).splitlines() == [
        "metric           NFE 1               NFE 2",
        "finite_fraction  1                   1",
        "swd              0.5 (floor 0.0625)  0.25 (floor 0.0625)"]


# ----------------------------------------------------------------------------------------------------------
# Real processes: the whole of stderr, --help, and no TensorFlow on the failure path
# ----------------------------------------------------------------------------------------------------------

def _cli(*args, timeout=120):
    """Run the CLI; stdout ends with whether TensorFlow had been imported when it exited."""
    code = ("import runpy, sys\nsys.argv = ['consistency.main'] + sys.argv[1:]\ntry:\n"
            "    runpy.run_module('consistency.main', run_name='__main__', alter_sys=True)\n"
            "finally:\n    print('tensorflow imported:', 'tensorflow' in sys.modules)\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([REPO, TESTS]))
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args, starts", [
    ([TOY_EDM, "--config.optim.lrr=1"], "config.optim.lrr: no such field"),
    (["--config=configs/nope.py"], "--config: 'configs/nope.py' does not exist"),
    ([TOY_CT, "--config.cm.s0=300"], "config.cm.s0: the curriculum start s0 = 300 is above"),
])
def test_cli_process_prints_only_the_error_line(args, starts, tmp_path):
    proc = _cli(*args, f"--workdir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(f"error: {starts}"), \
        proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("tensorflow imported: False")


def test_help_exits_0_and_lists_every_config_section():
    proc = _cli("--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    for section in ("data", "model", "diffusion", "optim", "training", "teacher", "sampling", "eval", "cm", "ecm"):
        assert any(line.startswith(f"  {section}:") for line in lines), section
    assert any("ema_decay=0.999" in line for line in lines) and any("--workdir" in line for line in lines)
