"""Your own images: ``folder:PATH``, ``npz:PATH`` and ``array_record:PATH`` (written by launch/prepare_data.py) through
the Grain pipeline — the EDM center-crop, labels from class folders, training through the CLI with a bitwise resume,
the same batches on 1 and 2 simulated hosts and from memory or by id, the ArrayRecord conversion serving exactly the
folder's images, bad files skipped with a count, and one-line errors with exit status 2 before anything compiles.

Every image is generated here: a few dozen PNGs (lossless: their pixels are known) and JPEGs of random sizes in two
class folders, and an .npz of grayscale images with labels.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import PIL.Image
import pytest

from consistency.core import checkpoint
from consistency import main
from consistency.run import train
from consistency.core.errors import ConfigError
from consistency.config import base_config
from consistency.data import make_dataset, sources
from consistency.data import prepare as prepare_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("cats", "dogs")
PER_CLASS = 18            # 36 images: 9 PNG + 9 JPEG per class
RES = 8
BATCH = 8


def write_folder(root, seed=0, per_class=PER_CLASS, classes=CLASSES) -> dict:
    """{relative path: pixels as written} (PNG exact; JPEG the file's decoded pixels); sizes 10..20 × 10..20."""
    rng = np.random.default_rng(seed)
    written = {}
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(10, 21, 2)
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            name = f"{c}/img{i:02d}.{'png' if i % 2 == 0 else 'jpg'}"
            PIL.Image.fromarray(image).save(os.path.join(root, name))
            written[name] = np.asarray(PIL.Image.open(os.path.join(root, name)).convert("RGB"))
    return written


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("images"))
    return root, write_folder(root)


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
    rng = np.random.default_rng(1)
    path = str(tmp_path_factory.mktemp("arrays") / "set.npz")
    np.savez(path, x=rng.integers(0, 256, (40, RES, RES, 1), dtype=np.uint8), labels=rng.integers(0, 3, 40))
    return path


def data_config(name, **overrides):
    c = base_config().data
    c.name, c.resolution = name, RES
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def edm_center_crop(image, r):
    """EDM dataset_tool.py 'center-crop' written out: the centred min-side square, then PIL LANCZOS to r × r."""
    h, w = image.shape[:2]
    s = min(h, w)
    crop = image[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2]
    return np.asarray(PIL.Image.fromarray(crop).resize((r, r), PIL.Image.Resampling.LANCZOS))


def host_batches(monkeypatch, cfg, hosts, steps, seed=3):
    monkeypatch.setattr(jax, "process_count", lambda: hosts)
    out = []
    for p in range(hosts):
        monkeypatch.setattr(jax, "process_index", lambda p=p: p)
        ds = make_dataset(cfg, BATCH, seed=seed)
        out.append([ds.batch(s) for s in steps])
        ds.close()
    monkeypatch.undo()
    return out


# ---------------------------------------------------------------------------------------------------------
# folder: and npz: sources

def test_folder_images_labels_crop_and_split(folder):
    root, written = folder
    names = sorted(written)                                       # example id = sorted relative path
    everything = make_dataset(data_config(f"folder:{root}", workers=0), BATCH, seed=0, split="all")
    x, y = everything.arrays()
    assert (everything.size, everything.example_shape, everything.num_classes) == (36, (RES, RES, 3), 2)
    want = np.stack([edm_center_crop(written[n], RES) for n in names]).astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(x, want, atol=1e-6)
    np.testing.assert_array_equal(y, [CLASSES.index(n.split("/")[0]) for n in names])
    assert everything.data_std == pytest.approx(float(np.std(want.astype(np.float64))), rel=1e-6)
    # native size (resolution 0) of a square crop: the crop itself, no resampling
    square = np.arange(12 * 20 * 3, dtype=np.uint8).reshape(12, 20, 3)
    np.testing.assert_array_equal(sources.center_crop_resize(square, 12), square[:, 4:16])
    # held out: the fixed permutation's last 10 % (the digits rule), disjoint from train
    train_ds = make_dataset(data_config(f"folder:{root}"), BATCH, seed=0)
    test_ds = make_dataset(data_config(f"folder:{root}"), BATCH, seed=0, split="test")
    order = np.random.default_rng(0).permutation(36)
    assert (train_ds.size, test_ds.size) == (32, 4)
    np.testing.assert_array_equal(test_ds.arrays()[0], x[order[32:]])
    np.testing.assert_array_equal(train_ds.arrays()[0], x[order[:32]])


