"""Consistency training, CT (Song et al. 2023; seed eq. 15–27; docs/methods.md §5).

No teacher: the target input is x₀ + σ_n z with the same z (seed eq. 20), or the notebook's posterior-averaged
E[x₀|x] (``config.cm.posterior``, seed eq. 22–25). CT's N(k)/μ(k) schedule is ``cm.curriculum='ct'`` with
``cm.target_schedule='ct'``; see :mod:`consistency.methods.components.cm`.
"""
from consistency.methods.components import cm
from consistency.methods.components.cm import CONFIG_BLOCK, CONFIG_FIELDS  # noqa: F401  (config.cm)

TEACHER_USE = "unused"


def validate_config(config) -> None:
    """``config.cm``'s rules, and no teacher term (CT trains from data alone)."""
    cm.validate_config(config)
    cm.refuse_teacher_terms(config)


def make(config, dataset):
    return cm.make(config, dataset, kind="ct")
