"""Read and write PyTorch ``torch.save`` state dicts as numpy arrays, without torch.

A state dict ``.pth`` is one pickled ``collections.OrderedDict`` ``{name: tensor}`` whose tensors point, by
persistent id, at raw storages held beside the pickle. Two container formats exist (PyTorch's
``torch/serialization.py``):

* zip (the default since PyTorch 1.6): members ``<archive>/data.pkl`` (the pickle), ``<archive>/data/<key>``
  (one raw little-endian storage per key), ``<archive>/version`` and, in newer files, ``<archive>/byteorder``;
  persistent ids are ``('storage', StorageType, key, location, numel)``;
* legacy (``_use_new_zipfile_serialization=False`` and PyTorch < 1.6): four pickles in a row (magic number,
  protocol version, system info, the object), then the pickled list of storage keys, then for each key an int64
  element count followed by the raw bytes; persistent ids carry a sixth entry (view metadata, None).

:func:`load_state_dict` reads both with a restricted unpickler that rebuilds only ordered dicts and dense tensors
(``torch._utils._rebuild_tensor_v2`` and friends): any other global in the pickle is refused, so reading a file
runs no code from it. :func:`save_state_dict` writes the zip format (or the legacy one) from numpy arrays, with
the same opcodes as ``torch.save`` of a state dict, so that tests can build checkpoint files without torch.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C   # torch/serialization.py MAGIC_NUMBER
LEGACY_PROTOCOL = 1001                   # torch/serialization.py PROTOCOL_VERSION

STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                  "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}
DTYPE_STORAGES = {np.dtype(v): k for k, v in STORAGE_DTYPES.items()}
READ_ONLY_STORAGES = ("BFloat16Storage",)   # read (through ml_dtypes, a jax dependency), never written


def _storage_dtype(name: str) -> np.dtype:
    if name == "BFloat16Storage":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(STORAGE_DTYPES[name])


class TorchFileError(ValueError):
    """The file is not a readable PyTorch state dict (one line, names the reason)."""


class _StorageType:
    def __init__(self, name: str):
        self.name, self.dtype = name, _storage_dtype(name)


class _Storage:
    """A storage named by a persistent id; ``data`` (a flat array) is filled in when its bytes are read."""

    def __init__(self, key: str, storage_type: _StorageType, numel: int):
        self.key, self.dtype, self.numel, self.data = key, storage_type.dtype, int(numel), None


class _Tensor:
    """A tensor's view of a storage, resolved into an array once every storage is read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.shape, self.stride = storage, int(offset), tuple(size), tuple(stride)
        if not isinstance(storage, _Storage):
            raise TorchFileError("a tensor in the pickle does not point at a storage")

    def array(self) -> np.ndarray:
        if self.storage.data is None:
            raise TorchFileError(f"storage {self.storage.key!r} was never read")
        return strided_copy(self.storage.data, self.offset, self.shape, self.stride)


def strided_copy(flat: np.ndarray, offset: int, size, stride) -> np.ndarray:
    """torch's ``_rebuild_tensor_v2(storage, offset, size, stride)`` over a flat numpy storage: the strided view,
    copied contiguously; a layout that leaves the storage is a :class:`TorchFileError`."""
    size, stride, offset = tuple(int(n) for n in size), tuple(int(n) for n in stride), int(offset)
    if len(size) != len(stride) or offset < 0 or any(n < 0 for n in size + stride):
        raise TorchFileError(f"a tensor has an invalid layout (size {size}, stride {stride}, offset {offset})")
    if 0 in size:
        return np.zeros(size, flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise TorchFileError(f"a tensor of size {size} reaches element {last} of a storage of {flat.size}")
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride),
                                           writeable=False)
    return np.array(view, copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    return func(*args)


class _TypeMarker:
    """``torch.Tensor`` / ``torch.nn.Parameter`` as globals (the subclass argument of _rebuild_from_type_v2)."""


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TypeMarker,
    ("torch.nn.parameter", "Parameter"): _TypeMarker,
    **{("torch", name): _StorageType(name) for name in (*STORAGE_DTYPES, *READ_ONLY_STORAGES)},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds ordered dicts, tensors and storages only; every other global is refused."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise TorchFileError(f"the pickle refers to {module}.{name}, which a tensor state dict never "
                                 f"does") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise TorchFileError(f"unknown persistent id {str(pid)[:60]!r}")
        if len(pid) == 6 and pid[5] is not None:
            raise TorchFileError("storage views (PyTorch < 0.4 files) are not supported")
        key = str(pid[2])
        if key not in self.storages:
            self.storages[key] = _Storage(key, pid[1], pid[4])
        return self.storages[key]


def _resolve(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        return obj.array()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _resolve(v)) for k, v in obj.items())
    return obj


