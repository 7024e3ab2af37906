"""Teacher ODE pairs (z, y) for DMD's regression loss (DMD §3.3; docs/methods.md §10.1; ``config.dmd.pairs``).

z ~ N(0, I) and y = the teacher's deterministic sampler from σ_max·z (EDM Alg. 1: Heun on ``--num_steps`` Karras
points, Euler to σ = 0; 18 points = 35 NFE), stored as an .npz with the arrays 'z', 'y' and the scalars 'sigma_max',
'num_steps', the strings 'solver', 'teacher'. The generator is evaluated at the same σ_max, so G(z) regresses onto y.

    python launch/make_ode_pairs.py --teacher=workdirs/digits_teacher --num=2000 --out=workdirs/digits_teacher/ode_pairs.npz
    python launch/make_ode_pairs.py --oracle=mixture --data=toy:8gaussians --num=4096 --num_steps=40 \
        --out=workdirs/ode_pairs_8gaussians.npz
"""
from __future__ import annotations

from absl import flags

from consistency.tools import scripts
from consistency.core.errors import ConfigError

scripts.define_teacher_flags()
_NUM = flags.DEFINE_integer("num", 4096, "Number of pairs.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 18, "Karras points of the sampler (Heun NFE = 2N − 1).")
_SOLVER = flags.DEFINE_string("solver", "heun", "'heun' | 'euler' | 'dpm_solver_2' | 'dpmpp_2m'.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of z.")
_CHUNK = flags.DEFINE_integer("chunk", 512, "Pairs per compiled sampler call.")
_OUT = flags.DEFINE_string("out", "", "Output .npz path.")


def teacher_config(teacher: str, oracle: str, data: str):
    """The config whose ``teacher`` block names the teacher, and its dataset."""
    from consistency.methods.components import teachers
    return teachers.config_for_teacher(teacher, oracle, data, "make_ode_pairs")


def make_pairs(config, num: int, num_steps: int = 18, solver: str = "heun", seed: int = 0, chunk: int = 512):
    """(z, y, σ_max): :func:`consistency.methods.components.teachers.make_ode_pairs`."""
    from consistency.methods.components import teachers
    return teachers.make_ode_pairs(config, num, num_steps, solver, seed, chunk)


def main(_):
    if not _OUT.value:
        raise ConfigError("make_ode_pairs: --out=PATH.npz is required")
    config = scripts.teacher_config("make_ode_pairs")
    if int(config.model.num_classes) > 0 and flags.FLAGS.teacher:
        raise ConfigError("make_ode_pairs: class-conditional teachers are not supported (pairs carry no labels)")
    from consistency.methods.components import teachers
    z, y, sigma_max = teachers.write_ode_pairs(config, _OUT.value, _NUM.value, _NUM_STEPS.value, _SOLVER.value,
                                               _SEED.value, _CHUNK.value)
    print(f"wrote {len(z)} pairs {z.shape[1:]} (σ_max = {sigma_max}, {_SOLVER.value} on {_NUM_STEPS.value} points, "
          f"y mean {y.mean():.4f} std {y.std():.4f}) to {_OUT.value}")


if __name__ == "__main__":
    scripts.run(main)
