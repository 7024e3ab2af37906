"""CT on a 2-D mixture: CT's N(k) schedule (s0 = 2, s1 = 150) and squared L2, with three fields changed from the CM
paper's CIFAR-10 recipe because on this problem each is needed (issue 11):

- λ = 1/Δσ (iCT §3.2) instead of CT's uniform λ. With uniform λ and uniform pair indices on the ρ = 7 grid, the pairs
  with σ_hi ≥ 10 carry 56 % of the loss and those with σ_hi < 0.1 — the ones tying f to the data through the
  boundary condition — 0.8 % (loss_share_sigma_* in TensorBoard, step 4000). The loss of a pair grows like Δσ², so the
  large, noisy jumps far from the data drown the signal that has to climb up from σ_min. With 1/Δσ the σ_hi < 0.1
  pairs carry 12 % and σ_hi ≥ 10 0.04 % (weight_min / weight_max 0.35 / 2.8e3).
- θ⁻ = sg θ (cm.target_schedule='fixed', cm.target_ema=0) instead of the μ(k) EMA target (μ0 = 0.9): iCT §3.1.
- Adam lr 1e-4 (iCT's rate) instead of the toy preset's 1e-3, and a sampling EMA of 0.99 for a 4000-step run.

Measured (4000 steps, 2000 samples, 1/2/4-step sliced W1, floor 0.057; modes of 8 at 1 step), each row one
``python -m consistency.main --config=configs/toy_ct.py --workdir=W --config.FIELD=VALUE …`` run:

| recipe                                                  | 1 / 2 / 4 steps        | modes |
| the CM paper's CT (uniform λ, μ(k) target, lr 1e-3, EMA 0.999) | 0.85 / 0.29 / 0.21     | 0/8   |
| this config (1/Δσ, θ⁻ = sg θ, lr 1e-4, EMA 0.99)          | 0.082 / 0.072 / 0.069  | 8/8   |
|   … with uniform λ                                       | 0.367 / 0.287 / 0.444  | 3/8   |
|   … with uniform λ and pseudo-Huber                      | 0.345 / 0.261 / 0.253  | 5/8   |
|   … with uniform λ, lognormal pairs (−1.1, 2.0)          | 0.171 / 0.182 / 0.193  | 8/8   |
|   … with uniform λ, iCT's doubling N 10 → 1280           | 0.362 / 0.290 / 0.266  | 5/8   |
|   … with the μ(k) EMA target                             | 0.789 / 0.267 / 0.182  | 0/8   |
|   … at lr 1e-3                                           | 0.692 / 0.577 / 0.483  | 0/8   |
| the paper's CT with only λ = 1/Δσ                         | 0.742 / 0.216 / 0.152  | 0/8   |
| the paper's CT with only θ⁻ = sg θ and EMA 0.99          | 0.866 / 0.248 / 0.272  | 0/8   |

No single change is enough: the weighting, the target and the rate are each needed for the one-step map (σ = 80).
Lognormal pairs, which also move the loss toward small σ, get half way (0.171) with uniform λ.
"""
from consistency import presets


def get_config(variant: str = ""):
    c = presets.toy(presets.new("ct"), "ct")
    presets.consistency_training(c, s0=2, s1=150, mu0=0.9)
    c.cm.weighting = "inv_delta"     # iCT §3.2 (see the docstring)
    c.cm.target_schedule = "fixed"   # θ⁻ = sg θ, iCT §3.1
    c.cm.target_ema = 0.0
    c.optim.lr = 1e-4                # iCT's rate
    c.training.ema_decay = 0.99      # a 4000-step run
    c.eval.nfes = (1, 2, 4)
    return presets.variants(c, variant, __file__, quick=lambda c: presets.quick(c, 200))
