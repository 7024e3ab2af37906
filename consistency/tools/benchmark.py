"""The method benchmark (issue 31): one shared teacher per suite, every method at a matched budget, evaluated with
confidence intervals, written into marked blocks of ``docs/benchmark.md`` and the README.

    python -m consistency.tools.benchmark --suite=toy                                  # every toy method, seeds 0,1,2
    python -m consistency.tools.benchmark --suite=toy --methods=cd,ict --seeds=0       # one part of it
    python -m consistency.tools.benchmark --suite=digits --methods=cd --seeds=0 --steps=20 --teacher_steps=20   # a smoke run
    python -m consistency.tools.benchmark --suite=toy --imports=my_pair --methods=configs/my_pair.py,cd   # your own method

A tool above the training loop (it calls ``train.train_and_evaluate`` and samples with ``api.load``). Run from the
repository root (it reads ``configs/``).

**Teacher.** toy: the exact mixture denoiser (``teacher.oracle='mixture'``) — no teacher error — also sampled itself
with Heun / Euler as the ``teacher`` row. digits: one EDM teacher (``configs/digits_edm.py``, ``--teacher_steps``)
trained once in ``<workroot>/digits/teacher/seed0``; every distillation method reads it (``teacher.workdir``, DMD's ODE
pairs, PaGoDA's inversion are made from it once).

**Matched budget.** Every student run trains for the same number of loop steps (``--steps``) at the same batch size
(``--batch_size``): the same number of examples through the trained networks' update steps. Each config's other
hyperparameters are its recipe; the fields that are counted in steps (ECT's stage length, MCM's N ramp, sCM's tangent
warm-up) are scaled by steps / the recipe's steps, as ``consistency.tools.experiments`` does. Methods differ in what one
step costs (CD runs two Heun teacher evaluations, DMD/SiD two networks, the score-distillation recipes first fit the
student to the teacher inside init), so the measured CPU-seconds of each run — process CPU time of training, compile
included, summed over all threads — are reported beside it.

**Evaluation.** ``--num_samples`` samples per NFE, all scored; toy: sliced W1, MMD², energy distance against fresh
draws of the mixture of the same size, plus the exact mode coverage and log-likelihood; digits: FD / KID / precision /
recall in the in-project classifier's feature space against all 1797 real digits (the largest reference the suite
has; the floor's real draw is capped at half of them). Each metric carries its noise floor and a 95 % bootstrap
interval over samples (``--bootstrap`` replicates; basic for FD and sliced W1, percentile for MMD²/KID, see
``intervals.bootstrap_interval``). Across training seeds the interval is Student's t on
the per-seed values (``intervals.seed_interval``): mean ± t₀.₉₇₅,S−1 · s/√S, where s already contains the sampling
variation because each seed draws its own samples; with one seed the bootstrap interval is shown instead.

**Resumable and divisible.** Every (suite, run, seed) is a workdir ``<workroot>/<suite>/<run>/seed<k>``: training is
skipped when its ``benchmark_train.json`` records the same budget, and evaluation when ``benchmark_eval_<row>.json``
records the same settings. Each run checkpoints four times, so a killed part, started again, resumes its unfinished run
from the latest checkpoint, and :class:`CostMeter` carries the killed part's CPU-seconds over. Each invocation rewrites the page from every finished result of the suite in the
workroot, so ``--methods`` / ``--seeds`` parts accumulate.

**Your own method.** An entry of ``--methods`` that is a config file (``configs/my_pair.py``; its method registered by a
module named in ``--imports``) is a row of its own, named after the file, sampled at the config's ``eval.nfes`` and
trained under the same rules as the built-in rows: the matched budget, the seeds, the suite's network fields and, in
the digits suite, the shared teacher when its config names a teacher workdir. It must train on the suite's data. Its
runs live in ``<workroot>/<suite>/own_<name>/`` with a digest of the recipe (a changed recipe under the same name is
refused), and later reports find them there.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable

from absl import app, flags, logging

from consistency.run.stopping import Stopped

_SUITE = None
_METHODS = None
_SEEDS = None
_STEPS = None
_BATCH = None
_TEACHER_STEPS = None
_NUM_SAMPLES = None
_BOOTSTRAP = None
_WORKROOT = None
_OUT = None
_REPORT_ONLY = None
_README = None
_IMPORTS = None


def define_flags() -> None:
    """The command's absl flags, defined only when it runs as a program (importing the module defines none,
    so tests and other programs can import it beside scripts with flags of the same names)."""
    global _SUITE, _METHODS, _SEEDS, _STEPS, _BATCH, _TEACHER_STEPS
    global _NUM_SAMPLES, _BOOTSTRAP, _WORKROOT, _OUT, _REPORT_ONLY, _README, _IMPORTS
    _SUITE = flags.DEFINE_enum("suite", "toy", ["toy", "digits"], "Which suite: toy (2-D mixture) or digits (8×8).")
    _METHODS = flags.DEFINE_list("methods", [], "Method keys to run (empty: all of the suite), e.g. cd,ict,mcm_vp, "
                                 "and config files of your own methods, e.g. configs/my_pair.py.")
    _SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds.")
    _STEPS = flags.DEFINE_integer("steps", 0, "Loop steps of every student run (0: the suite's default budget).")
    _BATCH = flags.DEFINE_integer("batch_size", 0, "Batch size of every run (0: the suite's default).")
    _TEACHER_STEPS = flags.DEFINE_integer("teacher_steps", 0, "digits: steps of the shared EDM teacher (0: its config).")
    _NUM_SAMPLES = flags.DEFINE_integer("num_samples", 2000, "Generated samples scored per NFE.")
    _BOOTSTRAP = flags.DEFINE_integer("bootstrap", 100, "Bootstrap replicates for the per-run 95 % intervals.")
    _WORKROOT = flags.DEFINE_string("workroot", "workdirs/benchmark", "Folder of the run workdirs.")
    _OUT = flags.DEFINE_string("out", "docs/benchmark.md", "Page to write the marked blocks into (plots/JSON beside it).")
    _REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rewrite the page from the finished results in the workroot.")
    _README = flags.DEFINE_string("readme", "README.md", "README whose benchmark block is rewritten ('' to skip).")
    _IMPORTS = flags.DEFINE_multi_string("imports", [], "Python modules to import first, e.g. one that registers your "
                                         "method with consistency.methods.register(name, make).")


SUITES = {
    "toy": {"prefix": "configs/toy_", "steps": 3000, "batch": 256, "teacher_nfes": (3, 5, 9, 17, 35),
            "metrics": (("swd", "sliced W1", 1), ("mmd", "MMD²", 1), ("mode_coverage", "modes", -1),
                        ("log_likelihood", "log-lik", -1))},
    "digits": {"prefix": "configs/digits_", "steps": 2000, "batch": 128, "teacher_nfes": (3, 5, 9, 17, 35),
               "metrics": (("fd", "FD", 1), ("kid", "KID", 1), ("precision", "precision", -1),
                           ("recall", "recall", -1)),
               # one network for the teacher and every student: the digits U-Net with sinusoidal (DDPM++) noise
               # features, because sCT/sCD copy the teacher and sCM's tangent needs a time embedding with a bounded
               # dF/dt (sCM §4.1; configs/digits_scd.py measures what the Fourier-16 embedding does to it)
               "model": {"embedding": "positional"}},
}
"""Per suite: default budget (loop steps, batch), the teacher's NFEs, and the reported metrics (key, label, +1 when
lower is better / −1 when higher is better); the first metric is the headline that the ranking uses."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One row family of the table: a (trained or closed-form) model sampled at ``nfes``."""

    key: str                      # the --methods key it belongs to
    name: str                     # as printed, e.g. "MCM VE T=2", "CTM γ=1"
    run: str                      # workdir name under <workroot>/<suite>/ (rows may share a run: CTM γ = 0 / 1)
    config: str = ""              # config file stem, '' for the closed-form teacher
    overrides: tuple = ()         # (dotted field, value) pairs applied after loading the config
    nfes: tuple = ()              # () → the config's eval.nfes / the method's default
    sample_options: tuple = ()    # (name, value) overrides of the method's sampling options, e.g. (("gamma", 1.0),)
    shared: bool = False          # trained once (seed 0) and only *sampled* per seed: the digits teacher


