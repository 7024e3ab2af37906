"""Write pickles laid out as NVlabs EDM's, without NVlabs' code or torch (test helper).

A training snapshot of NVlabs/edm (``training/training_loop.py``) is ``pickle.dump(dict(ema=net, loss_fn=...,
augment_pipe=..., dataset_kwargs=...))`` where every network class is a ``torch_utils.persistence`` class: it pickles
as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, ``meta = dict(type='class', version=6,
module_src=<the module's source>, class_name=..., state=<the module's __dict__>)``. Tensors pickle as
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`` (parameters wrapped in
``torch._utils._rebuild_parameter``) over ``torch.storage._load_from_bytes(<legacy torch.save bytes>)``;
``torch.nn.ModuleDict`` pickles by NEWOBJ + BUILD of its ``__dict__``.

:func:`snapshot_bytes` emits exactly those calls with a pure-Python pickler whose globals are written by name (never
imported), so the tests exercise the importer on the byte layout a real snapshot has. ``module_src`` is a
placeholder: no source of NVlabs' is written (the importer never reads it).
"""
from __future__ import annotations

import collections
import io
import pickle
import struct

import numpy as np

PLACEHOLDER_SOURCE = "# module source omitted (written by tests/edm_pickles.py)\n"


class GlobalRef:
    """A global written by name (``module.name``) — never imported."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class NewObj:
    """``cls.__new__(cls)`` followed by BUILD(state): how a plain torch module (ModuleDict) pickles."""

    def __init__(self, cls: GlobalRef, state: dict):
        self.cls, self.state = cls, state


class Reduce:
    """``func(*args)``: a REDUCE of a named global."""

    def __init__(self, func: GlobalRef, args: tuple):
        self.func, self.args = func, args


class _Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can write GlobalRef and NewObj
    dispatch = dict(pickle._Pickler.dispatch)

    def save_global_ref(self, obj):
        self.save(obj.module)
        self.save(obj.name)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)
    dispatch[GlobalRef] = save_global_ref

    def save_new_obj(self, obj):
        self.save(obj.cls)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        self.save(obj.state)
        self.write(pickle.BUILD)
    dispatch[NewObj] = save_new_obj

    def save_reduce_call(self, obj):
        self.save(obj.func)
        self.save(obj.args)
        self.write(pickle.REDUCE)
        self.memoize(obj)
    dispatch[Reduce] = save_reduce_call


def dumps(obj, protocol: int = 4) -> bytes:
    f = io.BytesIO()
    _Pickler(f, protocol=protocol).dump(obj)
    return f.getvalue()


_STORAGE_CLASSES = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
                    np.dtype("int64"): "LongStorage"}


def legacy_storage_bytes(array: np.ndarray, key: str = "0") -> bytes:
    """torch's legacy ``torch.save(storage)`` format of one flat storage: magic number, protocol, system info, the
    storage by persistent id, the list of keys, then an int64 element count and the little-endian data."""
    array = np.ascontiguousarray(array).reshape(-1)
    storage_class = _STORAGE_CLASSES[array.dtype]
    f = io.BytesIO()

    class StoragePickler(pickle._Pickler):
        dispatch = _Pickler.dispatch

        def persistent_id(self, obj):
            if obj is array:
                return ("storage", GlobalRef("torch", storage_class), key, "cpu", array.size, None)
            return None

    for header in (0x1950A86A20F9469CFC6C, 1001,
                   {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, f, protocol=2)
    StoragePickler(f, protocol=2).dump(array)
    pickle.dump([key], f, protocol=2)
    f.write(struct.pack("<q", array.size))
    f.write(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return f.getvalue()


def tensor(array: np.ndarray, parameter: bool) -> Reduce:
    """A contiguous tensor over its own storage (as each EDM parameter/buffer pickles)."""
    array = np.ascontiguousarray(array)
    strides = tuple(s // array.itemsize for s in array.strides) if array.ndim else ()
    storage = Reduce(GlobalRef("torch.storage", "_load_from_bytes"), (legacy_storage_bytes(array),))
    t = Reduce(GlobalRef("torch._utils", "_rebuild_tensor_v2"),
               (storage, 0, tuple(array.shape), strides, False, collections.OrderedDict()))
    if parameter:
        return Reduce(GlobalRef("torch._utils", "_rebuild_parameter"), (t, True, collections.OrderedDict()))
    return t


def _module_state(training: bool, parameters: dict, buffers: dict, modules: dict, attributes: dict,
                  init_kwargs: dict | None) -> dict:
    state = {"training": training,
             "_parameters": collections.OrderedDict((k, tensor(v, True)) for k, v in parameters.items()),
             "_buffers": collections.OrderedDict((k, tensor(v, False)) for k, v in buffers.items()),
             "_non_persistent_buffers_set": set(),
             "_backward_hooks": collections.OrderedDict(), "_forward_hooks": collections.OrderedDict(),
             "_forward_pre_hooks": collections.OrderedDict(), "_state_dict_hooks": collections.OrderedDict(),
             "_load_state_dict_pre_hooks": collections.OrderedDict(),
             "_modules": collections.OrderedDict(modules)}
    state.update(attributes)
    if init_kwargs is not None:       # a persistent class records its init arguments; a plain torch module does not
        state["_init_args"] = ()
        state["_init_kwargs"] = dict(init_kwargs)
    return state


def persistent(class_name: str, state: dict) -> Reduce:
    meta = dict(type="class", version=6, module_src=PLACEHOLDER_SOURCE, class_name=class_name, state=state)
    return Reduce(GlobalRef("torch_utils.persistence", "_reconstruct_persistent_obj"), (meta,))


BUFFER_NAMES = ("resample_filter", "freqs")   # EDM's registered buffers (Conv2d, FourierEmbedding)


def _leaf_class(path: str, names: set, weight_ndim: int | None) -> str:
    last = path.rsplit(".", 1)[-1]
    if "freqs" in names:
        return "FourierEmbedding"
    if "norm" in last:
        return "GroupNorm"
    if weight_ndim == 2:
        return "Linear"
    return "Conv2d"        # a 4-D weight, or only a resample filter (a parameter-free ×2 up/down sampler)


def _class_of(path: str, children: dict, tensors: dict, model_class: str) -> str:
    if path == "model":
        return model_class
    if path in ("model.enc", "model.dec"):
        return "ModuleDict"
    if children:
        return "UNetBlock"
    return _leaf_class(path, set(tensors), tensors["weight"].ndim if "weight" in tensors else None)


def network_object(state_dict: dict, precond_kwargs: dict, model_class: str, model_kwargs: dict,
                   attributes: dict, positional_embedding: bool):
    """The ``EDMPrecond`` persistent object whose state dict is ``state_dict`` (torch names, numpy arrays).

    The module tree is read from the names (``model.enc.32x32_block0.conv0.weight`` → EDMPrecond / SongUNet /
    ModuleDict / UNetBlock / Conv2d); a parameter-free DDPM++/ADM positional embedding (``map_noise``) is added, as it
    never appears in a state dict."""
    tree: dict = {}
    for name, value in state_dict.items():
        *path, leaf = name.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node.setdefault("__tensors__", {})[leaf] = value
    if positional_embedding:
        tree.setdefault("model", {}).setdefault("map_noise", {})

    def build(path: str, node: dict, class_name: str | None = None):
        tensors = node.get("__tensors__", {})
        children = {k: v for k, v in node.items() if k != "__tensors__"}
        cls = class_name or _class_of(path, children, tensors, model_class)
        if path.endswith("map_noise") and not tensors:
            cls = "PositionalEmbedding"
        modules = {k: build(f"{path}.{k}" if path else k, v) for k, v in children.items()}
        params = {k: v for k, v in tensors.items() if k not in BUFFER_NAMES}
        buffers = {k: v for k, v in tensors.items() if k in BUFFER_NAMES}
        if cls == "ModuleDict":
            return NewObj(GlobalRef("torch.nn.modules.container", "ModuleDict"),
                          _module_state(False, params, buffers, modules, {}, None))
        if path == "":
            return persistent(cls, _module_state(False, params, buffers, modules, attributes, precond_kwargs))
        if path == "model":
            return persistent(cls, _module_state(False, params, buffers, modules, {}, model_kwargs))
        return persistent(cls, _module_state(False, params, buffers, modules, {}, {}))

    return build("", tree, "EDMPrecond")


def snapshot_bytes(ema, release: bool = False) -> bytes:
    """A training snapshot ``dict(ema, loss_fn, augment_pipe, dataset_kwargs)`` (or a release file ``dict(ema)``)."""
    if release:
        return dumps({"ema": ema})
    loss_fn = persistent("EDMLoss", {"training": True, "P_mean": -1.2, "P_std": 1.2, "sigma_data": 0.5,
                                     "_init_args": (), "_init_kwargs": {}})
    dataset_kwargs = {"class_name": "training.dataset.ImageFolderDataset", "path": "datasets/cifar10-32x32.zip",
                      "use_labels": False, "xflip": False, "cache": True, "resolution": 32, "max_size": 50000}
    return dumps({"ema": ema, "loss_fn": loss_fn, "augment_pipe": None, "dataset_kwargs": dataset_kwargs})


def foreign_object_bytes() -> bytes:
    """A pickle that calls a global outside an EDM pickle (must be refused without being imported)."""
    return dumps({"ema": Reduce(GlobalRef("os", "system"), ("true",))})
