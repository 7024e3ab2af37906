"""FID as the papers report it: pytorch-fid's Inception-v3 read from a torch.save file without torch.

Fixture ``fixtures/pytorch_fid_inception_w16.npz`` (numbers only; its ``provenance`` entry says how it was made):
pytorch-fid's own ``InceptionV3([3])`` (mseitzer/pytorch-fid b9c18118, its FIDInceptionA/C/E_1/E_2 on torchvision
0.28's Inception-v3, torch 2.13 CPU) built with every channel count divided by 16 (torchvision's BasicConv2d
monkeypatched; the 3 input channels kept), random non-zero weights (He-scaled convs, BN statistics calibrated on
noise then perturbed), its state dict (``sd/…``, without ``fc`` and ``num_batches_tracked``), uint8 inputs and the
features ``model(uint8 / 255)[0]`` as ``fid_score.py`` computes them, FID of two 160-image sets by pytorch-fid's
``calculate_frechet_distance``, and F.interpolate's resize of two inputs at 4096 sampled positions.
The full-size network was checked the same way outside CI (see docs/fid.md).
"""
from __future__ import annotations

import json
import os
import pickle
import types
import zipfile

import numpy as np
import pytest

from consistency.metrics import set_distances, features
from consistency.run import reports
from consistency.core import torchfile
from consistency.config import base_config
from consistency.nets import fid_inception

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "pytorch_fid_inception_w16.npz")
FEATURE_TOL = 1e-4   # max |ours − pytorch-fid| ≤ FEATURE_TOL · max |pytorch-fid| (float32; measured ≤ 5.4e-6)


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


def _state_dict(reference) -> dict[str, np.ndarray]:
    """The fixture's tensors under their state-dict names, plus what the real file also holds (fc, counters)."""
    sd = {k[3:]: v for k, v in reference.items() if k.startswith("sd/")}
    for name in [k for k in sd if k.endswith(".bn.running_var")]:
        sd[name.replace("running_var", "num_batches_tracked")] = np.array(7, np.int64)
    rng = np.random.default_rng(0)
    sd["fc.weight"] = rng.standard_normal((1008, 128)).astype(np.float32)
    sd["fc.bias"] = rng.standard_normal(1008).astype(np.float32)
    return sd


@pytest.fixture(scope="module")
def weights_file(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / "pt_inception-w16.pth"
    torchfile.save_state_dict(path, _state_dict(reference))
    return str(path)


@pytest.fixture(scope="module")
def inception(weights_file):
    return features.pytorch_fid_inception(weights_file, batch_size=8)


# ---------------------------------------------------------------- torch files


@pytest.mark.parametrize("legacy", [False, True])
def test_torchfile_round_trip(tmp_path, legacy):
    rng = np.random.default_rng(1)
    arrays = {"w": rng.standard_normal((4, 3, 2, 2)).astype(np.float32), "count": np.array(12, np.int64),
              "d": rng.standard_normal(5), "h": rng.standard_normal(3).astype(np.float16),
              "flag": np.array([True, False]), "empty": np.zeros((0, 3), np.float32)}
    path = tmp_path / "sd.pth"
    torchfile.save_state_dict(path, arrays, legacy=legacy)
    assert zipfile.is_zipfile(path) == (not legacy)
    back = torchfile.load_state_dict(path)
    assert list(back) == list(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)
    assert torchfile.state_dict_shapes(path)["w"] == ((4, 3, 2, 2), np.dtype(np.float32))


def test_torchfile_runs_no_code_and_refuses_other_files(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(torchfile.TorchFileError, match="posix.system|os.system"):
        torchfile.load_state_dict(path)
    good = tmp_path / "good.pth"
    torchfile.save_state_dict(good, {"a": np.ones((64, 64), np.float32)})
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:-3000])
    (tmp_path / "text.pth").write_text("not a checkpoint")
    torchfile.save_state_dict(tmp_path / "legacy.pth", {"a": np.ones((64, 64), np.float32)}, legacy=True)
    (tmp_path / "legacy_cut.pth").write_bytes((tmp_path / "legacy.pth").read_bytes()[:-100])
    for name in ("truncated.pth", "text.pth", "legacy_cut.pth"):
        with pytest.raises(torchfile.TorchFileError) as info:
            torchfile.load_state_dict(tmp_path / name)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------- the network against pytorch-fid