def suite_rows(suite: str) -> list[Row]:
    """Every row of a suite, in table order."""
    spec = SUITES[suite]
    rows = []
    if suite == "toy":
        rows.append(Row("teacher", "exact teacher (Heun/Euler)", "teacher", nfes=spec["teacher_nfes"]))
        rows.append(Row("edm", "EDM (trained on data)", "edm", "edm", nfes=spec["teacher_nfes"]))
    else:
        rows.append(Row("edm", "EDM teacher", "teacher", "edm", nfes=spec["teacher_nfes"], shared=True))
    for key, name in (("cd", "CD"), ("ct", "CT"), ("ict", "iCT"), ("ecm", "ECT"), ("sct", "sCT"), ("scd", "sCD")):
        rows.append(Row(key, name, key, key, nfes=(1, 2, 4) if key not in ("sct", "scd") else (1, 2)))
    for process in ("vp", "ve"):
        for t in (1, 2, 4, 8):
            rows.append(Row(f"mcm_{process}", f"MCM {process.upper()} T={t}", f"mcm_{process}_T{t}", f"mcm_{process}",
                            overrides=(("mcm.segments", t),), nfes=(t,)))
    for gamma in (0.0, 1.0):
        rows.append(Row("ctm", f"CTM γ={gamma:g}", "ctm", "ctm", nfes=(1, 2, 4), sample_options=(("gamma", gamma),)))
    for key, name in (("dmd", "DMD"), ("dmd2", "DMD2"), ("add", "ADD"), ("sid", "SiD"), ("pagoda", "PaGoDA")):
        rows.append(Row(key, name, key, key, nfes=(1,)))
    return rows


def method_keys(suite: str) -> list[str]:
    return list(dict.fromkeys(r.key for r in suite_rows(suite)))


OWN_PREFIX = "own_"   # the run folders of rows from --methods=<config file>


def is_config_file(entry: str) -> bool:
    return entry.endswith(".py")


def own_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def own_row(path: str) -> Row:
    """The row of a method of your own: its config file, named after the file and sampled at its ``eval.nfes``."""
    from consistency.tools.recipes import load_config_file
    config = load_config_file(path)
    nfes = tuple(int(n) for n in config.eval.nfes) or (1,)
    return Row(path, own_name(path), OWN_PREFIX + own_name(path), path, nfes=nfes)