def _shapes(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        return (obj.shape, obj.storage.dtype)
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _shapes(v)) for k, v in obj.items())
    return obj


def _load_zip(archive: zipfile.ZipFile, with_data: bool) -> Any:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise TorchFileError("a zip file without exactly one data.pkl is not a torch.save file")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = archive.read(prefix + "byteorder").decode().strip()
    storages: dict[str, _Storage] = {}
    obj = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
    if not with_data:
        return obj
    for key, storage in storages.items():
        member = f"{prefix}data/{key}"
        if member not in names:
            raise TorchFileError(f"storage {key!r} is missing from the archive")
        raw = archive.read(member)
        dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
        if len(raw) < storage.numel * dtype.itemsize:
            raise TorchFileError(f"storage {key!r} holds {len(raw)} bytes, fewer than its "
                                 f"{storage.numel} elements need")
        storage.data = np.frombuffer(raw, dtype, count=storage.numel).astype(storage.dtype.newbyteorder("="))
    return obj


def _load_legacy(f: BinaryIO, with_data: bool) -> Any:
    head = []
    for _ in range(3):   # magic number, protocol version, sys info: plain values, nothing to rebuild
        head.append(_RestrictedUnpickler(f, {}).load())
    if head[0] != LEGACY_MAGIC:
        raise TorchFileError("neither a zip archive nor a legacy torch.save file (wrong magic number)")
    if head[1] != LEGACY_PROTOCOL:
        raise TorchFileError(f"legacy torch.save protocol {head[1]!r}, expected {LEGACY_PROTOCOL}")
    if isinstance(head[2], dict) and not head[2].get("little_endian", True):
        raise TorchFileError("big-endian legacy files are not supported")
    storages: dict[str, _Storage] = {}
    obj = _RestrictedUnpickler(f, storages).load()
    if not with_data:
        return obj
    keys = _RestrictedUnpickler(f, {}).load()
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise TorchFileError(f"storage {key!r} is listed but no tensor uses it")
        count = f.read(8)
        if len(count) != 8:
            raise TorchFileError("the file ends before its storages (truncated)")
        (numel,) = struct.unpack("<q", count)
        raw = f.read(numel * storage.dtype.itemsize)
        if len(raw) != numel * storage.dtype.itemsize:
            raise TorchFileError(f"the file ends inside storage {key!r} (truncated)")
        storage.data = np.frombuffer(raw, storage.dtype.newbyteorder("<")).astype(storage.dtype)
    return obj


def load_storage_bytes(data: bytes) -> np.ndarray:
    """The flat array of one storage saved alone in the legacy format (``torch.storage._load_from_bytes``, which the
    pickles of ``torch_utils.persistence`` embed): the legacy container whose object is the storage itself."""
    if not isinstance(data, (bytes, bytearray)):
        raise TorchFileError("a storage is not given as bytes")
    try:
        storage = _load_legacy(io.BytesIO(bytes(data)), with_data=True)
    except TorchFileError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, struct.error, KeyError) as e:
        raise TorchFileError(f"a storage's bytes are truncated or corrupt ({type(e).__name__})") from None
    if not isinstance(storage, _Storage) or storage.data is None:
        raise TorchFileError("the bytes hold no storage")
    return storage.data


