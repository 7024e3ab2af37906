"""Reading a finished inversion (``launch/invert.py``) back as PaGoDA's per-example latents: ``config.data.latents``.

The inversion itself (solving the teacher's ODE from data to noise) is :mod:`consistency.tools.inversion`; this module is
only what the data layer needs to serve ``batch['latent']`` beside each image, so a run's dataset can be built without
the inversion tools (docs/methods.md §9)."""
from __future__ import annotations

import hashlib
import math
import os

import numpy as np

from consistency.core import fileio
from consistency.core.errors import ConfigError

META = "meta.json"


def label_checksum(labels) -> str:
    """A short hash of a split's label column: rows in another order (another split or permutation) differ."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(labels, np.int64)).tobytes()).hexdigest()[:16]


def shard_path(directory: str, kind: str, shard: int) -> str:
    return os.path.join(directory, f"{kind}_{shard:05d}.npy")


def read_meta(directory: str) -> dict:
    path = os.path.join(directory, META)
    if not fileio.exists(path):
        raise ConfigError(f"config.data.latents: no inversion in {directory!r} (no {META}); make it with "
                          "python launch/invert.py --teacher=WORKDIR --out=DIR")
    return fileio.read_json(path)


def load_latents(directory: str) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """(meta, latents [N, ...], mirrored latents or None) of a complete inversion directory."""
    meta = read_meta(directory)
    if not meta.get("complete"):
        raise ConfigError(f"config.data.latents: the inversion in {directory!r} is unfinished; rerun the same "
                          "launch/invert.py command, it continues where it stopped")
    num_shards = math.ceil(meta["size"] / meta["shard_size"])
    arrays = [np.concatenate([fileio.load_npy(shard_path(directory, kind, k)) for k in range(num_shards)])
              for kind in meta["kinds"]]
    return meta, arrays[0], (arrays[1] if len(arrays) > 1 else None)


def attach_latents(dataset, directory: str, guidance_scales=()):
    """``dataset`` serving ``batch['latent']`` from the inversion in ``directory`` (``config.data.latents``), after
    checking that it inverted this dataset's split (same name, split, size and label order) with the run's
    ``guidance_scales`` (``pagoda.guidance_scales``): one ConfigError line otherwise."""
    meta, latents, mirrored = load_latents(directory)
    stored, wanted = tuple(meta.get("guidance_scales", ())), tuple(float(w) for w in guidance_scales)
    if stored != wanted:
        raise ConfigError(f"config.pagoda.guidance_scales: {wanted} but {directory!r} was inverted with guidance scales "
                          f"{stored}; set pagoda.guidance_scales={stored} or invert with "
                          f"--guidance_scales={','.join(str(w) for w in wanted)}")
    for key, mine in (("data", dataset.name), ("split", dataset.split), ("size", dataset.size),
                      ("label_checksum", label_checksum(dataset.labels))):
        if meta.get(key) != mine:
            raise ConfigError(f"config.data.latents: {directory!r} inverted {key} {meta.get(key)!r}, but this run's "
                              f"is {mine!r}; invert this run's data (launch/invert.py) or fix data.latents")
    return dataset.with_extras(latent=(latents, mirrored))


def latent_prior(latents) -> dict:
    """{'mean', 'std'} per coordinate of the inverted latents [N, ...] (float32): the Gaussian ``pagoda.prior='latent'``
    samples the generator's input from (module doc, "The latent prior" in consistency/tools/inversion.py)."""
    latents = np.asarray(latents, np.float64)
    return {"mean": latents.mean(0).astype(np.float32), "std": latents.std(0).astype(np.float32)}