def own_config_digest(path: str) -> str:
    """What identifies the recipe of an own row: a hash of its config file's ``get_config()`` without the sampling
    and evaluation blocks (sampling it at other NFEs is the same trained recipe)."""
    import hashlib
    from consistency.tools.recipes import load_config_file
    recipe = {k: v for k, v in load_config_file(path).to_dict().items() if k not in ("eval", "sampling")}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def check_own_configs(suite: str, paths: list[str], workroot: str) -> None:
    """One ConfigError line for an own config that cannot join the suite: it does not load, its method is not
    registered (a missing ``--imports``), it trains on other data than the suite scores, or its runs in the workroot
    were trained from another recipe under the same name."""
    if not paths:   # nothing to check: no config file is loaded at start-up
        return
    from consistency import methods
    from consistency.core.errors import ConfigError
    from consistency.tools.recipes import load_config_file
    suite_data = dataset_config_for(suite).name
    for path in paths:
        try:
            config = load_config_file(path)
        except Exception as e:  # a user's get_config: whatever it raises is reported in one line
            raise ConfigError(f"--methods: {path} does not load ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                              "run it alone with python -m consistency.main --config=FILE to see why") from None
        if config.method not in methods.available():
            raise ConfigError(f"--methods: {path} uses method {config.method!r}, which is not registered; add "
                              "--imports=MODULE naming the module that calls consistency.methods.register")
        if config.data.name != suite_data:
            raise ConfigError(f"--methods: {path} trains on data.name={config.data.name!r} but the {suite} suite "
                              f"scores against {suite_data!r}; set c.data.name = {suite_data!r}")
        digest = own_config_digest(path)
        run_root = os.path.join(suite_dir(workroot, suite), OWN_PREFIX + own_name(path))
        for seed_dir in sorted(os.listdir(run_root)) if os.path.isdir(run_root) else ():
            record = _read_json(os.path.join(run_root, seed_dir, "benchmark_train.json"))
            if record and record.get("row", {}).get("digest") not in (None, digest):
                raise ConfigError(f"--methods: {run_root}/{seed_dir} was trained from another recipe named "
                                  f"{own_name(path)!r}; rename the file or remove that folder")


def own_rows_in(workroot: str, suite: str) -> list[Row]:
    """The own-method rows trained in the workroot before (read from their ``benchmark_train.json``), by name."""
    base, rows = suite_dir(workroot, suite), {}
    for run in sorted(os.listdir(base)) if os.path.isdir(base) else ():
        if not run.startswith(OWN_PREFIX) or not os.path.isdir(os.path.join(base, run)):
            continue
        for seed_dir in sorted(os.listdir(os.path.join(base, run))):
            record = _read_json(os.path.join(base, run, seed_dir, "benchmark_train.json"))
            if record and record.get("row"):
                r = record["row"]
                rows[r["name"]] = Row(r["config"], r["name"], run, r["config"], nfes=tuple(r["nfes"]))
                break
    return list(rows.values())


def report_rows(suite: str, workroot: str) -> list[Row]:
    """Every row a report shows: the suite's own, then the methods of your own found in the workroot."""
    return suite_rows(suite) + own_rows_in(workroot, suite)


def row_slug(row: Row) -> str:
    return name_slug(row.name)


def name_slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower().replace("γ", "g")).strip("_")


# --------------------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------------------


def suite_dir(workroot: str, suite: str) -> str:
    return os.path.join(workroot, suite)


def run_dir(workroot: str, suite: str, row: Row, seed: int) -> str:
    return os.path.join(suite_dir(workroot, suite), row.run, f"seed{0 if row.shared else seed}")


def teacher_dir(workroot: str) -> str:
    return os.path.join(suite_dir(workroot, "digits"), "teacher", "seed0")


def _set_field(config, dotted: str, value) -> None:
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value


CHECKPOINTS_PER_RUN = 4   # each run saves every ⌊steps / 4⌋ steps (and at its end): a killed part loses ≤ 1/4 of a run