def test_npz_and_a_second_path_as_the_held_out_set(npz_path, folder):
    data = np.load(npz_path)
    ds = make_dataset(data_config(f"npz:{npz_path}", test_path=f"npz:{npz_path}"), BATCH, seed=0)
    x, y = ds.arrays()
    assert (ds.size, ds.example_shape, ds.num_classes) == (40, (RES, RES, 1), int(data["labels"].max()) + 1)
    np.testing.assert_allclose(x, data["x"].astype(np.float32) / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(y, data["labels"])
    held_out = make_dataset(data_config(f"npz:{npz_path}", test_path=f"folder:{folder[0]}"), BATCH, seed=0,
                            split="test")
    assert held_out.size == 36 and held_out.example_shape == (RES, RES, 3)


@pytest.mark.parametrize("kind", ["folder", "npz"])
def test_one_and_two_hosts_memory_and_stream_give_the_same_batches(folder, npz_path, monkeypatch, kind):
    name = f"folder:{folder[0]}" if kind == "folder" else f"npz:{npz_path}"
    steps = range(0, 12)                                          # 96 positions: the 32 (40) examples, ~3 epochs
    base = host_batches(monkeypatch, data_config(name, random_flip=True, workers=0), 1, steps)[0]
    for pipeline in ("memory", "stream"):
        for workers in (0, 2):
            cfg = data_config(name, random_flip=True, workers=workers, pipeline=pipeline)
            one = host_batches(monkeypatch, cfg, 1, steps)[0]
            two = host_batches(monkeypatch, cfg, 2, steps)
            for s, want in enumerate(base):
                for k in ("x", "label", "index"):
                    np.testing.assert_array_equal(one[s][k], want[k], err_msg=f"{pipeline} {workers} {k}")
                    joined = np.concatenate([two[0][s][k], two[1][s][k]])
                    np.testing.assert_array_equal(joined, want[k], err_msg=f"{pipeline} {workers} 2 hosts {k}")
    ds = make_dataset(data_config(name, random_flip=True), BATCH, seed=3)
    x_all = ds.arrays()[0]
    for s in (0, 5):                                              # rows of the epoch permutation, some mirrored
        got, ref = base[s]["x"], x_all[ds.example_ids(s)]
        mirrored = np.all(got == ref[:, :, ::-1], axis=(1, 2, 3))
        assert np.all(np.all(got == ref, axis=(1, 2, 3)) | mirrored)
    ds.close()


# ---------------------------------------------------------------------------------------------------------
# launch/prepare_data.py → array_record:

def test_prepared_array_record_serves_exactly_the_folder_and_resumes(folder, tmp_path):
    root, _ = folder
    out = str(tmp_path / "prepared")
    stats = prepare_data.prepare(root, out, RES, shard_size=10, workers=2)
    from_folder = make_dataset(data_config(f"folder:{root}"), BATCH, seed=4, split="all")
    from_records = make_dataset(data_config(f"array_record:{out}", pipeline="stream"), BATCH, seed=4, split="all")
    assert (stats["count"], stats["skipped"], stats["num_classes"], len(stats["shards"])) == (36, 0, 2, 4)
    for got, want in zip(from_records.arrays(), from_folder.arrays()):
        np.testing.assert_array_equal(got, want)
    assert stats["data_std"] == pytest.approx(from_folder.data_std, rel=1e-9)   # float64 shard sums vs one pass
    assert from_records.data_std == stats["data_std"]
    for s in (0, 3, 9):
        for k in ("x", "label", "index"):
            np.testing.assert_array_equal(from_records.batch(s)[k], from_folder.batch(s)[k])
    from_records.close()
    # resume: a crash in shard 2 leaves the others; the rerun rewrites only shard 2 and gives the same set
    os.remove(os.path.join(out, "shard-00002.done.npz"))
    kept = os.path.getmtime(os.path.join(out, "shard-00001.array_record"))
    assert prepare_data.prepare(root, out, RES, shard_size=10, workers=0) == stats
    assert os.path.getmtime(os.path.join(out, "shard-00001.array_record")) == kept
    again = make_dataset(data_config(f"array_record:{out}"), BATCH, seed=4, split="all")
    np.testing.assert_array_equal(again.arrays()[0], from_folder.arrays()[0])
    with pytest.raises(prepare_data.BadInput, match=r"^--out: .* different resolution"):
        prepare_data.prepare(root, out, RES * 2, shard_size=10, workers=0)


def test_bad_files_are_skipped_with_one_line_each_and_counted(tmp_path, capsys):
    root = str(tmp_path / "messy")
    written = write_folder(root, seed=2, per_class=4)
    with open(os.path.join(root, "cats", "broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really")                  # header magic, no image
    with open(os.path.join(root, "dogs", "img00.png"), "rb") as f:
        head = f.read(60)
    with open(os.path.join(root, "dogs", "truncated.png"), "wb") as f:
        f.write(head)                                              # a readable header, no pixel data
    stats = prepare_data.prepare(root, str(tmp_path / "out"), RES, shard_size=4, workers=2)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("skipped ")]
    assert stats["skipped"] == 2 and stats["count"] == len(written) == 8
    assert sorted(ln.split(":")[0] for ln in lines) == sorted(
        f"skipped {os.path.join(root, n)}" for n in ("cats/broken.png", "dogs/truncated.png"))
    with pytest.raises(ConfigError, match=r"^config\.data\.name: cannot read .*broken\.png"):
        make_dataset(data_config(f"folder:{root}"), BATCH, seed=0)     # training on the raw folder refuses it
    proc = subprocess.run([sys.executable, os.path.join(REPO, "launch", "prepare_data.py"), f"--src={root}/none",
                           f"--out={tmp_path}/o", "--resolution=8"], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --src: '{root}/none' is not a directory; give a folder of images"]


# ---------------------------------------------------------------------------------------------------------
# the CLI: training, bitwise resume, errors before anything compiles

def cli_args(name, workdir, *extra):
    return ["consistency.main", "--config=configs/digits_edm.py", f"--workdir={workdir}",
            f"--config.data.name={name}", f"--config.data.resolution={RES}", "--config.data.random_flip=True",
            "--config.model.channels=8", "--config.model.channel_mult=(1,)", "--config.training.num_steps=4",
            f"--config.training.batch_size={BATCH}", "--config.training.ckpt_every=2",
            "--config.training.sample_every=0", "--config.training.eval_every=0", "--config.sampling.num_samples=4",
            "--config.eval.num_samples=4", "--config.eval.nfes=(3,)", "--config.sampling.num_steps=2",
            "--config.optim.warmup_steps=0", *extra]


@pytest.mark.slow   # three short training runs: ~3 compilations of the step and the samplers
def test_folder_trains_through_the_cli_and_resumes_bitwise(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    name = f"folder:{folder[0]}"
    whole_dir, resumed_dir = str(tmp_path / "whole"), str(tmp_path / "resumed")
    config = main.check(cli_args(name, whole_dir, "--config.data.pipeline=stream"))
    assert config.data.name == name
    whole = train.train_and_evaluate(config, whole_dir)
    train.train_and_evaluate(config, resumed_dir)
    shutil.rmtree(os.path.join(checkpoint.checkpoint_dir(resumed_dir), "4"))   # as if killed after step 2
    for path in glob.glob(os.path.join(resumed_dir, "eval", "*.json")):
        os.remove(path)
    resumed = train.train_and_evaluate(main.check(cli_args(name, resumed_dir, "--config.data.pipeline=stream")),
                                       resumed_dir)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert json.load(open(os.path.join(whole_dir, "config.json")))["data"]["name"] == name


@pytest.mark.slow   # one compilation of the step and the samplers: ~30 s and more on a shared CPU
def test_npz_trains_through_the_cli(npz_path, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    wd = str(tmp_path / "npz")
    state = train.train_and_evaluate(main.check(cli_args(f"npz:{npz_path}", wd, "--config.training.num_steps=2")), wd)
    assert int(np.asarray(state.step)) == 2 and checkpoint.available_steps(wd) == [2]


def expect_exit_2(capsys, argv, *parts):
    with pytest.raises(SystemExit) as e:
        main.check(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: config."), err
    for part in parts:
        assert part in err[0], err[0]


def test_bad_data_is_one_line_and_exit_2_before_compiling(tmp_path, capsys, monkeypatch):
    """main.check runs the CLI's checks (main.prepare) only: config, data, network shape — nothing is compiled."""
    monkeypatch.chdir(REPO)
    wd = str(tmp_path / "wd")
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_exit_2(capsys, cli_args(f"folder:{empty}", wd), "config.data.name:", "holds no image files")
    expect_exit_2(capsys, cli_args(f"folder:{tmp_path}/missing", wd), "config.data.name:", "is not a directory")
    mixed = str(tmp_path / "mixed")
    write_folder(mixed, per_class=2)
    expect_exit_2(capsys, cli_args(f"folder:{mixed}", wd, "--config.data.resolution=0"),
                  "config.data.resolution:", "different sizes")
    unreadable = str(tmp_path / "unreadable")
    write_folder(unreadable, per_class=2)
    (tmp_path / "unreadable" / "cats" / "x.jpg").write_bytes(b"garbage")
    expect_exit_2(capsys, cli_args(f"folder:{unreadable}", wd), "cannot read", "x.jpg")
    np.savez(tmp_path / "nox.npz", images=np.zeros((4, 8, 8, 1), np.uint8))
    expect_exit_2(capsys, cli_args(f"npz:{tmp_path}/nox.npz", wd), "has no array 'x'")
    np.savez(tmp_path / "badlabels.npz", x=np.zeros((4, 8, 8, 1), np.uint8), labels=np.arange(3))
    expect_exit_2(capsys, cli_args(f"npz:{tmp_path}/badlabels.npz", wd), "labels", "one per image")
    expect_exit_2(capsys, cli_args(f"npz:{tmp_path}/nox.npz", wd, "--config.data.test_path=npz:/nowhere.npz"),
                  "config.data.test_path:", "is not a file")
    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 6, 6, 1), np.uint8))   # 6 × 6: not divisible by the U-Net's 2 ×
    expect_exit_2(capsys, cli_args(f"npz:{tmp_path}/ok.npz", wd, "--config.data.resolution=0",
                                   "--config.model.channel_mult=(1,2,2)"), "config.model")
