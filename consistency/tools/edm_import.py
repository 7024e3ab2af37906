"""Import an NVlabs EDM network pickle as an 'edm' run directory (``launch/import_edm.py``).

The run directory is the one a trained EDM teacher of this package leaves (``consistency/run/train.py``):
``config.json`` and an Orbax checkpoint whose sampling set (``ema['online']``) holds the pickle's EMA weights, so

    python launch/import_edm.py --pkl=edm-cifar10-32x32-uncond-vp.pkl --out=teachers/edm_vp
    python -m consistency.main --config=configs/cifar_ecm.py --config.teacher.workdir=teachers/edm_vp
    run = consistency.load("teachers/edm_vp"); run.denoise(x, sigma)

distil from it and open it like any trained teacher. The config maps the network's init kwargs onto
``config.model`` (``consistency.nets.edm_networks.edm_model_fields``: 'ddpmpp' | 'ncsnpp' | 'adm' and their widths),
the preconditioner's σ_data onto ``config.diffusion.sigma_data`` and the image shape and label count onto
``config.data`` (32×32×3 → CIFAR-10, 64×64×3 with 1000 labels → ImageNet 64×64; ``--data`` for any other
dataset).
The EDM release files and ``--precond=edm`` snapshots use EDM preconditioning (``EDMPrecond``, EDM Table 1: c_noise =
¼ ln σ), exactly :func:`consistency.nets.wrappers.edm_denoiser`; the ``baseline-*`` VP/VE-preconditioned files are refused.

Nothing is written unless everything succeeds: the run is assembled in a temporary sibling directory and renamed.
"""
from __future__ import annotations

import functools
import os
import shutil
import types

import ml_collections
import numpy as np

from consistency.core import edm_pickle, fileio
from consistency.core.errors import ConfigError

IMPORT_FILE = "edm_import.json"      # provenance: the pickle, its sha256, class names and init kwargs
STEP = 0                             # the imported weights are the run's step-0 checkpoint

# (resolution, channels, label_dim) of NVlabs' release files → this package's dataset name.
KNOWN_DATASETS = {(32, 3, 0): "cifar10", (32, 3, 10): "cifar10", (64, 3, 1000): "imagenet_resized/64x64"}


def dataset_for(resolution: int, channels: int, label_dim: int) -> str | None:
    return KNOWN_DATASETS.get((int(resolution), int(channels), int(label_dim)))


def precond_kwargs(net: edm_pickle.Network) -> dict:
    """The preconditioner's init kwargs with its resolved interface (img_resolution, img_channels, label_dim)."""
    kwargs = dict(net.init_kwargs)
    for key in ("img_resolution", "img_channels", "label_dim"):
        if key in net.attributes:
            kwargs[key] = net.attributes[key]
    kwargs.setdefault("model_type", net.model_class)
    return kwargs


def config_for_network(net: edm_pickle.Network, data: str = "") -> ml_collections.ConfigDict:
    """An 'edm' run config for ``net``: model fields from its init kwargs, σ_data, data name and shape."""
    from consistency.config import base_config
    from consistency.nets import edm_networks
    if net.class_name != "EDMPrecond":
        raise edm_pickle.EDMPickleError(
            f"the network is a {net.class_name} (VP/VE/iDDPM preconditioning: NVlabs' baseline-* files or a "
            "--precond=vp|ve snapshot); only EDMPrecond networks (the edm-* release files, --precond=edm "
            "snapshots) can be imported")
    kwargs = precond_kwargs(net)
    try:
        model = edm_networks.edm_model_fields(kwargs)
    except (ValueError, KeyError, TypeError) as e:
        raise edm_pickle.EDMPickleError(f"the network's init kwargs: {e}") from None
    resolution, channels = int(kwargs["img_resolution"]), int(kwargs["img_channels"])
    label_dim = int(kwargs.get("label_dim", 0))
    name = data or dataset_for(resolution, channels, label_dim)
    if not name:
        raise ConfigError(f"--data: the network is {resolution}×{resolution}×{channels} with {label_dim} labels, "
                          "which is no release file's dataset; name the tfds dataset it was trained on "
                          f"(read at {resolution}×{resolution}), e.g. --data=cifar10")
    c = base_config()
    c.method = "edm"
    c.data.name = name
    c.data.resolution = resolution
    c.data.conditional = label_dim > 0
    c.data.random_flip = False
    c.model.update(model)
    c.diffusion.process = "ve"
    c.diffusion.sigma_data = float(net.attributes.get("sigma_data", kwargs.get("sigma_data", 0.5)))
    # EDM's use_fp16 (ADM ImageNet) only casts activations on CUDA; the weights are float32 and so is this run
    # (training.compute_dtype='bfloat16' may be set for a distillation run).
    return c


