"""Importing NVlabs EDM network pickles (issue 30, item 2): ``launch/import_edm.py``, ``consistency.core.edm_pickle``,
``consistency.tools.edm_import`` and ``Loaded.denoise``.

The pickles are written by the test itself (``tests/edm_pickles.py``): the module paths, class names, init kwargs,
persistence meta and tensor layout of an EDM training snapshot / release file, with no NVlabs code and no pickled
source. The weights and reference outputs are ``tests/fixtures/edm_ddpmpp_cond32.npz``: a DDPM++ ``EDMPrecond`` as
NVlabs/edm ``train.py --arch=ddpmpp --cond=1`` configures it (positional embedding, standard encoder/decoder, box
filter, augment_dim 9, dropout 0.13) at 32×32×3 with 10 labels, reduced to model_channels 8, channel_mult [1, 2],
num_blocks 1, attention at 16×16 — every parameter drawn N(0, 0.3²) on the float16 grid (stored exactly) — and its
D(x; σ) computed by NVlabs/edm's own ``EDMPrecond.forward`` (commit 008a4e5, torch 2.13.0 CPU, float32) at
σ ∈ {0.002, 0.5, 5, 80}, with class labels (one-hot; the null label 10 as the zero vector) and with
``class_labels=None``. The numbers are all that is committed.
"""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import edm_pickles as writer
from consistency.core import edm_pickle

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
FIXTURE = os.path.join(TESTS, "fixtures", "edm_ddpmpp_cond32.npz")
LAUNCHER = os.path.join(REPO, "launch", "import_edm.py")

# NVlabs/edm train.py --arch=ddpmpp (+ --augment: augment_dim 9), reduced as the module docstring says.
PRECOND_KWARGS = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                      decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1], model_channels=8,
                      channel_mult=[1, 2], num_blocks=1, attn_resolutions=[16], dropout=0.13, use_fp16=False,
                      augment_dim=9, img_resolution=32, img_channels=3, label_dim=10)
ATTRIBUTES = dict(training=False, img_resolution=32, img_channels=3, label_dim=10, use_fp16=False, sigma_min=0,
                  sigma_max=float("inf"), sigma_data=0.5)
TOLERANCE = dict(rtol=1e-5, atol=2e-5)    # float32: |D| ≤ ~100 at σ = 80, torch and XLA sum in other orders


def fixture():
    data = np.load(FIXTURE)
    state_dict = {k[3:]: data[k].astype(np.float32) for k in data.files if k.startswith("sd/")}
    return data, state_dict


def model_kwargs():
    kw = {k: v for k, v in PRECOND_KWARGS.items() if k not in ("model_type", "use_fp16", "img_channels")}
    return dict(kw, in_channels=3, out_channels=3)


def snapshot(release: bool = False, state_dict=None, class_name: str = "EDMPrecond") -> bytes:
    _, sd = fixture()
    sd = sd if state_dict is None else state_dict
    ema = writer.network_object(sd, PRECOND_KWARGS, "SongUNet", model_kwargs(), ATTRIBUTES, positional_embedding=True)
    if class_name != "EDMPrecond":
        ema.args[0]["class_name"] = class_name
    return writer.snapshot_bytes(ema, release=release)


# ----------------------------------------------------------------------------------------------------------
# The reader
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("release", [False, True])
def test_reader_returns_the_state_dict_and_kwargs_of_the_pickle(release):
    _, sd = fixture()
    net = edm_pickle.loads(snapshot(release))
    assert (net.class_name, net.model_class) == ("EDMPrecond", "SongUNet")
    assert list(net.state_dict) == list(sd)          # torch's state_dict order
    for key, value in sd.items():
        assert net.state_dict[key].dtype == np.float32 and np.array_equal(net.state_dict[key], value), key
    assert net.init_kwargs == PRECOND_KWARGS and net.model_kwargs == model_kwargs()
    assert net.attributes["sigma_data"] == 0.5 and net.attributes["label_dim"] == 10


def test_reader_rebuilds_strided_tensors_and_other_dtypes():
    """_rebuild_tensor_v2 with an offset and a transposed stride over one storage; float64 and int64 storages."""
    base = np.arange(24, dtype=np.float64)
    storage = writer.Reduce(writer.GlobalRef("torch.storage", "_load_from_bytes"),
                            (writer.legacy_storage_bytes(base),))
    view = writer.Reduce(writer.GlobalRef("torch._utils", "_rebuild_tensor_v2"),
                         (storage, 2, (3, 4), (1, 3), False, {}))
    longs = writer.tensor(np.arange(5, dtype=np.int64), parameter=False)
    unpickled = edm_pickle._RestrictedUnpickler(io.BytesIO(writer.dumps([view, longs]))).load()
    np.testing.assert_array_equal(unpickled[0], base[2:14].reshape(4, 3).T)
    assert unpickled[1].dtype == np.int64 and unpickled[1].tolist() == [0, 1, 2, 3, 4]