def test_resize_and_scaling_match_pytorch_fid(reference):
    """F.interpolate(size=299, bilinear, align_corners=False) of x / 255, then 2x − 1: up (5×7), down (320×311)."""
    up = np.asarray(fid_inception.preprocess(reference["resize_input"]))
    np.testing.assert_allclose(up.reshape(-1)[reference["resize_index"]], reference["resize_values"], rtol=0,
                               atol=1e-6)
    down = np.asarray(fid_inception.preprocess(reference["images_d"]))
    np.testing.assert_allclose(down.reshape(-1)[reference["down_index"]], reference["down_values"], rtol=0,
                               atol=1e-6)
    assert up.shape == down.shape == (1, 299, 299, 3)
    np.testing.assert_allclose(fid_inception.fid_resize_matrix(17).sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("images,expected", [("images_a", "features_a"), ("images_b", "features_b"),
                                             ("images_c", "features_c"), ("images_d", "features_d")])
def test_features_match_pytorch_fid(reference, inception, images, expected):
    want = reference[expected]
    got = inception(reference[images][: len(want)])
    assert got.shape == want.shape == (len(want), 128) and got.dtype == np.float32
    assert np.max(np.abs(got - want)) <= FEATURE_TOL * np.max(np.abs(want))


def test_gray_images_are_repeated_and_floats_quantised(reference, inception):
    rgb = reference["images_a"][:8]
    gray = rgb[..., :1]
    np.testing.assert_array_equal(inception(gray), inception(np.repeat(gray, 3, axis=-1)))
    as_float = rgb.astype(np.float64) / 127.5 - 1.0   # [-1, 1] samples: rounded back to the same uint8
    np.testing.assert_array_equal(inception(as_float), inception(rgb))


@pytest.mark.slow   # 320 images through the network: ~20 s on 2 CPU cores
def test_fid_of_two_sets_matches_pytorch_fid(reference, inception):
    """The whole path: features → gaussian_stats → the project's frechet_distance = pytorch-fid's FID."""
    mu_a, cov_a = set_distances.gaussian_stats(inception(reference["images_a"]))
    mu_b, cov_b = set_distances.gaussian_stats(inception(reference["images_b"]))
    fid = set_distances.frechet_distance(mu_a, cov_a, mu_b, cov_b)
    np.testing.assert_allclose(fid, float(reference["fid_ab"]), rtol=1e-4)   # measured 1.5e-6
    assert set_distances.frechet_distance(mu_a, cov_a, mu_a, cov_a) < 1e-3 * fid


# ---------------------------------------------------------------- wrong files: one line


def test_wrong_weights_files_are_one_clear_line(reference, tmp_path):
    sd = _state_dict(reference)
    torchvision_like = dict(sd, **{"AuxLogits.conv0.conv.weight": np.zeros((8, 48, 1, 1), np.float32)})
    incomplete = {k: v for k, v in sd.items() if not k.startswith("Mixed_7c.branch_pool")}
    torchfile.save_state_dict(tmp_path / "aux.pth", torchvision_like)
    torchfile.save_state_dict(tmp_path / "incomplete.pth", incomplete)
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 100)
    cases = {"": "is not a file", str(tmp_path / "none.pth"): "is not a file",
             str(tmp_path / "junk.pth"): "torch.save", str(tmp_path / "aux.pth"): "AuxLogits",
             str(tmp_path / "incomplete.pth"): "Mixed_7c.branch_pool"}
    for path, expected in cases.items():
        with pytest.raises(features.InceptionWeightsMissing) as info:
            features.pytorch_fid_inception(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith("config.eval.inception_weights:") and expected in message


def test_published_reference_statistics(tmp_path):
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(6), np.eye(6)
    np.savez(tmp_path / "ref.npz", mu=mu, sigma=sigma)
    got_mu, got_sigma = features.load_fid_reference(str(tmp_path / "ref.npz"))
    np.testing.assert_array_equal(got_mu, mu) and np.testing.assert_array_equal(got_sigma, sigma)
    np.savez(tmp_path / "bad.npz", mean=mu)
    for bad in (tmp_path / "bad.npz", tmp_path / "missing.npz"):
        with pytest.raises(features.ConfigError, match="^config.eval.fid_reference: .*'mu' and 'sigma'"):
            features.load_fid_reference(str(bad))


# ---------------------------------------------------------------- evaluation: config.eval.inception_weights


def test_evaluation_fid_caches_reference_statistics_or_reads_published_ones(reference, weights_file, inception,
                                                                            tmp_path, monkeypatch):
    monkeypatch.setenv("CONSISTENCY_CACHE", str(tmp_path / "cache"))
    seen = []
    counting = lambda images: seen.append(len(images)) or inception(images)  # noqa: E731
    counting.cache_key = inception.cache_key
    monkeypatch.setattr(reports, "inception", lambda path: counting)
    real = reference["images_a"][:24].astype(np.float32) / 127.5 - 1.0       # model space, as dataset.arrays()
    samples = reference["images_b"][:16].astype(np.float32) / 127.5 - 1.0
    dataset = types.SimpleNamespace(kind="image", arrays=lambda: (real, np.zeros(len(real), np.int32)))
    config = base_config()
    config.data.name = "folder:/some/images"
    config.eval.inception_weights = weights_file
    fid = reports.fid(config, dataset, samples)
    assert seen == [24, 16]
    real_stats = set_distances.gaussian_stats(inception(reference["images_a"][:24]))
    expected = set_distances.frechet_distance(*set_distances.gaussian_stats(inception(reference["images_b"][:16])), *real_stats)
    assert fid == pytest.approx(expected, rel=1e-9)
    assert len(list((tmp_path / "cache" / "features").glob("fid-folder_some_images-stats-*.msgpack"))) == 1
    assert reports.fid(config, dataset, samples) == pytest.approx(fid, rel=1e-12) and seen[2:] == [16]
    np.savez(tmp_path / "ref.npz", mu=real_stats[0], sigma=real_stats[1])
    config.eval.fid_reference = str(tmp_path / "ref.npz")
    assert reports.fid(config, dataset, samples) == pytest.approx(fid, rel=1e-9)


@pytest.mark.slow   # two subprocesses, each compiling the network
def test_fid_in_training_and_eval_mode_from_the_command_line(reference, weights_file, tmp_path):
    from test_cli import CONFIG_FILE, _cli   # the dummy method on 4×4 gray 'fake:image' data

    config_path = tmp_path / "dummy_cfg.py"
    config_path.write_text(CONFIG_FILE)
    wd = str(tmp_path / "run")
    cache = {"CONSISTENCY_CACHE": str(tmp_path / "cache")}
    os.environ.update(cache)   # _cli copies os.environ
    try:
        proc = _cli(f"--config={config_path}:image", f"--workdir={wd}", "--imports=dummy_method",
                    "--config.training.num_steps=2", f"--config.eval.inception_weights={weights_file}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.load(open(os.path.join(wd, "eval", "metrics_2.json")))
        nfes = [k for k in report if k.startswith("nfe_")]
        assert nfes and all(np.isfinite(report[k]["fid"]) and report[k]["fid"] > 0 for k in nfes)
        assert len(os.listdir(tmp_path / "cache" / "features")) == 1   # the training split's statistics
        mu, sigma = np.zeros(128), np.eye(128)
        np.savez(tmp_path / "ref.npz", mu=mu, sigma=sigma)
        proc = _cli(f"--config={config_path}:image", f"--workdir={wd}", "--mode=eval", "--imports=dummy_method",
                    "--config.training.num_steps=2", f"--config.eval.inception_weights={weights_file}",
                    f"--config.eval.fid_reference={tmp_path / 'ref.npz'}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        again = json.load(open(os.path.join(wd, "eval", "metrics_2.json")))
        assert all(again[k]["fid"] != report[k]["fid"] for k in nfes) and "fid" in proc.stdout
        proc = _cli(f"--config={config_path}:image", f"--workdir={wd}", "--mode=eval", "--imports=dummy_method",
                    "--config.training.num_steps=2", f"--config.eval.inception_weights={tmp_path / 'missing.pth'}")
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
            "error: config.eval.inception_weights:"), proc.stderr[-2000:]
    finally:
        os.environ.pop("CONSISTENCY_CACHE")
