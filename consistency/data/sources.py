"""Your own images as random-access sources of the Grain pipeline: ``folder:PATH``, ``npz:PATH``, ``array_record:PATH``.

A source has ``len(source)`` and ``source[i] → (stored row uint8 [H, W, C], label int)``: the
``grain.MapDataset.source`` protocol (pipeline.py builds every batch from it).

* ``folder:PATH`` — every file under PATH whose extension is in :data:`IMAGE_EXTENSIONS`, in sorted order of the path
  relative to PATH (example id i = the i-th file).  Labels as EDM's ``dataset_tool.py`` (NVlabs/edm) derives them
  without a ``dataset.json``: the sorted distinct top-level names (files directly in PATH count as the name ''); when
  there is more than one, each file's label is the index of its top-level name, else the set is unlabelled.
* ``npz:PATH`` — ``x`` uint8 [N, H, W, C] (C = 1 or 3), optional ``labels`` int [N] (num_classes = max + 1).
* ``array_record:PATH`` — the directory written by ``launch/prepare_data.py`` (:func:`open_array_record`).

Images keep their channels: a folder whose files are all grayscale ('L', '1', 'I;16', …) gives C = 1, any other mix
gives RGB (grayscale files are then expanded to RGB, as PIL's ``convert('RGB')`` does).  EDM's ``center-crop``
transform converts grayscale to RGB always; we do not, so a grayscale set trains a one-channel model.

Resize (``data.resolution`` R > 0): :func:`center_crop_resize`, EDM ``dataset_tool.py``'s ``center-crop`` transform
(NVlabs/edm, ``make_transform``): crop the centred min(H, W) square at offsets ((H − s) // 2, (W − s) // 2), then PIL
``resize((R, R), LANCZOS)`` — skipped when the crop is already R × R.  R = 0 keeps the native size, which must then be
the same for every image (checked once per folder from the file headers; a one-line ConfigError names two sizes).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import numpy as np

from consistency.core.errors import ConfigError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
GRAY_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "F")
PATH_SOURCES = ("folder", "npz", "array_record")   # data.name = '<kind>:PATH'
STATS_FILE = "stats.json"          # array_record:PATH/stats.json (launch/prepare_data.py)
SHARD_PATTERN = "shard-{:05d}.array_record"
LABEL_BYTES = 4                    # an ArrayRecord record: int32 little-endian label, then the uint8 pixels (H·W·C)


def path_source(name: str) -> Optional[tuple[str, str]]:
    """'folder:/a/b' → ('folder', '/a/b'); None for names that are not a path source."""
    kind, sep, path = name.partition(":")
    return (kind, path) if sep and kind in PATH_SOURCES else None


def center_crop_resize(image: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [H, W, C] → [R, R, C]: EDM dataset_tool.py's 'center-crop' (centred square, PIL LANCZOS); R = 0: as is."""
    if not resolution:
        return image
    import PIL.Image

    h, w, c = image.shape
    side = min(h, w)
    image = image[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
    if side == resolution:
        return np.ascontiguousarray(image)
    pil = PIL.Image.fromarray(image[..., 0] if c == 1 else image)
    out = np.asarray(pil.resize((resolution, resolution), PIL.Image.Resampling.LANCZOS))
    return out.reshape(resolution, resolution, c)


def decode_image(path: str, channels: int) -> np.ndarray:
    """The file as uint8 [H, W, channels] (channels 1: grayscale 'L', 3: 'RGB'); raises on an unreadable file."""
    import PIL.Image

    with PIL.Image.open(path) as img:
        img.load()
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "F") and channels == 1:
            arr = np.asarray(img, np.float64)
            arr = np.clip(arr / (65535.0 if arr.max() > 255 else 255.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return arr[..., None]
        return np.asarray(img.convert("L" if channels == 1 else "RGB"), np.uint8).reshape(
            img.height, img.width, channels)


def list_images(root: str) -> list[str]:
    """Image files under root (relative paths, sorted, '/'-separated)."""
    found = []
    for folder, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/"))
    return sorted(found)


def folder_labels(files: list[str]) -> tuple[np.ndarray, list[str]]:
    """(labels int32 [N], class names): EDM dataset_tool.py's top-level-folder rule (module docstring)."""
    top = [f.split("/")[0] if "/" in f else "" for f in files]
    names = sorted(set(top))
    if len(names) <= 1:
        return np.zeros(len(files), np.int32), []
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[t] for t in top], np.int32), names


@dataclasses.dataclass(frozen=True)
class FolderScan:
    root: str
    files: list            # relative paths
    labels: np.ndarray     # int32 [N]
    class_names: list      # [] when unlabelled
    channels: int
    native_size: Optional[tuple]   # (H, W) when every image has it, else None


