"""EDM diffusion teacher (Karras et al. 2022): the network every distillation method starts from.

Trains D_φ with the EDM loss (lognormal σ, λ = 1/σ² + 1/σ_d²) on the VE process, or a VP-weighted loss
(``config.diffusion.process='vp'``: σ = σ_t/α_t with t ~ U(0, 1), weights SNR+1); class-conditional training drops
labels with probability ``training.label_dropout`` for classifier-free guidance. Samples with Heun/Euler/DPM-Solver++
or EDM's stochastic sampler at any NFE and CFG scale.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from consistency.diffusion import denoisers, processes, solvers
from consistency.methods import base
from consistency.methods.components import common
from consistency.objectives import edm as edm_objective


TEACHER_USE = "unused"   # EDM is the teacher: it trains from data alone (no config block of its own)

def make(config, dataset) -> base.Method:
    net = common.build_net(config, dataset.example_shape)
    f = config.diffusion
    denoiser = common.edm_denoiser(net, f.sigma_data)
    conditional = common.is_conditional(config)
    null_label = int(config.model.num_classes)
    example_shape = tuple(dataset.example_shape)

    def init(rng, batch):
        return {"online": common.init_params(net, rng, batch["x"], conditional)}, {}

    def draw_sigmas(keys):
        if f.process == "ve":
            return jax.vmap(lambda k: jnp.exp(f.p_mean + f.p_std * jax.random.normal(jax.random.fold_in(k, 1))))(keys)
        t = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1), minval=1e-3, maxval=1.0 - 1e-3))(keys)
        return jnp.clip(processes.vp_to_ve_sigma(t, f.vp_schedule), f.sigma_min, f.sigma_max)

    def loss(params, state, batch, rng):
        x = batch["x"]
        keys = base.example_keys(rng, batch["index"])
        sigma = draw_sigmas(keys)
        noise = base.per_example_normal(jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys), x.shape[1:], x.dtype)
        labels = common.batch_labels(config, batch)
        if labels is not None:
            labels = common.drop_labels(keys, labels, config.training.label_dropout, null_label)
        dropout_rng = jax.random.fold_in(rng, 3)

        def denoise(x_noisy, s):
            return denoiser(params, x_noisy, s, labels, train=True, dropout_rng=dropout_rng)
        if f.process == "ve":
            per_example = edm_objective.edm_loss(denoise, x, sigma, noise, f.sigma_data)
        else:
            per_example = edm_objective.vp_weighted_loss(denoise, x, sigma, noise, "snr+1")
        metrics = {}
        if f.process == "ve":
            metrics = edm_objective.sigma_quartile_means(jax.lax.stop_gradient(per_example), sigma, f.p_mean, f.p_std)
        return jnp.mean(per_example), metrics

    def sample(state, rng, num_samples, *, nfe, options, labels=None, params=None):
        """Draw ``num_samples`` with the sampling EMA params, spending ``nfe`` evaluations (:func:`solver_steps`).

        options.solver: 'euler' | 'heun' | 'dpm_solver_2' | 'dpmpp_2m' | 'stochastic' (EDM Alg. 2 with ``s_churn``);
        options.cfg_scale w (conditional models): D_∅ + w(D_c − D_∅).
        """
        solver, num_steps = solver_steps(options.solver, nfe)
        params = state.ema["online"] if params is None else params
        D = teacher_denoiser(params, labels, options.cfg_scale)
        sigmas = solvers.edm_sampling_sigmas(num_steps, f.sigma_min, f.sigma_max, f.rho)
        shape = (num_samples,) + example_shape
        cond = None if labels is None else jnp.asarray(labels, jnp.int32)
        if solver == "stochastic":
            return solvers.sample_edm_stochastic(D, rng, shape, sigmas, s_churn=options.s_churn, s_min=0.05,
                                                 s_max=50.0, s_noise=1.003, cond=cond)
        return solvers.sample_deterministic(D, rng, shape, sigmas, solver, cond=cond)

    def teacher_denoiser(params, labels=None, cfg_scale=1.0):
        def D(x, sigma, cond=None):
            return denoiser(params, x, sigma, cond)
        if conditional and labels is not None and cfg_scale != 1.0:
            return denoisers.classifier_free_guidance(D, cfg_scale, null_label)
        return D

    def describe(nfe, options):
        solver, num_steps = solver_steps(options.solver, nfe)
        return {**dataclasses.asdict(options), "solver": solver, "num_steps": num_steps}

    s = config.sampling
    options = EDMOptions(solver=s.solver, cfg_scale=s.cfg_scale)
    return base.Method(name="edm", init=init, trained=(common.trained_set(config, "online", loss, sampled=True),),
                       sample=sample, sample_params="online", options=options,
                       sampling_nfe=solver_nfe(s.solver, int(s.num_steps)), describe_sampler=describe,
                       default_nfes=(35,))


@dataclasses.dataclass(frozen=True)
class EDMOptions:
    """EDM sampling (``config.sampling``): the ODE solver (or 'stochastic', EDM Alg. 2 with churn ``s_churn``), and
    the CFG scale w of a class-conditional model (1 → plain conditional)."""
    solver: str = "heun"
    cfg_scale: float = 1.0
    s_churn: float = 40.0


SECOND_ORDER = ("heun", "dpm_solver_2", "stochastic")   # two evaluations per step, one on the final step to σ = 0


def solver_nfe(solver: str, num_steps: int) -> int:
    """Evaluations of ``solver`` on ``num_steps`` Karras points then 0: 2N − 1 for second-order steps (EDM: N = 18 →
    35), N for Euler and DPM-Solver++(2M)."""
    return 2 * num_steps - 1 if solver in SECOND_ORDER else num_steps


def solver_steps(solver: str, nfe: int) -> tuple[str, int]:
    """(solver, Karras points) spending exactly ``nfe`` evaluations: a second-order solver on (NFE + 1)/2 points for
    an odd NFE; an even NFE cannot be spent by one, so it is Euler on NFE points; first-order solvers on NFE points."""
    nfe = int(nfe)
    if solver in SECOND_ORDER:
        return (solver, (nfe + 1) // 2) if nfe % 2 == 1 else ("euler", nfe)
    return solver, nfe
