"""Folder → ArrayRecord shards + the dataset's statistics (the library of launch/prepare_data.py).

Reads every image under ``src`` in the order and with the labels of ``folder:PATH`` (sources.py: sorted paths, class
sub-folders → labels), center-crops and resizes each to R × R (EDM dataset_tool.py's 'center-crop': PIL LANCZOS) and
writes ``out/shard-NNNNN.array_record`` (``shard_size`` images each; a record is the int32 label then the uint8
pixels, sources.encode_record) and ``out/stats.json``: count, shape, classes, the shard list and ``data_std`` (std of
every pixel value in model space, 2·x/255 − 1, accumulated in float64 shard by shard, so the set is never held in
memory).  With a ``feature_fn`` (launch/prepare_data.py --inception_weights) it also writes the FID reference
``out/fid_reference.npz`` (``mu`` [d], ``sigma`` [d, d], the unbiased covariance as pytorch-fid's np.cov) from the
same pass, accumulated as feature sums and outer-product sums per shard.

A file that cannot be decoded is skipped with one line on stderr (``skipped PATH: reason``) and counted in
stats.json's ``skipped``.  Resumable: each finished shard leaves ``shard-NNNNN.done.npz`` (its count and moments,
written after the shard file is renamed into place); a rerun with the same src/resolution/shard_size redoes only the
unfinished shards.  Bad input raises :class:`BadInput` (one line).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from consistency.data import sources

PLAN_FILE = "prepare.json"      # what --out was started from (a rerun must match it)
FID_FILE = "fid_reference.npz"


class BadInput(Exception):
    """One line for the user; exit status 2."""


def check_plan(out: str, plan: dict) -> None:
    path = os.path.join(out, PLAN_FILE)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old != plan:
            changed = ", ".join(k for k in plan if old.get(k) != plan[k])
            raise BadInput(f"--out: {out!r} was prepared with a different {changed}; use an empty directory")
    elif os.path.isdir(out) and os.listdir(out):
        raise BadInput(f"--out: {out!r} is not empty and was not written by this script; use an empty directory")
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as f:
        json.dump(plan, f, indent=1)


def readable_headers(src: str, files: list[str]) -> tuple[list[str], int]:
    """(files whose header PIL can read, channels: 1 when all of them are grayscale else 3); one line per bad file."""
    import PIL.Image

    good, gray = [], True
    for f in files:
        try:
            with PIL.Image.open(os.path.join(src, f)) as img:
                gray = gray and img.mode in sources.GRAY_MODES
            good.append(f)
        except Exception as e:  # noqa: BLE001
            sys.stderr.write(f"skipped {os.path.join(src, f)}: {type(e).__name__}: {_first_line(e)}\n")
    return good, 1 if gray else 3


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0][:200]


def decode_shard(src: str, files: list[str], labels: np.ndarray, channels: int, resolution: int, workers: int):
    """[(image uint8 [R, R, C] or None, label, error)] of the files in order, decoded by Grain threads."""
    import grain

    def load(i):
        try:
            image = sources.decode_image(os.path.join(src, files[i]), channels)
            return sources.center_crop_resize(image, resolution), int(labels[i]), ""
        except Exception as e:  # noqa: BLE001 — any decoder error: skip the file
            return None, int(labels[i]), f"{type(e).__name__}: {_first_line(e)}"

    rows = grain.MapDataset.range(0, len(files)).map(load)
    if workers <= 0:
        return [rows[i] for i in range(len(files))]
    return list(rows.to_iter_dataset(grain.ReadOptions(num_threads=workers, prefetch_buffer_size=4 * workers)))


def write_shard(out: str, index: int, decoded, src: str, files: list[str], feature_fn) -> dict:
    """Write one shard atomically (a .tmp renamed), then its done-marker with count and moments."""
    from array_record.python.array_record_module import ArrayRecordWriter
    from tqdm import tqdm

    name = sources.SHARD_PATTERN.format(index)
    tmp = os.path.join(out, name + ".tmp")
    writer = ArrayRecordWriter(tmp, "group_size:1")
    total, total_sq, values, count, skipped, kept = 0.0, 0.0, 0, 0, 0, []
    for (image, label, error), f in zip(decoded, files):
        if image is None:
            tqdm.write(f"skipped {os.path.join(src, f)}: {error}", file=sys.stderr)   # a line of its own, bar or not
            skipped += 1
            continue
        writer.write(sources.encode_record(image, label))
        v = image.astype(np.float64) * (2.0 / 255.0) - 1.0
        total, total_sq, values, count = total + v.sum(), total_sq + np.square(v).sum(), values + v.size, count + 1
        kept.append(image)
    writer.close()
    os.replace(tmp, os.path.join(out, name))
    moments = dict(count=count, skipped=skipped, total=total, total_sq=total_sq, values=values)
    if feature_fn is not None and kept:
        feats = np.asarray(feature_fn(np.stack(kept).astype(np.float32) / 127.5 - 1.0), np.float64)
        moments.update(feature_sum=feats.sum(0), feature_outer=feats.T @ feats)
    np.savez(os.path.join(out, name.replace(".array_record", ".done.npz")), **moments)
    return moments


def prepare(src: str, out: str, resolution: int, shard_size: int = 1024, workers: int = 4,
            feature_fn=None) -> dict:
    """Convert ``src`` to ``out`` (module docstring); returns stats.json's content.  Raises BadInput.  ``feature_fn``
    (images float32 [n, R, R, C] in [−1, 1] → features [n, d]), when given, adds the FID reference mu/sigma."""
    if not out:
        raise BadInput("--out: missing; give the output directory")
    if resolution <= 0:
        raise BadInput(f"--resolution: {resolution} is not > 0; give the side R of the R × R images to write")
    if shard_size <= 0:
        raise BadInput(f"--shard_size: {shard_size} is not > 0")
    if not os.path.isdir(src):
        raise BadInput(f"--src: {src!r} is not a directory; give a folder of images")
    files = sources.list_images(src)
    if not files:
        raise BadInput(f"--src: {src!r} holds no image files ({', '.join(sources.IMAGE_EXTENSIONS)})")
    check_plan(out, dict(src=os.path.abspath(src), resolution=resolution, shard_size=shard_size, files=len(files),
                         inception=bool(feature_fn)))
    labels, class_names = sources.folder_labels(files)          # labels of every listed file (EDM's rule)
    good, channels = readable_headers(src, files)
    header_skipped = len(files) - len(good)
    keep = {f: i for i, f in enumerate(files)}
    labels = labels[[keep[f] for f in good]]
    from tqdm import tqdm

    shards, moments = [], []
    num_shards = -(-len(good) // shard_size)
    with tqdm(total=len(good), unit="img", desc=f"prepare {os.path.basename(os.path.abspath(src))}") as bar:
        for index in range(num_shards):
            lo, hi = index * shard_size, min((index + 1) * shard_size, len(good))
            name = sources.SHARD_PATTERN.format(index)
            done = os.path.join(out, name.replace(".array_record", ".done.npz"))
            if os.path.exists(done) and os.path.exists(os.path.join(out, name)):
                with np.load(done) as d:
                    moments.append({k: d[k] for k in d.files})
            else:
                decoded = decode_shard(src, good[lo:hi], labels[lo:hi], channels, resolution, workers)
                moments.append(write_shard(out, index, decoded, src, good[lo:hi], feature_fn))
            shards.append(name if int(moments[-1]["count"]) else "")
            bar.update(hi - lo)
    count = sum(int(m["count"]) for m in moments)
    if count == 0:
        raise BadInput(f"--src: none of the {len(files)} image files under {src!r} could be decoded")
    values = sum(int(m["values"]) for m in moments)
    mean = sum(float(m["total"]) for m in moments) / values
    data_std = float(np.sqrt(max(sum(float(m["total_sq"]) for m in moments) / values - mean ** 2, 0.0)))
    stats = dict(count=count, shape=[resolution, resolution, channels], num_classes=len(class_names),
                 class_names=class_names, data_std=data_std, resolution=resolution,
                 skipped=header_skipped + sum(int(m["skipped"]) for m in moments),
                 shards=[s for s in shards if s], src=os.path.abspath(src),
                 resize="EDM dataset_tool.py center-crop: centred square, PIL LANCZOS")
    if feature_fn is not None:
        total = sum(m["feature_sum"] for m in moments if "feature_sum" in m)
        outer = sum(m["feature_outer"] for m in moments if "feature_outer" in m)
        mu = total / count
        sigma = (outer - count * np.outer(mu, mu)) / (count - 1)      # unbiased, as np.cov (pytorch-fid)
        np.savez(os.path.join(out, FID_FILE), mu=mu, sigma=sigma)
        stats["fid_reference"] = FID_FILE
    with open(os.path.join(out, sources.STATS_FILE), "w") as f:
        json.dump(stats, f, indent=1)
    return stats
