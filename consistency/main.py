"""Command line: ``python -m consistency.main --config=configs/<name>.py[:variant] --workdir=DIR [--mode=...]``.

Every config field can be overridden: ``--config.optim.lr=1e-4 --config.training.num_steps=500``.

Modes:
  train   train (resuming from the latest checkpoint in WORKDIR), then sample a grid and evaluate;
  sample  draw config.sampling.num_samples from a checkpoint (--step, default latest) → samples/sample_<step>.npz/.png;
  eval    evaluate a checkpoint → eval/metrics_<step>.json.
For sample/eval, --config may be left out: the run's WORKDIR/config.json is used.

A config that cannot work prints one line (``error: config.<field>: ...``) and exits with status 2.
"""
from __future__ import annotations

import importlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from consistency.config import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/digits_edm.py or "
                                          "configs/cifar_edm.py:cpu; override fields with --config.<field>=<value>.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: config.json, checkpoints/, samples/, eval/, events.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample", "eval"], "What to do.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step for --mode=sample|eval (default: the latest).")
_IMPORTS = flags.DEFINE_multi_string("imports", [], "Python modules to import first, e.g. a module that adds a "
                                     "method with consistency.methods.register(name, make).")
flags.mark_flag_as_required("workdir")


def _resolve_config(mode: str, workdir: str):
    if _CONFIG.value is not None:
        return _CONFIG.value
    if mode == "train":
        raise ConfigError("--config: required for --mode=train (e.g. --config=configs/digits_edm.py)")
    from consistency import train
    try:
        return train.load_config(workdir)
    except FileNotFoundError as e:
        raise ConfigError(f"--config: not given and {e}") from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for module in _IMPORTS.value:
        importlib.import_module(module)
    try:
        config = _resolve_config(_MODE.value, _WORKDIR.value)
        from consistency import train
        train.maybe_initialize_distributed(config)  # before anything touches a backend
        train.prefer_fast_cpu_random()
        train.run(_MODE.value, config, _WORKDIR.value, _STEP.value)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as e:  # sample/eval on a workdir without checkpoints
        if _MODE.value == "train":
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    logging.flush()


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