def scan_folder(root: str, field: str = "config.data.name") -> FolderScan:
    """Read the headers of every image under root (not the pixels); one-line ConfigError for a missing or empty
    folder and for an unreadable file."""
    import PIL.Image

    if not os.path.isdir(root):
        raise ConfigError(f"{field}: folder {root!r} does not exist; give a directory of images")
    files = list_images(root)
    if not files:
        raise ConfigError(f"{field}: folder {root!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                          "point it at a tree of images")
    gray, sizes = True, set()
    for f in files:
        try:
            with PIL.Image.open(os.path.join(root, f)) as img:
                gray = gray and img.mode in GRAY_MODES
                sizes.add((img.height, img.width))
        except Exception as e:  # noqa: BLE001 — any decoder error is a bad file
            raise ConfigError(f"{field}: cannot read {os.path.join(root, f)!r} ({type(e).__name__}); remove it, or "
                              "convert the folder with launch/prepare_data.py, which skips bad files") from None
    labels, names = folder_labels(files)
    return FolderScan(root, files, labels, names, 1 if gray else 3, next(iter(sizes)) if len(sizes) == 1 else None)


def image_shape(native: tuple, channels: int, resolution: int, what: str, sizes_hint: str = "") -> tuple:
    if resolution:
        return (resolution, resolution, channels)
    if native is None:
        raise ConfigError(f"config.data.resolution: 0 (native) but {what} holds images of different sizes{sizes_hint}; "
                          "set data.resolution to the side to center-crop and resize to")
    return (*native, channels)


class FolderSource:
    """``source[i]``: file i decoded, center-cropped and resized (module docstring); read on demand."""

    def __init__(self, scan: FolderScan, resolution: int):
        self.scan, self.resolution = scan, int(resolution)
        self.shape = image_shape(scan.native_size, scan.channels, resolution, f"folder {scan.root!r}")

    def __len__(self) -> int:
        return len(self.scan.files)

    def __getitem__(self, i):
        i = int(i)
        image = decode_image(os.path.join(self.scan.root, self.scan.files[i]), self.scan.channels)
        return center_crop_resize(image, self.resolution), int(self.scan.labels[i])


class ArraySource:
    """``source[i]`` = (a copy of examples[i], labels[i]): a split held in host memory."""

    def __init__(self, examples: np.ndarray, labels: np.ndarray):
        self.examples, self.labels = examples, labels

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i):
        return np.array(self.examples[i]), int(self.labels[i])


class SubsetSource:
    """``source[i] = parent[ids[i]]``: one split of a source."""

    def __init__(self, parent, ids: np.ndarray):
        self.parent, self.ids = parent, np.asarray(ids, np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return self.parent[int(self.ids[int(i)])]

    def __getitems__(self, indices) -> list:
        ids = [int(self.ids[int(i)]) for i in indices]
        many = getattr(self.parent, "__getitems__", None)
        return many(ids) if many is not None else [self.parent[i] for i in ids]


def load_npz(path: str, resolution: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(x uint8 [N, R, R, C], labels int32 [N], num_classes) from an .npz (module docstring); one-line ConfigErrors."""
    if not os.path.isfile(path):
        raise ConfigError(f"config.data.name: {path!r} is not a file; give an .npz with x uint8 [N, H, W, C]")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"config.data.name: cannot read {path!r} as .npz ({type(e).__name__}); "
                          "write it with np.savez(path, x=..., labels=...)") from None
    if "x" not in arrays:
        raise ConfigError(f"config.data.name: {path!r} has no array 'x' (it has {sorted(arrays) or 'none'}); "
                          "save the images as x, uint8 [N, H, W, C]")
    x = arrays["x"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise ConfigError(f"config.data.name: x in {path!r} is {x.dtype} {list(x.shape)}; need uint8 [N, H, W, C] "
                          "with N > 0 and C = 1 or 3")
    if "labels" in arrays:
        labels = arrays["labels"]
        if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise ConfigError(f"config.data.name: labels in {path!r} are {labels.dtype} {list(labels.shape)}; "
                              f"need non-negative integers [{len(x)}], one per image of x")
        labels, num_classes = labels.astype(np.int32), int(labels.max()) + 1
    else:
        labels, num_classes = np.zeros(len(x), np.int32), 0
    if resolution and x.shape[1:3] != (resolution, resolution):
        x = np.stack([center_crop_resize(row, resolution) for row in x])
    return x, labels, num_classes


# ----------------------------------------------------------------------------------------------------------
# ArrayRecord (launch/prepare_data.py)

def encode_record(image: np.ndarray, label: int) -> bytes:
    return np.int32(label).astype("<i4").tobytes() + np.ascontiguousarray(image, np.uint8).tobytes()


def decode_record(record: bytes, shape: tuple) -> tuple[np.ndarray, int]:
    label = int(np.frombuffer(record, "<i4", count=1)[0])
    return np.frombuffer(record, np.uint8, offset=LABEL_BYTES).reshape(shape).copy(), label


def read_stats(path: str) -> dict:
    stats_path = os.path.join(path, STATS_FILE)
    if not os.path.isfile(stats_path):
        raise ConfigError(f"config.data.name: {path!r} has no {STATS_FILE}; write it with "
                          f"`python launch/prepare_data.py --src=FOLDER --out={path} --resolution=R`")
    with open(stats_path) as f:
        return json.load(f)


class ArrayRecordSource:
    """``source[i]``: record i of the shards listed in stats.json (grain.sources.ArrayRecordDataSource)."""

    def __init__(self, path: str):
        import grain

        self.stats = read_stats(path)
        self.shape = tuple(self.stats["shape"])
        shards = [os.path.join(path, s) for s in self.stats["shards"] if s]
        self._records = grain.sources.ArrayRecordDataSource(shards) if shards else []
        if len(self._records) != self.stats["count"]:
            raise ConfigError(f"config.data.name: {path!r} holds {len(self._records)} records but {STATS_FILE} says "
                              f"{self.stats['count']}; rerun launch/prepare_data.py to finish it")

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i):
        return decode_record(self._records[int(i)], self.shape)

    def __getitems__(self, indices) -> list:
        """Records read in one call of the ArrayRecord reader (its parallel batch read)."""
        return [decode_record(r, self.shape) for r in self._records.__getitems__([int(i) for i in indices])]
