"""The run directory's ``config.json``: check a new command against it *before* anything is written (issue 8).

:func:`prepare` is the first thing a training run does to its workdir. When ``WORKDIR/config.json`` exists, the
new config must match it except for the safe overrides below; a mismatch is one :class:`ConfigError` line naming
every differing field (``config.model.channels: the workdir was trained with 32, this command says 64; use a
fresh --workdir or drop the override``) and leaves the workdir byte-for-byte unchanged. Only then is the new
config written, atomically (a temporary file and ``os.replace``), so a kill never leaves half a config.json.

Safe overrides — a resumed run may change these; every other field must match:

=====================================================  ==========================================================
``training.num_steps``                                 train longer or stop earlier (with ``optim.schedule=
                                                       'cosine'`` the decay horizon moves with it)
``training.log_every``, ``ckpt_every``,                how often to log, checkpoint, sample, evaluate; how many
``sample_every``, ``eval_every``, ``keep_checkpoints``  checkpoints to keep
``training.max_param_abs``                             the save guard's bound (:mod:`consistency.core.checkpoint`)
``training.init_from``, ``init_sets``                    read only when the run starts at step 0 (a warm start)
``training.compute_dtype``, ``grad_accumulation``,     how the same update is computed (bf16 matmuls, micro-
``model.remat``, ``training.fsdp``                     batches, recomputed activations, split state); parameters
                                                       stay float32 and restore into any layout
``optim.lr``, ``optim.warmup_steps``, ``optim.schedule``  the learning-rate schedule: the fix after a divergence
``optim.grad_clip``                                    its value, while clipping stays on (> 0) or stays off (0):
                                                       switching it on or off changes the optimizer state
the same four fields of an ``optim_<set>`` block       e.g. ``optim_fake.lr``
``eval.*``, ``sampling.*``                             evaluation and sampling only; training never reads them
``teacher.workdir``                                    where the same teacher now lives
``data.data_dir``                                      where tfds finds the same dataset
``distributed``                                        how the run is launched, not what it computes
=====================================================  ==========================================================

Everything else (the method, seed, data, model, diffusion, batch size, EMA, the optimizer's name and betas, the
method's own block) would silently change or break the run: use a fresh ``--workdir``. A field present in only
one of the two configs (added or removed by a newer version of the code) is accepted.
"""
from __future__ import annotations

import fnmatch
import json
import os
from typing import Any, Mapping

import jax
import ml_collections

from consistency.core import fileio
from consistency.core.errors import ConfigError

CONFIG_FILE = "config.json"

SAFE_OVERRIDES = (
    "training.num_steps", "training.log_every", "training.ckpt_every", "training.sample_every",
    "training.eval_every", "training.keep_checkpoints", "training.max_param_abs", "training.blowup_ratio", "training.init_from",
    "training.init_sets", "training.compute_dtype", "training.grad_accumulation", "model.remat",
    "training.fsdp",
    "optim.lr", "optim.warmup_steps", "optim.schedule", "optim.grad_clip",
    "optim_*.lr", "optim_*.warmup_steps", "optim_*.schedule", "optim_*.grad_clip",
    "eval.*", "sampling.*", "teacher.workdir", "data.data_dir", "distributed",
)


def is_safe_override(field: str) -> bool:
    """Whether dotted ``field`` (``'optim.lr'``) may differ from the workdir's config (see the module docstring)."""
    return any(fnmatch.fnmatchcase(field, pattern) for pattern in SAFE_OVERRIDES)


def _plain(config: ml_collections.ConfigDict | Mapping) -> dict:
    """A config as JSON would hold it (tuples → lists), so a saved and a new config compare like with like."""
    if isinstance(config, ml_collections.ConfigDict):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(dict(config), default=str))


def flatten(config: ml_collections.ConfigDict | Mapping) -> dict[str, Any]:
    """``{'model.channels': 32, 'eval.nfes': [1, 2], ...}``: every leaf field by its dotted name."""
    flat: dict[str, Any] = {}

    def visit(prefix: str, node: dict) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                visit(f"{prefix}{key}.", value)
            else:
                flat[f"{prefix}{key}"] = value
    visit("", _plain(config))
    return flat


