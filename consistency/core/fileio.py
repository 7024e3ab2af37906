"""Workdir files on a local disk or a bucket (``gs://…``, ``s3://…``) through one set of calls (issue 14).

A pod run keeps its workdir on a bucket: every host sees it, and it outlives the VMs. Orbax (checkpoints) and clu
(TensorBoard events, through ``tf.io.gfile``) already read and write bucket paths; everything else the project writes
into a workdir — ``config.json``, ``eval/metrics_<step>.json``, the sample PNGs and ``.npz`` files, inversion shards,
ODE pairs — goes through these functions, which use :mod:`etils.epath` (the path layer Orbax itself uses).

Writes are atomic either way. On a local disk: a temporary file in the same folder, ``fsync``, ``os.replace`` (a
killed run never leaves half a file). On a bucket: one object upload, which an object store publishes only when it
completes — a reader sees the old object or the new one, never a part.

Local paths are made absolute (:func:`absolute`); bucket paths are left as they are (``os.path.abspath`` would turn
``gs://b/run`` into ``/cwd/gs:/b/run``).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any

import numpy as np
from etils import epath


def is_remote(path: str | os.PathLike) -> bool:
    """True for ``scheme://…`` paths (``gs://``, ``s3://``, ``az://``): a bucket, not the local disk."""
    return "://" in os.fspath(path)


def absolute(path: str | os.PathLike) -> str:
    """``os.path.abspath`` for local paths; bucket paths unchanged."""
    path = os.fspath(path)
    return path if is_remote(path) else os.path.abspath(path)


def join(*parts: str | os.PathLike) -> str:
    """``os.path.join`` (which also joins ``gs://bucket`` and ``run`` into ``gs://bucket/run``)."""
    return os.path.join(*map(os.fspath, parts))


def exists(path: str | os.PathLike) -> bool:
    return epath.Path(path).exists()


def isdir(path: str | os.PathLike) -> bool:
    return epath.Path(path).is_dir()


def makedirs(path: str | os.PathLike) -> None:
    """Create ``path`` and its parents (nothing to do when it exists; on a bucket folders are implicit)."""
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def remove(path: str | os.PathLike) -> None:
    epath.Path(path).unlink()


def rename(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    epath.Path(source).rename(destination)


def read_bytes(path: str | os.PathLike) -> bytes:
    return epath.Path(path).read_bytes()


def read_text(path: str | os.PathLike) -> str:
    return epath.Path(path).read_text()


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(read_text(path))


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically (see module doc), creating its folder. Returns ``path``."""
    path = os.fspath(path)
    makedirs(os.path.dirname(absolute(path)))
    if is_remote(path):
        epath.Path(path).write_bytes(data)
        return path
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text(path: str | os.PathLike, text: str) -> str:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, **dump_kwargs) -> str:
    return write_text(path, json.dumps(obj, **dump_kwargs))


def save_npy(path: str | os.PathLike, array: np.ndarray) -> str:
    """``np.save`` to a local or bucket path, atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return write_bytes(path, buffer.getvalue())


def load_npy(path: str | os.PathLike) -> np.ndarray:
    return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> str:
    """``np.savez`` to a local or bucket path, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_bytes(path, buffer.getvalue())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, read into memory (the file is not kept open)."""
    with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def check_writable(directory: str | os.PathLike) -> None:
    """Create ``directory`` and write and delete a small probe file there; OSError when that fails."""
    makedirs(directory)
    probe = join(directory, f".write-probe-{os.getpid()}")
    write_bytes(probe, b"")
    remove(probe)


def sha256_of_file(path: str) -> str:
    """The hex SHA-256 of a local file, read in 1 MiB blocks (weights files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
