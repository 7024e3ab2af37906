"""Invert a teacher's training split, data → noise, for PaGoDA (``consistency/tools/inversion.py``; docs/methods.md §9).

Every row of the split (decoded as the teacher was trained on it, so at the teacher's resolution) is integrated up
the PF-ODE with Heun (default 40 steps, PaGoDA's official setting) and written as resumable shards; ``--flip`` also
inverts the mirrored images (CIFAR / ImageNet runs with ``data.random_flip``). Then the round trip (invert, sample
back) is measured on ``--roundtrip_num`` rows for each ``--roundtrip`` grid size and written to roundtrip.json.

    python launch/invert.py --teacher=workdirs/digits_teacher --out=workdirs/digits_teacher/inversion
    python launch/invert.py --oracle=mixture --data=toy:8gaussians --toy_size=20000 --out=workdirs/toy_inversion
    python launch/invert.py --teacher=workdirs/digits_teacher_cond --guidance_scales=1,2,3  # PaGoDA CFG: E(x, c, w)

A run then reads it with ``--config.data.latents=DIR`` (configs/*_pagoda.py set it).
"""
from __future__ import annotations

import json
import os

from absl import flags

from consistency.tools import scripts
from consistency.core.errors import ConfigError

scripts.define_teacher_flags()
_TOY_SIZE = flags.DEFINE_integer("toy_size", 0, "Points of a toy dataset (0: the config default).")
_SPLIT = flags.DEFINE_string("split", "train", "Split to invert.")
_OUT = flags.DEFINE_string("out", "", "Inversion directory (default: TEACHER/inversion).")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 40, "Heun steps from σ_min to σ_max (PaGoDA: 40).")
_SOLVER = flags.DEFINE_string("solver", "heun", "'heun' | 'euler' | 'dpm_solver_2'.")
_FLIP = flags.DEFINE_bool("flip", False, "Also invert the mirrored images (for data.random_flip runs).")
_SHARD = flags.DEFINE_integer("shard_size", 512, "Rows per shard (and per compiled call).")
_ROUNDTRIP = flags.DEFINE_list("roundtrip", ["10", "20", "40", "80"], "Grid sizes of the round-trip table.")
_ROUNDTRIP_NUM = flags.DEFINE_integer("roundtrip_num", 256, "Rows the round trip is measured on.")
_GUIDANCE = flags.DEFINE_list("guidance_scales", [], "CFG scales w to invert with (a conditional teacher; PaGoDA's "
                              "E(x, c, w)): one latent per scale, e.g. 1,2,3.")


def main(_):
    from consistency.tools import inversion
    teacher = flags.FLAGS.teacher
    out = _OUT.value or (os.path.join(teacher, "inversion") if teacher else "")
    if not out and flags.FLAGS.oracle:
        raise ConfigError("invert: --out=DIR is required with --oracle")
    config = inversion.teacher_setup(teacher, flags.FLAGS.oracle, flags.FLAGS.data, _TOY_SIZE.value)
    inversion.run(config, out, _SPLIT.value, _NUM_STEPS.value, _SOLVER.value, _FLIP.value, _SHARD.value,
                  [int(n) for n in _ROUNDTRIP.value], _ROUNDTRIP_NUM.value, [float(w) for w in _GUIDANCE.value])
    print(json.dumps({"out": out}))


if __name__ == "__main__":
    scripts.run(main)