def _cases():
    good = snapshot()
    return {
        "not a pickle": (b"PK\x03\x04 a zip file, not a pickle" * 4, "truncated or not a pickle"),
        "truncated": (good[: len(good) // 2], "truncated"),
        "truncated storage": (good[:-200] + good[-1:], "truncated"),
        "another pickle": (pickle.dumps({"weights": np.zeros(3).tolist()}), "not an EDM network pickle"),
        "unknown class": (snapshot(class_name="Generator"), "unknown network class 'Generator'"),
        "foreign global": (writer.foreign_object_bytes(), "os.system"),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_reader_refuses_anything_else_in_one_line(case):
    data, words = _cases()[case]
    with pytest.raises(edm_pickle.EDMPickleError) as error:
        edm_pickle.loads(data)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_import_refuses_vp_and_ve_preconditioned_networks(tmp_path):
    """NVlabs' baseline-* files (VPPrecond / VEPrecond) have other c_noise conventions than EDMPrecond's ¼ ln σ."""
    from consistency.tools import edm_import
    pkl = tmp_path / "baseline-cifar10-32x32-uncond-vp.pkl"
    pkl.write_bytes(snapshot(release=True, class_name="VPPrecond"))
    with pytest.raises(edm_pickle.EDMPickleError, match="only EDMPrecond networks"):
        edm_import.import_edm(str(pkl), str(tmp_path / "teacher"))
    assert not (tmp_path / "teacher").exists()


def test_reader_never_calls_a_global_outside_the_allow_list(tmp_path, monkeypatch):
    """A pickle whose 'ema' is os.system('touch …') is refused before the call (the file is never created)."""
    marker = tmp_path / "called"
    data = writer.dumps({"ema": writer.Reduce(writer.GlobalRef("os", "system"), (f"touch {marker}",))})
    with pytest.raises(edm_pickle.EDMPickleError, match="os.system"):
        edm_pickle.loads(data)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------
# The command line: one line, exit 2, nothing written
# ----------------------------------------------------------------------------------------------------------

def _run_launcher(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, LAUNCHER, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["another pickle", "truncated", "unknown class"])
def test_launcher_refuses_with_one_line_and_exit_2(tmp_path, case):
    data, words = _cases()[case]
    pkl, out = tmp_path / "network-snapshot-000100.pkl", tmp_path / "teacher"
    pkl.write_bytes(data)
    result = _run_launcher(f"--pkl={pkl}", f"--out={out}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --pkl: ") and words in lines[0], result.stderr
    assert not out.exists() and sorted(os.listdir(tmp_path)) == [pkl.name]


def test_launcher_refuses_a_missing_flag_in_one_line():
    result = _run_launcher("--pkl=x.pkl")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: import_edm: --pkl=FILE and --out=DIR are required, e.g. --pkl=edm-cifar10-32x32-uncond-vp.pkl "
        "--out=teachers/edm_vp"]


# ----------------------------------------------------------------------------------------------------------
# Import → consistency.load → D(x; σ) against NVlabs' outputs → ECT from the imported teacher
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The fixture's snapshot pickle imported with launch/import_edm.py's function; (pkl, workdir)."""
    from consistency.tools import edm_import
    root = tmp_path_factory.mktemp("edm")
    pkl = root / "network-snapshot-000200.pkl"
    pkl.write_bytes(snapshot())
    return pkl, edm_import.import_edm(str(pkl), str(root / "teacher"))


def _mock_cifar10():
    import tensorflow_datasets as tfds
    return tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE)


def test_import_writes_an_edm_run_with_the_pickles_network(imported):
    from consistency.core import checkpoint
    from consistency.methods.components import teachers
    from consistency.config import load_run_config
    from consistency.nets import edm_networks
    pkl, out = imported
    config = load_run_config(out)
    assert (config.method, config.data.name, config.data.resolution, config.data.conditional) == \
        ("edm", "cifar10", 32, True)
    assert (config.model.name, config.model.channels, tuple(config.model.channel_mult), config.model.num_res_blocks,
            tuple(config.model.attn_resolutions), config.model.num_classes, config.model.dropout) == \
        ("ddpmpp", 8, (1, 2), 1, (16,), 10, 0.13)
    assert config.diffusion.sigma_data == 0.5 and checkpoint.available_steps(out) == [0]
    run = teachers.load_sampling_params(out)            # what --config.teacher.workdir reads
    _, sd = fixture()
    expected = edm_networks.params_from_state_dict(PRECOND_KWARGS, sd)
    import jax
    for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(expected)):
        assert np.array_equal(a, b)
    assert sorted(os.listdir(os.path.dirname(out))) == [pkl.name, "teacher"]   # no temporary directory left


def test_import_refuses_a_non_empty_out_directory(imported, tmp_path):
    from consistency.tools import edm_import
    from consistency.core.errors import ConfigError
    pkl, out = imported
    with pytest.raises(ConfigError, match="--out: .* exists and is not empty"):
        edm_import.import_edm(str(pkl), out)


def test_denoise_matches_nvlabs_edm_outputs(imported):
    """Loaded.denoise = NVlabs EDMPrecond.forward at σ ∈ {0.002, 0.5, 5, 80}: with labels (the null label as
    EDM's zero class vector) and with labels=None (EDM's class_labels=None); σ as [N] and as a scalar."""
    import consistency
    data, _ = fixture()
    x = data["x"].astype(np.float32)
    with _mock_cifar10():
        run = consistency.load(imported[1])
    d_labels = np.asarray(run.denoise(x, data["sigma"], data["labels"]))
    np.testing.assert_allclose(d_labels, data["D_labels"], **TOLERANCE)
    np.testing.assert_allclose(np.asarray(run.denoise(x, data["sigma"])), data["D_none"], **TOLERANCE)
    scalar = np.asarray(run.denoise(x, 0.5, data["labels"]))          # σ a scalar: the same as σ = [0.5] * N
    np.testing.assert_array_equal(scalar, np.asarray(run.denoise(x, np.full(4, 0.5, np.float32), data["labels"])))
    with pytest.raises(ValueError, match="x must be float"):
        run.denoise(x[:, :16], 0.5)
    with pytest.raises(ValueError, match="labels must be int"):
        run.denoise(x, 0.5, data["labels"][:2])


def test_denoise_is_only_defined_for_edm_runs():
    import ml_collections

    from consistency.api import Loaded
    run = Loaded(config=ml_collections.ConfigDict({"method": "cd"}), method=None, state=None, step=0, dataset=None)
    with pytest.raises(ValueError, match="'cd' runs have no denoiser"):
        run.denoise(np.zeros((1, 8, 8, 1), np.float32), 0.5)


@pytest.mark.slow
def test_ect_distils_from_the_imported_teacher(imported, tmp_path):
    """`python -m consistency.main --config=configs/cifar_ecm.py:cpu --config.teacher.workdir=IMPORTED` (with the
    student's config.model set to the teacher's network, as ECT initialises the student from the teacher) parses,
    validates and trains a few steps on mock CIFAR-10; the student starts from the imported weights."""
    import jax

    from consistency import main
    from consistency.methods.components import teachers
    from consistency.run import train
    from consistency.config import load_run_config
    teacher = load_run_config(imported[1])
    overrides = []
    for field in ("name", "channels", "channel_mult", "num_res_blocks", "attn_resolutions", "dropout",
                  "num_classes", "augment_dim", "channel_mult_emb"):
        value = teacher.model[field]
        value = f"({','.join(map(str, value))},)" if isinstance(value, (tuple, list)) else value
        overrides.append(f"--config.model.{field}={value}")
    argv = ["main", "--config=configs/cifar_ecm.py:cpu", f"--config.teacher.workdir={imported[1]}",
            f"--workdir={tmp_path / 'ect'}", f"--config.data.data_dir={tmp_path / 'tfds'}",
            "--config.data.conditional=True", "--config.training.num_steps=2", "--config.training.batch_size=4",
            "--config.sampling.num_samples=4", "--config.eval.num_samples=4", "--config.eval.nfes=(1,)", *overrides]
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with _mock_cifar10():
            config = main.check(argv)
            state = train.train_and_evaluate(config, str(tmp_path / "ect"))
    finally:
        os.chdir(cwd)
    assert int(state.step) == 2
    assert np.isfinite(np.asarray(jax.tree.leaves(state.params)[0])).all()
    teacher_params = teachers.load_sampling_params(imported[1]).params
    moved = np.concatenate([np.abs(np.asarray(a) - b).ravel()
                            for a, b in zip(jax.tree.leaves(state.params["online"]), jax.tree.leaves(teacher_params))])
    # Started from the teacher (weights ~ N(0, 0.3²): a fresh initialisation differs by ~0.2 in the median), then
    # trained: 2 RAdam steps at lr 1e-4 move each weight by about 1e-4.
    assert moved.max() > 0 and np.median(moved) < 1e-3
