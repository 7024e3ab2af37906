"""Recipe files as runs: load a ``configs/*.py`` file, scale it to a run length, and make the teacher products a
recipe needs (DMD's ODE pairs). Shared by ``consistency.tools.experiments`` and ``consistency.tools.benchmark`` (no flags here).
"""
from __future__ import annotations

import importlib.util
import os

from absl import logging


def load_config_file(path: str, variant: str = ""):
    """``get_config(variant)`` of the recipe file at ``path``; ``get_config()`` when no variant is given, as
    ``--config=FILE`` calls it, so a config file whose ``get_config`` takes no argument loads too."""
    spec = importlib.util.spec_from_file_location("experiment_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant) if variant else module.get_config()


def scaled_recipe(config, scale: float):
    """``config`` with num_steps × scale and the fields counted in steps (ECT's stage length, MCM's N ramp) scaled
    alike; sampling and checkpoints at the end of the run."""
    config.training.num_steps = max(1, int(round(config.training.num_steps * scale)))
    for field in ("sample_every", "ckpt_every"):
        config.training[field] = config.training.num_steps
    if config.method == "ecm":
        config.ecm.steps_per_stage = max(1, int(round(config.ecm.steps_per_stage * scale)))
    if config.method == "mcm" and config.mcm.num_steps_start != config.mcm.num_steps_end:   # N(i) ramps over the
        config.mcm.num_steps_ramp = max(1, int(round(config.mcm.num_steps_ramp * scale)))      # run's own length
    return config


def ensure_ode_pairs(config) -> None:
    """DMD's regression pairs (``config.dmd.pairs``), made from ``config.teacher`` when the file is missing."""
    if config.method != "dmd" or float(config.dmd.regression_weight) <= 0 or os.path.exists(config.dmd.pairs):
        return
    from consistency.methods.components import teachers
    logging.info("experiments: making DMD ODE pairs %s", config.dmd.pairs)
    teachers.write_ode_pairs(config, config.dmd.pairs, num=4096 if config.teacher.oracle else 2000)