def flax_params(net: edm_pickle.Network) -> dict:
    """The Flax params of ``net`` (``edm_networks.params_from_state_dict``); a tensor that does not fit is one
    EDMPickleError line."""
    from consistency.nets import edm_networks
    try:
        return edm_networks.params_from_state_dict(precond_kwargs(net), net.state_dict)
    except (ValueError, KeyError) as e:
        raise edm_pickle.EDMPickleError(str(e).splitlines()[0]) from None


def initial_state(config, params: dict, example_shape: tuple[int, int, int]):
    """The 'edm' method's TrainState at step 0 with ``params`` as both the trained set and its sampling EMA (fresh
    optimizer state). Its structure and shapes are checked against the method's own (``jax.eval_shape``: nothing is
    initialised or compiled)."""
    import jax
    import jax.numpy as jnp

    from consistency import methods
    from consistency.methods import base
    example_shape = tuple(int(n) for n in example_shape)
    dataset = types.SimpleNamespace(example_shape=example_shape)   # the edm method reads only the example shape
    method = methods.get_method(config, dataset)
    batch = {"x": jax.ShapeDtypeStruct((1,) + example_shape, jnp.float32)}
    shapes = jax.eval_shape(functools.partial(base.init_state, method), jax.random.PRNGKey(0), batch)
    wanted = shapes.params["online"]
    if jax.tree.structure(wanted) != jax.tree.structure(params) or any(
            tuple(a.shape) != tuple(np.shape(b)) for a, b in zip(jax.tree.leaves(wanted), jax.tree.leaves(params))):
        raise edm_pickle.EDMPickleError("the imported parameters do not match the network config.model builds")
    trained = method.trained[0]

    @jax.jit
    def state_of(p):        # one small compilation (eager optimizer init would compile one kernel per leaf)
        return base.TrainState(step=jnp.zeros((), jnp.int32), params={"online": p},
                               opt_state={"online": trained.optimizer.init(p)},
                               updates={"online": jnp.zeros((), jnp.int32)},
                               ema={"online": jax.tree.map(jnp.copy, p)}, moving={}, frozen={})
    state = state_of(jax.tree.map(lambda a: np.asarray(a, np.float32), params))
    if jax.tree.structure(state) != jax.tree.structure(shapes):
        raise edm_pickle.EDMPickleError("the imported state does not match the 'edm' method's state")
    return state, method


def check_finite(net: edm_pickle.Network) -> None:
    """Every tensor of the pickle is finite (what :func:`consistency.core.checkpoint.save` guards), else one line."""
    for key, value in net.state_dict.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise edm_pickle.EDMPickleError(f"the network's tensor {key!r} is not finite; the pickle is damaged")


def import_edm(pkl: str, out: str, data: str = "") -> str:
    """Read ``pkl`` (:func:`consistency.core.edm_pickle.read_network`) and write the run directory ``out``; returns its
    absolute path. ConfigError / EDMPickleError (one line) and nothing written on any failure."""
    import orbax.checkpoint as ocp

    from consistency.core import checkpoint
    from consistency.run import workdir
    out = os.path.abspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ConfigError(f"--out: {out} exists and is not empty; choose a new directory for the imported run")
    net = edm_pickle.read_network(pkl)
    check_finite(net)
    config = config_for_network(net, data)
    kwargs = precond_kwargs(net)
    shape = (int(kwargs["img_resolution"]), int(kwargs["img_resolution"]), int(kwargs["img_channels"]))
    state, method = initial_state(config, flax_params(net), shape)
    tmp = f"{out}.importing-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        workdir.write_config(config, tmp)
        fileio.write_json(os.path.join(tmp, IMPORT_FILE), {
            "pkl": os.path.abspath(pkl), "sha256": fileio.sha256_of_file(pkl), "class_name": net.class_name,
            "model_class": net.model_class, "init_kwargs": net.init_kwargs, "attributes": _json_safe(net.attributes),
            "model_kwargs": net.model_kwargs})
        meta = {"method": "edm", "sample_params": method.sample_params, "step": STEP,
                "imported_from": os.path.basename(pkl)}
        manager = checkpoint.make_manager(tmp, keep=None)
        try:   # checkpoint.save's guard is check_finite above, on the host (its jitted check compiles for ~10 s)
            manager.save(STEP, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)), force=True)
            manager.wait_until_finished()
        finally:
            manager.close()
        if os.path.isdir(out):
            os.rmdir(out)          # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _json_safe(values: dict) -> dict:
    return {k: (v if not isinstance(v, float) or np.isfinite(v) else str(v)) for k, v in values.items()}
