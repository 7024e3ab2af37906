"""Read an NVlabs EDM network pickle without NVlabs' code and without torch: class names, init kwargs, tensors.

EDM (Karras et al. 2022; NVlabs/edm ``training/training_loop.py``) pickles its networks with ``pickle.dump``: a
training snapshot ``network-snapshot-*.pkl`` is ``dict(ema=net, loss_fn=..., augment_pipe=..., dataset_kwargs=...)``
and a release file ``edm-*.pkl`` is ``dict(ema=net, ...)``. Every network class is wrapped by NVlabs'
``torch_utils.persistence``, so the pickle calls ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with
``meta = {type, version, module_src, class_name, state}``; the authors' loader *executes* ``module_src``. This reader
never does: a restricted :class:`pickle.Unpickler` resolves only the globals of :data:`ALLOWED_GLOBALS` and keeps
``class_name`` and ``state`` (``_init_kwargs``, ``_parameters``, ``_buffers``, ``_modules``) of the known EDM classes
(:data:`KNOWN_CLASSES`). Any other global is refused before it is called.

Tensors of a plain pickle arrive as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` over
storages reduced to ``torch.storage._load_from_bytes(b)``, where ``b`` is torch's legacy (non-zip) ``torch.save``
format: four pickles (magic number, protocol version, system info, the storage object by persistent id), the list
of storage keys, then per storage an int64 element count and the raw little-endian data (torch
``serialization._legacy_save``). :func:`_load_storage_bytes` parses it with numpy through the state-dict
reader of consistency/core/torchfile.py (one reader of torch storages for both file kinds).

    net = read_network("edm-cifar10-32x32-uncond-vp.pkl")
    net.class_name, net.init_kwargs["model_type"], net.state_dict["model.enc.32x32_conv.weight"].shape

Every failure is an :class:`EDMPickleError` with a one-line message.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import struct
from typing import Any

import numpy as np

from consistency.core import torchfile
from consistency.core.errors import ConfigError


class EDMPickleError(ConfigError):
    """The file is not an EDM network pickle this reader understands (one-line message; the CLI's exit-2 path)."""


# The @persistent_class classes of NVlabs/edm (training/networks.py, training/loss.py, training/augment.py).
NETWORK_CLASSES = ("EDMPrecond", "VPPrecond", "VEPrecond", "iDDPMPrecond")
KNOWN_CLASSES = NETWORK_CLASSES + (
    "SongUNet", "DhariwalUNet", "UNetBlock", "Linear", "Conv2d", "GroupNorm", "PositionalEmbedding",
    "FourierEmbedding", "EDMLoss", "VPLoss", "VELoss", "AugmentPipe")
PERSISTENCE_VERSION = 6   # torch_utils/persistence.py `_version`

@dataclasses.dataclass(frozen=True)
class PersistentObject:
    """One ``_reconstruct_persistent_obj(meta)`` of the pickle: the class name and its pickled ``__dict__``."""
    class_name: str
    state: dict

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})


class TorchContainer:
    """A plain ``torch.nn.ModuleDict`` / ``ModuleList`` / ``Sequential``: only its ``__dict__`` is kept."""

    def __init__(self, *args, **kwargs):
        self.state: dict = {}

    def __setstate__(self, state):
        self.state = dict(state) if isinstance(state, dict) else {}


class EasyDict(dict):
    """``dnnlib.util.EasyDict`` (a dict with attribute access) as a plain dict."""


@dataclasses.dataclass(frozen=True)
class StorageRef:
    """A storage of the legacy format: its flat numpy data."""
    data: np.ndarray


@dataclasses.dataclass(frozen=True)
class Network:
    """The EDM network of a pickle: its class (``EDMPrecond``, …), its init kwargs (the preconditioner's, with the
    inner model's ``model_type`` and kwargs), the inner model's resolved init kwargs, and its state dict (torch's
    names, numpy arrays)."""
    class_name: str
    init_kwargs: dict
    attributes: dict             # the preconditioner's scalar attributes (img_resolution, sigma_data, …)
    model_class: str             # 'SongUNet' | 'DhariwalUNet'
    model_kwargs: dict           # the inner model's own recorded init kwargs
    state_dict: dict


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """torch._utils._rebuild_tensor_v2 over a numpy storage: a strided view, copied (bounds checked)."""
    if not isinstance(storage, StorageRef):
        raise EDMPickleError(f"a tensor's storage is a {type(storage).__name__}, not a torch storage")
    try:
        return torchfile.strided_copy(storage.data, storage_offset, size, stride)
    except torchfile.TorchFileError as e:
        raise EDMPickleError(str(e)) from None


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """torch._utils._rebuild_parameter: a Parameter is its tensor."""
    return data


