"""Write ``colab/explore.ipynb`` from the cell sources below (so the notebook stays reviewable as plain Python).

    python colab/make_notebook.py            # (re)write colab/explore.ipynb, without outputs
    python colab/make_notebook.py --check    # exit 1 if explore.ipynb differs from what this script writes

Edit the cells here, not in the .ipynb. Cell ids are fixed (``cell-00``, ``cell-01``, …) so a regeneration changes
only what was edited.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

import nbformat

NOTEBOOK_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "explore.ipynb")


def md(text: str) -> tuple[str, str]:
    return "markdown", textwrap.dedent(text).strip("\n")


def code(text: str) -> tuple[str, str]:
    return "code", textwrap.dedent(text).strip("\n")


CELLS = [
    md(r"""
    # Consistency models on a CPU: an exploration notebook

    This notebook walks through the ideas of the research notes (`shared/seed`, §1.1–1.5; equation numbers below are
    the notes') with the `consistency` package, on toy data small enough for a laptop CPU:

    1. **The PF-ODE picture.** Trajectories of the probability-flow ODE of a 1-D two-Gaussian mixture, integrated with
       Heun's method and the *exact* denoiser: why a diffusion model needs many steps and what a consistency model
       learns instead.
    2. **Training CD and CT** on a 2-D mixture of 8 Gaussians with each method's `train_step` in a plain Python loop:
       consistency distillation from the exact mixture denoiser (a teacher with no error) and consistency training
       from data alone.
    3. **1-, 2- and 4-step samples** of both, next to the data and the teacher's 35-NFE Heun samples, scored with the
       sliced Wasserstein distance and mode coverage, each printed with its noise floor.
    4. **The real training loop** (`consistency.run.train.train_and_evaluate`: checkpoints, sample grids, evaluation) on a
       tiny config, then `consistency.load(workdir)` to sample from the saved run.

    Everything runs offline. With `CONSISTENCY_NOTEBOOK_QUICK=1` (what CI sets) the step counts are tiny and the
    whole notebook takes about two minutes on 2 CPU cores; the default setting takes a few minutes and trains the toy
    models well enough to compare their 1-, 2- and 4-step samples. In Colab: *Runtime → Run all* (a CPU runtime is
    enough).
    """),
    code(r"""
    import os

    # CI runs this notebook with CONSISTENCY_NOTEBOOK_QUICK=1: a few hundred steps, just enough to check that every
    # cell works. The full setting trains the toy models properly (a few minutes on 2 CPU cores).
    QUICK = os.environ.get("CONSISTENCY_NOTEBOOK_QUICK", "0") == "1"
    TRAIN_STEPS = 300 if QUICK else 4000  # CD and CT steps in the hand-written loop (section 2)
    NUM_SAMPLES = 1000 if QUICK else 2000  # samples per model and NFE for the plots and metrics (section 3)
    LOOP_STEPS = 40 if QUICK else 1000  # steps of the real training loop (section 4)
    print(f"QUICK={QUICK}: TRAIN_STEPS={TRAIN_STEPS}, NUM_SAMPLES={NUM_SAMPLES}, LOOP_STEPS={LOOP_STEPS}")
    """),
    code(r"""
    # Install. A no-op where `consistency` is importable (a checkout with `pip install -e .`, CI) or where this
    # notebook sits in a checkout; in a fresh Colab runtime it clones the repository and installs it. This is the only
    # cell that may use the network.
    import importlib.util
    import subprocess
    import sys

    REPO_URL = os.environ.get("CONSISTENCY_REPO_URL", "")  # e.g. https://github.com/<you>/consistency.git


    def find_checkout():
        # The repository root when this notebook runs from inside a checkout (its root or colab/), else None.
        for folder in (os.getcwd(), os.path.dirname(os.getcwd())):
            if os.path.isfile(os.path.join(folder, "consistency", "__init__.py")):
                return folder
        return None


    if importlib.util.find_spec("consistency") is None:
        checkout = find_checkout()
        if checkout is None:
            if not REPO_URL:
                raise RuntimeError("`consistency` is not installed: set REPO_URL (or the CONSISTENCY_REPO_URL "
                                   "environment variable) to the repository's git URL, or run `pip install -e .` "
                                   "in a checkout")
            checkout = os.path.abspath("consistency_repo")
            if not os.path.isdir(checkout):
                subprocess.run(["git", "clone", "--depth=1", REPO_URL, checkout], check=True)
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", checkout], check=True)
        sys.path.insert(0, checkout)  # an editable install is seen by new processes only; this kernel needs the path
        print("using the checkout at", checkout)
    else:
        print("consistency is already importable: nothing to install")
    """),
    code(r"""
    import importlib.util
    import json
    import tempfile
    import time

    import jax

    if jax.default_backend() == "cpu":
        # jax 0.10 turns jax_threefry_partitionable on by default; on XLA-CPU that makes small random draws compile
        # 5-15x more slowly (tests/conftest.py). The methods draw one key per example, so results do not depend on it.
        jax.config.update("jax_threefry_partitionable", False)

    import jax.numpy as jnp
    import matplotlib.pyplot as plt  # inline figures in Jupyter/Colab; no display is needed
    import numpy as np

    import consistency
    from consistency.metrics import set_distances, mixtures, sample_quality
    from consistency.diffusion import oracles
    from consistency.run import train
    from consistency.data import TOY_STD, make_dataset
    from consistency.diffusion import solvers
    from consistency.diffusion.cm_sampling import default_cm_sigmas
    from consistency.diffusion.schedules import karras_sigmas
    from consistency.methods import base, get_method

    REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(consistency.__file__)))
    SIGMA_MIN, SIGMA_MAX = 0.002, 80.0  # EDM / CM noise range (ε and T of the CM paper)
    SUMMARY = {}  # key numbers, printed at the end (CI reads them)
    print("jax", jax.__version__, "on", jax.default_backend(), "| repository:", REPO_ROOT)
    """),
    md(r"""
    ## 1. The PF-ODE picture (notes §1.1–1.2)

    With the variance-exploding process $p_\sigma(\mathbf{x}\mid\mathbf{x}_0)=\mathcal N(\mathbf{x}_0,\sigma^2 I)$ the
    score is given by the ideal denoiser $D(\mathbf{x},\sigma)=\mathbb E[\mathbf{x}_0\mid\mathbf{x}]$ (eq. 2):
    $\nabla_{\mathbf{x}}\log p_\sigma(\mathbf{x}) = -(\mathbf{x}-D(\mathbf{x},\sigma))/\sigma^2$, and the
    probability-flow ODE (eq. 16, with $t=\sigma$) is

    $$\frac{d\mathbf{x}}{d\sigma} = \frac{\mathbf{x}-D(\mathbf{x},\sigma)}{\sigma}.$$

    For an empirical dataset $D$ is the softmax-weighted average of eq. 6; for our toy
    $p_{\text{data}}=\tfrac12\mathcal N(-0.5,0.1^2)+\tfrac12\mathcal N(0.5,0.1^2)$ (`toy:mog1d`) it is the exact mixture
    posterior mean (`consistency.diffusion.oracles.mixture_denoiser`). We integrate the ODE from $\sigma_{\max}=80$ down to
    $\sigma_{\min}=0.002$ with EDM's 2nd-order Heun method on a Karras grid, starting from
    $\mathbf{x}(\sigma_{\max})=\sigma_{\max}\mathbf{z}$.

    What to look for:
    * **left** — each trajectory is deterministic: a noise value is carried to exactly one data point. The
      *consistency function* $f(\mathbf{x}(\sigma),\sigma)=\mathbf{x}(\sigma_{\min})$ maps every point of a trajectory
      to its end (eq. 7–8), so one evaluation of $f$ generates a sample;
    * **middle** — the denoiser along the same trajectories: for large $\sigma$ it returns the *mean of the dataset*
      (eq. 6: "for large $t$ we obtain the mean"), and it commits to a mode only once $\sigma \lesssim 0.5$. A diffusion
      model therefore has to denoise progressively, in many small steps;
    * **right** — the endpoints reproduce the data density: the ODE transports $\mathcal N(0,\sigma_{\max}^2)$ to
      $p_{\text{data}}$.
    """),
    code(r"""
    mog = make_dataset({"name": "toy:mog1d"}, global_batch_size=1, seed=0)
    mog_weights, mog_means, mog_stds = (jnp.asarray(a, jnp.float32) for a in mog.mixture)
    exact_denoiser = oracles.mixture_denoiser(mog_weights, mog_means, mog_stds)  # E[x0 | x], docs/methods.md §15 O3

    ode_sigmas = karras_sigmas(128, SIGMA_MIN, SIGMA_MAX)[::-1]  # 80 → 0.002 (EDM eq. 5), descending


    @jax.jit
    def pf_ode_paths(x_start):
        # Heun on dx/dσ = (x − D(x, σ))/σ (notes eq. 16; EDM Alg. 1); also D(x(σ), σ) at every grid point.
        _, path = solvers.solve(exact_denoiser, x_start, ode_sigmas, "heun", return_trajectory=True)
        denoised = jax.vmap(exact_denoiser)(path, ode_sigmas)
        return path, denoised


    num_paths = 2000
    start = SIGMA_MAX * jax.random.normal(jax.random.PRNGKey(0), (num_paths, 1))
    paths, denoised = (np.asarray(a)[..., 0] for a in pf_ode_paths(start))  # [len(ode_sigmas), num_paths]
    endpoints = paths[-1]

    exact_std = TOY_STD["mog1d"]  # √(0.1² + 0.5²), the mixture's exact std
    print(f"{num_paths} PF-ODE endpoints: mean {endpoints.mean():+.4f} (exact 0), std {endpoints.std():.4f} "
          f"(exact {exact_std:.4f}), fraction in the right mode {np.mean(endpoints > 0):.3f} (exact 0.5)")
    SUMMARY["pf_ode"] = {"mean": float(endpoints.mean()), "std": float(endpoints.std()), "exact_std": exact_std}
    """),
    code(r"""
    sig = np.asarray(ode_sigmas)
    shown = np.argsort(np.asarray(start)[:, 0])[np.linspace(0, num_paths - 1, 30).astype(int)]  # evenly in z
    colors = np.where(endpoints[shown] > 0, "tab:red", "tab:blue")

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    scale = np.sqrt(sig**2 + exact_std**2)[:, None]  # std of x(σ): every level on the same scale
    for ax, values, label in ((axes[0], paths / scale, r"$x(\sigma)\,/\,\sqrt{\sigma^2+\sigma_{data}^2}$"),
                              (axes[1], denoised, r"$D(x(\sigma), \sigma)$")):
        for i, c in zip(shown, colors):
            ax.plot(sig, values[:, i], color=c, lw=0.8, alpha=0.8)
        ax.set_xscale("log")
        ax.set_xlim(SIGMA_MAX, SIGMA_MIN)  # noise (left) → data (right)
        ax.set_xlabel(r"$\sigma$")
        ax.set_ylabel(label)
    axes[0].set_title("PF-ODE trajectories (Heun, exact denoiser)")
    axes[1].set_title("denoiser along the trajectories")
    for m in np.asarray(mog_means)[:, 0]:
        axes[1].axhline(m, color="0.5", ls="--", lw=0.8)

    grid = np.linspace(-1.2, 1.2, 400)
    log_density = oracles.mixture_log_density(jnp.asarray(grid)[:, None], SIGMA_MIN, mog_weights, mog_means, mog_stds)
    density = np.exp(np.asarray(log_density))
    axes[2].hist(endpoints, bins=60, density=True, color="0.75", label="ODE endpoints")
    axes[2].plot(grid, density, color="k", lw=1.2, label="exact density")
    axes[2].set_title("endpoints vs the data density")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    ## 2. Training a consistency model: distillation (CD) and training from scratch (CT)

    The network is parameterised so that the boundary condition $f_\theta(\mathbf{x},\sigma_{\min})=\mathbf{x}$ (eq. 8)
    holds exactly:
    $f_\theta = c_{\text{skip}}(\sigma)\,\mathbf{x} + c_{\text{out}}(\sigma)\,F_\theta(c_{\text{in}}\mathbf{x},\sigma)$
    with $c_{\text{skip}}(\sigma_{\min})=1$, $c_{\text{out}}(\sigma_{\min})=0$. Both methods then enforce the
    consistency property between neighbouring noise levels $\sigma_n < \sigma_{n+1}$ of a Karras grid (eq. 7, 12, 27):

    * **CD** (eq. 12): $\;\lambda\,d\big(f_\theta(\mathbf{x}_0+\sigma_{n+1}\mathbf{z},\sigma_{n+1}),\,
      f_{\theta^-}(\hat{\mathbf{x}}_{\sigma_n},\sigma_n)\big)$ where $\hat{\mathbf{x}}_{\sigma_n}$ is one Heun step of
      the teacher's PF-ODE from $\sigma_{n+1}$ to $\sigma_n$. Here the teacher is the exact mixture denoiser
      (`config.teacher.oracle = 'mixture'`, as in `configs/toy_cd.py`), so any error left is the student's own.
      Grid: $N=18$. Target network: $\theta^-\leftarrow\mu\theta^-+(1-\mu)\theta$ with $\mu=0.95$ (CM paper, Table 3,
      ImageNet/LSUN). The CIFAR-10 recipe's $\mu=0$ ($\theta^-=\mathrm{stopgrad}\,\theta$) made the loss oscillate on
      this toy: after 4000 steps (the default setting) its 1-step samples had 48% of points within 3 std of a mode,
      against 90% with $\mu=0.95$ — the notes' question "why do we need EMA?" (§1.3); set
      `cd_config.cm.target_ema = 0.0` to see it.
    * **CT** (notes §1.5, eq. 18–21, 27): replace $\mathbb E[\mathbf{x}_0\mid\mathbf{x}]$ by the single
      $\mathbf{x}_0$ that produced $\mathbf{x}$; the ODE step then has the closed form
      $\hat{\mathbf{x}}_{\sigma_n}=\mathbf{x}_0+\sigma_n\mathbf{z}$ with the *same* $\mathbf{z}$ (eq. 20), and no
      teacher is needed. The grid grows during training,
      $N(k)$ from $s_0=2$ to $s_1+1$, and $\theta^-$ is an EMA with rate $\mu(k)$ (CM paper, App. C;
      `configs/toy_ct.py`, here with $s_1=40$ for a short run).

    Each method is a declarative spec (`consistency/methods/base.py`: trained sets with their losses and optimizers, `init`, `sample`); below
    `train.Stepper(method)`, the training loop's own compiled step (with the sets due at each step), runs in a plain Python loop. The configs are the repository's `configs/toy_cd.py` and
    `configs/toy_ct.py` with a smaller MLP and batch so that they train in about a minute on 2 CPU cores.
    """),
    code(r"""
    def load_config(name, variant=""):
        # configs/<name>.py:<variant>, as `python -m consistency.main --config=configs/<name>.py:<variant>` reads it.
        path = os.path.join(REPO_ROOT, "configs", f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(variant)


    def cpu_sized(config, num_steps):
        # The same recipe with a smaller MLP and batch; num_steps also sets CT's N(k) and μ(k) (functions of k / K).
        c = config.copy_and_resolve_references()
        c.model.hidden, c.model.depth = 128, 3
        c.training.batch_size = 256
        c.training.num_steps = num_steps
        c.training.ema_decay = 0.995  # a short run: a 0.999 sampling EMA would still remember the initialisation
        c.optim.lr = 2e-3
        return c


    cd_config = cpu_sized(load_config("toy_cd"), TRAIN_STEPS)
    cd_config.cm.target_ema = 0.95  # θ⁻ EMA rate μ (CM paper Table 3, ImageNet/LSUN); toy_cd.py: μ = 0 (CIFAR-10)
    ct_config = cpu_sized(load_config("toy_ct"), TRAIN_STEPS)
    # CT's curriculum ends at s1 + 1 = 151 grid points (CIFAR-10); a run of a few thousand steps cannot use so fine a
    # grid. Ending it at 41 points gave a 1-step SW1 of 0.22 instead of 0.88 after 3000 steps (noise floor 0.07).
    ct_config.cm.s1 = 40
    for c in (cd_config, ct_config):
        grid = f"N = {c.cm.num_scales}" if c.cm.curriculum == "fixed" else f"N(k) = {c.cm.s0} → {c.cm.s1 + 1}"
        target = f"μ = {c.cm.target_ema}" if c.cm.target_schedule == "fixed" else f"μ(k) from μ0 = {c.cm.mu0}"
        print(f"{c.method}: {c.data.name}, MLP {c.model.hidden}x{c.model.depth}, batch {c.training.batch_size}, "
              f"{c.training.num_steps} steps, lr {c.optim.lr}, grid {grid}, target θ⁻ {target}, "
              f"teacher: {c.teacher.oracle or 'none'}")
    """),
    code(r"""
    def train_method(config):
        # A minimal training loop: batches are a pure function of (seed, step), the step key is fold_in(key, k).
        dataset = make_dataset(config.data, config.training.batch_size, config.seed)
        method = get_method(config, dataset)
        init_key, step_key = jax.random.split(jax.random.PRNGKey(config.seed))
        state = base.init_state(method, init_key, dataset.batch(0))
        train_step = train.Stepper(method, donate=True)  # the loop's step; key fold_in(step_key, k) at step k
        history = []
        start_time = time.perf_counter()
        for k in range(config.training.num_steps):
            state, metrics = train_step(state, dataset.batch(k), step_key, step=k)
            history.append(metrics)  # device arrays: fetched once at the end, so the loop never waits
        history = jax.device_get(history)
        history = {name: np.array([m[name] for m in history], np.float64) for name in history[0]}
        seconds = time.perf_counter() - start_time
        print(f"{config.method}: {config.training.num_steps} steps in {seconds:.1f} s (compilation included), "
              f"loss {history['loss'][:10].mean():.3g} → {history['loss'][-10:].mean():.3g}")
        return dataset, method, state, history


    toy, cd_method, cd_state, cd_history = train_method(cd_config)
    _, ct_method, ct_state, ct_history = train_method(ct_config)
    SUMMARY["loss"] = {name: [float(h["loss"][:10].mean()), float(h["loss"][-10:].mean())]  # first / last 10 steps
                       for name, h in (("cd", cd_history), ("ct", ct_history))}
    """),
    code(r"""
    def smooth(values, width=25):
        width = max(1, min(width, len(values) // 5))
        return np.convolve(values, np.ones(width) / width, mode="valid")


    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    for name, history in (("CD", cd_history), ("CT", ct_history)):
        axes[0].plot(smooth(history["loss"]), label=name)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("consistency loss (moving average)")
    axes[0].legend()
    axes[1].plot(ct_history["num_scales"], color="tab:orange")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("N(k)", color="tab:orange")
    twin = axes[1].twinx()
    twin.plot(ct_history["target_decay"], color="tab:green")
    twin.set_ylabel("μ(k)", color="tab:green")
    axes[1].set_title("CT curriculum: grid size N(k) and target EMA μ(k)")
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    ## 3. Few-step sampling, next to the teacher (notes §1.4)

    Multistep consistency sampling (CM paper, Alg. 1) with noise levels $\tau_1=\sigma_{\max}>\tau_2>\dots$:
    $\mathbf{x}\leftarrow f_\theta(\tau_1\mathbf{z},\tau_1)$, then for each further level
    $\mathbf{x}\leftarrow f_\theta\big(\mathbf{x}+\sqrt{\tau_k^2-\sigma_{\min}^2}\,\mathbf{z}_k,\tau_k\big)$:
    re-noise the estimate and jump back, one network evaluation (NFE) per level. The levels are
    `consistency.diffusion.cm_sampling.default_cm_sigmas` (2 steps: 80, 0.821).
    The reference is the teacher itself: the exact mixture denoiser with Heun on the 18-point EDM grid, 35 NFE.

    Metrics (`consistency.metrics.sample_quality.evaluate_points`), each next to its **noise floor** — the same metric between two
    independent draws of real data of the same size, i.e. the best any sampler can score at this sample size:
    * **SW1** — sliced Wasserstein-1 distance to the data (lower is better);
    * **modes** — fraction of the 8 modes that receive at least a quarter of their share of samples;
    * **in-mode** — fraction of samples within 3 standard deviations of a mode (sharpness).
    """),
    code(r"""
    mixture = mixtures.GaussianMixture(*toy.mixture)  # the 8 Gaussians' exact weights, means and stds
    teacher_denoiser = oracles.mixture_denoiser(*(jnp.asarray(a, jnp.float32) for a in toy.mixture))
    heun_sigmas = solvers.edm_sampling_sigmas(18, SIGMA_MIN, SIGMA_MAX)  # 18 Karras points + 0: NFE = 2·18 − 1 = 35


    @jax.jit
    def teacher_samples(rng):
        return solvers.sample_deterministic(teacher_denoiser, rng, (NUM_SAMPLES, 2), heun_sigmas, "heun")


    def cm_samples(method, state, num_steps, rng):
        sigmas = tuple(default_cm_sigmas(num_steps, SIGMA_MAX))  # τ_1 = σ_max > τ_2 > … (one NFE each)
        options = base.sampling_options(method, sigmas=sigmas)
        return jax.jit(lambda s, r: method.sample(s, r, NUM_SAMPLES, nfe=num_steps, options=options))(state, rng)


    rng = jax.random.PRNGKey(1)
    samples = {("data", 0): mixtures.sample_gaussian_mixture(mixture, NUM_SAMPLES, seed=2),  # a third real draw
               ("Heun teacher", 35): np.asarray(teacher_samples(rng))}
    for name, method, state in (("CD", cd_method, cd_state), ("CT", ct_method, ct_state)):
        for nfe in (1, 2, 4):
            samples[(name, nfe)] = np.asarray(cm_samples(method, state, nfe, rng))

    metrics = {key: sample_quality.evaluate_points(x, mixture=mixture, seed=0) for key, x in samples.items()}
    print(f"{NUM_SAMPLES} samples each; value (noise floor: two real draws of {NUM_SAMPLES})")
    for (name, nfe), m in metrics.items():
        print(f"{name:<13}{nfe if nfe else '-':>3} NFE  SW1 {m['swd']:.4f} (floor {m['swd_floor']:.4f})  "
              f"modes {m['mode_coverage']:.3f} (floor {m['mode_coverage_floor']:.3f})  "
              f"in-mode {m['high_quality']:.3f} (floor {m['high_quality_floor']:.3f})")
    SUMMARY["metrics"] = {f"{name} {nfe}": {k: float(m[k]) for k in ("swd", "swd_floor", "mode_coverage",
                                                                       "high_quality", "high_quality_floor")}
                          for (name, nfe), m in metrics.items()}
    """),
    code(r"""
    panels = [[("data", 0), ("CD", 1), ("CD", 2), ("CD", 4)],
              [("Heun teacher", 35), ("CT", 1), ("CT", 2), ("CT", 4)]]
    fig, axes = plt.subplots(2, 4, figsize=(14, 7), sharex=True, sharey=True)
    for row, keys in zip(axes, panels):
        for ax, key in zip(row, keys):
            x = samples[key]
            ax.scatter(samples[("data", 0)][:, 0], samples[("data", 0)][:, 1], s=2, c="0.85", linewidths=0)
            ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:gray" if key[0] == "data" else "tab:blue", linewidths=0)
            ax.set_title(f"{key[0]}" + (f", {key[1]} NFE" if key[1] else "") + f"\nSW1 {metrics[key]['swd']:.3f}",
                         fontsize=9)
            ax.set_xlim(-1.6, 1.6)
            ax.set_ylim(-1.6, 1.6)
            ax.set_aspect("equal")
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    What to look for: the exact teacher sits at the noise floor (35 NFE); CD, distilled from it, gets close in 1–4
    steps; CT, which never sees a denoiser, is blurrier in one step and improves with every extra step. One run of the
    default setting on 2 CPU cores gave SW1 0.039 / 0.044 / 0.052 for CD at 1 / 2 / 4 NFE, 0.178 / 0.104 / 0.075 for
    CT and 0.036 for the teacher, against a floor of 0.028; CD's in-mode fraction rose from 0.90 to 0.96 with the steps
    while its SW1 did not fall — material for the notes' open question "why does CM degrade as the NFE increases?"
    (§1.4). In the QUICK setting the models are barely trained and the numbers mean nothing.
    """),
    md(r"""
    ## 4. The real training loop, a workdir, and `consistency.load`

    `consistency.run.train.train_and_evaluate(config, workdir)` is what
    `python -m consistency.main --config=... --workdir=...` runs: the same `train_step`, jitted over a device mesh,
    with Orbax checkpoints, TensorBoard logs (clu), sample pictures and an evaluation at the end; it resumes from the
    latest checkpoint when the workdir already has one.
    `consistency.load(workdir)` restores a run (config, EMA parameters) and samples from it. Here: the CD recipe
    (`configs/toy_cd.py:quick`, shrunk as above) for `LOOP_STEPS` steps in a temporary folder.
    """),
    code(r"""
    loop_config = cpu_sized(load_config("toy_cd", "quick"), LOOP_STEPS)
    loop_config.cm.target_ema = cd_config.cm.target_ema
    loop_config.training.log_every = max(1, LOOP_STEPS // 4)
    loop_config.training.ckpt_every = max(1, LOOP_STEPS // 2)
    loop_config.training.sample_every = LOOP_STEPS
    loop_config.sampling.num_samples = loop_config.eval.num_samples = 1000

    workdir = tempfile.mkdtemp(prefix="consistency_toy_cd_")
    start_time = time.perf_counter()
    train.train_and_evaluate(loop_config, workdir)
    print(f"train_and_evaluate: {LOOP_STEPS} steps in {time.perf_counter() - start_time:.1f} s → {workdir}")


    def show_tree(root, max_depth=2):
        # The workdir layout, folders deeper than max_depth summarised by their file count.
        for folder, subfolders, files in os.walk(root):
            subfolders.sort()
            depth = os.path.relpath(folder, root).count(os.sep) + (folder != root)
            name = os.path.basename(folder) if folder != root else root
            if depth > max_depth:
                subfolders[:] = []
                continue
            below = sum(len(f) for _, _, f in os.walk(folder)) if depth == max_depth else 0
            print("    " * depth + name + "/" + (f"  ({below} files)" if depth == max_depth else ""))
            if depth < max_depth:
                for f in sorted(files):
                    print("    " * (depth + 1) + f)
            else:
                subfolders[:] = []


    show_tree(workdir)
    """),
    code(r"""
    from IPython.display import Image, display

    with open(os.path.join(workdir, "eval", f"metrics_{LOOP_STEPS}.json")) as f:
        results = json.load(f)
    print(f"eval/metrics_{LOOP_STEPS}.json (abridged):")
    for key, value in sorted(results.items()):
        if isinstance(value, dict):  # per-NFE metrics
            shown = ("swd", "mode_coverage")
            value = ", ".join(f"{k} {v:.4g}" for k, v in value.items() if k.split("_floor")[0] in shown)
        print(f"  {key}: {value}")
    display(Image(filename=os.path.join(workdir, "samples", f"step_{LOOP_STEPS}.png"), width=320))
    """),
    code(r"""
    run = consistency.load(workdir)  # latest checkpoint; consistency.load(workdir, step=k) for another
    print(f"loaded a {run.config.method!r} run at step {run.step}; "
          f"{sum(np.size(p) for p in jax.tree.leaves(run.params)):,} EMA parameters")
    loaded = {nfe: np.asarray(run.sample(jax.random.PRNGKey(7), NUM_SAMPLES, nfe=nfe,
                                         sigmas=tuple(default_cm_sigmas(nfe)))) for nfe in (1, 2)}
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6), sharex=True, sharey=True)
    for ax, (nfe, x) in zip(axes, loaded.items()):
        sw1 = set_distances.sliced_wasserstein(x, samples[("data", 0)])
        ax.scatter(samples[("data", 0)][:, 0], samples[("data", 0)][:, 1], s=2, c="0.85", linewidths=0)
        ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:blue", linewidths=0)
        ax.set_title(f"consistency.load(workdir): {nfe} NFE\nSW1 {sw1:.3f}", fontsize=9)
        ax.set_xlim(-1.6, 1.6)
        ax.set_ylim(-1.6, 1.6)
        ax.set_aspect("equal")
    fig.tight_layout()
    plt.show()
    SUMMARY["loaded"] = {"method": run.config.method, "step": int(run.step),
                         "shape": list(loaded[1].shape), "finite": bool(np.all(np.isfinite(loaded[1])))}
    SUMMARY["workdir_files"] = sorted(os.listdir(workdir))
    """),
    md(r"""
    ## Where next

    * Longer runs and other methods from the command line, e.g.
      `python -m consistency.main --config=configs/toy_ict.py --workdir=runs/toy_ict`, or the digits recipes
      (`configs/digits_edm.py`, then `configs/digits_cd.py` with `--config.teacher.workdir=runs/digits_edm`).
    * The notes' ablations are config fields of the CM trainer (`consistency/methods/components/cm.py`): distant pairs
      `cm.max_gap` (eq. 13), CD + CT `cm.ct_weight` (eq. 14), teacher solver order `cm.solver`, several teacher steps
      `cm.teacher_steps`, no EMA target `cm.target_ema = 0`, weightings `cm.weighting`, and the posterior-averaged CT
      target `cm.posterior` (eq. 22–25).
    * Set `QUICK = False` (or unset `CONSISTENCY_NOTEBOOK_QUICK`) for the full-length runs of sections 2–4.
    """),
    code(r"""
    print("SUMMARY " + json.dumps(SUMMARY, sort_keys=True))
    """),
]


def build_notebook() -> nbformat.NotebookNode:
    """The notebook object: CELLS with fixed ids, no outputs, a python3 kernelspec."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    for i, (kind, source) in enumerate(CELLS):
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = make(source)
        cell["id"] = f"cell-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the .ipynb differs from the generated one")
    args = parser.parse_args(argv)
    text = nbformat.writes(build_notebook()) + "\n"
    if args.check:
        with open(NOTEBOOK_PATH) as f:
            current = f.read()
        if current != text:
            print(f"{NOTEBOOK_PATH} is out of date: run python colab/make_notebook.py", file=sys.stderr)
            return 1
        return 0
    with open(NOTEBOOK_PATH, "w") as f:
        f.write(text)
    print(f"wrote {NOTEBOOK_PATH} ({len(CELLS)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