def _load(path: str | os.PathLike, with_data: bool) -> Any:
    path = os.fspath(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _load_zip(archive, with_data)
        with open(path, "rb") as f:
            return _load_legacy(f, with_data)
    except TorchFileError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, TypeError, IndexError,
            struct.error, KeyError, AttributeError) as e:
        raise TorchFileError(f"cannot read {path!r} as a torch.save file: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None


def load_state_dict(path: str | os.PathLike) -> "collections.OrderedDict[str, np.ndarray]":
    """The ``{name: array}`` of a ``torch.save``'d state dict (zip or legacy format), read without torch.

    Raises :class:`TorchFileError` (one line) for anything else: another pickle, a truncated file, a global that is
    not a tensor rebuild function.
    """
    obj = _load(path, with_data=True)
    if not isinstance(obj, dict):
        raise TorchFileError(f"{os.fspath(path)!r} holds a {type(obj).__name__}, not a state dict")
    return _resolve(obj)


def state_dict_shapes(path: str | os.PathLike) -> "collections.OrderedDict[str, tuple[tuple, np.dtype]]":
    """``{name: (shape, dtype)}`` from the pickle alone (the storages are not read): a cheap check of a file."""
    obj = _load(path, with_data=False)
    if not isinstance(obj, dict):
        raise TorchFileError(f"{os.fspath(path)!r} holds a {type(obj).__name__}, not a state dict")
    return _shapes(obj)


def state_dict_problem(path: str | os.PathLike, required: tuple[str, ...] = (),
                       forbidden_prefixes: tuple[str, ...] = ()) -> str | None:
    """Why ``path`` is not a readable state dict with the ``required`` names and none starting with
    ``forbidden_prefixes`` (one line), or None. Reads the pickle only: cheap enough for config validation."""
    if not os.path.isfile(path):
        return f"{os.fspath(path)!r} is not a file"
    try:
        shapes = state_dict_shapes(path)
    except TorchFileError as e:
        return str(e)
    missing = [name for name in required if name not in shapes]
    if missing:
        return f"{os.fspath(path)!r} has no tensor {missing[0]!r}"
    extra = [name for name in shapes if name.startswith(tuple(forbidden_prefixes))] if forbidden_prefixes else []
    if extra:
        return f"{os.fspath(path)!r} holds {extra[0]!r}, which the expected network does not have"
    return None


# --------------------------------------------------------------------------------------------------
# Writer (pickle protocol 2 opcodes, as torch.save emits them for a state dict)
# --------------------------------------------------------------------------------------------------


def _op_str(s: str) -> bytes:
    data = s.encode("utf-8")
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _op_int(n: int) -> bytes:
    if 0 <= n < 256:
        return pickle.BININT1 + struct.pack("<B", n)
    if -(2 ** 31) <= n < 2 ** 31:
        return pickle.BININT + struct.pack("<i", n)
    data = pickle.encode_long(n)
    return pickle.LONG1 + struct.pack("<B", len(data)) + data


def _op_tuple(items: list[bytes]) -> bytes:
    return pickle.EMPTY_TUPLE if not items else pickle.MARK + b"".join(items) + pickle.TUPLE


def _op_global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


_EMPTY_ORDERED_DICT = _op_global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE


def _state_dict_pickle(arrays: dict[str, np.ndarray], legacy: bool) -> bytes:
    out = [pickle.PROTO + b"\x02", _EMPTY_ORDERED_DICT, pickle.MARK]
    for i, (name, array) in enumerate(arrays.items()):
        storage_type = _op_global("torch", DTYPE_STORAGES[array.dtype.newbyteorder("=")])
        storage_id = [_op_str("storage"), storage_type, _op_str(str(i)), _op_str("cpu"),
                      _op_int(array.size)] + ([pickle.NONE] if legacy else [])
        strides = np.cumprod((1,) + array.shape[:0:-1])[::-1] if array.ndim else ()
        args = [_op_tuple(storage_id) + pickle.BINPERSID, _op_int(0), _op_tuple([_op_int(n) for n in array.shape]),
                _op_tuple([_op_int(int(s)) for s in strides]), pickle.NEWFALSE, _EMPTY_ORDERED_DICT]
        out += [_op_str(name), _op_global("torch._utils", "_rebuild_tensor_v2"), _op_tuple(args), pickle.REDUCE]
    out += [pickle.SETITEMS, pickle.STOP]
    return b"".join(out)


def _little_endian_bytes(array: np.ndarray) -> bytes:
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def save_state_dict(path: str | os.PathLike, arrays: dict[str, np.ndarray], legacy: bool = False) -> None:
    """Write ``{name: array}`` as a ``torch.save`` state dict file that ``torch.load`` reads (zip format; the
    pre-1.6 legacy format when ``legacy``). Arrays are stored C-contiguous, little-endian, one storage each."""
    arrays = {k: np.array(v, order="C") for k, v in arrays.items()}   # (ascontiguousarray makes 0-d 1-d)
    for name, array in arrays.items():
        if array.dtype.newbyteorder("=") not in DTYPE_STORAGES:
            raise TypeError(f"{name}: dtype {array.dtype} has no torch storage type here")
    data = _state_dict_pickle(arrays, legacy)
    path = os.fspath(path)
    if legacy:
        with open(path, "wb") as f:
            for header in (LEGACY_MAGIC, LEGACY_PROTOCOL,
                           dict(protocol_version=LEGACY_PROTOCOL, little_endian=True,
                                type_sizes=dict(short=2, int=4, long=8))):
                pickle.dump(header, f, protocol=2)
            f.write(data)
            pickle.dump([str(i) for i in range(len(arrays))], f, protocol=2)
            for array in arrays.values():
                f.write(struct.pack("<q", array.size))
                f.write(_little_endian_bytes(array))
        return
    archive_name = os.path.splitext(os.path.basename(path))[0] or "archive"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{archive_name}/data.pkl", data)
        archive.writestr(f"{archive_name}/byteorder", "little")
        for i, array in enumerate(arrays.values()):
            archive.writestr(f"{archive_name}/data/{i}", _little_endian_bytes(array))
        archive.writestr(f"{archive_name}/version", "3\n")
