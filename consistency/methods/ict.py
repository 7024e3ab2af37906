"""Improved consistency training, iCT (Song & Dhariwal 2023; seed §2; docs/methods.md §6).

CT with θ⁻ = stopgrad θ (no EMA, seed §2.1 eq. 42), pseudo-Huber distance (seed eq. 43), λ = 1/(σ_{i+1} − σ_i),
the discrete lognormal index distribution and the doubling curriculum. Those are the defaults of
``configs/*_ict.py``; this module checks that a run called 'ict' is one, and otherwise shares the CT step.
"""
from consistency.core import schema
from consistency.methods.components import cm
from consistency.methods.components.cm import CONFIG_BLOCK, CONFIG_FIELDS  # noqa: F401  (config.cm)

TEACHER_USE = "unused"


def validate_config(config) -> None:
    """``config.cm``'s rules, no teacher term, and θ⁻ = stopgrad θ (iCT has no EMA target, seed §2.1 eq. 42)."""
    cm.validate_config(config)
    cm.refuse_teacher_terms(config)
    c = config.cm
    schema.require(c.target_schedule == "fixed" and c.target_ema == 0, "cm.target_ema",
                   "iCT uses θ⁻ = stopgrad θ, but an EMA target is configured "
                   f"(target_schedule={c.target_schedule!r}, target_ema={c.target_ema})",
                   "set cm.target_ema=0 and cm.target_schedule='fixed', or use method='ct' to study an EMA target")


def make(config, dataset):
    validate_config(config)
    return cm.make(config, dataset, kind="ct")