def row_config(suite: str, row: Row, seed: int, steps: int, batch: int, workroot: str):
    """The training config of one run: the recipe, the matched budget, the seed and the suite's shared teacher."""
    from consistency.tools.recipes import load_config_file
    config = load_config_file(row.config if is_config_file(row.config) else f"{SUITES[suite]['prefix']}{row.config}.py")
    recipe_steps = int(config.training.num_steps)
    for field, value in row.overrides:
        _set_field(config, field, value)
    from consistency.tools.recipes import scaled_recipe as _scaled  # ECT stage length and MCM's N ramp scale with the run
    config = _scaled(config, steps / float(recipe_steps))
    if config.method == "scm":  # sCM's tangent warm-up is counted in steps too
        config.scm.tangent_warmup_steps = int(round(config.scm.tangent_warmup_steps * steps / recipe_steps))
    config.training.num_steps = int(steps)
    config.training.batch_size = int(batch)
    config.training.eval_every = 0
    config.training.sample_every = int(steps)
    config.training.ckpt_every = max(1, int(steps) // CHECKPOINTS_PER_RUN)   # a killed part resumes from the latest
    config.seed = int(seed)
    config.eval.num_samples = 256  # the loop's own end-of-run check; the benchmark evaluates separately
    config.sampling.num_samples = min(int(config.sampling.num_samples), 256)
    config.eval.nfes = tuple(row.nfes) if config.method != "edm" else (3,)
    for field, value in SUITES[suite].get("model", {}).items():
        config.model[field] = value
    if suite == "digits":
        if config.teacher.get("workdir", ""):
            config.teacher.workdir = teacher_dir(workroot)
        if config.method == "dmd":
            config.dmd.pairs = os.path.join(teacher_dir(workroot), "ode_pairs.npz")
        if config.method == "pagoda":
            config.data.latents = os.path.join(teacher_dir(workroot), "inversion")
    else:
        if config.method == "dmd":
            config.dmd.pairs = os.path.join(suite_dir(workroot, suite), "ode_pairs.npz")
        if config.method == "pagoda":
            config.data.latents = os.path.join(suite_dir(workroot, suite), "pagoda_inversion")
    return config


def ensure_teacher_products(config, lock_dir: str) -> None:
    """DMD's ODE pairs and PaGoDA's inverted latents, made once from the suite's teacher when missing (under a file
    lock, so that parts of the suite run in parallel make them once)."""
    import fcntl
    os.makedirs(lock_dir, exist_ok=True)
    with open(os.path.join(lock_dir, ".teacher_products.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _ensure_teacher_products(config)


def _ensure_teacher_products(config) -> None:
    from consistency.tools.recipes import ensure_ode_pairs
    ensure_ode_pairs(config)
    if config.method == "pagoda" and not os.path.exists(os.path.join(config.data.latents, "meta.json")) \
            and not os.path.exists(config.data.latents + ".done"):
        from consistency.tools import inversion
        teacher_config = inversion.teacher_setup(config.teacher.workdir, config.teacher.oracle,
                                                 config.data.name if config.teacher.oracle else "",
                                                 int(config.data.toy_size) if config.teacher.oracle else 0)
        inversion.run(teacher_config, config.data.latents, log=logging.info)
        with open(config.data.latents + ".done", "w") as f:
            f.write("ok\n")


# --------------------------------------------------------------------------------------------------------------------
# Training and evaluation of one (row, seed)
# --------------------------------------------------------------------------------------------------------------------


def _read_json(path: str):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def _write_json(path: str, value) -> None:
    """Write ``value`` to ``path`` atomically (a private temporary file in the same folder, then a rename)."""
    import tempfile
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=1, sort_keys=True, default=float)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def train_run(suite: str, row: Row, seed: int, steps: int, batch: int, workroot: str) -> dict:
    """Train one run (or reuse it when ``benchmark_train.json`` records this budget); returns that record."""
    workdir = run_dir(workroot, suite, row, seed)
    marker = os.path.join(workdir, "benchmark_train.json")
    budget = {"steps": int(steps), "batch_size": int(batch)}
    done = _read_json(marker)
    own = row.run.startswith(OWN_PREFIX)
    row_record = {"name": row.name, "config": row.config, "nfes": list(row.nfes),
                  "digest": own_config_digest(row.config)} if own else None
    if done is not None and done["budget"] == budget:
        logging.info("benchmark: reusing %s", workdir)
        CostMeter(os.path.join(workdir, COST_FILE), budget).finish()   # a leftover of a part killed after the record
        if own and done.get("row") != row_record:   # the same recipe (checked up front), sampled at today's NFEs
            done["row"] = row_record
            _write_json(marker, done)
        return done
    from consistency.run import train
    config = row_config(suite, row, 0 if row.shared else seed, steps, batch, workroot)
    ensure_teacher_products(config, suite_dir(workroot, suite))
    logging.info("benchmark: training %s (%s, seed %d, %d steps × %d)", workdir, row.config, seed, steps, batch)
    with CostMeter(os.path.join(workdir, COST_FILE), budget) as meter:
        train.train_and_evaluate(config, workdir)   # resumes from the latest checkpoint of a killed earlier part
        cpu, wall = meter.totals()
    record = {"budget": budget, "cpu_seconds": cpu, "wall_seconds": wall, "parts": meter.parts,
              "config": row.config, "overrides": [list(o) for o in row.overrides]}
    if own:   # what a later report needs to list the row without loading its method
        record["row"] = row_record
    _write_json(marker, record)
    meter.finish()
    return record


COST_FILE = "benchmark_train_cost.json"


class CostMeter:
    """The CPU- and wall-seconds one training run has cost, over every invocation (part) that worked on it.

    While the run trains, a thread rewrites ``path`` every ``every`` seconds with the running totals (what earlier,
    killed parts recorded there for the same ``budget``, plus this process's time since entering), so a part killed
    and rerun — which resumes the run from its latest checkpoint — is charged for all the work it did, less at most
    ``every`` seconds at each kill. That includes the steps it repeats after the checkpoint and one more compilation:
    the cost of the interruption, counted in ``parts``. A missing, unreadable or other-budget file starts from zero;
    a failed write is logged and does not stop the run. :meth:`finish` removes the file once the record is written."""

    def __init__(self, path: str, budget: dict, every: float = 30.0):
        self.path, self.budget, self.every = path, dict(budget), every

    def _carried(self) -> dict:
        try:
            found = _read_json(self.path) or {}
        except (OSError, ValueError):   # a file cut short by a crash: count from zero rather than fail every rerun
            return {}
        return found if found.get("budget") == self.budget else {}

    def __enter__(self) -> "CostMeter":
        import threading
        carried = self._carried()
        self.carried = (float(carried.get("cpu_seconds", 0.0)), float(carried.get("wall_seconds", 0.0)))
        self.parts = int(carried.get("parts", 0)) + 1
        self.start = (time.process_time(), time.time())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_writing, daemon=True)
        self._thread.start()
        return self

    def totals(self) -> tuple[float, float]:
        return (self.carried[0] + time.process_time() - self.start[0],
                self.carried[1] + time.time() - self.start[1])

    def _write(self) -> None:
        cpu, wall = self.totals()
        try:
            _write_json(self.path, {"cpu_seconds": cpu, "wall_seconds": wall, "parts": self.parts,
                                    "budget": self.budget})
        except OSError as e:   # the count is a record of cost, never a reason to stop training
            logging.warning("benchmark: could not write %s: %s", self.path, e)

    def _keep_writing(self) -> None:
        while not self._stop.wait(self.every):
            self._write()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is not None:   # stopped (preempted, interrupted, failed): the next part carries on counting
            self._write()

    def finish(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass


def oracle_sampler(suite: str, nfe: int, num: int) -> Callable:
    """Heun (odd NFE, (NFE+1)/2 Karras points) or Euler (even NFE) on the exact mixture denoiser: the toy teacher."""
    import jax
    from consistency.methods.components import teachers
    from consistency.run import train
    from consistency.diffusion import solvers
    from consistency.tools.recipes import load_config_file
    config = load_config_file(f"{SUITES[suite]['prefix']}cd.py")
    dataset = train.build_dataset(config)
    params, apply = teachers.load_teacher(config, dataset)
    solver, points = ("heun", (nfe + 1) // 2) if nfe % 2 else ("euler", nfe)
    sigmas = solvers.edm_sampling_sigmas(points, config.diffusion.sigma_min, config.diffusion.sigma_max)
    fn = jax.jit(lambda rng: solvers.sample_deterministic(lambda x, s, cond=None: apply(params, x, s), rng,
                                                          (num,) + tuple(dataset.example_shape), sigmas, solver))
    return fn, dataset


_REFERENCE: dict = {}


def score(suite: str, samples, dataset, seed: int, bootstrap: int) -> dict:
    """The suite's metrics (with floors, bootstrap intervals and sizes) of one sample set."""
    import numpy as np
    from consistency.metrics import sample_quality
    samples = np.asarray(samples, np.float32)
    if not np.all(np.isfinite(samples)):
        return {"finite_fraction": float(np.mean(np.isfinite(samples)))}
    if suite == "toy":
        return sample_quality.evaluate_points(samples, mixture=dataset.mixture, seed=seed, bootstrap=bootstrap)
    if "digits" not in _REFERENCE:
        from consistency.metrics import features
        x_train, _, x_test, _ = features.load_digits_split()
        _REFERENCE["digits"] = np.concatenate([x_train, x_test])  # all 1797 real digits
    from consistency.metrics.features import load_or_train_dataset_features
    extractor = load_or_train_dataset_features(dataset_config_for(suite))
    return sample_quality.evaluate_images(samples, _REFERENCE["digits"], extractor, seed=seed, bootstrap=bootstrap)


def dataset_config_for(suite: str):
    from consistency.tools.recipes import load_config_file
    return load_config_file(f"{SUITES[suite]['prefix']}edm.py").data


def scoring_settings(suite: str) -> dict:
    """The scoring conventions a cached evaluation must share to be reused: for images, evaluate_images' clip."""
    from consistency.metrics.sample_quality import IMAGE_SCORING
    return {"images": IMAGE_SCORING} if suite == "digits" else {}


def evaluate_row(suite: str, row: Row, seed: int, num: int, bootstrap: int, workroot: str) -> dict:
    """Sample ``num`` points per NFE of ``row`` and score them (or reuse a report with the same settings)."""
    import jax
    import numpy as np
    from consistency.metrics import sample_quality
    from consistency.run import sampling
    from consistency.methods import base
    workdir = run_dir(workroot, suite, row, seed)
    path = os.path.join(workdir, f"benchmark_eval_{row_slug(row)}_seed{seed}.json")
    settings = {"num_samples": int(num), "bootstrap": int(bootstrap), "nfes": list(row.nfes),
                "sample_kwargs": [list(k) for k in row.sample_options],   # the key cached records carry
                "intervals": "basic FD/SW1"}   # records scored with the earlier percentile FD/SW1 form are rescored
    settings.update(scoring_settings(suite))   # records scored under another convention are rescored
    train_record = _read_json(os.path.join(workdir, "benchmark_train.json"))
    if row.config:
        settings["budget"] = train_record["budget"]
    cached = _read_json(path)
    if cached is not None and cached["settings"] == settings and cached.get("train") == train_record:
        return cached   # (a run trained again since, e.g. after its folder was cleared, is sampled again)
    cpu = time.process_time()
    rng = jax.random.PRNGKey(1_000_003 + int(seed))
    result: dict[str, Any] = {"settings": settings, "row": row.name, "seed": int(seed), "nfe": {}}
    loaded = None
    if row.config:
        from consistency import api
        loaded = api.load(workdir)
    for nfe in row.nfes:
        key = jax.random.fold_in(rng, nfe)
        if loaded is None:
            fn, dataset = oracle_sampler(suite, nfe, num)
            samples = np.asarray(fn(key))
        else:
            dataset = loaded.dataset
            options = base.sampling_options(loaded.method, **dict(row.sample_options))
            sampler = sampling.make_sampler(loaded.method, num, nfe, options)
            samples, _ = sampling.draw_samples(loaded.config, loaded.method, loaded.state, key, num, sampler=sampler)
        metrics = score(suite, samples, dataset, int(seed), bootstrap)
        result["nfe"][str(nfe)] = metrics
        if "num_reference" in metrics:
            logging.info("benchmark: %s seed %d NFE %d: %s; %s %.4g [%.4g, %.4g]", row.name, seed, nfe,
                         sample_quality.sizes_line(metrics), SUITES[suite]["metrics"][0][0],
                         metrics[SUITES[suite]["metrics"][0][0]], *metrics[SUITES[suite]["metrics"][0][0] + "_ci"])
    result["eval_cpu_seconds"] = time.process_time() - cpu
    result["train"] = train_record
    _write_json(path, result)
    return result


# --------------------------------------------------------------------------------------------------------------------
# Aggregation and report
# --------------------------------------------------------------------------------------------------------------------


def collect(suite: str, workroot: str, num: int, bootstrap: int) -> dict[str, list[dict]]:
    """Every finished evaluation of the suite in the workroot with these settings: {row name: [per-seed results]}."""
    scoring = scoring_settings(suite)
    out: dict[str, list[dict]] = {}
    for row in report_rows(suite, workroot):
        base = os.path.join(suite_dir(workroot, suite), row.run)
        if not os.path.isdir(base):
            continue
        found = []
        for entry in sorted(os.listdir(base)):
            folder = os.path.join(base, entry)
            for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
                if name.startswith(f"benchmark_eval_{row_slug(row)}_seed") and name.endswith(".json"):
                    res = _read_json(os.path.join(folder, name))
                    s = res["settings"]
                    if (s["num_samples"] == num and s["bootstrap"] == bootstrap and s["nfes"] == list(row.nfes)
                            and all(s.get(k) == v for k, v in scoring.items())):
                        found.append(res)
        if found:
            out[row.name] = found
    return out


def summarize(suite: str, collected: dict[str, list[dict]]) -> list[dict]:
    """One entry per (row, NFE): per metric the mean and its 95 % interval (t over seeds, or bootstrap for one)."""
    import numpy as np
    from consistency.metrics import intervals
    entries = []
    for name, results in collected.items():
        nfes = sorted({int(n) for r in results for n in r["nfe"]})
        for nfe in nfes:
            per_seed = [r["nfe"][str(nfe)] for r in results if str(nfe) in r["nfe"]]
            entry = {"row": name, "nfe": nfe, "seeds": len(per_seed),
                     "seed_ids": sorted({r["seed"] for r in results})}
            for key, _, _ in SUITES[suite]["metrics"]:
                values = [m[key] for m in per_seed if key in m]
                if len(values) < len(per_seed) or not values:
                    entry[key] = None
                    continue
                mean, lo, hi = intervals.seed_interval(values)
                kind = "t"
                if len(values) == 1 and key + "_ci" in per_seed[0]:
                    lo, hi = per_seed[0][key + "_ci"]
                    kind = "bootstrap"
                entry[key] = {"mean": mean, "low": lo, "high": hi, "interval": kind, "values": values}
                if key + "_ci" in per_seed[0]:
                    entry[key]["bootstrap_half_width"] = float(np.mean([(m[key + "_ci"][1] - m[key + "_ci"][0]) / 2
                                                                        for m in per_seed]))
                floors = [m[key + "_floor"] for m in per_seed if key + "_floor" in m]
                if floors:
                    entry[key]["floor"] = float(np.mean(floors))
            entry["num_samples"] = per_seed[0].get("num_samples")
            entry["num_reference"] = per_seed[0].get("num_reference")
            entry["num_floor"] = per_seed[0].get("num_floor")
            trains = [r["train"] for r in results if r.get("train")]
            entry["budget"] = trains[0]["budget"] if trains else None
            entry["train_cpu_seconds"] = float(np.mean([t["cpu_seconds"] for t in trains])) if trains else 0.0
            entries.append(entry)
    return entries


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    a = abs(value)
    return f"{value:.3g}" if a >= 1e-3 or a == 0 else f"{value:.2e}"


def _cell(stat) -> str:
    if stat is None:
        return "—"
    if math.isnan(stat["low"]):
        return _fmt(stat["mean"])
    return f"{_fmt(stat['mean'])} [{_fmt(stat['low'])}, {_fmt(stat['high'])}]"


def markdown_table(suite: str, entries: list[dict]) -> str:
    metrics = SUITES[suite]["metrics"]
    lines = ["| method | NFE | " + " | ".join(f"{label} [95 % CI]" for _, label, _ in metrics)
             + " | seeds | steps × batch | train CPU-s / run |",
             "|---|---|" + "---|" * len(metrics) + "---|---|---|"]
    for e in entries:
        b = e["budget"]
        budget = f"{b['steps']} × {b['batch_size']}" if b else "— (closed form)"
        lines.append(f"| {e['row']} | {e['nfe']} | " + " | ".join(_cell(e[k]) for k, _, _ in metrics)
                     + f" | {e['seeds']} | {budget} | {e['train_cpu_seconds']:.0f} |")
    floors = [_mean_floor(entries, k) for k, _, _ in metrics]
    lines.append("| *noise floor (real vs real, same sizes)* | — | " + " | ".join(_fmt(f) for f in floors)
                 + " | | | |")
    return "\n".join(lines)


def _mean_floor(entries: list[dict], key: str):
    values = [e[key]["floor"] for e in entries if e.get(key) and "floor" in e[key]]
    return sum(values) / len(values) if values else None


def ranking_sentences(suite: str, entries: list[dict]) -> str:
    """Per NFE 1, 2, 4: the best headline mean and which rows its 95 % interval separates it from (no overlap)."""
    key, label, sign = SUITES[suite]["metrics"][0]
    lines = []
    for nfe in (1, 2, 4):
        at = [e for e in entries if e["nfe"] == nfe and e.get(key) and not math.isnan(e[key]["low"])]
        if len(at) < 2:
            continue
        at.sort(key=lambda e: sign * e[key]["mean"])
        best = at[0]
        tied = [e["row"] for e in at[1:] if _overlap(best[key], e[key])]
        separated = [e["row"] for e in at[1:] if not _overlap(best[key], e[key])]
        text = (f"At {nfe} NFE the lowest mean {label} is {best['row']} ({_cell(best[key])}); " if sign > 0 else
                f"At {nfe} NFE the highest mean {label} is {best['row']} ({_cell(best[key])}); ")
        text += ("its interval overlaps " + ", ".join(tied) + ", so it is *not* ranked above them; " if tied else
                 "its interval overlaps no other row's; ")
        text += (f"it is better than {', '.join(separated)} (intervals disjoint)." if separated else
                 "it is separated from no row.")
        single = [e["row"] for e in at if e[key].get("interval") == "bootstrap"]
        if single:
            text += (f" ({', '.join(single)}: one training seed so far, so the interval is the bootstrap over samples"
                     " and leaves out the seed-to-seed spread.)")
        floor = best[key].get("floor")
        if floor is not None:
            text += (f" Its interval lies above the noise floor ({_fmt(floor)})." if best[key]["low"] > floor else
                     f" Its interval reaches the noise floor ({_fmt(floor)}).")
        lines.append("- " + text)
    if not lines:
        return "- Fewer than two rows with an interval at 1, 2 or 4 NFE: no ranking is claimed."
    return "\n".join(lines)


def _overlap(a: dict, b: dict) -> bool:
    return a["low"] <= b["high"] and b["low"] <= a["high"]


def readme_table(suite: str, entries: list[dict], missing: list[str] = ()) -> str:
    """Compact pivot for the README: rows × (1, 2, 4, 8 NFE and the teacher's), headline mean [95 % interval]; the rows
    with no finished run yet are named under it."""
    key, label, _ = SUITES[suite]["metrics"][0]
    rows: dict[str, dict[int, str]] = {}
    for e in entries:
        if e.get(key) is not None:
            rows.setdefault(e["row"], {})[e["nfe"]] = _cell(e[key])
    cols = (1, 2, 4, 8)
    lines = [f"| {suite}: {label} [95 % CI] | " + " | ".join(f"{c} NFE" for c in cols) + " | other NFE |",
             "|---|" + "---|" * (len(cols) + 1)]
    for name, by in rows.items():
        other = ", ".join(f"{v} @ {n}" for n, v in sorted(by.items()) if n not in cols)
        lines.append(f"| {name} | " + " | ".join(by.get(c, "") for c in cols) + f" | {other} |")
    seeds = sorted({e["seeds"] for e in entries if e.get(key) is not None})
    if any(e[key]["interval"] == "bootstrap" for e in entries if e.get(key) is not None):
        lines.append("\nA row with one training seed shows the bootstrap interval over samples, which leaves out the "
                     "spread between training seeds; it is narrower than a seed interval would be.")
    if any(e[key]["high"] < e[key]["mean"] for e in entries if e.get(key) is not None):
        lines.append(f"\nAn interval below its estimate is not a typo: {label} is biased upwards at these sample "
                     "sizes, and the basic bootstrap interval is one for the population value (docs/benchmark.md, "
                     "\"Intervals\").")
    if seeds and seeds[0] != seeds[-1]:
        lines.append(f"\nRows have {seeds[0]} to {seeds[-1]} training seeds so far (docs/benchmark.md lists which).")
    if missing:
        lines.append(f"\nNot run yet ({len(missing)} of {len(suite_rows(suite))} rows): {', '.join(missing)}.")
    return "\n".join(lines)


def write_plots(suite: str, entries: list[dict], folder: str) -> list[str]:
    """Quality vs NFE (error bars: 95 % CI) and quality vs training CPU-seconds; returns the file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    key, label, _ = SUITES[suite]["metrics"][0]
    os.makedirs(folder, exist_ok=True)
    by_row: dict[str, list[dict]] = {}
    for e in entries:
        if e.get(key):
            by_row.setdefault(e["row"], []).append(e)
    names = []
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, (row, es) in enumerate(by_row.items()):
        es = sorted(es, key=lambda e: e["nfe"])
        x = [e["nfe"] * (1 + 0.03 * (i % 7 - 3)) for e in es]
        y = [e[key]["mean"] for e in es]
        err = [[max(0.0, e[key]["mean"] - e[key]["low"]) if not math.isnan(e[key]["low"]) else 0 for e in es],
               [max(0.0, e[key]["high"] - e[key]["mean"]) if not math.isnan(e[key]["high"]) else 0 for e in es]]
        ax.errorbar(x, y, yerr=err, marker="os^Dv"[i % 5], ms=3, capsize=2, label=row, color=plt.cm.tab20(i % 20))
    floor = _mean_floor(entries, key)
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1, label="noise floor")
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel=label, title=f"{suite}: {label} vs NFE (95 % CI)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    names.append(f"{suite}_quality_vs_nfe.png")
    fig.savefig(os.path.join(folder, names[-1]), dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (row, es) in enumerate(by_row.items()):
        e = min(es, key=lambda e: e["nfe"])
        if not e["budget"]:
            continue
        lo = e[key]["mean"] - e[key]["low"] if not math.isnan(e[key]["low"]) else 0
        hi = e[key]["high"] - e[key]["mean"] if not math.isnan(e[key]["high"]) else 0
        ax.errorbar([e["train_cpu_seconds"]], [e[key]["mean"]], yerr=[[max(lo, 0)], [max(hi, 0)]], marker="os^Dv"[i % 5],
                    capsize=2, color=plt.cm.tab20(i % 20), label=f"{row} @ {e['nfe']} NFE")
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1, label="noise floor")
    ax.set(xscale="log", yscale="log", xlabel="training CPU-seconds per run (compile included)", ylabel=label,
           title=f"{suite}: {label} at each method's fewest NFE vs training cost")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    names.append(f"{suite}_quality_vs_cpu.png")
    fig.savefig(os.path.join(folder, names[-1]), dpi=110)
    plt.close(fig)
    return names


def total_cpu_seconds(collected: dict[str, list[dict]]) -> tuple[float, float]:
    """(training, evaluation) CPU-seconds of everything in the report (a shared run counted once)."""
    train_runs, evaluation = {}, 0.0
    for results in collected.values():
        for r in results:
            evaluation += r.get("eval_cpu_seconds", 0.0)
            if r.get("train"):
                train_runs[(json.dumps(r["train"]["budget"]), r["train"]["config"], json.dumps(r["train"]["overrides"]),
                            r["seed"] if r["row"] not in ("EDM teacher",) else 0)] = r["train"]["cpu_seconds"]
    return sum(train_runs.values()), evaluation


def write_report(suite: str, out: str, readme: str, collected: dict, command: str,
                 failures: list[str] = ()) -> list[dict]:
    from consistency.run.reports import replace_block
    entries = summarize(suite, collected)
    folder = os.path.join(os.path.dirname(os.path.abspath(out)), os.path.splitext(os.path.basename(out))[0])
    os.makedirs(folder, exist_ok=True)
    _write_json(os.path.join(folder, f"{suite}.json"), {"entries": entries, "raw": collected})
    pictures = write_plots(suite, entries, folder) if entries else []
    rel = os.path.basename(folder)
    train_cpu, eval_cpu = total_cpu_seconds(collected)
    budgets = sorted({(e["budget"]["steps"], e["budget"]["batch_size"]) for e in entries if e["budget"]})
    seeds = sorted({s for e in entries for s in e["seed_ids"]})
    sizes = sorted({(e["num_samples"], e["num_reference"], e["num_floor"]) for e in entries if e["num_samples"]})
    meta = [f"Command: `{command}` (every part of the suite in the workroot is included).",
            f"Budget: {', '.join(f'{s} steps × batch {b}' for s, b in budgets) or '—'} per run; seeds {seeds}.",
            "Samples scored per NFE (generated / reference / floor's real draw): "
            + ", ".join(f"{a} / {b} / {c}" for a, b, c in sizes) + ".",
            f"CPU time of the results on this page: training {train_cpu / 3600:.2f} h, evaluation {eval_cpu / 3600:.2f} h "
            "(process CPU-seconds, all threads)."]
    missing = [r.name for r in suite_rows(suite) if r.name not in collected]
    if missing:
        meta.append("Rows with no finished run yet (not in the table): " + ", ".join(missing) + ".")
    fewer = sorted({f"{e['row']} ({e['seeds']})" for e in entries if e["seeds"] < len(seeds)})
    if fewer:
        meta.append("Rows with fewer seeds than the others so far (seeds): " + ", ".join(fewer) + ".")
    if failures:
        meta.append("Failed in the last invocation (not in the table): " + "; ".join(failures) + ".")
    page = open(out).read() if os.path.exists(out) else "# Benchmark\n"
    page = replace_block(page, f"{suite}_meta", "\n".join(meta), namespace="benchmark")
    page = replace_block(page, f"{suite}_table", markdown_table(suite, entries), namespace="benchmark")
    page = replace_block(page, f"{suite}_ranking", ranking_sentences(suite, entries), namespace="benchmark")
    page = replace_block(page, f"{suite}_plots", " ".join(f"![{p}]({rel}/{p})" for p in pictures),
                         namespace="benchmark")
    with open(out, "w") as f:
        f.write(page)
    if readme and os.path.exists(readme):
        text = open(readme).read()
        if f"<!-- benchmark:{suite}_readme -->" in text:
            with open(readme, "w") as f:
                f.write(replace_block(text, f"{suite}_readme", readme_table(suite, entries, missing),
                                      namespace="benchmark"))
    logging.info("benchmark: wrote %s (%d entries)", out, len(entries))
    return entries


def run(suite: str, methods: list[str], seeds: list[int], steps: int, batch: int, num: int, bootstrap: int,
        workroot: str, teacher_steps: int = 0) -> list[str]:
    """Train and evaluate every selected (row, seed); returns one line per failed (row, seed). The page is written by
    :func:`write_report`."""
    rows = [r for r in suite_rows(suite) if not methods or r.key in methods]
    rows += [own_row(m) for m in methods if is_config_file(m)]
    if suite == "digits":  # the shared teacher, trained once
        teacher = next(r for r in suite_rows("digits") if r.shared)
        from consistency.tools.recipes import load_config_file
        t_steps = teacher_steps or int(load_config_file("configs/digits_edm.py").training.num_steps)
        train_run("digits", teacher, 0, t_steps, SUITES["digits"]["batch"], workroot)
    failures = []
    for seed in seeds:          # seed-major: a part that stops early still has every method at its first seeds
        for row in rows:
            try:
                if row.config and not row.shared:
                    train_run(suite, row, seed, steps, batch, workroot)
                evaluate_row(suite, row, seed, num, bootstrap, workroot)
            except Stopped:         # preempted or interrupted: the loop saved; the same command resumes
                raise
            except Exception as e:  # one broken recipe must not stop the other runs; it is listed on the page
                logging.exception("benchmark: %s seed %d failed", row.name, seed)
                failures.append(f"{row.name} seed {seed}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return failures


def validate_flags(suite: str, methods: list[str], seeds: list[str]) -> list[int]:
    from consistency.core.errors import ConfigError
    unknown = [m for m in methods if m not in method_keys(suite) and not is_config_file(m)]
    if unknown:
        raise ConfigError(f"--methods: unknown {unknown} for --suite={suite}; use some of {','.join(method_keys(suite))} "
                          "or the config file of your own method (a path ending in .py)")
    missing = [m for m in methods if is_config_file(m) and not os.path.isfile(m)]
    if missing:
        raise ConfigError(f"--methods: no config file {missing}; give the path of an existing file, e.g. "
                          "configs/my_pair.py")
    own = [m for m in methods if is_config_file(m)]
    names = [own_name(m) for m in own]
    if len(set(names)) < len(names):
        raise ConfigError(f"--methods: the config files {own} share a file name; rows are named after the file, "
                          "so rename one")
    built_in = {row_slug(r) for r in suite_rows(suite)}
    clash = [m for m in own if name_slug(own_name(m)) in built_in]
    if clash:
        raise ConfigError(f"--methods: {clash[0]} would be named like a built-in row of the {suite} suite; rename the "
                          "file, e.g. my_" + os.path.basename(clash[0]))
    try:
        values = [int(s) for s in seeds]
    except ValueError:
        raise ConfigError(f"--seeds: {seeds} are not integers; use e.g. --seeds=0,1,2") from None
    if not values or min(values) < 0:
        raise ConfigError("--seeds: give at least one non-negative seed, e.g. --seeds=0,1,2")
    return values


def main(argv):
    del argv
    import sys
    from consistency.core.errors import ConfigError
    suite = _SUITE.value
    try:
        from consistency import methods
        methods.import_modules(_IMPORTS.value)
        seeds = validate_flags(suite, _METHODS.value, _SEEDS.value)
        check_own_configs(suite, [m for m in _METHODS.value if is_config_file(m)], _WORKROOT.value)
        for name, value in (("--num_samples", _NUM_SAMPLES.value), ("--bootstrap", _BOOTSTRAP.value)):
            if value < (4 if name == "--num_samples" else 0):
                raise ConfigError(f"{name}: {value} is too small; use e.g. {name}=2000")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from consistency.run import train
    train.prefer_fast_cpu_random()
    steps = _STEPS.value or SUITES[suite]["steps"]
    batch = _BATCH.value or SUITES[suite]["batch"]
    try:
        failures = [] if _REPORT_ONLY.value else run(suite, _METHODS.value, seeds, steps, batch, _NUM_SAMPLES.value,
                                                     _BOOTSTRAP.value, _WORKROOT.value, _TEACHER_STEPS.value)
    except Stopped as e:
        print(f"benchmark: {e}", file=sys.stderr)   # the loop's line: the step saved and how to resume
        sys.exit(e.exit_status)
    collected = collect(suite, _WORKROOT.value, _NUM_SAMPLES.value, _BOOTSTRAP.value)
    command = "python -m consistency.tools.benchmark " + " ".join(a for a in sys.argv[1:])
    write_report(suite, _OUT.value, _README.value, collected, command, failures)
    if failures:
        print("benchmark: failed runs:\n" + "\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