def _clipping_on(flat: dict, block: str) -> bool | None:
    """Whether optimizer block ``block`` ('optim' or 'optim_<set>') clips; an optim_<set> None inherits optim."""
    value = flat.get(f"{block}.grad_clip")
    if value is None and block != "optim":
        value = flat.get("optim.grad_clip")
    return None if value is None else float(value) > 0


def incompatible_fields(saved_config, new_config) -> list[tuple[str, Any, Any, str]]:
    """(field, saved value, new value, why) for every field that differs and is not a safe override, plus any
    ``grad_clip`` that switches clipping on or off; ``config.method`` first, then by name."""
    saved, new = flatten(saved_config), flatten(new_config)
    differing = []
    for field in sorted(set(saved) & set(new), key=lambda f: (f != "method", f)):
        if saved[field] == new[field]:
            continue
        if not is_safe_override(field):
            differing.append((field, saved[field], new[field], ""))
        elif field.endswith(".grad_clip") and field.startswith("optim"):
            block = field.rsplit(".", 1)[0]
            if _clipping_on(saved, block) != _clipping_on(new, block):
                differing.append((field, saved[field], new[field],
                                  " (switching gradient clipping on or off changes the optimizer state)"))
    return differing


def _show(value: Any) -> str:
    def tuples(v):
        return tuple(tuples(x) for x in v) if isinstance(v, list) else v
    return repr(tuples(value))


def mismatch_message(differing: list[tuple[str, Any, Any, str]]) -> str:
    """One line naming every differing field, the first in full."""
    field, old, new, why = differing[0]
    line = f"config.{field}: the workdir was trained with {_show(old)}, this command says {_show(new)}{why}"
    if len(differing) > 1:
        line += "; also differ: " + ", ".join(f"config.{f} ({_show(o)} vs {_show(n)})" for f, o, n, _ in differing[1:])
    return line + ("; use a fresh --workdir or drop the override" if len(differing) == 1 else
                   "; use a fresh --workdir or drop the overrides")


def check_compatible(saved_config, new_config) -> None:
    """Raise one ConfigError line when ``new_config`` may not continue a run trained with ``saved_config``."""
    differing = incompatible_fields(saved_config, new_config)
    if differing:
        raise ConfigError(mismatch_message(differing))


def read_saved_config(workdir: str) -> dict | None:
    """``WORKDIR/config.json`` as a dict (None when there is none); an unreadable one is a ConfigError."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not fileio.exists(path):
        return None
    try:
        return fileio.read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--workdir: {path} cannot be read ({e}); restore it, or move it away to train this "
                          "workdir with the new config unchecked") from None


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Write ``WORKDIR/config.json`` atomically (:func:`consistency.core.fileio.write_text`: a temporary file, fsync,
    ``os.replace`` — or one bucket upload); an unwritable workdir is one ConfigError line."""
    path = os.path.join(workdir, CONFIG_FILE)
    try:
        fileio.write_text(path, config.to_json_best_effort(indent=2, sort_keys=True))
    except OSError as e:
        raise ConfigError(f"--workdir: cannot write to {workdir} ({e.strerror or e})") from None
    return path


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
    """:func:`check_compatible` against ``WORKDIR/config.json`` when there is one; reads only, writes nothing
    (cheap enough for a command line to call before anything compiles)."""
    saved = read_saved_config(fileio.absolute(workdir))
    if saved is not None:
        check_compatible(saved, config)


def prepare(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Before a training run touches ``workdir``: refuse a config that does not match its ``config.json``
    (:func:`check_workdir`; nothing is written then), else write the new one (process 0). Returns its path."""
    workdir = fileio.absolute(workdir)
    check_workdir(config, workdir)
    path = os.path.join(workdir, CONFIG_FILE)
    if jax.process_index() == 0:
        write_config(config, workdir)
    return path
