"""Sample one trained guidance-conditioned generator (PaGoDA with ``pagoda.guidance_scales``) — or a CFG-trained EDM
teacher at 35 NFE, for the trend the generator should follow — at several CFG scales w and tabulate quality against
w: FD / precision / recall on the in-project classifier and the classifier's accuracy at recognising the requested
class (``consistency.run.reports.guidance_sweep``).

    python launch/guidance_sweep.py --workdir=workdirs/digits_pagoda_cfg --scales=1,2,3 --num_samples=1000
    python launch/guidance_sweep.py --workdir=workdirs/digits_teacher_cond --scales=1,2,3 --num_samples=1000

Writes WORKDIR/eval/guidance_sweep.json and prints the markdown table.
"""
from __future__ import annotations

import json
import os

from absl import flags

from consistency.tools import scripts
from consistency.core.errors import ConfigError

_WORKDIR = flags.DEFINE_string("workdir", "", "A trained run whose sampler takes a guidance scale.")
_SCALES = flags.DEFINE_list("scales", ["1", "2", "3"], "Guidance scales w to sample at.")
_NUM = flags.DEFINE_integer("num_samples", 1000, "Samples per scale (balanced labels).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (the same noise at every w).")


def main(_):
    from consistency import api
    from consistency.run import reports
    if not _WORKDIR.value:
        raise ConfigError("guidance_sweep: --workdir=RUN is required (a trained run)")
    run = api.load(_WORKDIR.value)
    rows = reports.guidance_sweep(run.config, run.method, run.state, run.dataset, [float(w) for w in _SCALES.value],
                                  _NUM.value, _SEED.value)
    os.makedirs(os.path.join(_WORKDIR.value, "eval"), exist_ok=True)
    with open(os.path.join(_WORKDIR.value, "eval", "guidance_sweep.json"), "w") as f:
        json.dump({"step": int(run.step), "num_samples": _NUM.value, "rows": rows}, f, indent=1)
    print(f"step {run.step}, {_NUM.value} samples per scale")
    print(reports.guidance_table(rows))


if __name__ == "__main__":
    scripts.run(main)