def _load_storage_bytes(data: bytes) -> StorageRef:
    """torch.storage._load_from_bytes(b) in numpy: torch's legacy ``torch.save`` format of one storage, read by the
    same restricted reader as state dicts (consistency/core/torchfile.py)."""
    try:
        return StorageRef(torchfile.load_storage_bytes(data))
    except torchfile.TorchFileError as e:
        raise EDMPickleError(str(e)) from None


def _reconstruct_persistent_obj(meta):
    """torch_utils.persistence._reconstruct_persistent_obj WITHOUT exec(module_src): keep class_name and state."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise EDMPickleError("a persistent object is not of type 'class'")
    if meta.get("version") != PERSISTENCE_VERSION:
        raise EDMPickleError(f"persistence version {meta.get('version')!r}, expected {PERSISTENCE_VERSION} "
                             "(NVlabs/edm's torch_utils.persistence)")
    name = meta.get("class_name")
    if name not in KNOWN_CLASSES:
        raise EDMPickleError(f"unknown network class {name!r}; known EDM classes: {', '.join(KNOWN_CLASSES)}")
    state = meta.get("state")
    return PersistentObject(str(name), dict(state) if isinstance(state, dict) else {})


def _numpy_scalar(dtype, data=None):
    return np.frombuffer(data, dtype)[0] if data is not None else np.zeros((), dtype)[()]


ALLOWED_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("torch.nn.modules.container", "ModuleDict"): TorchContainer,
    ("torch.nn.modules.container", "ModuleList"): TorchContainer,
    ("torch.nn.modules.container", "Sequential"): TorchContainer,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise EDMPickleError(f"the pickle refers to {module}.{name}, which an EDM network pickle never holds "
                                 "(this reader rebuilds only tensors and EDM's network classes)") from None

    def persistent_load(self, pid):
        raise EDMPickleError("the pickle uses persistent ids (a torch.save zip/legacy file, not an EDM pickle)")


def _modules(state: dict) -> dict:
    modules = state.get("_modules") or {}
    return modules if isinstance(modules, dict) else {}


def state_dict(obj, prefix: str = "") -> dict[str, np.ndarray]:
    """torch's ``module.state_dict()`` of a rebuilt module: parameters, persistent buffers, then submodules."""
    state = obj.state if isinstance(obj, (PersistentObject, TorchContainer)) else {}
    out: dict[str, np.ndarray] = {}
    non_persistent = set(state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in non_persistent):
                continue
            if not isinstance(value, np.ndarray):
                raise EDMPickleError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
            out[prefix + name] = value
    for name, child in _modules(state).items():
        if child is not None:
            out.update(state_dict(child, f"{prefix}{name}."))
    return out


def loads(data: bytes, what: str = "the pickle") -> Network:
    """:func:`read_network` of the bytes of a pickle (``what`` names it in errors)."""
    try:
        top = _RestrictedUnpickler(io.BytesIO(data)).load()
    except EDMPickleError as e:
        raise EDMPickleError(f"{what}: {e}") from None
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError, KeyError, IndexError,
            AttributeError, MemoryError, RecursionError, UnicodeDecodeError) as e:
        detail = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
        raise EDMPickleError(f"{what}: truncated or not a pickle ({type(e).__name__}: {detail})") from None
    if not isinstance(top, dict) or "ema" not in top:
        kind = f"a dict with keys {sorted(map(str, top))[:6]}" if isinstance(top, dict) else type(top).__name__
        raise EDMPickleError(f"{what}: holds {kind}, not an EDM network pickle (a dict with the network under 'ema')")
    net = top["ema"]
    if not isinstance(net, PersistentObject) or net.class_name not in NETWORK_CLASSES:
        name = net.class_name if isinstance(net, PersistentObject) else type(net).__name__
        raise EDMPickleError(f"{what}: its 'ema' is a {name}, not one of EDM's networks ({', '.join(NETWORK_CLASSES)})")
    model = _modules(net.state).get("model")
    if not isinstance(model, PersistentObject) or model.class_name not in ("SongUNet", "DhariwalUNet"):
        name = model.class_name if isinstance(model, PersistentObject) else type(model).__name__
        raise EDMPickleError(f"{what}: the network's model is a {name}, not SongUNet or DhariwalUNet")
    attributes = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in net.state.items()
                  if not k.startswith("_") and isinstance(v, (bool, int, float, str, np.generic))}
    return Network(class_name=net.class_name, init_kwargs=_plain(net.init_kwargs), attributes=attributes,
                   model_class=model.class_name, model_kwargs=_plain(model.init_kwargs), state_dict=state_dict(net))


def _plain(value: Any) -> Any:
    """Init kwargs as JSON-able Python values (numpy scalars → float/int, tuples → lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_network(path: str) -> Network:
    """The network under 'ema' of the EDM pickle at ``path`` (a release file or a training snapshot)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise EDMPickleError(f"--pkl: cannot read {path} ({e.strerror or e})") from None
    return loads(data, f"--pkl: {path}")
