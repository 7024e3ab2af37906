"""sCT (Lu & Song 2024; docs/methods.md §13.2) on sklearn digits, started from the positional-embedding digits EDM checkpoint
(workdirs/digits_teacher_pos, ``configs/digits_edm.py:quick_positional``, for the reason in configs/digits_scd.py; its
weights only — sCT trains on the data's conditional velocity cos t·z − sin t·x₀, as
FastGen's CIFAR-10 sCT starts from an EDM checkpoint with P_std 1.8). Tangent warm-up and normalisation, adaptive
weighting. Scaled for a CPU: batch 128, Adam lr 1e-4 with β₂ 0.99 (sCM), 2000 steps, tangent warm-up 500 steps,
sampling EMA 0.99.

python -m consistency.main --config=configs/digits_sct.py --workdir=workdirs/digits_sct

"""
from consistency import presets

SCM_TEACHER = "workdirs/digits_teacher_pos"   # configs/digits_edm.py:quick_positional (see configs/digits_scd.py)


def get_config(variant: str = ""):
    c = presets.digits_distillation(presets.new("scm"), "scm", teacher_workdir=SCM_TEACHER)
    c.model.embedding = "positional"        # the teacher's embedding (configs/digits_edm.py:quick_positional)
    c.scm.update(dict(mode="train", p_mean=-1.0, p_std=1.8, tangent_warmup_steps=500))
    c.optim.b2 = 0.99                        # sCM's Adam β₂
    c.eval.nfes = (1, 2)
    return presets.scm_variant(c, variant, "digits_sct.py", cpu=False)
