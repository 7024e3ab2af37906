"""Consistency distillation, CD (Song et al. 2023; seed eq. 12–14; docs/methods.md §4).

L_CD = E λ·d(f_θ(x + σ_{n+1}z, σ_{n+1}), sg f_θ⁻(x̂_n, σ_n)), x̂_n = one teacher solver step σ_{n+1} → σ_n.
The teacher is any denoiser: a trained EDM workdir or a closed-form oracle (``config.teacher``). The notebook's
variants (distant pairs, multi-step teacher, CD+CT) are fields of ``config.cm``; see :mod:`consistency.methods.components.cm`.
"""
from consistency.methods.components import cm
from consistency.methods.components.cm import CONFIG_BLOCK, CONFIG_FIELDS, validate_config  # noqa: F401  (config.cm, its rules)

TEACHER_USE = "required"   # a trained EDM workdir or a closed-form oracle (config.teacher)


def make(config, dataset):
    return cm.make(config, dataset, kind="cd")
