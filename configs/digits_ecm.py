"""ECT on sklearn digits: consistency tuning from the digits EDM teacher (configs/digits_edm.py).

Scaled from the paper (ECT CIFAR-10: RAdam lr 1e-4, batch 128, 200k iterations, the stage doubling every 25k, EMA
0.9999): lr 1e-4 is ECT's own rate; 1000 steps with a stage every 200 (5 stages; CPU budget); the sampling EMA 0.99
for a 1000-step run (0.999 would keep 37 % of the sampling weights at the teacher's). Measured from the 300-step
quick teacher (python -m consistency.main --config=configs/digits_ecm.py --workdir=W
--config.teacher.workdir=workdirs/digits_teacher; teacher FD 66.6 at 35 NFE, floor 36.8): 1/2/4-step FD
113.8 / 71.7 / 75.3, recall 0.70 / 0.95 / 0.95. The previous recipe (lr 2e-4, EMA 0.999) over the same 1000 steps:
docs/results.md, "Fixed recipes".
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.digits(presets.new("ecm"), "ecm")
    c.teacher.workdir = "workdirs/digits_edm"
    c.ecm.steps_per_stage = 200  # 5 curriculum stages in 1000 steps
    c.training.num_steps = 1000  # CPU budget of docs/results.md
    c.optim.lr = 1e-4            # ECT's rate
    c.training.ema_decay = 0.99  # a 1000-step run
    c.eval.nfes = (1, 2, 4)

    def quick(c):
        presets.quick(c, 100)
        c.ecm.steps_per_stage = 25

    return presets.variants(c, variant, __file__, quick=quick)
