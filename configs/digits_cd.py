"""Consistency distillation on sklearn digits from the digits EDM teacher (configs/digits_edm.py).

python -m consistency.main --config=configs/digits_cd.py --workdir=workdirs/digits_cd \
    --config.teacher.workdir=workdirs/digits_edm
Every notebook ablation is one field: --config.cm.max_gap=4 (distant pairs, seed eq. 13), --config.cm.teacher_steps=4
(multi-step teacher), --config.cm.ct_weight=1 (CD + CT, seed eq. 14), --config.cm.split_gap=2 (close pairs CD / far
pairs CT), --config.cm.solver=euler (solver order), --config.cm.target_ema=0.95 (EMA target), --config.cm.weighting=snr.
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.digits(presets.new("cd"), "cd")
    presets.consistency_distillation(c, num_scales=18)
    c.teacher.workdir = "workdirs/digits_edm"
    c.cm.distance = "l2"
    c.training.num_steps = 1000  # CPU budget of docs/results.md
    c.training.ema_decay = 0.999
    c.optim.lr = 2e-4
    c.eval.nfes = (1, 2, 4)
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 100))
