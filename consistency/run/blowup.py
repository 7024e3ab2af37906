"""Blow-ups that stay finite, caught before they are saved (issue 33).

A diverging GAN or score-distillation run can reach losses of 10¹⁴–10¹⁷ while every number stays finite: the NaN
guard and the absolute bound on |θ| (``training.max_param_abs``) let it through, and the blown-up state would be saved
as good — so resuming "with a lower lr" would resume the blow-up. This guard compares each step with the run's *own*
recent history instead:

* **loss**: each trained set's loss (metric ``loss``, or ``<set>/loss`` for several sets) may not exceed ``ratio``
  times the larger of the median |loss| of its last :data:`WINDOW` updates and :data:`LOSS_FLOOR` (the floor keeps a
  loss hovering near 0, as a discriminator's may, from counting ordinary noise as a jump);
* **parameter size**: at each save, max|θ| of a set's params may not exceed ``ratio`` times the larger of its value at
  the previous save and :data:`PARAM_FLOOR`.

The history travels in each checkpoint's meta, so a resumed run is guarded from its first step. ``ratio`` is
``config.training.blowup_ratio`` (default 10³: three orders of magnitude; 0 turns the guard off).
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

WINDOW = 100          # the recent updates whose median is the reference
MIN_HISTORY = 10      # no verdict before this many updates of a set (its first steps move fast)
LOSS_FLOOR = 1.0      # reference |loss| is at least this (losses here are O(1) or smaller when healthy)
PARAM_FLOOR = 1.0     # reference max|θ| is at least this (initialisers give O(1/√fan_in))
DEFAULT_RATIO = 1e3


def loss_metrics(metrics: Iterable[str]) -> list[str]:
    """The per-set loss metrics among ``metrics``: ``loss`` and ``<set>/loss``."""
    return [k for k in metrics if k == "loss" or (k.endswith("/loss") and k.count("/") == 1)]


def set_of(metric: str, trained_names: tuple[str, ...]) -> str:
    return metric.split("/", 1)[0] if "/" in metric else (trained_names[0] if trained_names else "?")


class BlowUpGuard:
    """Per-set loss and parameter-size history of one run; :meth:`check_losses` every step, :meth:`check_params` at
    each save. Both return None or a one-line description of the jump."""

    def __init__(self, ratio: float = DEFAULT_RATIO, trained_names: tuple[str, ...] = (), history: dict | None = None):
        self.ratio = float(ratio)
        self.trained_names = tuple(trained_names)
        history = history or {}
        self.losses: dict[str, list[float]] = {k: [float(v) for v in vs][-WINDOW:]
                                               for k, vs in dict(history.get("losses", {})).items()}
        self.param_abs: dict[str, float] = {k: float(v) for k, v in dict(history.get("param_abs", {})).items()}

    def check_losses(self, metrics: dict) -> tuple[str, str] | None:
        """(set name, description) of the first loss that jumped; else record the step's losses → None."""
        jumped = None
        for key in loss_metrics(metrics):
            value = abs(float(np.mean(metrics[key])))
            recent = self.losses.setdefault(key, [])
            if self.ratio > 0 and jumped is None and len(recent) >= MIN_HISTORY and math.isfinite(value):
                median = float(np.median(np.abs(recent)))
                reference = max(median, LOSS_FLOOR)
                if value > self.ratio * reference:
                    jumped = (set_of(key, self.trained_names),
                              f"metric {key!r} = {value:.3g}, {value / reference:.2g}× the median |{key}| of its "
                              f"last {len(recent)} updates ({median:.3g})")
        if jumped is not None:
            return jumped
        for key in loss_metrics(metrics):
            recent = self.losses[key]
            recent.append(float(np.mean(metrics[key])))
            del recent[:-WINDOW]
        return None

    def check_params(self, set_abs: dict[str, float]) -> tuple[str, str] | None:
        """(set name, description) of the first set whose max|θ| jumped since the last save; else record → None."""
        if self.ratio > 0:
            for name, value in set_abs.items():
                previous = self.param_abs.get(name)
                if previous is not None and value > self.ratio * max(previous, PARAM_FLOOR):
                    return name, (f"max|θ| of params['{name}'] = {value:.3g}, {value / max(previous, PARAM_FLOOR):.2g}"
                                  f"× its {previous:.3g} at the last save")
        self.param_abs.update({k: float(v) for k, v in set_abs.items()})
        return None

    def history(self) -> dict:
        """What a checkpoint's meta keeps (JSON): the recent losses and the max|θ| per set."""
        return {"losses": {k: list(v) for k, v in self.losses.items()}, "param_abs": dict(self.param_abs)}
