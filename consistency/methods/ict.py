"""Improved consistency training, iCT (Song & Dhariwal 2023; seed §2; docs/methods.md §6).

CT with θ⁻ = stopgrad θ (no EMA, seed §2.1 eq. 42), pseudo-Huber distance (seed eq. 43), λ = 1/(σ_{i+1} − σ_i),
the discrete lognormal index distribution and the doubling curriculum. Those are the defaults of
``configs/*_ict.py``; this module checks that a run called 'ict' is one, and otherwise shares the CT step.
"""
from consistency.errors import ConfigError
from consistency.methods import cm


def make(config, dataset):
    c = config.cm
    if c.target_schedule != "fixed" or c.target_ema != 0.0:
        raise ConfigError("config.cm.target_ema: iCT uses θ⁻ = stopgrad θ; set cm.target_ema=0 and "
                          "cm.target_schedule='fixed' (or use method='ct' to study an EMA target)")
    return cm.make(config, dataset, kind="ct")
