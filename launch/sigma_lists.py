"""Resample a trained multistep consistency model on several σ lists over several sampling seeds, and print a metric's
mean ± std per list (``consistency.run.reports.resample_sigma_lists``): whether 4 steps beat 2 is only a finding once the
difference exceeds the seed spread.

    python launch/sigma_lists.py --workdir=W --lists="80,0.821;80,0.821,0.287,0.1;80,10,3,1" --seeds=3

The metric defaults to FD on digits / MNIST and sliced W1 on the toys. Writes WORKDIR/eval/sigma_lists.json.
"""
from __future__ import annotations

import json
import os

from absl import flags

from consistency.tools import scripts
from consistency.core.errors import ConfigError

_WORKDIR = flags.DEFINE_string("workdir", "", "A trained consistency-model run (its sampler takes a σ list).")
_LISTS = flags.DEFINE_string("lists", "80,0.821;80,0.821,0.287,0.1;80,10,3,1",
                             "σ lists separated by ';', each descending and comma-separated.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Sampling seeds per list.")
_METRIC = flags.DEFINE_string("metric", "", "Metric key of the evaluation (default: fd, or swd on a toy).")


def main(_):
    from consistency import api
    from consistency.run import reports
    if not _WORKDIR.value:
        raise ConfigError("sigma_lists: --workdir=RUN is required (a trained run)")
    run = api.load(_WORKDIR.value)
    metric = _METRIC.value or ("swd" if run.dataset.kind == "toy" else "fd")
    lists = {text.strip(): [float(v) for v in text.split(",")] for text in _LISTS.value.split(";") if text.strip()}
    rows = reports.resample_sigma_lists(run.config, run.method, run.state, run.dataset, lists,
                                        range(100, 100 + _SEEDS.value), metric)
    os.makedirs(os.path.join(_WORKDIR.value, "eval"), exist_ok=True)
    with open(os.path.join(_WORKDIR.value, "eval", "sigma_lists.json"), "w") as f:
        json.dump({"step": int(run.step), "metric": metric, "rows": rows}, f, indent=1)
    print(f"step {run.step}, {run.config.eval.num_samples} samples per seed, {metric}")
    print("| σ list | mean ± std | per seed |\n|---|---|---|")
    for r in rows:
        per_seed = ", ".join(f"{v:.4g}" for v in r["values"])
        print(f"| [{r['name']}] | {r['mean']:.4g} ± {r['std']:.2g} | {per_seed} |")


if __name__ == "__main__":
    scripts.run(main)
