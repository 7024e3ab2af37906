"""Convert a folder of images to ArrayRecord shards + the dataset's statistics, for ``data.name=array_record:DIR``.

    python launch/prepare_data.py --src=PATH --out=DIR --resolution=R [--workers=4] [--inception_weights=FILE]

What it writes (consistency/data/prepare.py): every image under ``--src`` in the order and with the labels of
``folder:PATH`` (sorted paths; class sub-folders → labels), center-cropped and resized to R × R (EDM dataset_tool.py's
'center-crop': PIL LANCZOS), as ``DIR/shard-NNNNN.array_record`` (``--shard_size`` images each) and ``DIR/stats.json``
(count, shape, classes, shards, ``data_std`` accumulated shard by shard, never holding the set in memory), with a
progress bar.  ``--inception_weights=FILE`` calls ``consistency.metrics.features.pytorch_fid_inception(FILE)`` — the FID
Inception of pytorch-fid, expected to map float32 images [n, R, R, C] in [−1, 1] to features [n, 2048] — and writes
the FID reference ``DIR/fid_reference.npz`` (``mu``, ``sigma``) from the same pass; while that function does not exist
in this checkout it says so in one line and skips the reference.

A file that cannot be decoded is skipped with one line on stderr (``skipped PATH: reason``) and counted (stats.json
``skipped``).  Resumable: a rerun with the same --src/--resolution/--shard_size redoes only the unfinished shards.  Bad
input (no such folder, no images, resolution <= 0, an --out prepared from something else) is one line on stderr and
exit status 2.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

from consistency.data.prepare import BadInput, prepare

_SRC = flags.DEFINE_string("src", "", "Folder of images (class sub-folders become labels).")
_OUT = flags.DEFINE_string("out", "", "Output directory (created; resumable).")
_RESOLUTION = flags.DEFINE_integer("resolution", 0, "Side R of the R × R images written (center crop, LANCZOS).")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 1024, "Images per ArrayRecord shard (the unit of resuming).")
_WORKERS = flags.DEFINE_integer("workers", 4, "Grain threads decoding images.")
_INCEPTION = flags.DEFINE_string("inception_weights", "", "PyTorch FID Inception weights: also write "
                                 "fid_reference.npz via consistency.metrics.features.pytorch_fid_inception (when available).")


def fid_feature_fn(weights_path: str):
    """The FID Inception feature function of consistency.metrics.features.pytorch_fid_inception(weights_path), or None (with
    one line on stderr) while that function does not exist in this checkout."""
    if not weights_path:
        return None
    if not os.path.isfile(weights_path):
        raise BadInput(f"--inception_weights: {weights_path!r} is not a file; give the PyTorch FID Inception weights")
    from consistency.metrics import features
    make = getattr(features, "pytorch_fid_inception", None)
    if make is None:
        sys.stderr.write("note: consistency.metrics.features.pytorch_fid_inception is not available here; "
                         "skipping the FID reference (fid_reference.npz)\n")
        return None
    return make(weights_path)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    try:
        stats = prepare(_SRC.value, _OUT.value or "", _RESOLUTION.value, _SHARD_SIZE.value, _WORKERS.value,
                        fid_feature_fn(_INCEPTION.value))
    except BadInput as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    print(f"wrote {stats['count']} images ({stats['skipped']} skipped) of shape {tuple(stats['shape'])} to "
          f"{_OUT.value}: data_std {stats['data_std']:.4f}, {stats['num_classes']} classes")


if __name__ == "__main__":
    app.run(main)
